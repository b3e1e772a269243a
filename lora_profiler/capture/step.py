"""One training step of a mode, timed by phase."""

from __future__ import annotations

import contextlib
import math
import time

try:  # minor page faults of the process (Linux, macOS); absent on Windows
    import resource

    def minor_faults() -> int:
        """Minor page faults of this process so far (every thread)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
except ImportError:  # pragma: no cover
    resource = None

    def minor_faults() -> int:
        return 0
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ..names import PHASES, phase_scope
from ..workload.modes import ModeConfig
from ..workload.spec import Workload


class ModeFailure(RuntimeError):
    """A mode could not run (NaN loss, out of memory, the user's loss_fn raised...)."""


def as_failure(exc: BaseException) -> ModeFailure:
    """Any exception a mode's model, loss or optimizer raised, as one line."""
    if isinstance(exc, ModeFailure):
        return exc
    if isinstance(exc, torch.OutOfMemoryError):
        return ModeFailure(f"out of memory: {str(exc).splitlines()[0]}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ModeFailure(f"{type(exc).__name__}: {first}")


def _scope(name: str):
    if torch.autograd._profiler_enabled():
        return torch.profiler.record_function(phase_scope(name))
    return contextlib.nullcontext()


@dataclass
class StepRunner:
    """Runs steps of one mode of a workload.

    Args:
        workload: the workload.
        config: the mode's configuration (from ``switch_mode``).
        lr: AdamW learning rate (small: weights must not diverge over the run).
    """

    workload: Workload
    config: ModeConfig
    lr: float = 1e-5
    # What the step calls the loss on: the workload's model (None), or the model as the user
    # wraps it for distributed training (DistributedDataParallel, FSDP; capture/distributed.py).
    module: Optional[torch.nn.Module] = None

    def __post_init__(self):
        self.optimizer: Optional[torch.optim.Optimizer] = (
            torch.optim.AdamW(self.config.trainable, lr=self.lr) if self.config.trainable else None
        )
        self._cuda = self.workload.device.type == "cuda"
        self.last_faults: dict[str, int] = dict.fromkeys(PHASES, 0)

    def _sync(self):
        if self._cuda:
            torch.cuda.synchronize(self.workload.device)

    def forward_loss(self, batch: Any = None, wrapped: bool = True) -> torch.Tensor:
        """The forward alone (graph built unless the mode is forward-only), on ``batch`` (None:
        the mode's batch); ``wrapped=False`` calls the bare model even when the runner has a
        distributed wrapper (a forward without its backward would leave DDP's reduction open)."""
        module = self.module if wrapped and self.module is not None else self.workload.model
        loss = self.workload.loss_fn(module, self.config.batch if batch is None else batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ModeFailure(f"loss_fn returned {type(loss).__name__}"
                              f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}, "
                              "expected a scalar tensor")
        return loss

    def step(self, batches: Optional[Sequence[Any]] = None) -> tuple[float, dict[str, float]]:
        """Run one step.

        Args:
            batches: micro-batches of one step with gradient accumulation: zero_grad once, a
                forward and a backward per micro-batch (each in its own phase scope, their times
                summed per phase), the optimizer once. None: the mode's batch.

        Returns:
            (loss value (the micro-batches' losses summed), seconds per phase).

        Raises:
            ModeFailure: non-finite loss, a loss that is not a scalar, or any exception the
                model, loss or optimizer raised (out of memory included), as one line.
        """
        times = dict.fromkeys(PHASES, 0.0)
        try:
            f0 = minor_faults()
            t0 = time.perf_counter()
            t1, f1 = t0, f0
            if self.optimizer is not None:
                with _scope("zero_grad"):
                    self.optimizer.zero_grad(set_to_none=True)
                t1 = time.perf_counter()
                f1 = minor_faults()
            t2, f2, t3, f3 = t1, f1, t1, f1  # end of the last forward, backward
            fwd_s = bwd_s = 0.0
            fwd_f = bwd_f = 0
            losses = []
            for batch in [None] if batches is None else batches:
                with _scope("forward"), torch.set_grad_enabled(self.config.backward):
                    loss = self.forward_loss(batch)
                self._sync()
                t2, f2 = time.perf_counter(), minor_faults()
                fwd_s, fwd_f = fwd_s + (t2 - t3), fwd_f + (f2 - f3)
                if self.config.backward:
                    with _scope("backward"):
                        loss.backward()
                    self._sync()
                t3, f3 = (time.perf_counter(), minor_faults()) if self.config.backward else (t2, f2)
                bwd_s, bwd_f = bwd_s + (t3 - t2), bwd_f + (f3 - f2)
                losses.append(loss.detach())
            if self.optimizer is not None:
                with _scope("optimizer"):
                    self.optimizer.step()
                self._sync()
            t4, f4 = (time.perf_counter(), minor_faults()) if self.optimizer is not None else (t3, f3)
        except ModeFailure:
            raise
        except Exception as exc:
            raise as_failure(exc) from exc
        value = sum(float(x) for x in losses)
        if not math.isfinite(value):
            raise ModeFailure(f"loss is {value} (not finite)")
        times.update(zero_grad=t1 - t0, forward=fwd_s, backward=bwd_s, optimizer=t4 - t3)
        # page faults per phase: memory the allocator gave back to the OS, touched again
        self.last_faults = {"zero_grad": f1 - f0, "forward": fwd_f, "backward": bwd_f, "optimizer": f4 - f3}
        return value, times

    def release(self) -> None:
        """Drop the optimizer state and gradients (free memory before the next mode)."""
        self.optimizer = None
        for p in self.config.trainable:
            p.grad = None
