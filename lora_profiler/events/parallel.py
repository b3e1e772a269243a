"""Worker processes that decode batches of a large trace beside the reading process.

Reading a trace is CPU-bound Python (the msgspec decode of each batch and the loop that turns
its events into rows, ``typed.py``): one core does it at about 1.7 us per event. On a machine
with more cores, ``load_trace`` hands some batches to forked workers while it reads the others
itself, and merges every batch's rows in file order, so the tables are the same as one
process would build, bit for bit (``tests/events/test_events_parallel.py``).

How a batch travels: the reader cuts the text of a batch (``jsonstream``) and checks that the
cut falls between two events with msgspec's ``Raw`` decoder (a validation pass, ~5x cheaper
than decoding); it sends the worker only the cut's character offsets. The worker reads and
inflates the same file itself (after checking it opened the file the reader has open: device,
inode, size, mtime), decodes the batch into typed structs and runs the typed loop with its own
name table; its rows come back with the names they use, which the reader interns into the
shared table in the batch's order (``builder``). A batch the typed loop does not take (a
malformed event, a string pid) comes back as "not taken" and the reader reads it itself, the
way it reads any batch. Once the file is read, batches a worker has not sent back are taken
back by the reader, the newest first. A worker that dies or cannot start is not an error: its
batches are read by the reader. The workers are plain ``os.fork`` children talking over two
pipes (no multiprocessing: no import or exit cost), ended and reaped by ``Pool.close``.

Only with msgspec installed, on Linux, from a process holding less than 2 GiB (not one with a
model in memory), and only for traces of more than ~1 MiB of text (starting a worker costs a
few ms). ``LORA_PROFILER_WORKERS`` sets the number of workers (``0`` reads in one process;
at most 32; a value that is not a number reads in one process); the default is the CPUs this
process may use, less one, at most 3.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import sys
import time
import warnings
from array import array
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

WINDOW = 3          # batches handed to one worker and not yet read by it
START_AFTER = 1     # fast-path batches (~1 MiB of text each) read before the first worker
                    # starts: a trace of a few thousand events is read without one
MAX_WORKERS = 3
BIG_FILE = 1 << 20      # bytes on disk (gzip: ~15 MiB of text): workers from the first batch
MAX_FORK_RSS = 2 << 30  # no workers from a process holding more (e.g. a model): forking it costs


class BatchRows:
    """One batch's rows, with name ids local to the batch (``names`` in first-seen order)."""

    __slots__ = ("n", "names", "bufs", "ignored", "other_ph")

    def __init__(self, n: int, names: List[str], bufs: Tuple[array, ...],
                 ignored: Dict[str, int], other_ph: Dict[Any, int]):
        self.n = n
        self.names = names
        self.bufs = bufs
        self.ignored = ignored
        self.other_ph = other_ph


def _no_ident(x, ids):
    raise ValueError("a pid/tid that is not an int: the reader reads this batch itself")


def batch_rows(batch: list) -> Optional[BatchRows]:
    """The typed loop on one batch of structs with a name table of its own; None when the loop
    does not take the batch (the reader then reads it as it reads any batch)."""
    from .typed import rows

    bufs = tuple(array("d") for _ in range(6))
    names: Dict[str, int] = {}
    ignored: Dict[str, int] = {}
    other_ph: Dict[Any, int] = {}
    if not rows(batch, bufs, names, {}, ignored, other_ph, _no_ident):
        return None
    return BatchRows(len(batch), list(names), bufs, ignored, other_ph)


def workers_wanted() -> int:
    """How many workers ``load_trace`` may start (0: read in this process only)."""
    from . import fast

    if fast.MSGSPEC is None or sys.platform != "linux":
        return 0
    env = os.environ.get("LORA_PROFILER_WORKERS", "").strip()
    if env:
        try:
            return min(max(0, int(env)), 32)   # a typo of 1000 does not fork 1000 processes
        except ValueError:
            return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, MAX_WORKERS))


