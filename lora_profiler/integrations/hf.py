"""``LoraProfilerCallback``: profile the Hugging Face ``Trainer`` loop a user already runs.

    trainer = Trainer(model=peft_model, args=args, train_dataset=ds,
                      callbacks=[LoraProfilerCallback(out="runs/sft")])
    trainer.train()          # runs/sft/report.md, report.json, figures, tb/ — as `trace` writes

What it does, from ``start_step`` on (the steps before pass untouched), on the loop's own steps:

1. ``setup``: one step whose micro-batches find the frozen floor (a dry forward, RNG kept) and,
   with ``full=True``, the copy for full fine-tuning when memory allows.
2. timed rounds: one untimed switch-in step, then up to ``block`` timed steps of the loop — no
   profiler, no hooks: phases from the Trainer's callbacks (``LoopClock``) — then the same
   micro-batches replayed as the frozen floor (an untimed switch-in replay, then one timed replay
   per timed step, in order: the i-th floor sample ran the i-th lora step's batches) and, with
   ``full=True``, as full fine-tuning steps on the copy.
3. profiled rounds, spread among the timed ones as in ``trace``: the capture hooks
   (``ModuleHooks``) installed, one profiler session over two loop steps (a warm-up step, then the
   recorded step), then a session of the floor over the recorded step's batches (a warm-up
   replay, then the recorded replay), and of full fine-tuning. Before the first, the profiler's
   cost is calibrated (``capture.calibrate``); in the first, one accounting forward per mode
   counts the saved activations.
4. facts.json and the report (``report.build.build_report``), as soon as the window is done.

Every replay runs between two steps of the loop inside a ``RunState`` snapshot: RNG (Python,
numpy, torch CPU and CUDA), ``requires_grad``, gradients, adapters' switches, train/eval flags,
buffers and the trainer's attributes are put back, and the optimizer, LR scheduler and
gradient-accumulation state are never touched, so training continues as if unobserved.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from transformers import Trainer, TrainerCallback

from ..capture.calibrate import calibrate as calibrate_profiler
from ..capture.hooks import ModuleHooks
from ..capture.run import ProfileSchedule, _trace_writer, environment, profile_positions, time_stats
from ..capture.saved import measure_saved
from ..capture.step import ModeFailure, as_failure
from ..fileio import write_json
from ..names import PHASES
from ..units import fmt_s
from ..workload.adapters import Adapters, find_adapters
from ..workload.floor import InputGrad
from ..workload.modes import switch_mode
from . import facts as F
from .loop import LoopClock, StepRecord
from .replay import FloorReplay, FullReplay, TrainerLoss, full_memory, prepared, trainer_workload
from .state import RunState, rng_state, set_rng_state

SWITCH, SETUP, TIMED, WARMUP, PROFILED = "switch", "setup", "timed", "profile_warmup", "profiled"


def window_plan(steps: int, block: int, profile_steps: int) -> list[tuple[str, int]]:
    """(kind, round) of each loop step of the observed window, in order (see the module doc)."""
    n_rounds = -(-steps // block)
    after = profile_positions(n_rounds, profile_steps) if profile_steps else []
    plan = [(SETUP, -1)]
    for r in range(n_rounds):
        plan.append((SWITCH, r))
        plan += [(TIMED, r)] * min(block, steps - r * block)
        plan += [x for p, pos in enumerate(after) if pos == r for x in ((WARMUP, p), (PROFILED, p))]
    return plan


def _find_trainer() -> Optional[Trainer]:
    """The Trainer whose callback handler is calling us (found on the call stack)."""
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            break
        obj = frame.f_locals.get("self")
        if isinstance(obj, Trainer):
            return obj
        frame = frame.f_back
    return None


class _Session:
    """One profiler session of ``trace``'s layout: a warm-up step, then one recorded step, its
    ``ProfilerStep#`` numbered after ``rnd`` earlier rounds, written to ``OUT/tb/<mode>/``."""

    def __init__(self, out: Path, mode: str, rnd: int, cuda: bool):
        from torch.profiler import ProfilerActivity, profile, schedule

        self.out, self.folder = out, out / "tb" / mode
        self.folder.mkdir(parents=True, exist_ok=True)
        self.before = set(self.folder.iterdir())
        sched = ProfileSchedule(wait=0, warmup=1, active=1)
        self.skip = rnd * sched.steps_per_round
        self.prof = profile(
            activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []),
            schedule=schedule(wait=0, warmup=1, active=1, repeat=1, skip_first=self.skip),
            on_trace_ready=_trace_writer(self.folder, mode, True),
            record_shapes=True, profile_memory=True, with_stack=False)
        self.open = False

    def start(self) -> None:
        self.prof.__enter__()
        self.open = True
        for _ in range(self.skip):  # nothing runs or is recorded: the step counter moves on
            self.prof.step()

    def step(self) -> None:
        self.prof.step()

    def stop(self) -> list[str]:
        if self.open:
            self.open = False
            self.prof.__exit__(None, None, None)
        return sorted(str(p.relative_to(self.out)) for p in set(self.folder.iterdir()) - self.before)


