"""Checkpoints of an unfinished capture, and continuing one (``--resume``).

While a run goes on, ``facts.json`` is rewritten (atomically, ``fileio.write_json``) at every
consistent point: when it starts, after the warm-up, the accounting and the calibration, and
after every timed round and every profiled round. Such a file has ``"status": "running"`` and a
``progress`` block (what is done, what the run was doing, the command's options). So whatever
stops the run — Ctrl-C, SIGTERM, ``kill -9``, a power loss — the last complete round is on disk.

On SIGINT/SIGTERM (``runstate.RunInterrupted``) capture calls ``Checkpoint.interrupted``: the
facts of the last consistent point are written again with ``"status": "interrupted"``, the
signal and where the run was; the trace files of a profiled round that did not finish are
removed (it is recorded again on resume). Timed steps of an unfinished round are dropped too:
the i-th samples of all modes must come from the same round to be paired.

Resuming (``Checkpoint(previous=facts)``) keeps, from the interrupted facts: every finished
timed round's samples (step, phase and page-fault samples) of every mode, every finished
profiled round's trace files (and their page faults, CUDA peak memory), the accounting
(memory, saved activations, trainable parameters), the calibration of the profiler's cost when
it was finished, and modes that had failed. It redoes: building the model and batch (from the
same preset or model file and seed: the weights restart from their initial values, which a step's
time does not depend on, and so do the optimizers' states), the warm-up rounds (the new
process's allocator and caches must settle before anything is timed), what each ablation
variant changed (measured at the end of every run), the losses of the modes it runs again. A
resumed run's facts list each resumption in ``resumed``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ..fileio import finite, write_json
from ..runstate import COMPLETE, INTERRUPTED, RUNNING, deferred, signal_name

FACTS_NAME = "facts.json"
# profiler output written by capture: <mode>.<ns>.pt.trace.json[.gz], and its temporary files
_TRACE_FILE = re.compile(r"^\.?[^/]+\.\d+\.pt\.trace\.json(\.gz)?(\.tmp)*$")


class ResumeError(ValueError):
    """A run folder that cannot be resumed; ``str()`` names the folder and the fix."""


# The parts of the facts a resumed run must share with the run it continues.
_SAME_WORKLOAD = ("name", "source", "path", "arch", "config", "batch_size", "seq_len", "dtype",
                  "total_params", "batch")
_SAME_ADAPTERS = ("source", "modules", "count", "rank", "alpha", "dropout", "trainable_params")
_SAME_ENVIRONMENT = ("device", "device_name", "gpu_name", "torch", "cuda", "hip")
_SAME_SETTINGS = ("modes", "variants", "warmup_steps", "steps", "block", "timed_rounds", "seed",
                  "lr", "profile")


class Checkpoint:
    """Writes a run's facts as it goes, and carries what a resumed run continues from.

    Args:
        out_dir: the run folder.
        args: JSON-serialisable options of the command that started the run, stored in
            ``progress.args`` so that ``--resume`` can rebuild the same run (None: not stored).
        previous: the facts of the interrupted run to continue (``--resume``), else None.
    """

    def __init__(self, out_dir: str | os.PathLike, args: Optional[dict] = None,
                 previous: Optional[dict] = None):
        self.out_dir = Path(out_dir)
        self.args = args
        self.previous = previous
        self.progress: dict = {
            "phase": "setup", "at": "setup", "signal": None, "pid": os.getpid(),
            "warmup_done": False, "accounting_done": False,
            "calibration_wanted": False, "calibration_done": False,
            "timed_rounds_done": 0, "timed_rounds": 0,
            "profiled_rounds_done": 0, "profiled_rounds": 0,
        }
        self.last: Optional[dict] = None  # the facts as last written (a copy)
        self.resumed: list = list((previous or {}).get("resumed") or [])

    # --- while the run goes on ---------------------------------------------------------------

    def start(self, timed_rounds: int, profiled_rounds: int, calibration_wanted: bool) -> None:
        """The run's size; with ``previous``, the counters of what it finished."""
        p = self.progress
        p.update(timed_rounds=timed_rounds, profiled_rounds=profiled_rounds,
                 calibration_wanted=calibration_wanted)
        if self.previous is not None:
            old = self.previous.get("progress") or {}
            for key in ("accounting_done", "calibration_done", "timed_rounds_done",
                        "profiled_rounds_done"):
                p[key] = old.get(key, p[key])
            self.resumed.append({
                "at": _now(), "after": _where(old),
                "kept": {"timed_rounds": p["timed_rounds_done"],
                         "profiled_rounds": p["profiled_rounds_done"],
                         "accounting": bool(p["accounting_done"]),
                         "calibration": bool(p["calibration_done"])},
            })

    def at(self, phase: str, where: str) -> None:
        """What the run is doing now (recorded if it is interrupted)."""
        self.progress["phase"] = phase
        self.progress["at"] = where

    def save(self, facts: dict, **done: Any) -> None:
        """Record progress (``done``: counters such as ``timed_rounds_done=3``) and write
        ``facts`` with ``"status": "running"``: the run's last consistent point."""
        self.progress.update(done)
        self._write(facts, RUNNING)

    def interrupted(self, signum: Optional[int], error: Optional[str] = None) -> dict:
        """Write the facts of the last consistent point with ``"status": "interrupted"``, the
        signal (None when another rank's failure stopped the run: ``error`` says which) and where
        the run was; remove trace files no finished round lists. Returns the facts written (None
        when the run had not reached its first checkpoint)."""
        with deferred():  # a second signal waits until the facts are safe
            self.progress["signal"] = signal_name(signum)
            if self.last is None:
                return None
            facts = copy.deepcopy(self.last)
            facts["progress"].update(signal=self.progress["signal"], phase=self.progress["phase"],
                                     at=self.progress["at"])
            if error is not None:
                facts["progress"]["error"] = error
            facts["status"] = INTERRUPTED
            write_json(self.out_dir / FACTS_NAME, facts)
            drop_unlisted_traces(self.out_dir, facts)
            self.last = facts
            return facts

    def finish(self, facts: dict) -> dict:
        """Write the final facts (``"status": "complete"``, ``resumed`` when it was)."""
        facts = dict(facts)
        facts["status"] = COMPLETE
        if self.resumed:
            facts["resumed"] = self.resumed
        with deferred():
            write_json(self.out_dir / FACTS_NAME, facts)
        return facts

    def _write(self, facts: dict, status: str) -> None:
        facts = dict(facts)
        facts["status"] = status
        progress = dict(self.progress)
        if self.args is not None:
            progress["args"] = self.args
        facts["progress"] = progress
        if self.resumed:
            facts["resumed"] = self.resumed
        facts = json.loads(json.dumps(finite(facts)))  # a copy: later rounds change the lists
        with deferred():
            write_json(self.out_dir / FACTS_NAME, facts)
        self.last = facts

    # --- resuming -----------------------------------------------------------------------------

    def check(self, workload: dict, adapters: dict, environment: dict, settings: dict) -> None:
        """Raise ResumeError unless the run being resumed measured the same thing on the same
        kind of machine (same workload, adapters, device, torch, settings)."""
        prev = self.previous
        if prev is None:
            return
        for label, new, old, keys in (
                ("the workload", workload, prev.get("workload") or {}, _SAME_WORKLOAD),
                ("the adapters", adapters, prev.get("adapters") or {}, _SAME_ADAPTERS),
                ("the machine", environment, prev.get("environment") or {}, _SAME_ENVIRONMENT),
                ("the settings", settings, prev.get("settings") or {}, _SAME_SETTINGS)):
            for key in keys:
                a, b = _norm(old.get(key)), _norm(new.get(key))
                if a != b:
                    raise ResumeError(
                        f"{self.out_dir}: cannot resume: {label} differ from the interrupted "
                        f"run's ({key}: {_short(a)} then, {_short(b)} now; was the model file "
                        "changed, or is this another machine?); start a new run with another --out")

    def restore(self, results: dict, samples: dict, phases: dict, faults: dict,
                losses: dict) -> Optional[dict]:
        """Fill capture's state with what the interrupted run finished; returns its calibration
        (None when it was not finished)."""
        prev = self.previous or {}
        modes = prev.get("modes") or {}
        missing = sorted(set(results) - set(modes))
        if missing:
            raise ResumeError(f"{self.out_dir}: cannot resume: the interrupted run has no "
                              f"{', '.join(missing)}; start a new run")
        for mode, res in results.items():
            old = modes[mode]
            if old.get("status") == "failed":
                res.update(status="failed", error=old.get("error"))
            for key in ("trainable_params", "trainable_shapes", "memory", "saved_activations",
                        "trace_files"):
                if old.get(key) is not None:
                    res[key] = copy.deepcopy(old[key])
            pf = old.get("page_faults") or {}
            if pf.get("profiled"):
                res["_pf"] = copy.deepcopy(pf["profiled"])
            if old.get("gpu_samples"):
                res["_gpu"] = [old["gpu_samples"]]
            if mode in samples:
                samples[mode][:] = list((old.get("step_time_s") or {}).get("samples") or [])
                for p, v in (old.get("phase_samples_s") or {}).items():
                    if p in phases[mode]:
                        phases[mode][p][:] = v
                for p, v in (pf.get("timed") or {}).items():
                    if p in faults[mode]:
                        faults[mode][p][:] = v
            if old.get("loss") is not None:
                losses[mode] = old["loss"]
        drop_unlisted_traces(self.out_dir, prev)
        return prev.get("calibration") if self.progress["calibration_done"] else None


