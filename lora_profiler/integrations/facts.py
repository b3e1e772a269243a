"""facts.json of a callback run: the same keys as ``trace`` writes (docs/FORMAT.md), from the
loop's steps and the replays, plus ``trainer``: the Trainer's settings and the costs it adds."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Optional

import numpy as np

from ..analyses.stats import trimmed_mean
from ..capture.run import FACTS_VERSION, _optimizer_bytes, _shape_counts, _tensor_bytes, time_stats
from ..names import PHASES
from .loop import StepRecord


def version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _plain(value: Any) -> Any:
    """A JSON-safe form of a TrainingArguments value (enums by value, others as strings)."""
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _arg(args: Any, *names: str) -> Any:
    for name in names:
        if hasattr(args, name):
            return _plain(getattr(args, name))
    return None


def trainer_settings(trainer: Any) -> dict:
    """The Trainer's settings that shape a step (``facts["trainer"]["settings"]``)."""
    args = trainer.args
    acc = getattr(trainer, "accelerator", None)
    mixed = str(getattr(acc, "mixed_precision", None) or "no")
    bs, ga = _arg(args, "per_device_train_batch_size"), _arg(args, "gradient_accumulation_steps")
    world = _arg(args, "world_size") or 1
    opt = getattr(trainer, "optimizer", None)
    sched = getattr(trainer, "lr_scheduler", None)
    return {
        "per_device_train_batch_size": bs, "gradient_accumulation_steps": ga, "world_size": world,
        "total_train_batch_size": bs * ga * world if bs and ga else None,
        "precision": {"no": "fp32"}.get(mixed, mixed),  # fp32 | bf16 | fp16 | fp8 (autocast)
        "bf16": _arg(args, "bf16"), "fp16": _arg(args, "fp16"), "tf32": _arg(args, "tf32"),
        "gradient_checkpointing": bool(_arg(args, "activation_checkpointing", "gradient_checkpointing")),
        "gradient_checkpointing_kwargs": _arg(args, "activation_checkpointing_kwargs",
                                              "gradient_checkpointing_kwargs"),
        "dataloader_num_workers": _arg(args, "dataloader_num_workers"),
        "dataloader_pin_memory": _arg(args, "dataloader_pin_memory"),
        "torch_compile": bool(_arg(args, "torch_compile")),
        "torch_compile_backend": _arg(args, "torch_compile_backend"),
        "torch_compile_mode": _arg(args, "torch_compile_mode"),
        "max_grad_norm": _arg(args, "max_grad_norm"),
        "optim": _arg(args, "optim"),
        "optimizer": type(getattr(opt, "optimizer", opt)).__name__ if opt is not None else None,
        "lr_scheduler": type(sched).__name__ if sched is not None else None,
        "learning_rate": _arg(args, "learning_rate"), "weight_decay": _arg(args, "weight_decay"),
        "logging_strategy": _arg(args, "logging_strategy"), "logging_steps": _arg(args, "logging_steps"),
        "eval_strategy": _arg(args, "eval_strategy", "evaluation_strategy"),
        "save_strategy": _arg(args, "save_strategy"),
        "max_steps": _arg(args, "max_steps"), "num_train_epochs": _arg(args, "num_train_epochs"),
        "device": str(args.device), "seed": _arg(args, "seed"),
    }


def _cause(samples: list, what: str, why: Optional[str] = None, **extra) -> dict:
    vals = [float(v) for v in samples if v is not None]
    return {"seconds": trimmed_mean(vals) if vals else None, "n": len(vals), "samples": vals,
            "what": what, "why": None if vals else why, **extra}


