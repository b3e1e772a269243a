"""Capture: time every mode, account saved activations, record one profiled run per mode.

Order of work (all on one model, one batch, one seed):

1. warm-up steps for every mode, interleaved;
2. timed steps, one round at a time, each round running every mode once in a rotated order so
   machine drift cannot favour a mode (no profiler is running while steps are timed);
3. one accounting forward per training mode with saved-tensor hooks;
4. optimizers dropped, then the profiled runs, interleaved like the timed steps: in each of
   ``active`` rounds every mode runs one short profiler session (``wait`` + ``warmup`` steps,
   then one recorded step; record_shapes and profile_memory on) with a fresh optimizer, written
   with ``tensorboard_trace_handler`` to ``OUT/tb/<mode>/`` — one file per round, so drift of
   the machine during profiling does not favour a mode either;
5. ``facts.json`` written atomically.
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

from ..fileio import write_json
from ..workload.modes import MODES, InputGrad, switch_mode
from ..workload.spec import Workload
from .gpu import GpuSampler
from .hooks import ModuleHooks
from .saved import measure_saved
from .step import PHASES, ModeFailure, StepRunner

FACTS_VERSION = 1


@dataclass(frozen=True)
class ProfileSchedule:
    """The profiled runs: ``active`` interleaved rounds, each a session of ``wait`` +
    ``warmup`` unrecorded steps and one recorded step per mode."""

    wait: int = 0
    warmup: int = 1
    active: int = 3


@dataclass(frozen=True)
class CaptureOptions:
    """How to measure."""

    modes: tuple[str, ...] = MODES
    warmup_steps: int = 2
    steps: int = 5
    seed: int = 0
    lr: float = 1e-5
    profile: Optional[ProfileSchedule] = field(default_factory=ProfileSchedule)
    gzip_traces: bool = True


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


def _tensor_bytes(tensors) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _optimizer_bytes(opt: Optional[torch.optim.Optimizer]) -> int:
    if opt is None:
        return 0
    return _tensor_bytes(v for state in opt.state.values() for v in state.values()
                         if isinstance(v, torch.Tensor))


class _Progress:
    """A tqdm bar on stderr (silent when disabled or tqdm is missing)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False,
                                dynamic_ncols=True)
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
            progress: bool = True) -> dict:
    """Measure every mode of ``workload`` and write ``out_dir/facts.json`` and traces.

    Args:
        workload: the model, batch and adapters.
        options: what to run.
        out_dir: the run folder (created).
        progress: show a progress bar on stderr.

    Returns:
        The facts (as written to facts.json). A mode that failed has ``status: failed`` and
        ``error``; the others still ran.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = [m for m in MODES if m in options.modes]
    hooks = ModuleHooks(workload.model, workload.adapters)
    input_grad = InputGrad(workload.model, workload.floor)
    sampler = GpuSampler(workload.device.index or 0) if workload.device.type == "cuda" else None
    nvml_reason = sampler.reason if sampler else "not used: no CUDA device"
    profiled_steps = ((options.profile.wait + options.profile.warmup + 1) * options.profile.active
                      if options.profile else 0)
    train_modes = sum(m != "forward" for m in modes)
    bar = _Progress(len(modes) * (options.warmup_steps + options.steps + profiled_steps)
                    + train_modes, progress)

    results = {m: {"status": "ok", "error": None} for m in modes}
    runners: dict[str, StepRunner] = {}
    samples: dict[str, list[float]] = {m: [] for m in modes}
    phases: dict[str, dict[str, list[float]]] = {m: {p: [] for p in PHASES} for m in modes}
    losses: dict[str, float] = {}

    def fail(mode: str, exc: ModeFailure):
        results[mode].update(status="failed", error=str(exc))
        hooks.reset()
        runner = runners.pop(mode, None)
        if runner is not None:
            runner.release()
        if workload.device.type == "cuda":
            torch.cuda.empty_cache()

    def run_one(mode: str, record: bool):
        cfg = switch_mode(workload, mode, input_grad)
        if mode not in runners:
            runners[mode] = StepRunner(workload, cfg, lr=options.lr)
        runner = runners[mode]
        runner.config = cfg
        loss, t = runner.step()
        losses[mode] = loss
        if record:
            samples[mode].append(sum(t.values()))
            for p, v in t.items():
                phases[mode][p].append(v)

    torch.manual_seed(options.seed)
    try:
        for rnd in range(options.warmup_steps + options.steps):
            for mode in _rotated([m for m in modes if results[m]["status"] == "ok"], rnd):
                timed = rnd >= options.warmup_steps
                if timed and sampler is not None:
                    sampler.start()
                try:
                    run_one(mode, record=timed)
                except ModeFailure as exc:
                    fail(mode, exc)
                finally:
                    if sampler is not None:
                        sampler.stop()
                        got = sampler.take()
                        if got is not None and timed:
                            results[mode].setdefault("_gpu", []).append(got)
                bar.update(f"{'timing' if timed else 'warm-up'} {mode}")

        # Memory and saved activations, one mode at a time.
        for mode in modes:
            res = results[mode]
            runner = runners.get(mode)
            if res["status"] != "ok" or runner is None:
                continue
            cfg = switch_mode(workload, mode, input_grad)
            runner.config = cfg
            res["trainable_params"] = int(sum(p.numel() for p in cfg.trainable))
            res["memory"] = {
                "param_bytes": _tensor_bytes(workload.model.parameters()),
                "grad_bytes": _tensor_bytes(cfg.trainable),
                "optimizer_state_bytes": _optimizer_bytes(runner.optimizer),
                "peak_bytes": None,
                "peak_source": None,
            }
            if cfg.backward:
                try:
                    res["saved_activations"] = measure_saved(workload.model, hooks, runner.forward_loss)
                    mem = res["memory"]
                    mem["accounted_bytes"] = (mem["param_bytes"] + mem["grad_bytes"] + mem["optimizer_state_bytes"]
                                              + res["saved_activations"]["total_bytes"])
                except ModeFailure as exc:
                    fail(mode, exc)
                bar.update(f"accounting {mode}")
            else:
                res["saved_activations"] = {"total_bytes": 0, "by_category": {"base": 0, "adapter": 0, "other": 0},
                                            "by_module": {}, "tensors": 0}
                res["memory"]["accounted_bytes"] = res["memory"]["param_bytes"]
        for runner in runners.values():
            runner.release()
        runners.clear()

        if options.profile is not None:
            for rnd in range(options.profile.active):
                for mode in _rotated([m for m in modes if results[m]["status"] == "ok"], rnd):
                    try:
                        files = _profile_session(workload, mode, input_grad, options, out_dir,
                                                 results[mode], bar, rnd)
                        results[mode].setdefault("trace_files", []).extend(files)
                    except ModeFailure as exc:
                        fail(mode, exc)
                    finally:
                        hooks.reset()
    finally:
        bar.close()
        hooks.remove()
        input_grad.remove()
        if sampler is not None:
            sampler.stop()

    modes_out = {}
    for mode in modes:
        res = results[mode]
        entry = {"status": res["status"], "error": res["error"]}
        if samples[mode] and res["status"] == "ok":
            entry["step_time_s"] = time_stats(samples[mode])
            entry["phase_time_s"] = {p: float(np.median(v)) for p, v in phases[mode].items()}
            entry["loss"] = losses.get(mode)
        for key in ("trainable_params", "memory", "saved_activations", "trace_files"):
            if key in res:
                entry[key] = res[key]
        gpu = res.get("_gpu")
        entry["gpu_samples"] = gpu[-1] if gpu else None
        modes_out[mode] = entry

    facts = {
        "version": FACTS_VERSION,
        "kind": "lora_profiler.facts",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workload": workload.facts(),
        "environment": environment(workload.device, nvml_reason),
        "settings": {
            "modes": modes, "warmup_steps": options.warmup_steps, "steps": options.steps,
            "seed": options.seed, "lr": options.lr,
            "profile": asdict(options.profile) if options.profile else None,
        },
        "adapters": workload.adapters.facts(),
        "modes": modes_out,
    }
    write_json(out_dir / "facts.json", facts)
    return facts


def _profile_session(workload: Workload, mode: str, input_grad: InputGrad, options: CaptureOptions,
                     out_dir: Path, res: dict, bar: _Progress, rnd: int) -> list[str]:
    """One profiler session of ``mode`` recording one step; returns the trace files written
    (relative to out_dir). On CUDA, ``memory.peak_bytes`` keeps the largest recorded-step peak."""
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    sched = options.profile
    cuda = workload.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    trace_dir = out_dir / "tb" / mode
    trace_dir.mkdir(parents=True, exist_ok=True)
    before = set(trace_dir.iterdir())
    runner = StepRunner(workload, switch_mode(workload, mode, input_grad), lr=options.lr)
    total = sched.wait + sched.warmup + 1
    try:
        with profile(activities=activities,
                     schedule=schedule(wait=sched.wait, warmup=sched.warmup, active=1, repeat=1),
                     on_trace_ready=tensorboard_trace_handler(str(trace_dir), worker_name=f"{mode}_r{rnd}",
                                                              use_gzip=options.gzip_traces),
                     record_shapes=True, profile_memory=True, with_stack=False) as prof:
            for i in range(total):
                if cuda and i == total - 1:
                    torch.cuda.synchronize(workload.device)
                    torch.cuda.reset_peak_memory_stats(workload.device)
                runner.step()
                prof.step()
                bar.update(f"profiling {mode}")
        if cuda:
            peak = int(torch.cuda.max_memory_allocated(workload.device))
            res["memory"]["peak_bytes"] = max(peak, res["memory"].get("peak_bytes") or 0)
            res["memory"]["peak_source"] = "torch.cuda.max_memory_allocated over the profiled steps"
        else:
            res["memory"]["peak_source"] = ("CPU: PyTorch keeps no allocator peak on CPU; see "
                                            "accounted_bytes (parameters + gradients + optimizer "
                                            "state + saved activations)")
    finally:
        runner.release()
    return sorted(str(p.relative_to(out_dir)) for p in set(trace_dir.iterdir()) - before)
