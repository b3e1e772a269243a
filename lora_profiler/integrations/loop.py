"""Time a Trainer's own steps by phase: from its callbacks and thin wrappers on its methods.

One optimizer step of ``transformers.Trainer`` (``_run_epoch``) runs, in order:

    get_batch_samples (the step's micro-batches)   -> data_wait, between steps
    on_step_begin
    per micro-batch: training_step                  -> micro-step bookkeeping (inputs moved to the
        compute_loss (forward)                         device, model.train(), loss scaling)
        accelerator.backward (backward)
        loss accumulation, FLOPs and token counts      -> micro-step bookkeeping
    accelerator.clip_grad_norm_ (clip, or norm only) -> grad_clip
    on_pre_optimizer_step, optimizer.step, on_optimizer_step   -> optimizer
    LR scheduler step, model.zero_grad              -> zero_grad (on_optimizer_step to on_step_end)
    on_step_end
    logging, evaluation, saving                     -> between steps

``LoopClock`` wraps ``training_step``, ``compute_loss``, ``get_batch_samples`` and the accelerator's
``backward`` and ``clip_grad_norm_`` with instance attributes (the class's methods are untouched;
``remove`` deletes them), and the callback tells it where steps begin and end. The wrappers only
read the clock (``time.perf_counter``, minor page faults) and, while a profiler runs, open the
same ``lp/phase/...`` scopes as ``trace``; they change no argument and no result. They stay
installed only for the observed window.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..capture.step import minor_faults
from ..names import PHASES, phase_scope

_MISSING = object()


@dataclass
class StepRecord:
    """One observed optimizer step of the loop.

    Attributes:
        step: the Trainer's ``global_step`` when the step began (0-based).
        phases: seconds per phase (``PHASES``): forward and backward summed over micro-batches,
            optimizer (on_pre_optimizer_step to on_optimizer_step), zero_grad (on_optimizer_step to
            on_step_end: the LR scheduler's step and ``model.zero_grad``).
        faults: minor page faults per phase.
        total_s: on_step_begin to on_step_end.
        grad_clip_s: time in ``accelerator.clip_grad_norm_`` (clipping, or the norm alone).
        micro: micro-batches (gradient accumulation).
        loss: the step's loss (the micro-steps' returned losses summed), when kept.
        batches: ``Micro`` (inputs, num_items_in_batch, the model the loop ran) per micro-batch,
            when kept for a replay.
        data_s: ``get_batch_samples`` before the step (fetching its micro-batches).
        gap_s: from the end of the previous step's on_step_end (the callback's own work excluded)
            to this step's on_step_begin: logging, evaluation, saving, data, other callbacks.
        events: Trainer events in that gap (``log``, ``evaluate``, ``save``, ``epoch``).
    """

    step: int
    phases: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    faults: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    total_s: float = 0.0
    grad_clip_s: float = 0.0
    micro: int = 0
    loss: Optional[float] = None
    batches: list = field(default_factory=list)
    data_s: Optional[float] = None
    gap_s: Optional[float] = None
    events: list = field(default_factory=list)

    @property
    def phase_sum_s(self) -> float:
        return float(sum(self.phases.values()))

    @property
    def micro_step_overhead_s(self) -> float:
        """The step's time outside its phases and clipping: the Trainer's per-micro-batch work."""
        return self.total_s - self.phase_sum_s - self.grad_clip_s


class Micro:
    """One micro-batch of a step as the loop ran it: its inputs (the batch's container copied,
    tensors shared), ``num_items_in_batch`` and the model ``training_step`` was given."""

    __slots__ = ("inputs", "items", "model")

    def __init__(self, inputs: Any, items: Any, model: Any):
        self.inputs, self.items, self.model = inputs, items, model


def _shallow_copy(inputs: Any) -> Any:
    """A copy of a batch's container (tensors shared): compute_loss may pop keys from it."""
    try:
        return copy.copy(inputs)
    except Exception:  # an exotic container: keep the object itself
        return inputs