def trainer_causes(timed: list[StepRecord], between: list[StepRecord], logging_strategy: Any,
                   logging_steps: Any) -> dict:
    """The costs the Trainer adds to a step, each per step (``facts["trainer"]["causes"]``).

    Args:
        timed: the timed steps (in-step causes).
        between: steps whose preceding gap was observed undisturbed (between-step causes).
        logging_strategy, logging_steps: ``TrainingArguments``'; with the ``steps`` strategy,
            logging's cost per step is its cost per logging step divided by ``logging_steps``.
    """
    out = {
        "data_wait": _cause([r.data_s for r in between], "fetching and collating the step's micro-batches "
                            "(get_batch_samples), before on_step_begin",
                            "get_batch_samples was not called before the observed steps"),
        "grad_clip": _cause([r.grad_clip_s for r in timed], "accelerator.clip_grad_norm_: clipping to "
                            "max_grad_norm, or the gradient norm alone for logging"),
        "micro_step_overhead": _cause([r.micro_step_overhead_s for r in timed],
                                      "the step's time outside its phases and clipping: per micro-batch "
                                      "the inputs moved to the device, model.train(), the autocast context, "
                                      "loss scaling, loss accumulation, FLOP and token counts, callbacks"),
    }
    plain = [r.gap_s - (r.data_s or 0.0) for r in between if r.gap_s is not None and not r.events]
    logged = [r.gap_s - (r.data_s or 0.0) for r in between if r.gap_s is not None and r.events == ["log"]]
    out["between_steps_other"] = _cause(plain, "between on_step_end and the next on_step_begin, less the data "
                                        "wait, on steps that neither log, evaluate nor save: other "
                                        "callbacks (progress bar), the loop's checks",
                                        "no undisturbed step boundary was observed")
    base = trimmed_mean(plain) if plain else 0.0
    steps = logging_strategy in ("steps", None) and isinstance(logging_steps, (int, float)) and logging_steps >= 1
    per_event = [v - base for v in logged]
    why = (f"no logging step in the observed window (logging_steps={logging_steps})" if not logged
           else f"logging_strategy={logging_strategy}: logging is not every N steps, so it has no per-step share")
    entry = _cause([v / logging_steps for v in per_event] if steps else [], "logging: the loss gathered to the "
                   "host, the logs built and every callback's on_log, per step (per logging step / logging_steps)",
                   why)
    entry["per_logging_step_s"] = trimmed_mean(per_event) if per_event else None
    entry["logging_steps_seen"] = len(per_event)
    out["logging"] = entry
    return out


def mode_entry(records: list[tuple[dict, dict]], profiled_faults: Optional[dict], loss: Optional[float],
               trainable: list, memory: Optional[dict], saved: Optional[dict], trace_files: list,
               status: str = "ok", error: Optional[str] = None) -> dict:
    """``facts["modes"][mode]`` from the timed steps' (phases, faults), in the order they ran."""
    entry: dict = {"status": status, "error": error}
    if records and status == "ok":
        phases = {p: [float(r[0][p]) for r in records] for p in PHASES}
        entry["step_time_s"] = time_stats([sum(r[0].values()) for r in records])
        entry["phase_time_s"] = {p: float(np.median(v)) for p, v in phases.items()}
        entry["phase_samples_s"] = phases
        entry["page_faults"] = {"timed": {p: [int(r[1].get(p, 0)) for r in records] for p in PHASES},
                                "profiled": profiled_faults or None}
        entry["loss"] = loss
    entry["trainable_params"] = int(sum(p.numel() for p in trainable))
    entry["trainable_shapes"] = _shape_counts(trainable)
    if memory is not None:
        entry["memory"] = memory
    if saved is not None:
        entry["saved_activations"] = saved
    if trace_files:
        entry["trace_files"] = list(trace_files)
    entry["gpu_samples"] = None
    return entry


def memory_entry(model, trainable: list, optimizer: Any, saved: Optional[dict], cuda: bool) -> dict:
    """``memory`` of a mode: parameters, gradients, optimizer state, saved activations."""
    mem = {"param_bytes": _tensor_bytes(dict.fromkeys(model.parameters())),
           "grad_bytes": _tensor_bytes(trainable),
           "optimizer_state_bytes": _optimizer_bytes(getattr(optimizer, "optimizer", optimizer)),
           "peak_bytes": None,
           "peak_source": ("not measured by the Trainer callback: resetting CUDA's peak statistics would change "
                           "the run's own" if cuda else
                           "CPU: the allocator events of the profiled steps (see report "
                           "attribution.peak_memory_bytes); accounted_bytes = parameters + gradients + "
                           "optimizer state + saved activations")}
    mem["accounted_bytes"] = (mem["param_bytes"] + mem["grad_bytes"] + mem["optimizer_state_bytes"]
                              + ((saved or {}).get("total_bytes") or 0))
    return mem


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["FACTS_VERSION", "trainer_settings", "trainer_causes", "mode_entry", "memory_entry", "version", "now"]