class _Channel:
    """Length-prefixed pickled messages over a pair of pipes (what a worker and the reader say
    to each other); ``poll`` tells whether a message has begun to arrive."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd = rfd, wfd

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(struct.pack("!Q", len(data)) + data)
        while view:
            view = view[os.write(self.wfd, view):]

    def recv(self) -> Any:
        (size,) = struct.unpack("!Q", self._exactly(8))
        return pickle.loads(self._exactly(size))

    def _exactly(self, n: int) -> bytes:
        parts, left = [], n
        while left:
            got = os.read(self.rfd, min(left, 1 << 20))
            if not got:
                raise EOFError("the other end closed the pipe")
            parts.append(got)
            left -= len(got)
        return b"".join(parts)

    def poll(self) -> bool:
        return bool(select.select([self.rfd], [], [], 0)[0])

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class _Worker:
    """One forked process: batches named by their place in the file in, their rows out (in the
    order asked; each batch is known by its sequence number)."""

    def __init__(self):
        down_r, down_w = os.pipe()    # reader -> worker
        up_r, up_w = os.pipe()        # worker -> reader
        with warnings.catch_warnings():  # fork beside a BLAS thread pool: the child uses none
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:                  # the worker
            code = 1
            try:
                os.close(down_w)
                os.close(up_r)
                _serve(_Channel(down_r, up_w))
                code = 0
            finally:
                os._exit(code)        # no atexit handlers, no flushing the reader's buffers
        os.close(down_r)
        os.close(up_w)
        self.pid = pid
        self.conn = _Channel(up_r, down_w)
        self.sent = 0              # batches submitted (the next one's sequence number)
        self.got = 0               # batches whose rows have arrived
        self.inbox: Dict[int, Optional[BatchRows]] = {}   # arrived, not yet taken
        self.dropped: set = set()  # batches the reader read itself: their rows are not wanted
        self.alive = True
        self.file: Any = None
        self.read = 0              # batches read by the worker and merged (not dropped)
        self.peak_rss_kib = 0

    @property
    def busy(self) -> int:
        """Batches submitted whose rows have not arrived yet."""
        return self.sent - self.got

    def submit(self, path, opened, start: int, end: int) -> Optional[int]:
        """Ask for the rows of characters ``start:end`` of ``path`` (the file whose fstat is
        ``opened``): a few bytes down the pipe, so this never waits on a busy worker. Returns
        the batch's sequence number (None if the worker is gone)."""
        try:
            if self.file != (path, opened):
                self.conn.send(("file", str(path), _identity(opened)))
                self.file = (path, opened)
            self.conn.send(("batch", start, end))
        except (OSError, ValueError, pickle.PicklingError):
            self.alive = False
            return None
        self.sent += 1
        return self.sent - 1

    def collect(self) -> None:
        """Take in the rows that have arrived."""
        try:
            while self.busy and self.alive and self.conn.poll():
                self._receive()
        except (OSError, ValueError):
            self.alive = False

    def _receive(self) -> None:
        seq = self.got
        self.got += 1
        try:
            rows, rss_kib = self.conn.recv()
            self.peak_rss_kib = max(self.peak_rss_kib, int(rss_kib))
        except (EOFError, OSError, ValueError, TypeError, struct.error, pickle.UnpicklingError,
                AttributeError):
            self.alive = False
            rows = None
        if seq in self.dropped:
            self.dropped.discard(seq)
        else:
            self.inbox[seq] = rows

    def ready(self, seq: int) -> bool:
        """Whether batch ``seq``'s rows are here (or will never come)."""
        if seq not in self.inbox:
            self.collect()
        return seq in self.inbox or not self.alive

    def result(self, seq: int) -> Optional[BatchRows]:
        """Batch ``seq``'s rows (waiting for them); None when the worker did not read it."""
        while seq not in self.inbox and self.alive and self.got <= seq:
            self._receive()
        got = self.inbox.pop(seq, None)
        self.read += got is not None
        return got

    def drop(self, seq: int) -> None:
        """Batch ``seq`` is read by the reader: forget its rows, now or when they arrive."""
        if self.inbox.pop(seq, 0) == 0 and self.got <= seq:
            self.dropped.add(seq)

    def close(self) -> None:
        """End the worker now: rows still on their way are not wanted (batches taken back, or
        an error upstream), so a busy worker is killed rather than waited for."""
        if self.alive and not self.busy:
            try:
                self.conn.send(("end",))
            except OSError:
                pass
        self.conn.close()             # an idle worker then ends on its own (end, or EOF)
        if self.busy:
            _kill(self.pid)
        _reap(self.pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _reap(pid: int, wait_s: float = 5.0) -> None:
    """Wait for the worker to end (killing it after ``wait_s``), so no zombie is left."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > deadline:
            _kill(pid)
            deadline = float("inf")
        time.sleep(0.001)


def _rss_bytes() -> int:
    """This process's resident memory (0 when unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _identity(st) -> tuple:
    """What tells one file from another that replaced it at the same path."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Pool:
    """The workers of one ``load_trace`` (started lazily, at the first batch handed out)."""

    def __init__(self, n_workers: int, start_after: Optional[int] = None):
        self.n_workers = n_workers
        self.start_after = START_AFTER if start_after is None else start_after
        self.seen = 0
        self.workers: List[_Worker] = []
        self.started = False

    def wants(self, file_bytes: int = 0) -> bool:
        """Whether the next fast-path batch should go to a worker (one has room). A file of
        ``BIG_FILE`` bytes or more has workers from its first batch on."""
        self.seen += 1
        if self.n_workers <= 0 or (self.seen <= self.start_after and file_bytes < BIG_FILE):
            return False
        if not self.started:
            self._start()
        for w in self.workers:
            w.collect()
        return any(w.alive and w.busy < WINDOW for w in self.workers)

    def _start(self) -> None:
        self.started = True
        if _rss_bytes() > MAX_FORK_RSS:
            return                        # forking a big process (a model in memory) costs more
        import resource  # noqa: F401 - imported before the fork: the workers need no import

        from . import typed  # noqa: F401
        try:
            for _ in range(self.n_workers):
                self.workers.append(_Worker())
        except Exception:  # noqa: BLE001 - no fork here (a sandbox, a resource limit):
            pass           # fewer workers (or none): the reader reads the rest

    def submit(self, path, opened, start: int, end: int) -> Optional[Tuple[_Worker, int]]:
        """Hand a batch to the least busy worker: (worker, sequence number); None when none
        took it."""
        live = [w for w in self.workers if w.alive and w.busy < WINDOW]
        if not live:
            return None
        w = min(live, key=lambda w: w.busy)
        seq = w.submit(path, opened, start, end)
        return (w, seq) if seq is not None else None

    def close(self) -> None:
        """Stop the workers; their figures go to ``LAST``."""
        for w in self.workers:
            w.close()
        LAST.update(workers=len(self.workers), pids=[w.pid for w in self.workers],
                    handed=sum(w.sent for w in self.workers),
                    read_by_workers=sum(w.read for w in self.workers),
                    peak_rss_kib=sum(w.peak_rss_kib for w in self.workers))
        self.workers = []


# The workers of the last ``load_trace`` in this process (benchmarks and tests read it):
# how many (and their pids, ended by now), batches handed to them, batches they read, and their
# peak RSS summed (KiB).
LAST: Dict[str, Any] = {}


def forget_last() -> None:
    """``LAST`` as for a load without workers (``load_trace`` starts from this)."""
    LAST.update(workers=0, pids=[], handed=0, read_by_workers=0, peak_rss_kib=0)


forget_last()


class _Text:
    """A worker's own reading of the file the reader reads: its characters in order."""

    def __init__(self, path: str, identity: tuple):
        from .files import iter_text

        opened: list = []
        self.chunks = iter_text(Path(path), opened)
        self.buf = next(self.chunks, "")
        if not opened or _identity(opened[0]) != identity:
            raise ValueError("not the file the reader has open")
        self.base = 0                     # file offset of buf[0], in characters

    def take(self, start: int, end: int) -> str:
        """Characters ``start:end`` of the file as a JSON array (in brackets)."""
        if start < self.base:
            raise ValueError("batches out of order")
        parts = ["["]
        while self.base + len(self.buf) < end:
            parts.append(self.buf[max(0, start - self.base):])
            self.base += len(self.buf)
            self.buf = next(self.chunks)
            start = max(start, self.base)
        cut = end - self.base
        parts += (self.buf[max(0, start - self.base):cut], "]")
        self.buf = self.buf[cut:]
        self.base = end
        return "".join(parts)


def _serve(conn) -> None:
    """A worker's loop: read the file alongside the reader; for each batch asked for, send
    back its rows (None when it cannot: the reader then reads that batch itself) and this
    process's peak RSS so far."""
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the reader's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the reader's handler is not ours
    from .typed import decode

    text: Optional[_Text] = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError, struct.error):
            return
        kind = msg[0]
        if kind == "file":
            try:
                text = _Text(msg[1], msg[2])
            except Exception:  # noqa: BLE001 - any trouble: the reader reads these batches
                text = None
        elif kind == "batch":
            got = None
            if text is not None:
                try:
                    batch = decode(text.take(msg[1], msg[2]))
                    got = batch_rows(batch) if batch is not None else None
                    del batch
                except Exception:  # noqa: BLE001
                    text = None
            try:
                conn.send((got, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
            except OSError:               # the reader is gone
                return
        else:
            return
