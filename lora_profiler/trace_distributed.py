"""One rank of ``torchrun --nproc_per_node N -m lora_profiler.trace ...`` (the command line's
distributed path; the measuring is ``capture.distributed``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .names import BASE_MODES as MODES
from .trace import (_DIST, UsageError, _build_workload, _finish, _stored_args, resolve_device,
                    resolve_out)
def run_distributed(args, held: list) -> tuple[int, dict]:
    """One rank of ``torchrun ... -m lora_profiler.trace`` (capture/distributed.py): rank 0
    chooses and locks the folder and writes the facts and the report; every rank measures."""
    from .capture.distributed import DistCheckpoint, DistContext, shard_batch
    from .capture.run import capture
    from .runlock import claim
    from .workload.batch import describe_batch
    from .workload.errors import WorkloadError

    if args.resume is not None:
        raise UsageError("--resume under torchrun: a distributed run is not resumed; start a new run")
    extra = [m for m in args.modes if m not in MODES]
    if extra or args.validate or args.predict:
        what = ", ".join(extra) or ("--validate" if args.validate else "--advise")
        raise UsageError(f"{what}: not supported under torchrun yet; run the base modes "
                         f"({', '.join(MODES)}) there, or run it in one process")
    if args.warmup < 0:
        raise UsageError(f"--warmup {args.warmup} must be 0 or more")
    device = resolve_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ctx = DistContext.start(device, wrap=args.wrap, timeout_s=args.dist_timeout)
    _DIST.append(ctx)
    lead = ctx.rank == 0
    problem = None
    out = args.out
    if lead:
        try:
            out = resolve_out(args.out)
            held.append(claim(out, auto=args.out is None))
            out = held[0].folder
        except (UsageError, ValueError) as exc:  # FolderError, LockError, WriteError: one line
            problem = str(exc)
    out, problem = ctx.broadcast((str(out), problem), "choosing the run folder")
    if problem:
        raise UsageError(problem)
    out = Path(out)
    try:
        workload = _build_workload(args, ctx.device)
    except WorkloadError as exc:
        raise UsageError(str(exc))
    try:
        ctx.global_batch_size = workload.batch_size
        workload.batch = shard_batch(workload.batch, workload.batch_size, ctx.rank, ctx.world_size)
    except ValueError as exc:
        raise UsageError(str(exc))
    workload.batch_size //= ctx.world_size
    workload.batch_info = describe_batch(workload.batch)
    from .api import capture_options

    options = capture_options(
        modes=args.modes, steps=args.steps, block=args.block, warmup=args.warmup,
        profile_steps=args.profile_steps, profile=not args.no_profile, validate=False,
        variants=None, calibrate=not args.no_calibrate, seed=args.seed, predict=False, cli=True)
    if lead and not args.quiet:
        print(f"lora_profiler: {workload.name} ({workload.facts()['total_params'] / 1e6:.1f}M params, "
              f"batch {ctx.global_batch_size} = {ctx.world_size} ranks x {workload.batch_size}, seq "
              f"{workload.seq_len}) on {ctx.world_size} x {ctx.device.type} ({ctx.backend}, {ctx.wrapper}); "
              f"writing {out}/", file=sys.stderr)
    facts = capture(workload, options, out, progress=lead and not args.quiet,
                    checkpoint=DistCheckpoint(ctx, out, args=_stored_args(args)), dist=ctx)
    del workload
    if not lead:
        return 0, {"out": str(out), "rank": ctx.rank}
    from .report.build import build_report

    report = build_report(out, figures=not args.no_figures)
    report["elapsed_s"] = time.perf_counter() - started
    return _finish(args, out, facts, report)