class _Scope:
    """A ``record_function`` opened in one callback and closed in another (only while profiling)."""

    def __init__(self):
        self._open = None

    def enter(self, phase: str) -> None:
        self.exit()
        if torch.autograd._profiler_enabled():
            self._open = torch.profiler.record_function(phase_scope(phase))
            self._open.__enter__()

    def exit(self) -> None:
        if self._open is not None:
            self._open.__exit__(None, None, None)
            self._open = None


def _phase_scope(phase: str):
    if torch.autograd._profiler_enabled():
        return torch.profiler.record_function(phase_scope(phase))
    return contextlib.nullcontext()


class LoopClock:
    """Times the loop's steps (see the module doc).

    Args:
        trainer: the ``transformers.Trainer``.
        sync: a function that waits for the device (CUDA) before reading the clock, or None.

    Attributes:
        current: the step being timed (None between steps).
        keep_batches: keep the current step's micro-batches (for a replay).
        has_optimizer_events: the installed transformers calls on_pre_optimizer_step and
            on_optimizer_step (else the optimizer phase runs from the clipping's end to
            on_step_end).
        backward_seen: the accelerator's backward ran inside training_step (else backward is
            the rest of training_step after compute_loss).
    """

    def __init__(self, trainer: Any, sync: Optional[Callable[[], None]] = None):
        self.trainer = trainer
        self._sync = sync or (lambda: None)
        self.current: Optional[StepRecord] = None
        self.keep_batches = False
        self.keep_loss = False
        self.has_optimizer_events = False
        self.backward_seen = False
        self._patched: list[tuple[Any, str, Any]] = []
        self._scope = _Scope()
        self._t = 0.0  # clock at the last boundary inside the step
        self._f = 0
        self._last_micro_end: Optional[float] = None
        self._last_end: Optional[float] = None
        self._data_s: Optional[float] = None
        self._events: list = []
        self._losses: list = []
        self._depth = 0
        self._backward_in_step = False
        self._begin_t = 0.0
        self._zg_t: Optional[float] = None
        self._zg_f = 0

    # -- installing ---------------------------------------------------------------------------
    def _patch(self, obj: Any, name: str, make: Callable[[Callable], Callable]) -> None:
        original = getattr(obj, name, None)
        if original is None:
            return
        self._patched.append((obj, name, obj.__dict__.get(name, _MISSING)))
        setattr(obj, name, make(original))

    def install(self) -> None:
        """Install the wrappers (instance attributes of the trainer and its accelerator)."""
        tr = self.trainer
        self._patch(tr, "get_batch_samples", self._wrap_data)
        self._patch(tr, "training_step", self._wrap_training_step)
        self._patch(tr, "compute_loss", self._wrap_compute_loss)
        acc = getattr(tr, "accelerator", None)
        if acc is not None:
            self._patch(acc, "backward", self._wrap_backward)
            self._patch(acc, "clip_grad_norm_", self._wrap_clip)

    def remove(self) -> None:
        """Remove every wrapper (the original attributes come back)."""
        self._scope.exit()
        for obj, name, before in reversed(self._patched):
            if before is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                setattr(obj, name, before)
        self._patched.clear()

    # -- wrappers ---------------------------------------------------------------------------
    def _wrap_data(self, original):
        def get_batch_samples(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._data_s = (self._data_s or 0.0) + time.perf_counter() - t0
        return get_batch_samples

    def _wrap_training_step(self, original):
        def training_step(model, inputs, *args, **kwargs):
            rec = self.current
            if rec is None:
                return original(model, inputs, *args, **kwargs)
            if self.keep_batches:
                items = kwargs.get("num_items_in_batch", args[0] if args else None)
                rec.batches.append(Micro(_shallow_copy(inputs), items, model))
            rec.micro += 1
            self._backward_in_step = False
            out = original(model, inputs, *args, **kwargs)
            if not self._backward_in_step:  # a training_step that calls loss.backward() itself
                self._sync()
                t, f = time.perf_counter(), minor_faults()
                rec.phases["backward"] += t - self._t
                rec.faults["backward"] += f - self._f
            if self.keep_loss and isinstance(out, torch.Tensor):
                self._losses.append(out.detach())
            self._last_micro_end = time.perf_counter()
            return out
        return training_step

    def _wrap_compute_loss(self, original):
        def compute_loss(*args, **kwargs):
            rec = self.current
            if rec is None or self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            try:
                self._sync()
                t0, f0 = time.perf_counter(), minor_faults()
                with _phase_scope("forward"):
                    out = original(*args, **kwargs)
                self._sync()
                self._t, self._f = time.perf_counter(), minor_faults()
                rec.phases["forward"] += self._t - t0
                rec.faults["forward"] += self._f - f0
                return out
            finally:
                self._depth -= 1
        return compute_loss

    def _wrap_backward(self, original):
        def backward(*args, **kwargs):
            rec = self.current
            if rec is None:
                return original(*args, **kwargs)
            self.backward_seen = self._backward_in_step = True
            t0, f0 = time.perf_counter(), minor_faults()
            with _phase_scope("backward"):
                out = original(*args, **kwargs)
            self._sync()
            t, f = time.perf_counter(), minor_faults()
            rec.phases["backward"] += t - t0
            rec.faults["backward"] += f - f0
            return out
        return backward

    def _wrap_clip(self, original):
        def clip_grad_norm_(*args, **kwargs):
            rec = self.current
            if rec is None:
                return original(*args, **kwargs)
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            self._sync()
            rec.grad_clip_s += time.perf_counter() - t0
            return out
        return clip_grad_norm_

    # -- events from the callback ----------------------------------------------------------
    def event(self, name: str) -> None:
        """A Trainer event between steps (log, evaluate, save, epoch)."""
        if self.current is None and name not in self._events:
            self._events.append(name)

    def begin(self, step: int) -> StepRecord:
        """on_step_begin: a new step starts now."""
        self._sync()
        now = time.perf_counter()
        seen = self._last_end is not None  # the gap since the previous observed step's end
        rec = StepRecord(step=step, data_s=self._data_s if seen else None,
                         events=list(self._events) if seen else [],
                         gap_s=now - self._last_end if seen else None)
        self._data_s, self._events, self._losses = None, [], []
        self.current = rec
        self._begin_t = now
        self._last_micro_end = None
        self._zg_t = None
        self._t, self._f = now, minor_faults()
        return rec

    def pre_optimizer(self) -> None:
        """on_pre_optimizer_step."""
        if self.current is None:
            return
        self._sync()
        self._opt_t, self._opt_f = time.perf_counter(), minor_faults()
        self._scope.enter("optimizer")

    def optimizer_done(self) -> None:
        """on_optimizer_step."""
        rec = self.current
        if rec is None:
            return
        self._sync()
        self._scope.exit()
        t, f = time.perf_counter(), minor_faults()
        rec.phases["optimizer"] += t - self._opt_t
        rec.faults["optimizer"] += f - self._opt_f
        self._zg_t, self._zg_f = t, f
        self._scope.enter("zero_grad")

    def end(self) -> Optional[StepRecord]:
        """on_step_end: the step is over; returns its record."""
        rec = self.current
        if rec is None:
            return None
        self._sync()
        self._scope.exit()
        t, f = time.perf_counter(), minor_faults()
        if self.has_optimizer_events and self._zg_t is not None:
            rec.phases["zero_grad"] += t - self._zg_t
            rec.faults["zero_grad"] += f - self._zg_f
        else:  # no optimizer events: everything after the clipping is the optimizer phase
            start = self._last_micro_end if self._last_micro_end is not None else self._begin_t
            rec.phases["optimizer"] += max(0.0, t - start - rec.grad_clip_s)
        rec.total_s = t - self._begin_t
        if self._losses:
            rec.loss = float(sum(float(x) for x in self._losses))
        self.current = None
        return rec

    def resume(self) -> None:
        """The callback's own work after on_step_end is done: the gap to the next step starts."""
        self._last_end = time.perf_counter()
        self._data_s, self._events = None, []