def drop_unlisted_traces(out_dir: Path, facts: dict) -> list:
    """Remove capture's trace files (and temporary files) in ``out_dir/tb/<mode>/`` that no
    mode of ``facts`` lists: those of a profiled round that did not finish. Returns them."""
    listed = {f for e in (facts.get("modes") or {}).values() for f in e.get("trace_files") or []}
    for rank in (facts.get("distributed") or {}).get("ranks") or []:  # the other ranks' traces
        listed.update(f for e in (rank or {}).get("modes", {}).values() for f in e.get("trace_files") or [])
    gone = []
    tb = Path(out_dir) / "tb"
    for folder in sorted(tb.iterdir()) if tb.is_dir() else []:
        if not folder.is_dir() or folder.name == "scalars":
            continue
        for f in sorted(folder.iterdir()):
            rel = f"tb/{folder.name}/{f.name}"
            if f.is_file() and rel not in listed and _TRACE_FILE.match(f.name):
                try:
                    f.unlink()
                    gone.append(rel)
                except OSError:
                    pass
    return gone


def mark_interrupted(out_dir: str | os.PathLike, signum: int) -> Optional[dict]:
    """If ``out_dir/facts.json`` still says ``running`` (the run stopped before capture could
    write its interrupted facts), rewrite it as interrupted by ``signum``. Returns the facts
    (None without a readable facts.json)."""
    path = Path(out_dir) / FACTS_NAME
    try:
        facts = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(facts, dict) or facts.get("status") != RUNNING:
        return facts if isinstance(facts, dict) else None
    facts["status"] = INTERRUPTED
    facts.setdefault("progress", {})["signal"] = signal_name(signum)
    with deferred():
        write_json(path, facts)
        drop_unlisted_traces(Path(out_dir), facts)
    return facts


def load_previous(out_dir: str | os.PathLike) -> dict:
    """The facts of the run in ``out_dir`` that ``--resume`` continues.

    Raises:
        ResumeError: no folder, no facts, unreadable facts.
    """
    out_dir = Path(out_dir)
    path = out_dir / FACTS_NAME
    if not out_dir.is_dir():
        raise ResumeError(f"--resume {out_dir}: no such folder; give the folder of the run to continue")
    if not path.is_file():
        raise ResumeError(f"--resume {out_dir}: no facts.json (the run was stopped before it "
                          "measured anything); start a new run")
    try:
        facts = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{path}: unreadable ({exc}); start a new run") from None
    if not isinstance(facts, dict) or facts.get("kind") != "lora_profiler.facts":
        raise ResumeError(f"{path}: not a lora_profiler facts file; --resume takes a run folder")
    return facts


def _where(progress: dict) -> str:
    sig = progress.get("signal")
    at = progress.get("at") or "?"
    return f"{sig} during {at}" if sig else f"stopped during {at}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(finite(v), sort_keys=True))


def _short(v: Any) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."
