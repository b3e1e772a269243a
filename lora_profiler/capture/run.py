"""Capture: time every mode, account saved activations, record one profiled run per mode.

Order of work (all on one model, one batch, one seed):

1. warm-up rounds: every mode and variant, interleaved;
2. the capture hooks installed for one accounting forward per training mode (saved tensors),
   then removed;
3. the profiler's own cost calibrated by known-answer loops (``calibrate``), in this process;
4. the timed rounds, each running every mode (and variant) once in a rotated order so machine
   drift cannot favour a mode, with neither profiler nor hooks: the times are the user's own.
   The profiled rounds are spread among them, so timed and profiled steps see the same drift
   (the allocator's state, clocks, other load): in a profiled round the hooks are installed and
   every base mode runs one short profiler session (``wait`` + ``warmup`` steps, then one
   recorded step; record_shapes and profile_memory on) on its own runner, written with
   ``tensorboard_trace_handler`` to ``OUT/tb/<mode>/`` — one file per round, with the round's
   own ``ProfilerStep#`` number, so every round is its own step for the analysis;
5. what each variant changed (and the microbenchmarks its predicted saving scales by);
6. ``facts.json`` written atomically.

``facts.json`` is also written as the run goes (``checkpoint``: after the warm-up, the
accounting, the calibration and every timed and profiled round, ``"status": "running"``); an
interrupted run writes its facts with ``"status": "interrupted"``, and a ``Checkpoint`` made
from them continues it (``--resume``).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import runstate
from ..fileio import not_written, replace_durably, write_json
from ..workload.modes import MODES, InputGrad, leave_variant, mode_kind, switch_mode, variant_of
from ..workload.variants import is_strategy
from ..workload.spec import Workload
from .calibrate import calibrate
from .checkpoint import Checkpoint
from .gpu import GpuSampler
from .hooks import ModuleHooks
from .saved import measure_saved
from .step import PHASES, ModeFailure, StepRunner, as_failure

FACTS_VERSION = 2


@dataclass(frozen=True)
class ProfileSchedule:
    """The profiled runs: ``active`` interleaved rounds, each a session of ``wait`` +
    ``warmup`` unrecorded steps and one recorded step per mode."""

    wait: int = 0
    warmup: int = 1
    active: int = 5

    @property
    def steps_per_round(self) -> int:
        return self.wait + self.warmup + 1


@dataclass(frozen=True)
class CaptureOptions:
    """How to measure."""

    modes: tuple[str, ...] = MODES
    warmup_steps: int = 1
    steps: int = 15
    # Timed steps run in blocks: in each round every mode runs one untimed switch-in step (the
    # allocator and caches settle to this mode, as in a real run of consecutive steps), then up
    # to ``block`` timed steps.
    block: int = 3
    seed: int = 0
    lr: float = 1e-5
    profile: Optional[ProfileSchedule] = field(default_factory=ProfileSchedule)
    gzip_traces: bool = True
    # Modes timed with the others but not profiled: the ablation variants of ``--validate``.
    variants: tuple[str, ...] = ()
    calibrate: bool = True
    # ``--advise``: an op census of every mode (and of strategies not run) and this device's rates,
    # written to census.json, from which the report predicts every step time (lora_profiler.predict).
    predict: bool = False


def time_stats(samples: list[float]) -> dict:
    """median/min/max/quartiles of step times in seconds."""
    arr = np.asarray(samples, dtype=np.float64)  # (n,) seconds
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return {"median": float(med), "min": float(arr.min()), "max": float(arr.max()),
            "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1), "n": int(arr.size),
            "samples": [float(x) for x in arr]}


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, nvml_reason: Optional[str]) -> dict:
    """What the run ran on."""
    cuda = device.type == "cuda"
    gpu = torch.cuda.get_device_name(device) if cuda else None
    return {
        "device": "cuda" if cuda else device.type,
        "device_name": gpu or _cpu_name(),
        "gpu_name": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "hip": getattr(torch.version, "hip", None) if cuda else None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "nvml": "ok" if nvml_reason is None else nvml_reason,
    }


def _rotated(modes: list, rnd: int) -> list:
    """The modes in round ``rnd``'s order: rotated by one each round, so no mode always runs
    first (after another mode's step) or last."""
    k = rnd % max(len(modes), 1)
    return modes[k:] + modes[:k]


def profile_positions(steps: int, rounds: int) -> list[int]:
    """After which timed rounds (0-based) the profiled rounds run: spread evenly over the timed
    ones, several after the last when there are more profiled than timed rounds."""
    if steps <= 0:
        return [0] * rounds
    return sorted(min(steps - 1, int((i + 0.5) * steps / rounds)) for i in range(rounds))


def _tensor_bytes(tensors) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _optimizer_bytes(opt: Optional[torch.optim.Optimizer]) -> int:
    if opt is None:
        return 0
    return _tensor_bytes(v for state in opt.state.values() for v in state.values()
                         if isinstance(v, torch.Tensor))


class _Progress:
    """A tqdm bar (silent when disabled or tqdm is missing): ``tqdm.auto``, so a widget in Jupyter
    (one output, not a line per update); in a terminal on stderr; elsewhere (a log file, a
    notebook without ipywidgets) updated at most every few seconds."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
                self.bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False,
                                dynamic_ncols=True, mininterval=0.1 if tty else 5.0)
            except ImportError:
                pass

    def update(self, desc: str):
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def capture(workload: Workload, options: CaptureOptions, out_dir: Path,
            progress: bool = True, checkpoint: Optional[Checkpoint] = None, dist=None) -> dict:
    """Measure every mode of ``workload`` and write ``out_dir/facts.json`` and traces.

    Args:
        workload: the model, batch and adapters.
        options: what to run.
        out_dir: the run folder (created).
        progress: show a progress bar on stderr.
        checkpoint: writes facts.json as the run goes and, made from an interrupted run's
            facts, continues that run (default: a fresh ``Checkpoint(out_dir)``).
        dist: under torchrun, this rank's ``distributed.DistContext``: every mode's step runs
            on the model as users wrap it (DDP), ranks meet before every timed block and
            profiled session, trace files carry the rank, and a failed mode stops the run on
            every rank (``DistError``); the checkpoint should be a ``DistCheckpoint``.

    Returns:
        The facts (as written to facts.json). A mode that failed has ``status: failed`` and
        ``error``; the others still ran. A variant that cannot run on this workload has
        ``status: skipped`` and the reason.

    Raises:
        KeyboardInterrupt (``runstate.RunInterrupted`` for SIGINT/SIGTERM): after the facts of
            the last finished round were written with ``"status": "interrupted"``.
        checkpoint.ResumeError: the checkpoint's run measured another workload or machine.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = [m for m in MODES if m in options.modes] + [m for m in options.modes if m not in MODES]
    variants = [v for v in options.variants if v not in modes]
    input_grad = InputGrad(workload.model, workload.floor)
    sampler = GpuSampler(workload.device.index or 0) if workload.device.type == "cuda" else None
    nvml_reason = sampler.reason if sampler else "not used: no CUDA device"
    results = {m: {"status": "ok", "error": None} for m in modes + variants}
    for v in variants + [m for m in modes if m not in MODES]:
        reason = variant_of(workload, v).not_applicable(workload)
        if reason:
            results[v].update(status="skipped", error=reason)
    timed = [m for m in modes + variants if results[m]["status"] == "ok"]
    profiled_modes = [m for m in modes if m in MODES or variant_of(workload, m).profiled]
    sched = options.profile
    train_modes = sum(mode_kind(m) != "forward" for m in modes)
    block = max(1, options.block)
    n_rounds = -(-options.steps // block)  # ceil
    bar = _Progress(len(timed) * (options.warmup_steps + options.steps + n_rounds) + train_modes
                    + (len(profiled_modes) * sched.steps_per_round * sched.active if sched else 0), progress)

    runners: dict[str, StepRunner] = {}
    samples: dict[str, list[float]] = {m: [] for m in timed}
    phases: dict[str, dict[str, list[float]]] = {m: {p: [] for p in PHASES} for m in timed}
    faults: dict[str, dict[str, list[int]]] = {m: {p: [] for p in PHASES} for m in timed}
    losses: dict[str, float] = {}
    hooks: Optional[ModuleHooks] = None
    calibration = None
    ckpt = checkpoint if checkpoint is not None else Checkpoint(out_dir)
    env = environment(workload.device, nvml_reason)
    static = {"workload": workload.facts(), "adapters": workload.adapters.facts()}
    ckpt.start(n_rounds, sched.active if sched and profiled_modes else 0,
               bool(sched and profiled_modes and options.calibrate))
    ckpt.check(static["workload"], static["adapters"], env, _settings(options, modes, variants))
    if ckpt.previous is not None:
        calibration = ckpt.restore(results, samples, phases, faults, losses)

    def new_runner(mode: str, cfg) -> StepRunner:
        return StepRunner(workload, cfg, lr=options.lr,
                          module=dist.wrap(workload, cfg) if dist is not None else None)

    def sync(where: str) -> None:
        if dist is not None:
            dist.sync(where)

    def fail(mode: str, exc: ModeFailure):
        if dist is not None:  # the ranks' collectives must match: no rank drops a mode alone
            raise dist.mode_failure(mode, exc)
        results[mode].update(status="failed", error=str(exc))
        if hooks is not None:
            hooks.reset()
        runner = runners.pop(mode, None)
        if runner is not None:
            runner.release()
        if workload.device.type == "cuda":
            torch.cuda.empty_cache()

    def run_one(mode: str, record: bool):
        cfg = switch_mode(workload, mode, input_grad)
        if mode not in runners:
            runners[mode] = new_runner(mode, cfg)
        runner = runners[mode]
        runner.config = cfg
        loss, t = runner.step()
        results[mode].setdefault("first_step_s", sum(t.values()))  # compiles, allocates: reported apart
        losses[mode] = loss
        if record:
            samples[mode].append(sum(t.values()))
            for p, v in t.items():
                phases[mode][p].append(v)
                faults[mode][p].append(int(runner.last_faults.get(p, 0)))

    def ok(names):
        return [m for m in names if results[m]["status"] == "ok"]

    def timed_round(rnd: int, record: bool):
        """Each mode in turn: one switch-in step, then its timed steps of this round (or, for a
        warm-up round, one untimed step)."""
        n = min(block, options.steps - (rnd - options.warmup_steps) * block) if record else 0
        for mode in _rotated(ok(timed), rnd):
            sync(f"{'timed' if record else 'warm-up'} round {rnd + 1}, {mode}")
            for k in range(1 + n):
                timing = k > 0
                if timing and sampler is not None:
                    sampler.start()
                try:
                    run_one(mode, record=timing)
                except ModeFailure as exc:
                    fail(mode, exc)
                    break
                finally:
                    if sampler is not None:
                        sampler.stop()
                        got = sampler.take()
                        if got is not None and timing:
                            results[mode].setdefault("_gpu", []).append(got)
                    bar.update(f"{'timing' if timing else 'warm-up' if not record else 'switching to'} {mode}")

    def profiled_round(rnd: int):
        nonlocal hooks
        leave_variant(workload)  # the scopes go on the base model, not a variant's modules
        hooks = ModuleHooks(workload.model, workload.adapters)
        try:
            for mode in _rotated(ok(profiled_modes), rnd):
                try:
                    sync(f"profiled round {rnd + 1}, {mode}")
                    if mode not in runners:
                        runners[mode] = new_runner(mode, switch_mode(workload, mode, input_grad))
                    files = _profile_session(workload, mode, input_grad, runners[mode], options, out_dir,
                                             results[mode], bar, rnd,
                                             worker=f"{mode}.rank{dist.rank}" if dist is not None else mode)
                    results[mode].setdefault("trace_files", []).extend(files)
                except ModeFailure as exc:
                    fail(mode, exc)
                finally:
                    hooks.reset()
        finally:
            hooks.remove()
            hooks = None

    created = (ckpt.previous or {}).get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds")

    def facts_now(final: bool = False) -> dict:
        """The facts as they stand (``final``: the workload described as it is now, after
        every variant was left; else as it was at the start)."""
        head = {"workload": workload.facts(), "adapters": workload.adapters.facts()} if final else static
        return _facts(head, created, env, _settings(options, modes, variants), calibration,
                      {m: _mode_entry(m, results[m], samples.get(m), phases.get(m), faults.get(m),
                                      losses.get(m), m in profiled_modes) for m in modes + variants})

    torch.manual_seed(options.seed)
    try:
        ckpt.save(facts_now())
        # 1. warm-up rounds: no hooks, no profiler.
        for rnd in range(options.warmup_steps):
            ckpt.at("warmup", f"warm-up round {rnd + 1} of {options.warmup_steps}")
            timed_round(rnd, record=False)
        # 2. memory and saved activations, one mode at a time, under the capture hooks.
        leave_variant(workload)
        hooks = ModuleHooks(workload.model, workload.adapters)
        ckpt.at("accounting", "the accounting of memory and saved activations")
        for mode in modes if not ckpt.progress["accounting_done"] else ():
            if mode not in runners and results[mode]["status"] == "ok":
                runners[mode] = new_runner(mode, switch_mode(workload, mode, input_grad))
            _account(workload, mode, input_grad, runners.get(mode), results[mode], hooks, fail)
            if mode_kind(mode) != "forward":
                bar.update(f"accounting {mode}")
        hooks.remove()
        hooks = None
        ckpt.save(facts_now(), warmup_done=True, accounting_done=True)
        for v in variants:
            if results[v]["status"] == "ok":
                cfg = switch_mode(workload, v, input_grad)
                results[v]["trainable_params"] = int(sum(p.numel() for p in cfg.trainable))
        # 3. the profiler's own cost, measured before any profiled round.
        profiling = sched is not None and bool(ok(profiled_modes))
        if profiling and options.calibrate and calibration is None:
            ckpt.at("calibration", "the profiler-cost calibration")
            bar.update("calibrating the profiler")
            calibration = calibrate(workload.device, _dtype(workload))
            ckpt.save(facts_now(), calibration_done=True)
        # 4. timed rounds (no hooks, no profiler), with the profiled rounds spread among them so
        # both see the same drift of the machine (allocator state, clocks, other load).
        after = profile_positions(n_rounds, sched.active) if profiling else []
        first, done = ckpt.progress["timed_rounds_done"], ckpt.progress["profiled_rounds_done"]

        def profiled(upto: int) -> int:
            """The profiled rounds due after timed round ``upto`` (resumed: those before it)."""
            n = done
            while n < len(after) and after[n] <= upto:
                ckpt.at("profiled", f"profiled round {n + 1} of {len(after)}")
                profiled_round(n)
                n += 1
                ckpt.save(facts_now(), profiled_rounds_done=n)
            return n

        done = profiled(first - 1)
        for i in range(first, n_rounds):
            ckpt.at("timed", f"timed round {i + 1} of {n_rounds}")
            timed_round(options.warmup_steps + i, record=True)
            ckpt.save(facts_now(), timed_rounds_done=i + 1)
            done = profiled(i)
        for runner in runners.values():
            runner.release()
        runners.clear()
        # 5. for --advise: every mode's ops and this device's rates (the cost model's inputs).
        if options.predict:
            ckpt.at("census", "the op census for the cost model")
            bar.update("op census for the cost model")
            _census(workload, [m for m in modes if results[m]["status"] == "ok"], input_grad, out_dir)
        # 6. what each variant changed, with the microbenchmarks its prediction scales by.
        ckpt.at("variants", "the ablation variants' details")
        switch_mode(workload, "lora" if "lora" in modes else modes[0], input_grad)
        for v in variants + [m for m in modes if m not in MODES]:
            if results[v]["status"] == "ok":
                results[v]["variant"] = variant_of(workload, v).describe(workload)
        switch_mode(workload, modes[0], input_grad)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or runstate.received():
            ckpt.interrupted(runstate.signum_of(exc))
        elif dist is not None and type(exc).__name__ == "DistError":  # another rank failed
            ckpt.interrupted(None, error=str(exc))
        raise
    finally:
        leave_variant(workload)
        bar.close()
        if hooks is not None:
            hooks.remove()
        input_grad.remove()
        if sampler is not None:
            sampler.stop()

    return ckpt.finish(facts_now(final=True))


def _settings(options: CaptureOptions, modes: list, variants: list) -> dict:
    """The ``settings`` of facts.json."""
    block = max(1, options.block)
    sched = options.profile
    return {
        "modes": modes, "variants": variants, "warmup_steps": options.warmup_steps,
        "steps": options.steps, "block": block, "timed_rounds": -(-options.steps // block),
        "switch_in_steps": 1, "seed": options.seed, "lr": options.lr,
        "profile": asdict(sched) if sched else None,
        "rounds": ("every timed round runs each mode in turn, the order rotated by one per round: "
                   "one untimed switch-in step, then up to `block` timed steps"),
        "hooks_while_timed": False,
    }


def _mode_entry(mode: str, res: dict, samples: Optional[list], phases: Optional[dict],
                faults: Optional[dict], loss: Optional[float], profiled: bool) -> dict:
    """One mode's entry in facts.json from capture's state."""
    entry = {"status": res["status"], "error": res["error"]}
    if mode not in MODES:
        entry["variant_of"] = "lora"
        entry["profiled"] = profiled
        entry["strategy"] = is_strategy(mode)
    if samples and res["status"] == "ok":
        entry["step_time_s"] = time_stats(samples)
        entry["phase_time_s"] = {p: float(np.median(v)) for p, v in phases.items()}
        entry["phase_samples_s"] = {p: [float(x) for x in v] for p, v in phases.items()}
        entry["page_faults"] = {"timed": faults, "profiled": res.get("_pf") or None}
        entry["loss"] = loss
    for key in ("trainable_params", "trainable_shapes", "memory", "saved_activations", "trace_files", "variant",
                "first_step_s"):
        if key in res:
            entry[key] = res[key]
    gpu = res.get("_gpu")
    entry["gpu_samples"] = gpu[-1] if gpu else None
    return entry


def _facts(head: dict, created: str, env: dict, settings: dict, calibration: Optional[dict],
           modes: dict) -> dict:
    """facts.json (without ``status``: the checkpoint adds it)."""
    return {
        "version": FACTS_VERSION,
        "kind": "lora_profiler.facts",
        "created": created,
        "workload": head["workload"],
        "environment": env,
        "settings": settings,
        "calibration": calibration,
        "adapters": head["adapters"],
        "modes": modes,
    }


def predicted_strategies(workload: Workload) -> list[str]:
    """Strategies worth predicting for this workload when they were not run."""
    from ..workload.variants import block_index

    blocks = sorted({b for b in (block_index(p) for p in workload.adapters.paths) if b is not None})
    out = ["fused-lora", "lora-fa"]
    if len(blocks) >= 2:
        out.append(f"lora-top:{max(1, len(blocks) // 2)}")
    return out


def _census(workload: Workload, modes: list, input_grad: InputGrad, out_dir: Path) -> None:
    """census.json: each mode's op census (and of strategies not run), and this device's model."""
    from .census import op_census
    from .devicebench import device_model

    censuses, errors = {}, {}
    for mode in modes + [s for s in predicted_strategies(workload) if s not in modes]:
        v = variant_of(workload, mode)
        if v is not None and v.not_applicable(workload):
            continue
        try:
            censuses[mode] = op_census(workload, mode, input_grad)
        except Exception as exc:  # a strategy that cannot run here is not predicted
            errors[mode] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            leave_variant(workload)
    model = device_model(list(censuses.values()), workload.device, _dtype(workload))
    write_json(out_dir / "census.json", {"kind": "lora_profiler.census", "version": 1, "measured": modes,
                                         "censuses": censuses, "errors": errors, "device_model": model})


def _dtype(workload: Workload) -> torch.dtype:
    for p in workload.model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _account(workload: Workload, mode: str, input_grad: InputGrad, runner: Optional[StepRunner],
             res: dict, hooks: ModuleHooks, fail) -> None:
    """Parameters, gradients, optimizer state and saved activations of one mode (facts)."""
    if res["status"] != "ok" or runner is None:
        return
    cfg = switch_mode(workload, mode, input_grad)
    runner.config = cfg
    res["trainable_params"] = int(sum(p.numel() for p in cfg.trainable))
    res["trainable_shapes"] = _shape_counts(cfg.trainable)
    res["memory"] = {
        "param_bytes": _tensor_bytes(workload.model.parameters()),
        "grad_bytes": _tensor_bytes(cfg.trainable),
        "optimizer_state_bytes": _optimizer_bytes(runner.optimizer),
        "peak_bytes": None,
        "peak_source": None,
    }
    mem = res["memory"]
    if cfg.backward:
        try:
            res["saved_activations"] = measure_saved(workload.model, hooks,
                                                     lambda: runner.forward_loss(wrapped=False))
            mem["accounted_bytes"] = (mem["param_bytes"] + mem["grad_bytes"] + mem["optimizer_state_bytes"]
                                      + res["saved_activations"]["total_bytes"])
        except Exception as exc:  # the user's loss or model raised in this mode
            fail(mode, as_failure(exc))
    else:
        res["saved_activations"] = {"total_bytes": 0, "by_category": {"base": 0, "adapter": 0, "other": 0},
                                    "by_module": {}, "tensors": 0}
        mem["accounted_bytes"] = mem["param_bytes"]


def _shape_counts(params) -> list:
    """[[shape, count], ...] of the trainable tensors (weight-gradient matmuls are found by them)."""
    counts: dict[tuple, int] = {}
    for p in params:
        counts[tuple(p.shape)] = counts.get(tuple(p.shape), 0) + 1
    return [[list(k), v] for k, v in sorted(counts.items())]


def _trace_writer(folder: Path, worker: str, gzip_level1: bool):
    """An ``on_trace_ready`` writing ``<worker>.<ns>.pt.trace.json[.gz]`` into ``folder`` (the
    layout of ``tensorboard_trace_handler``, so TensorBoard lists it), gzip at level 1: as small
    within a few percent, and ~0.25 s faster per trace than the handler's level 9 here."""
    import gzip
    import shutil
    import time

    def write(prof) -> None:
        if runstate.received():  # a session cut short by SIGINT/SIGTERM: not a finished round
            return
        stem = folder / f"{worker}.{time.time_ns()}.pt.trace.json"
        tmp = folder / f".{stem.name}.tmp"
        try:
            prof.export_chrome_trace(str(tmp))
            if not tmp.is_file():  # Kineto logs a failed write (disk full) and returns
                raise not_written(tmp)
            if gzip_level1:
                gz = folder / f".{stem.name}.gz.tmp"
                with open(tmp, "rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                tmp.unlink()
                replace_durably(gz, f"{stem}.gz")  # fsync, rename: never a half file under its name
            else:
                replace_durably(tmp, stem)
        except BaseException:
            for part in folder.glob(f".{stem.name}*"):  # our temporary files and Kineto's
                part.unlink(missing_ok=True)
            raise
    return write


def _profile_session(workload: Workload, mode: str, input_grad: InputGrad, runner: StepRunner,
                     options: CaptureOptions, out_dir: Path, res: dict, bar: _Progress, rnd: int,
                     worker: Optional[str] = None) -> list[str]:
    """One profiler session of ``mode`` (the mode's own runner: its optimizer, no second copy)
    recording one step; returns the trace files written
    (relative to out_dir). The session skips ``rnd`` rounds' worth of step numbers first, so the
    recorded step of round r is ``ProfilerStep#(r * steps_per_round + wait + warmup)``: distinct
    in every round. On CUDA, ``memory.peak_bytes`` keeps the largest recorded-step peak."""
    from torch.profiler import ProfilerActivity, profile, schedule

    sched = options.profile
    cuda = workload.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    trace_dir = out_dir / "tb" / mode
    trace_dir.mkdir(parents=True, exist_ok=True)
    before = set(trace_dir.iterdir())
    runner.config = switch_mode(workload, mode, input_grad)
    total = sched.steps_per_round
    skip = rnd * total
    with profile(activities=activities,
                 schedule=schedule(wait=sched.wait, warmup=sched.warmup, active=1, repeat=1,
                                   skip_first=skip),
                 on_trace_ready=_trace_writer(trace_dir, worker or mode, options.gzip_traces),
                 record_shapes=True, profile_memory=True, with_stack=False) as prof:
        for _ in range(skip):  # nothing runs or is recorded: the step counter moves on
            prof.step()
        for i in range(total):
            if cuda and i == total - 1:
                torch.cuda.synchronize(workload.device)
                torch.cuda.reset_peak_memory_stats(workload.device)
            runner.step()
            prof.step()
            bar.update(f"profiling {mode}")
    got = res.setdefault("_pf", {p: [] for p in PHASES})  # the recorded step's page faults
    for p in PHASES:
        got[p].append(int(runner.last_faults.get(p, 0)))
    if cuda:
        peak = int(torch.cuda.max_memory_allocated(workload.device))
        res["memory"]["peak_bytes"] = max(peak, res["memory"].get("peak_bytes") or 0)
        res["memory"]["peak_source"] = "torch.cuda.max_memory_allocated over the profiled steps"
    else:
        res["memory"]["peak_source"] = ("CPU: the allocator events of the profiled steps (see "
                                        "report attribution.peak_memory_bytes); accounted_bytes "
                                        "= parameters + gradients + optimizer state + saved activations")
    # this session's files only: other ranks write into the same folder at the same time
    return sorted(str(p.relative_to(out_dir)) for p in set(trace_dir.iterdir()) - before
                  if p.name.startswith(f"{worker or mode}.") and p.is_file())
