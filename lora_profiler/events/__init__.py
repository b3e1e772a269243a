"""Events engine: Chrome/Kineto trace JSON -> linked columnar tables (numpy, no torch).

Entry point::

    from lora_profiler.events import load_trace
    trace = load_trace("runs/x/tb/lora")            # file, folder of ranks, or list of them
    trace.kernels.dur_us[trace.kernels.kind == KIND_NAMES.index("gemm")].sum()   # us
    one = trace.for_step(3)                         # every table restricted to ProfilerStep#3

``load_trace(paths, scope_prefix="lp/") -> Trace`` reads ``.json`` / ``.json.gz`` files (gzip is
recognised by content), streaming: only a few MiB of text and one batch of event dicts live at
a time; every event becomes a row of numbers in one pass. The stdlib decoders do the work, or
msgspec, orjson and isal when installed (``fast``; identical tables); with msgspec, on Linux
with more than one CPU, forked workers decode some batches of a large trace beside the reader
(``parallel``; identical tables; ``LORA_PROFILER_WORKERS=0`` reads in one process). Bad input raises ``TraceError`` (a
ValueError) naming the file and the fix; nothing else escapes for any input, and no numpy
warning. Malformed events — a missing or wrong-typed field, a value outside ``limits`` (times
not finite or beyond 2**62 ns, durations negative or over 7 days, ids not whole numbers within
2**53) — are dropped and counted in ``trace.skipped`` (reason -> count); well-formed events that
no table holds (python_function, flows, metadata, ...) are counted in ``trace.ignored``.

Conventions: times are float64 microseconds on the trace's clock, columns end in ``_us``;
names are int32 ids into ``trace.names`` (``trace.name(i)``, ``trace.names_of(ids)``); links
between tables are int32 row indices, -1 for none; ``file`` indexes ``trace.files``.

Tables (one row per event; full column docs on each class in ``tables``):

- ``trace.ops`` (Ops) — CPU ops: name, ts_us, dur_us, self_us, pid, tid, file, ext, seq
  (autograd Sequence number), fwd_tid, dims (name id of the Input Dims JSON; see
  ``parse_dims``), parent, depth, is_top, is_backward, fwd_op, scope, step.
- ``trace.kernels`` (Kernels) — GPU kernels, memcpys, memsets: name, cat (0 kernel / 1 memcpy
  / 2 memset), kind (index into ``KIND_NAMES``: gemm, elementwise, reduction, memcpy, memset,
  communication, other), ts_us, dur_us, device, stream, corr, ext, bytes, file, launch, op,
  scope, step.
- ``trace.launches`` (Launches) — CPU calls that queue GPU work: name, ts_us, dur_us, pid,
  tid, file, corr, ext, op, kernel (first GPU activity, -1), n_gpu, scope, step.
- ``trace.scopes`` (Scopes) — ``record_function`` ranges named ``<scope_prefix>...``: name,
  ts_us, dur_us, pid, tid, file, parent, depth, step.
- ``trace.annotations`` (Annotations) — other record_function ranges: name, ts_us, dur_us,
  pid, tid, file, step.
- ``trace.steps`` (Steps) — ``ProfilerStep#N`` windows in time order: number, name, ts_us,
  dur_us, pid, tid, file, gpu_ts_us, gpu_end_us.
- ``trace.memory`` (Memory) — ``[memory]`` allocator events: ts_us, bytes, total_allocated,
  total_reserved, device_type (0 CPU, 1 CUDA, 6 HIP as recorded), device_id, pid, tid, file,
  step.

Also on Trace: ``device`` ("cuda" | "rocm" | "cpu"), ``files``, ``meta`` (per file: small
top-level keys such as displayTimeUnit, distributedInfo, device names), ``counts`` (events,
runtime_calls, gpu_unlinked, kernels_unlinked = kernels whose launch is not in the trace),
``step_numbers()``, ``for_step(n)``, ``summary()``.

Links: launch <-> GPU activity by correlation id; launch -> innermost enclosing op on its
thread (fallback: same External id); kernel -> its launch's op, scope and step; op -> scope by
the innermost enclosing scope on its thread; backward op -> forward op by sequence number
(``fwd_op``, see ``autograd``); ``effective_scope(trace)`` gives each op its own scope or its
forward op's. Rows -> step by the step window of the same process (unlinked kernels: by the
step's GPU window).

Schema variants (2021 legacy categories, HIP and driver launch APIs, ``External id`` /
``external id``, ``displayTimeUnit``) are normalised in ``schema`` and ``builder`` only.
"""

from .errors import TraceError
from .load import load_trace
from .schema import (CAT_KERNEL, CAT_MEMCPY, CAT_MEMSET, DEFAULT_SCOPE_PREFIX, GPU_CAT_NAMES,
                     KIND_NAMES, LAUNCH_APIS, kernel_kind)
from .select import effective_scope, for_step, kernel_effective_scope, parse_dims
from .tables import (Annotations, Kernels, Launches, Memory, Ops, Scopes, Steps, Trace)

__all__ = [
    "TraceError", "load_trace", "Trace", "Ops", "Kernels", "Launches", "Scopes",
    "Annotations", "Steps", "Memory", "for_step", "effective_scope", "kernel_effective_scope",
    "parse_dims", "KIND_NAMES", "GPU_CAT_NAMES", "CAT_KERNEL", "CAT_MEMCPY", "CAT_MEMSET",
    "LAUNCH_APIS", "DEFAULT_SCOPE_PREFIX", "kernel_kind",
]