class LoraProfilerCallback(TrainerCallback):
    """Profile LoRA's overhead on a ``transformers.Trainer``'s own steps (see the module doc).

    Args:
        out: the run folder (created; an existing non-empty folder is refused). None:
            ``runs/<timestamp>``.
        start_step: loop steps left alone before observing (warm-up: allocator, caches, compile).
        steps: timed loop steps (and as many floor replays), in rounds of ``block``.
        block: timed steps per round (each round starts with an untimed switch-in step).
        profile_steps: profiled rounds (each takes two loop steps); 0: none (no attribution).
        floor: replay the timed and profiled steps' batches as the frozen floor.
        full: replay them as full fine-tuning on a copy of the model (memory: the copy, its
            gradients and optimizer state); skipped, with the reason, when it would not fit.
        calibrate: measure the profiler's own cost before profiling (~3 s).
        report: build report.json/md (and the figures) when the window is done.
        figures: draw the report's figures.
        verbose: print a summary (stderr) when the report is written.

    Attributes:
        facts: the facts written (None until then). report: the report (None until built).
        out: the run folder. costs: seconds the callback spent on its own work, by kind.
    """

    def __init__(self, out: Optional[str | os.PathLike] = None, start_step: int = 5, steps: int = 12,
                 block: int = 3, profile_steps: int = 2, floor: bool = True, full: bool = False,
                 calibrate: bool = True, report: bool = True, figures: bool = True, verbose: bool = True):
        from ..trace import UsageError, resolve_out

        if start_step < 0 or steps < 1 or block < 1 or profile_steps < 0:
            raise ValueError("LoraProfilerCallback: start_step >= 0, steps >= 1, block >= 1 and "
                             f"profile_steps >= 0 (got {start_step}, {steps}, {block}, {profile_steps})")
        try:
            self.out = resolve_out(Path(out) if out is not None else None)
        except UsageError as exc:
            raise ValueError(f"LoraProfilerCallback: {str(exc).replace('--out ', 'out=')}") from None
        self.start_step, self.steps, self.block, self.profile_steps = start_step, steps, block, profile_steps
        self.floor, self.full, self.calibrate = floor, full, calibrate
        self.build, self.figures, self.verbose = report, figures, verbose
        self.plan = window_plan(steps, block, profile_steps)
        self.facts: Optional[dict] = None
        self.report: Optional[dict] = None
        self.costs: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        self.trainer = None
        self.state = "idle"  # idle | watching | done | off
        self.first_step = 0
        self.clock: Optional[LoopClock] = None
        self.records: dict[str, list[StepRecord]] = {k: [] for k in (SWITCH, TIMED, WARMUP, PROFILED)}
        self.round_steps: list[StepRecord] = []
        self.samples: dict[str, list] = {"lora": [], "frozen": [], "full": []}  # (phases, faults) per timed step
        self.pfaults: dict[str, dict] = {}
        self.losses: dict[str, Optional[float]] = {}
        self.status: dict[str, tuple[str, Optional[str]]] = {}
        self.traces: dict[str, list] = {"lora": [], "frozen": [], "full": []}
        self.saved: dict[str, dict] = {}
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.workload = self.floor_replay = self.full_replay = self.input_grad = None
        self.hooks: Optional[ModuleHooks] = None
        self.session: Optional[_Session] = None
        self.calibration = None
        self.profiling = self.profile_steps > 0
        self.full_info: dict = {"status": "not requested", "reason": "full=False (the default: a copy of the "
                                "model, its gradients and optimizer state need memory)"}

    # -- the Trainer's events ---------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._reset()
        if self.out.is_dir() and any(self.out.iterdir()):
            return self._off(f"{self.out} already holds a run (one folder per training run); give the "
                             "callback a new out")
        trainer = _find_trainer()
        if trainer is None:
            return self._off("no transformers.Trainer found calling this callback")
        if (getattr(args, "world_size", 1) or 1) > 1:
            return self._off("distributed training: the callback measures single-process runs only")
        self.trainer = trainer
        try:
            self.adapters = find_adapters(trainer.model)
        except ValueError as exc:
            return self._off(str(exc))
        self.mode = "lora" if self.adapters is not None else "full"
        if self.adapters is None:
            self.notes.append("no adapters found in the model: the loop's steps are recorded as full fine-tuning "
                              "(mode full); there is no LoRA overhead to attribute")
        self.trainable = [p for p in dict.fromkeys(trainer.model.parameters()) if p.requires_grad]
        self.cuda = torch.device(args.device).type == "cuda"
        sync = (lambda: torch.cuda.synchronize(args.device)) if self.cuda else None
        self.clock = LoopClock(trainer, sync)
        self.clock.has_optimizer_events = hasattr(TrainerCallback, "on_optimizer_step") and \
            hasattr(TrainerCallback, "on_pre_optimizer_step")
        self.compute_loss = trainer.compute_loss  # the original, before the clock wraps it
        self.compiled = bool(getattr(args, "torch_compile", False))
        self.first_step = max(self.start_step, state.global_step)
        self.clock.install()
        self.state = "watching"
        self.started = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        kind, rnd = self._kind(state)
        if kind is None:
            return
        try:
            if kind == WARMUP and self.profiling:
                t0 = time.perf_counter()
                if not self.compiled:
                    self.hooks = ModuleHooks(self.trainer.model, self.adapters)
                self.session = _Session(self.out, self.mode, rnd, self.cuda)
                self.session.start()
                self._cost("profiling", t0)
            elif kind == PROFILED and self.session is not None:
                t0 = time.perf_counter()
                self.session.step()  # the recorded step begins
                self._cost("profiling", t0)
        except Exception as exc:  # never break the user's training
            self._fail_profiling(exc)
        self.clock.keep_batches = kind in (SETUP, TIMED, PROFILED)
        self.clock.keep_loss = kind == TIMED
        self.clock.begin(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.clock is not None:
            self.clock.pre_optimizer()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.clock is not None:
            self.clock.optimizer_done()

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock is None or self.clock.current is None:
            return
        rec = self.clock.end()
        i = rec.step - self.first_step
        kind, rnd = self.plan[i]
        if kind in self.records:
            self.records[kind].append(rec)
        try:
            self._after_step(rec, i, kind, rnd)
        except Exception as exc:  # the callback's own failure must never stop the user's training
            self._abandon(exc)
            return
        if self.clock is not None:
            self.clock.resume()

    def _after_step(self, rec: StepRecord, i: int, kind: str, rnd: int) -> None:
        """The callback's work after a loop step of the window (replays, profiling, the result)."""
        try:
            if kind == SETUP:
                self._setup(rec)
            elif kind == TIMED:
                self.samples[self.mode].append((dict(rec.phases), dict(rec.faults)))
                self.losses[self.mode] = rec.loss
                self.round_steps.append(rec)
                if i + 1 == len(self.plan) or self.plan[i + 1][0] != TIMED:
                    self._replay_round()
            elif kind == PROFILED:
                self._profiled_round(rec, rnd)
            if i + 1 < len(self.plan) and self.plan[i + 1][0] == WARMUP and self.calibration is None \
                    and self.calibrate and self.profiling:
                self._calibrate()
        finally:
            if kind != TIMED:  # a timed step's batches wait for the round's replays
                rec.batches = []
        if i + 1 == len(self.plan):
            self._finish()

    def _abandon(self, exc: BaseException) -> None:
        """Stop observing after a failure of the callback's own work; everything it changed is
        removed (replays restore the run in their own ``finally``)."""
        if self.session is not None:
            try:
                self.session.stop()
            except Exception:
                pass
            self.session = None
        self._cleanup()
        self.state = "off"
        self._say(f"stopped observing: {as_failure(exc)}; the training run goes on unchanged")

    def on_log(self, args, state, control, **kwargs):
        if self.clock is not None:
            self.clock.event("log")

    def on_evaluate(self, args, state, control, **kwargs):
        if self.clock is not None:
            self.clock.event("evaluate")

    def on_save(self, args, state, control, **kwargs):
        if self.clock is not None:
            self.clock.event("save")

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.clock is not None:
            self.clock.event("epoch")

    def on_train_end(self, args, state, control, **kwargs):
        if self.state != "watching":
            return
        if self.session is not None:
            self.session.stop()
            self.session = None
        if self.round_steps:  # the last round's timed steps still wait for their replays
            try:
                self._replay_round()
            except Exception as exc:
                self.notes.append(f"the last round's replays failed: {as_failure(exc)}")
        if self.records[TIMED]:
            done = len(self.records[TIMED])
            self.notes.append(f"training ended at step {state.global_step}, before the observed window was complete: "
                              f"{done} of {self.steps} steps timed; set start_step/steps to fit max_steps")
            self._finish()
        else:
            self.notes.append(f"training ended at step {state.global_step}, before any step was timed "
                              f"(start_step={self.start_step}): nothing written")
            self._cleanup()
            self._say(self.notes[-1])

    # -- the window ---------------------------------------------------------------------------
    def _kind(self, state) -> tuple[Optional[str], int]:
        if self.state != "watching":
            return None, -1
        i = state.global_step - self.first_step
        return self.plan[i] if 0 <= i < len(self.plan) else (None, -1)

    def _cost(self, what: str, t0: float) -> None:
        self.costs[what] = self.costs.get(what, 0.0) + time.perf_counter() - t0

    def _off(self, reason: str) -> None:
        self.state = "off"
        self._say(f"off: {reason}")

    def _say(self, line: str) -> None:
        if self.verbose:
            print(f"lora_profiler: {line}", file=sys.stderr, flush=True)

    def _setup(self, rec: StepRecord) -> None:
        """The floor's workload from this step's first micro-batch; the full copy if asked."""
        t0 = time.perf_counter()
        tr = self.trainer
        snap = RunState(tr.model, self.adapters, tr)
        try:
            loss = TrainerLoss(tr, self.compute_loss)
            micro = prepared(tr, rec.batches[:1])[0]
            self.workload = trainer_workload(tr, self.adapters or Adapters(source="none"), micro, loss)
        except Exception as exc:
            self.status["frozen"] = ("failed", f"floor not set up: {as_failure(exc)}")
            self.floor = False
        finally:
            self.problems += snap.restore()
        if self.full and self.workload is not None:
            self._setup_full()
        if self.floor and self.workload is not None:
            self.input_grad = InputGrad(tr.model, self.workload.floor)
            self.floor_replay = FloorReplay(self.workload, self.input_grad)
        self._cost("setup", t0)

    def _setup_full(self) -> None:
        mem = full_memory(self.trainer.model, self.adapters, self.trainer.optimizer, self.workload.device)
        self.full_info = {"status": "ok", "reason": None, **mem}
        if not mem["fits"]:
            self.full_info.update(status="skipped", reason=(
                f"not enough free memory for full fine-tuning on a copy: needs about {mem['need_bytes'] / 2**30:.2f} "
                f"GiB, {mem['available_bytes'] / 2**30:.2f} GiB free"))
            self.status["full"] = ("skipped", self.full_info["reason"])
            return
        try:
            self.full_replay = FullReplay(self.workload, self.trainer.optimizer)
            self.full_info["optimizer_class"] = self.full_replay.optimizer_class
            if self.compiled:
                self.notes.append("full fine-tuning ran on an uncompiled copy of the model")
        except Exception as exc:
            self.full_info.update(status="failed", reason=str(as_failure(exc)))
            self.status["full"] = ("failed", self.full_info["reason"])

    def _replay(self, what: str, fn, micros_per_step: list) -> list:
        """Run ``fn`` on each step's micro-batches inside one snapshot of the loop's model and
        trainer (a full fine-tuning copy's own weights are meant to change); failures stop the
        mode."""
        out = []
        tr = self.trainer
        snap = RunState(tr.model, self.adapters, tr)
        try:
            for micros in micros_per_step:
                out.append(fn(micros))
        except ModeFailure as exc:
            self.status[what] = ("failed", str(exc))
        except Exception as exc:
            self.status[what] = ("failed", str(as_failure(exc)))
        finally:
            self.problems += snap.restore()
        return out

    def _replay_round(self) -> None:
        """The timed round's batches as the floor (and full fine-tuning): a switch-in replay, then
        one timed replay per timed step, in order."""
        steps = [prepared(self.trainer, r.batches) for r in self.round_steps]
        for r in self.round_steps:
            r.batches = []
        self.round_steps = []
        if not steps:
            return
        for mode, replay in (("frozen", self.floor_replay), ("full", self.full_replay)):
            if replay is None or self.status.get(mode, ("ok",))[0] != "ok":
                continue
            t0 = time.perf_counter()
            got = self._replay(mode, replay.step, [steps[0]] + steps)
            if len(got) == len(steps) + 1:
                for loss, times, faults in got[1:]:
                    self.samples[mode].append((times, faults))
                self.losses[mode] = got[-1][0]
            self._cost("floor" if mode == "frozen" else "full", t0)

    def _profiled_round(self, rec: StepRecord, rnd: int) -> None:
        """The recorded loop step's trace, then the floor's and full fine-tuning's sessions on its
        batches; the first round also counts saved activations per mode."""
        t0 = time.perf_counter()
        if self.session is not None:
            try:
                self.session.step()  # the recorded step ends: its trace is written
                self.traces[self.mode] += self.session.stop()
                self.pfaults.setdefault(self.mode, {p: [] for p in PHASES})
                for p in PHASES:
                    self.pfaults[self.mode][p].append(int(rec.faults.get(p, 0)))
            except Exception as exc:
                self._fail_profiling(exc)
            self.session = None
        micros = prepared(self.trainer, rec.batches)
        for mode, replay in (("frozen", self.floor_replay), ("full", self.full_replay)):
            if replay is None or self.status.get(mode, ("ok",))[0] != "ok" or not self.profiling:
                continue
            hooks = None
            if mode == "full" and not self.compiled:
                hooks = ModuleHooks(replay.model, replay.workload.adapters)
            session = _Session(self.out, mode, rnd, self.cuda)

            def run(m, session=session, replay=replay):
                session.start()
                try:
                    _, _, f1 = replay.step(m)  # warm-up replay
                    session.step()
                    _, _, f2 = replay.step(m)  # the recorded replay
                    session.step()
                finally:
                    files = session.stop()
                return f2, files
            got = self._replay(mode, run, [micros])
            if hooks is not None:
                hooks.remove()
            if got:
                faults, files = got[0]
                self.traces[mode] += files
                self.pfaults.setdefault(mode, {p: [] for p in PHASES})
                for p in PHASES:
                    self.pfaults[mode][p].append(int(faults.get(p, 0)))
        self._cost("profiling", t0)
        if rnd == 0 and self.hooks is not None:
            self._account(micros[0])
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None

    def _account(self, micro) -> None:
        """Saved activations of the loop's mode and the floor: one forward each under the hooks."""
        t0 = time.perf_counter()
        model = self.trainer.model
        loss = TrainerLoss(self.trainer, self.compute_loss)
        snap = RunState(model, self.adapters, self.trainer)
        try:
            self.saved[self.mode] = measure_saved(model, self.hooks, lambda: loss(model, micro))
            if self.floor_replay is not None:
                switch_mode(self.workload, "frozen", self.input_grad)
                batch = micro if not self.input_grad.float_inputs else type(micro)(
                    self.input_grad.grad_batch(micro.inputs), micro.items, micro.model)
                self.saved["frozen"] = measure_saved(model, self.hooks, lambda: loss(model, batch))
        except Exception as exc:
            self.notes.append(f"saved activations not counted: {as_failure(exc)}")
        finally:
            if self.input_grad is not None:
                self.input_grad.active = False
            self.hooks.reset()
            self.problems += snap.restore()
        self._cost("accounting", t0)

    def _calibrate(self) -> None:
        t0 = time.perf_counter()
        rng = rng_state()
        try:
            dtype = next((p.dtype for p in self.trainer.model.parameters() if p.is_floating_point()), torch.float32)
            self.calibration = calibrate_profiler(torch.device(self.trainer.args.device), dtype)
        except Exception as exc:
            self.notes.append(f"profiler calibration failed: {as_failure(exc)}")
            self.calibrate = False
        finally:
            set_rng_state(rng)
        self._cost("calibration", t0)

    def _fail_profiling(self, exc: BaseException) -> None:
        self.notes.append(f"profiling failed: {as_failure(exc)}")
        if self.session is not None:
            try:
                self.session.stop()
            except Exception:
                pass
            self.session = None
        self.profiling = False

    # -- the result ---------------------------------------------------------------------------
    def _cleanup(self) -> None:
        if self.clock is not None:
            self.clock.remove()
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None
        if self.input_grad is not None:
            self.input_grad.remove()
            self.input_grad = None
        if self.full_replay is not None:
            self.full_replay.release()
            self.full_replay = None
        self.floor_replay = None
        self.state = "done"

    def _finish(self) -> None:
        t0 = time.perf_counter()
        timed = [r.total_s for r in self.records[TIMED]]
        profiled = [r.total_s for r in self.records[WARMUP] + self.records[PROFILED]]
        if timed and profiled:  # what the profiler added to the loop steps it ran in
            typical = sorted(timed)[len(timed) // 2]
            self.costs["profiled_steps"] = max(0.0, sum(profiled) - len(profiled) * typical)
        self.facts = self._facts()
        self._cleanup()
        write_json(self.out / "facts.json", self.facts)
        self._cost("facts", t0)
        if self.build:
            t0 = time.perf_counter()
            try:
                from ..report.build import build_report

                self.report = build_report(self.out, figures=self.figures)
            except Exception as exc:
                self._say(f"report not built: {as_failure(exc)}; facts.json is in {self.out}")
            self._cost("report", t0)
        self._summary()
        self.clock = None

    def _facts(self) -> dict:
        from .facts import memory_entry, mode_entry, trainer_causes, trainer_settings

        tr = self.trainer
        wl = self.workload
        modes = {}
        names = [m for m in ("full", "lora", "frozen") if m == self.mode or self.samples.get(m)
                 or m in self.status or (m == "frozen" and self.floor)]
        for m in names:
            status, error = self.status.get(m, ("ok", None))
            if m != self.mode and not self.samples.get(m) and status == "ok":
                status, error = "failed", "no replay ran"
            if m == self.mode:
                trainable, opt = self.trainable, tr.optimizer
            elif m == "full" and self.full_replay is not None:
                trainable, opt = self.full_replay.runner.config.trainable, self.full_replay.runner.optimizer
            else:
                trainable, opt = [], None
            mem = memory_entry(tr.model, trainable, opt, self.saved.get(m), self.cuda) if m != "full" or \
                self.full_replay is not None else None
            modes[m] = mode_entry(self.samples.get(m, []), self.pfaults.get(m), self.losses.get(m), trainable,
                                  mem, self.saved.get(m), self.traces.get(m, []), status, error)
        timed = self.records[TIMED]
        between = [r for r in timed + self.records[SWITCH] if r.gap_s is not None]
        settings = trainer_settings(tr)
        workload = wl.facts() if wl is not None else {"name": type(tr.model).__name__, "source": "trainer"}
        if wl is not None:
            ga = settings["gradient_accumulation_steps"] or 1
            workload["tokens_per_step"] = wl.tokens_per_step * ga
        workload["notes"] = list(workload.get("notes") or []) + self.notes
        not_measured = self._not_measured(settings, timed)
        trainer = {
            "class": type(tr).__name__, "module": type(tr).__module__,
            "transformers": F.version("transformers"), "trl": F.version("trl"),
            "events": {"on_pre_optimizer_step": self.clock.has_optimizer_events,
                       "on_optimizer_step": self.clock.has_optimizer_events,
                       "accelerator_backward": self.clock.backward_seen},
            "settings": settings,
            "window": {"start_step": self.first_step, "plan": [k for k, _ in self.plan],
                       "timed_steps": [r.step for r in timed],
                       "profiled_steps": [r.step for r in self.records[PROFILED]],
                       "complete": len(timed) == self.steps},
            "step_time_s": time_stats([r.total_s for r in timed]) if timed else None,
            "period_s": time_stats([r.total_s + r.gap_s for r in timed if r.gap_s is not None])
            if any(r.gap_s is not None for r in timed) else None,
            "micro_steps": max((r.micro for r in timed), default=None),
            "causes": trainer_causes(timed, between, settings["logging_strategy"], settings["logging_steps"]),
            "floor": {"method": ("the step's micro-batches replayed through the trainer's compute_loss with the "
                                 "adapters disabled, every weight frozen and the input embeddings' outputs "
                                 "requiring grad; no optimizer; between two loop steps, everything restored"),
                      "switch_in_replays": 1, "problems": list(dict.fromkeys(self.problems))},
            "full": dict(self.full_info),
            "not_measured": not_measured,
            "callback_s": {k: float(v) for k, v in self.costs.items()},
        }
        return {
            "version": F.FACTS_VERSION, "kind": "lora_profiler.facts", "created": F.now(),
            "status": "complete",  # written once, when the window is done (a cut-short one says so in notes)
            "workload": workload,
            "environment": environment(torch.device(tr.args.device), "not used by the Trainer callback"),
            "settings": {
                "modes": list(modes), "variants": [], "warmup_steps": self.first_step, "steps": self.steps,
                "block": self.block, "timed_rounds": -(-self.steps // self.block), "switch_in_steps": 1,
                "seed": settings["seed"], "lr": settings["learning_rate"],
                "profile": {"wait": 0, "warmup": 1, "active": self.profile_steps},
                "rounds": ("the Trainer's own steps: each round one untimed switch-in loop step, then up to "
                           "`block` timed loop steps, then their batches replayed as the floor (one untimed "
                           "switch-in replay, then one per timed step, in order)"),
                "hooks_while_timed": False,
            },
            "calibration": self.calibration,
            "adapters": (self.adapters or Adapters(source="none")).facts(),
            "modes": modes,
            "trainer": trainer,
        }

    def _not_measured(self, settings: dict, timed: list) -> list[str]:
        out = []
        if not self.floor:
            out.append("the frozen floor (floor=False): no overhead to attribute")
        if self.full_info["status"] != "ok":
            out.append(f"full fine-tuning: {self.full_info['reason']}")
        out.append("the forward-only mode (the Trainer has no forward-only step)")
        if not self.traces.get(self.mode):
            out.append("no profiled step: the causes of the overhead are not attributed")
        if self.compiled:
            out.append("torch.compile: module and adapter scopes are not recorded (hooks would recompile the "
                       "model), so the overhead's causes are not split by adapter part")
        if self.calibration is None and self.traces.get(self.mode):
            out.append("the profiler's own cost (calibrate=False): the causes include it")
        if self.cuda:
            out.append("peak CUDA memory (resetting its statistics would change the run's own)")
        if not self.clock.backward_seen and timed:
            out.append("backward by itself: training_step does not call accelerator.backward, so backward is "
                       "the rest of training_step after compute_loss")
        if not self.clock.has_optimizer_events:
            out.append("the optimizer apart from the LR scheduler and zero_grad (this transformers has no "
                       "on_optimizer_step)")
        if not any("log" in r.events for r in self.records[TIMED] + self.records[SWITCH]):
            out.append(f"logging: no logging step in the observed window (logging_steps="
                       f"{settings['logging_steps']})")
        out.append("evaluation and checkpoint saving (not part of the observed steps)")
        return out

    def _summary(self) -> None:
        f = self.facts or {}
        t = f.get("trainer") or {}
        lines = [f"observed loop steps {self.first_step}-{self.first_step + len(self.plan) - 1}; run folder {self.out}"]
        for m, e in (f.get("modes") or {}).items():
            st = e.get("step_time_s") or {}
            lines.append(f"  {m:<7} {e['status']:<7} median {fmt_s(st.get('median'))}"
                         + (f"  ({e.get('error')})" if e.get("error") else ""))
        if t.get("step_time_s"):
            parts = ", ".join(f"{k} {fmt_s(c['seconds'])}" for k, c in t["causes"].items() if c["seconds"] is not None)
            lines.append(f"  Trainer step {fmt_s(t['step_time_s']['median'])}; added by the Trainer: {parts}")
        att = (self.report or {}).get("attribution") or {}
        if att.get("overhead_s") is not None:
            top = sorted((att.get("causes") or {}).items(), key=lambda kv: -abs(kv[1]["seconds"] or 0))[:4]
            lines.append(f"  LoRA overhead over the floor {fmt_s(att['overhead_s'])} per step: "
                         + ", ".join(f"{(att.get('labels') or {}).get(k, k)} {fmt_s(c['seconds'])}" for k, c in top))
        for line in t.get("not_measured") or []:
            lines.append(f"  not measured: {line}")
        for line in dict.fromkeys(self.problems):
            lines.append(f"  WARNING: {line}")
        lines.append(f"  callback's own time {fmt_s(sum(self.costs.values()))}")
        self._say("\n".join(lines))


__all__ = ["LoraProfilerCallback", "window_plan"]
