"""Quality beside speed: a fine-tuning task small enough for a CPU, with a known best loss.

Two synthetic "languages" are first-order Markov chains over a small vocabulary, made in code
from a seed: each token has a few likely successors (``branching``) with random weights, so the
best any model can do is the chain's entropy rate, computed exactly (``entropy_rate``). A model
is pre-trained briefly on the source language; the target language is the source with a
fraction of its rows (tokens' successor distributions) drawn anew. Every strategy then fine-tunes
the same pre-trained model on the same target batches in the same order, and its held-out loss
on target text is measured against the pre-trained model's (not fine-tuned) and the entropy
rate (the floor).

``fine_tune`` runs one strategy: the pre-trained weights, then ``switch_mode`` into the
strategy (the same code ``trace`` times), AdamW over what it trains, the held-out loss every
few steps, and the wall time of the steps (evaluation excluded).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .modes import InputGrad, leave_variant, mode_kind, switch_mode


@dataclass(frozen=True)
class MarkovLanguage:
    """A first-order Markov chain over ``vocab`` tokens: row i is the distribution of the token
    after token i."""

    transition: np.ndarray  # (vocab, vocab), rows sum to 1

    @staticmethod
    def random(vocab: int, branching: int, seed: int) -> "MarkovLanguage":
        rng = np.random.default_rng(seed)
        t = np.zeros((vocab, vocab))
        for i in range(vocab):
            t[i] = _row(rng, vocab, branching)
        return MarkovLanguage(t)

    def shifted(self, fraction: float, branching: int, seed: int) -> "MarkovLanguage":
        """This language with ``fraction`` of its rows drawn anew (the fine-tuning target)."""
        rng = np.random.default_rng(seed)
        t = self.transition.copy()
        vocab = len(t)
        for i in rng.choice(vocab, size=int(round(fraction * vocab)), replace=False):
            t[i] = _row(rng, vocab, branching)
        return MarkovLanguage(t)

    def stationary(self) -> np.ndarray:
        """(vocab,) the chain's stationary distribution (power iteration)."""
        pi = np.full(len(self.transition), 1.0 / len(self.transition))
        for _ in range(2000):
            nxt = pi @ self.transition
            if np.abs(nxt - pi).max() < 1e-13:
                break
            pi = nxt
        return pi

    def entropy_rate(self) -> float:
        """Nats per token: the lowest next-token cross-entropy any model can reach."""
        t = self.transition
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(t > 0, t * np.log(t), 0.0).sum(axis=1)
        return float(self.stationary() @ h)

    def sample(self, batch: int, seq: int, rng: np.random.Generator) -> torch.Tensor:
        """(batch, seq) int64 token ids, each sequence started from the stationary distribution."""
        vocab = len(self.transition)
        cdf = np.cumsum(self.transition, axis=1)
        cdf[:, -1] = 1.0
        out = np.empty((batch, seq), dtype=np.int64)
        out[:, 0] = rng.choice(vocab, size=batch, p=self.stationary())
        for j in range(1, seq):
            u = rng.random(batch)
            out[:, j] = (cdf[out[:, j - 1]] < u[:, None]).sum(axis=1)
        return torch.from_numpy(np.minimum(out, vocab - 1))


def _row(rng: np.random.Generator, vocab: int, branching: int) -> np.ndarray:
    row = np.zeros(vocab)
    succ = rng.choice(vocab, size=branching, replace=False)
    row[succ] = rng.dirichlet(np.ones(branching))
    return row


@dataclass(frozen=True)
class TaskSpec:
    """The task's sizes; defaults run every strategy with three seeds in a few minutes on 2 cores."""

    vocab: int = 64
    branching: int = 4
    shift: float = 0.5          # fraction of the source's rows the target redraws
    batch: int = 16
    seq: int = 64
    pretrain_steps: int = 300
    pretrain_lr: float = 3e-3
    finetune_steps: int = 150
    eval_every: int = 25
    eval_batches: int = 4


@dataclass
class FineTuneResult:
    """One strategy's fine-tuning run."""

    strategy: str
    seed: int
    status: str = "ok"
    error: Optional[str] = None
    trainable_params: int = 0
    lr: float = 0.0
    curve: list = field(default_factory=list)  # [{"step", "wall_s", "held_out_loss"}]
    step_s: list = field(default_factory=list)  # every fine-tuning step's wall time
    held_out_loss: Optional[float] = None
    wall_s: Optional[float] = None


