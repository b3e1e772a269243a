"""A run's status (running, interrupted, complete) and how a run is interrupted (torch-free).

``python -m lora_profiler.trace`` runs inside ``interrupts()``: SIGINT (Ctrl-C) and SIGTERM
raise ``RunInterrupted`` in the main thread, a ``KeyboardInterrupt`` that carries the signal.
Capture catches it, writes the facts measured so far with ``"status": "interrupted"`` and
re-raises; the command builds the report from what exists and exits 128 + the signal's number
(130 for SIGINT, 143 for SIGTERM). Writes that must not be cut short run inside ``deferred()``:
a signal arriving meanwhile is delivered when they are done.

``incomplete_line(facts)`` is the one line a report prints for a run that did not finish.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Optional

RUNNING, INTERRUPTED, COMPLETE = "running", "interrupted", "complete"
STATUSES = (RUNNING, INTERRUPTED, COMPLETE)
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list = []  # signal numbers received inside interrupts(), first first


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which, ``exit_status`` is 128 + it."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal_name(signum))
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def signal_name(signum: Optional[int]) -> Optional[str]:
    """'SIGINT' for 2, ...; None for None."""
    if signum is None:
        return None
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def received() -> Optional[int]:
    """The first signal received inside ``interrupts()`` (None if none): true from the moment
    the run starts stopping, even when the exception it raised was replaced by another on the
    way up."""
    return _received[0] if _received else None


def signum_of(exc: BaseException) -> int:
    """The signal behind an interruption: RunInterrupted's, else one received, else SIGINT (a
    plain KeyboardInterrupt, e.g. in a notebook)."""
    if isinstance(exc, RunInterrupted):
        return exc.signum
    return received() or int(signal.SIGINT)


def _handler(signum, frame) -> None:
    _received.append(signum)
    raise RunInterrupted(signum)


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise RunInterrupted inside the block (main thread only; elsewhere
    the block runs with the handlers it found)."""
    del _received[:]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (a checkpoint being written); one that
    arrived meanwhile is handled right after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def is_complete(facts: dict) -> bool:
    """Facts of a finished capture (facts without a status were written before statuses
    existed, by a run that finished)."""
    return facts.get("status", COMPLETE) == COMPLETE


def missing(progress: dict) -> list:
    """What an unfinished run has not measured yet, in words, from its ``progress``."""
    out = []
    if not progress.get("accounting_done"):
        out.append("memory and saved activations")
    if progress.get("calibration_wanted") and not progress.get("calibration_done"):
        out.append("the profiler-cost calibration")
    done, total = progress.get("timed_rounds_done", 0), progress.get("timed_rounds", 0)
    if done < total:
        out.append(f"timed rounds {_span(done + 1, total)} of {total} (every mode's steps in them)")
    done, total = progress.get("profiled_rounds_done", 0), progress.get("profiled_rounds", 0)
    if done < total:
        out.append(f"profiled rounds {_span(done + 1, total)} of {total} (their traces)")
    return out


def _span(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a}–{b}"


def incomplete_line(facts: dict, out: Optional[str] = None) -> Optional[str]:
    """One line saying that the run did not finish, where it stopped and which numbers are
    missing; None for a complete run."""
    if is_complete(facts):
        return None
    prog = facts.get("progress") or {}
    status = facts.get("status")
    how = f"interrupted by {prog['signal']}" if prog.get("signal") else (
        f"stopped ({prog['error']})" if prog.get("error") else
        "interrupted" if status == INTERRUPTED else "still running, or killed")
    at = f" during {prog['at']}" if prog.get("at") else ""
    gone = missing(prog)
    what = f"; missing: {', '.join(gone)}" if gone else "; every measurement was taken"
    if facts.get("distributed"):  # a multi-rank run is not resumed (see capture/distributed.py)
        return f"run {how}{at}{what}; start a new run to measure the rest"
    resume = f"python -m lora_profiler.trace --resume {out or '<run folder>'}"
    return f"run {how}{at}{what}; {resume} finishes it"