def lm_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a causal LM on a batch of ids."""
    out = model(ids)
    logits = out.logits if hasattr(out, "logits") else out
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def held_out(model, batches: list) -> float:
    """Mean loss over held-out batches, in eval mode (no dropout), without gradients."""
    was = model.training
    model.train(False)
    try:
        with torch.no_grad():
            return float(np.mean([lm_loss(model, b).item() for b in batches]))
    finally:
        model.train(was)


def pretrain(workload, language: MarkovLanguage, spec: TaskSpec, seed: int,
             progress: Optional[Callable[[str], None]] = None) -> dict:
    """Train the workload's base weights (adapters disabled) on ``language``; returns the state
    dict every strategy starts from."""
    rng = np.random.default_rng(10_000 + seed)
    ig = InputGrad(workload.model, workload.floor)
    try:
        cfg = switch_mode(workload, "full", ig)
        opt = torch.optim.AdamW(cfg.trainable, lr=spec.pretrain_lr)
        for step in range(spec.pretrain_steps):
            ids = language.sample(spec.batch, spec.seq, rng).to(workload.device)
            loss = lm_loss(workload.model, ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress and step % 50 == 0:
                progress(f"pre-training step {step}: loss {loss.item():.3f}")
    finally:
        ig.remove()
    for p in workload.model.parameters():
        p.grad = None
    return copy.deepcopy(workload.model.state_dict())


# Learning rates: adapters and few trainable columns take larger steps than whole weights.
LR = {"full": 3e-4, "partial-top": 3e-4, "lora": 2e-3, "fused-lora": 2e-3, "lora-top": 2e-3, "lora-fa": 2e-3,
      "lora-compiled": 2e-3, "partial-connections": 1e-3}


def fine_tune(workload, state: dict, strategy: str, target: MarkovLanguage, spec: TaskSpec, seed: int,
              held: list, lr: Optional[float] = None) -> FineTuneResult:
    """Fine-tune one strategy from ``state`` on target batches (the same for every strategy of
    a seed); ``strategy`` "none" only measures the pre-trained model."""
    res = FineTuneResult(strategy=strategy, seed=seed)
    leave_variant(workload)
    workload.mode_state.pop("_variants", None)  # strategies made afresh from these weights
    workload.model.load_state_dict(state)
    if strategy == "none":
        leave_variant(workload)
        workload.adapters.set_enabled(False)
        res.held_out_loss = held_out(workload.model, held)
        res.curve = [{"step": 0, "wall_s": 0.0, "held_out_loss": res.held_out_loss}]
        res.wall_s = 0.0
        return res
    ig = InputGrad(workload.model, workload.floor)
    try:
        cfg = switch_mode(workload, strategy, ig)
        if mode_kind(strategy) == "frozen" or not cfg.trainable:
            raise ValueError(f"{strategy} trains nothing")
        res.trainable_params = int(sum(p.numel() for p in cfg.trainable))
        res.lr = lr if lr is not None else LR.get(strategy.split(":")[0], 1e-3)
        opt = torch.optim.AdamW(cfg.trainable, lr=res.lr)
        rng = np.random.default_rng(20_000 + seed)  # the same data order for every strategy
        wall = 0.0
        res.curve.append({"step": 0, "wall_s": 0.0, "held_out_loss": held_out(workload.model, held)})
        for step in range(1, spec.finetune_steps + 1):
            ids = target.sample(spec.batch, spec.seq, rng).to(workload.device)
            t0 = time.perf_counter()
            loss = workload.loss_fn(workload.model, {"input_ids": ids}) if _dict_loss(workload) \
                else lm_loss(workload.model, ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            wall += dt
            res.step_s.append(dt)
            if not np.isfinite(loss.item()):
                raise FloatingPointError(f"loss {loss.item()} at step {step}")
            if step % spec.eval_every == 0 or step == spec.finetune_steps:
                res.curve.append({"step": step, "wall_s": wall, "held_out_loss": held_out(workload.model, held)})
        res.held_out_loss = res.curve[-1]["held_out_loss"]
        res.wall_s = wall
    except Exception as exc:  # one strategy failing does not stop the others
        res.status, res.error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        leave_variant(workload)
        ig.remove()
        for p in workload.model.parameters():
            p.grad = None
    return res


def _dict_loss(workload) -> bool:
    """The workload's own loss takes a dict batch with input_ids (the built-in presets')."""
    return isinstance(workload.batch, dict) and "input_ids" in workload.batch
