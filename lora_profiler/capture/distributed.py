"""Profiling under torch.distributed: ranks, lock-step, the model as users wrap it, one set of facts.

``torchrun --nproc_per_node N -m lora_profiler.trace ...`` starts N copies of the command; each
finds its rank in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, set by torchrun) and
``start`` joins the process group (NCCL on CUDA, Gloo on CPU) with ``--dist-timeout``. Then:

- every rank builds the same workload (same seed: same weights and batch) and keeps its own
  shard of the batch (``shard_batch``: rows ``rank*B/N .. (rank+1)*B/N``);
- each training mode's step calls the model as users wrap it (``wrap``): DistributedDataParallel
  over the mode's trainable parameters (full: every weight; LoRA: the adapters), so a step
  all-reduces exactly the gradients that mode trains. The frozen floor and forward-only have
  nothing to all-reduce (DDP refuses a module without a parameter that requires a gradient):
  they run unwrapped, which is what such a step costs under DDP too (no communication);
- ranks meet at a barrier before every timed block and every profiled session
  (``DistContext.sync``), so their i-th steps run at the same time;
- only rank 0 writes ``facts.json``: at every checkpoint each rank's step times and trace files
  are gathered to it (``DistCheckpoint``) under ``facts["distributed"]``;
- a rank that dies or hangs: the others' next collective fails (at once for a dead peer, after
  ``--dist-timeout`` for a stuck one); ``DistContext.failure`` then names the rank (its process
  gone or stopped on this host, or its heartbeat silent in the store) in one line (``DistError``),
  rank 0 keeps the facts of the last finished round, and every rank exits.

Control traffic (barriers, gathering the facts) goes over a Gloo group even when the training
collectives use NCCL: Gloo's ``monitored_barrier`` names the ranks that did not arrive.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

from ..workload.batch import map_tensors
from .checkpoint import Checkpoint

WRAPS = ("ddp", "fsdp")
_BEAT_S = 1.0  # heartbeat period (the store counter ``lp/beat/<rank>``)
# per-mode keys of a rank's facts that rank 0 keeps for it (the rest is rank 0's)
RANK_MODE_KEYS = ("status", "error", "step_time_s", "phase_time_s", "phase_samples_s", "page_faults",
                  "trace_files", "loss")


class DistError(RuntimeError):
    """A rank failed or hung, or the process group could not form; ``str()`` is one line that
    names the rank."""


def launched() -> bool:
    """True under torchrun (or any launcher setting WORLD_SIZE > 1 and RANK)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


@dataclass
class DistContext:
    """This process's place in the job and the job's control plane."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    timeout_s: float
    wrapper: str  # ddp | fsdp
    device: torch.device
    host: str = field(default_factory=socket.gethostname)
    ctl: Any = None  # the Gloo group for barriers and gathering facts (None: the default group)
    store: Any = None
    # mode -> what its step communicates (see ``wrap``), the same on every rank
    communication: dict = field(default_factory=dict)
    global_batch_size: Optional[int] = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _where: str = "setup"
    # rank -> {"pid", "host"}, kept once read: after a failure the store may be gone with the agent
    _known: dict = field(default_factory=dict)

    # --- the group -------------------------------------------------------------------------

    @classmethod
    def start(cls, device: torch.device, wrap: str = "ddp", timeout_s: float = 120.0) -> "DistContext":
        """Join the process group torchrun set up (env://).

        Raises:
            DistError: the group cannot form within ``timeout_s`` (one line).
        """
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_available() or (backend == "gloo" and not dist.is_gloo_available()):
            raise DistError(f"rank {rank}: this torch build has no {backend} backend")
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except Exception as exc:  # noqa: BLE001 - rendezvous or backend errors, as one line
            raise DistError(f"rank {rank}: could not join the process group of {world} ranks "
                            f"({_first_line(exc)}); check torchrun's --rdzv-endpoint / --master-addr "
                            "and that every node runs the same command") from None
        ctx = cls(rank=rank, world_size=world, local_rank=local, backend=backend, timeout_s=timeout_s,
                  wrapper=wrap, device=device)
        ctx.ctl = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s)) \
            if backend != "gloo" else None
        ctx.store = dist.distributed_c10d._get_default_store()
        ctx.store.set(f"lp/who/{rank}", json.dumps({"pid": os.getpid(), "host": ctx.host}))
        threading.Thread(target=ctx._beat, name="lora_profiler-heartbeat", daemon=True).start()
        return ctx

    def close(self) -> None:
        """Stop the heartbeat and leave the group (without waiting for the other ranks)."""
        self._stop.set()
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group: nothing left to release
                pass

    def _beat(self) -> None:
        while not self._stop.wait(_BEAT_S):
            try:
                self.store.add(f"lp/beat/{self.rank}", 1)
            except Exception:  # noqa: BLE001 - the store is gone: the job is ending
                return

    # --- lock-step and collectives -----------------------------------------------------------

    def at(self, where: str) -> None:
        """What this rank is doing (named in a failure's message)."""
        self._where = where

    def sync(self, where: str) -> None:
        """Every rank waits here for the others (a monitored barrier: a rank that does not come
        within the timeout is named).

        Raises:
            DistError: a rank died or did not arrive in time.
        """
        self._where = where
        try:
            dist.monitored_barrier(group=self.ctl, timeout=timedelta(seconds=self.timeout_s),
                                   wait_all_ranks=True)
        except Exception as exc:  # noqa: BLE001 - any backend error is a failed peer
            raise self.failure(where, exc) from None
        if len(self._known) < self.world_size - 1:  # every rank wrote its entry before this barrier
            for r in range(self.world_size):
                if r != self.rank:
                    self._who(r)

    def gather(self, obj: Any, where: str) -> Optional[list]:
        """Each rank's ``obj``, on rank 0 (None elsewhere).

        Raises:
            DistError: a rank died or did not arrive in time.
        """
        out = [None] * self.world_size if self.rank == 0 else None
        try:
            dist.gather_object(obj, out, dst=0, group=self.ctl)
        except Exception as exc:  # noqa: BLE001
            raise self.failure(where, exc) from None
        return out

    def broadcast(self, obj: Any, where: str) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        try:
            dist.broadcast_object_list(box, src=0, group=self.ctl)
        except Exception as exc:  # noqa: BLE001
            raise self.failure(where, exc) from None
        return box[0]

    # --- failures ----------------------------------------------------------------------------

    def peers(self, wait_s: float = 2.5) -> dict:
        """rank -> "dead" | "stopped" | "silent" | "alive" | "unknown" for every other rank: by
        its process on this host (gone or a zombie: dead; stopped: stopped), else by whether its
        heartbeat counter moved within ``wait_s``."""
        out, remote = {}, []
        for r in range(self.world_size):
            if r == self.rank:
                continue
            who = self._who(r)
            state = _process_state(who["pid"]) if who and who.get("host") == self.host else None
            if state is None:
                remote.append(r)
            out[r] = state or "unknown"
        if remote and wait_s > 0:
            before = {r: self._beats(r) for r in remote}
            time.sleep(wait_s)
            for r in remote:
                b, a = before[r], self._beats(r)
                if a is not None and b is not None:
                    out[r] = "alive" if a > b else "silent"
        return out

    def failure(self, where: str, exc: BaseException) -> DistError:
        """One line for a collective that failed during ``where``, naming the ranks behind it."""
        try:
            states = self.peers()
        except Exception:  # noqa: BLE001 - the store is gone too
            states = {}
        bad = {r: s for r, s in states.items() if s in ("dead", "stopped", "silent")}
        if not bad and "monitoredBarrier" in str(exc):
            import re

            ranks = [int(x) for x in re.findall(r"\d+", str(exc).split("failed to pass")[0])]
            bad = {r: "late" for r in ranks if r != self.rank and r < self.world_size}
        why = {"dead": "died (killed or crashed)", "stopped": "is stopped (SIGSTOP?)",
               "silent": "stopped answering (no heartbeat)",
               "late": f"did not arrive within --dist-timeout {self.timeout_s:g} s (hung or far slower)"}
        if bad:
            text = "; ".join(f"rank {r}{self._pid_text(r)} {why[s]}" for r, s in sorted(bad.items()))
            return DistError(f"{text} during {where}; the run stopped on every rank")
        return DistError(f"rank {self.rank}: lost contact with the other ranks during {where} "
                         f"({_first_line(exc)}); the run stopped")

    def mode_failure(self, mode: str, exc: BaseException) -> DistError:
        """A mode's step failed on this rank: a failed peer behind it (a collective inside the
        step), or this rank's own failure; either way the run stops on every rank."""
        try:
            states = self.peers(wait_s=0.0 if self.world_size <= 8 else 2.5)
        except Exception:  # noqa: BLE001
            states = {}
        if any(s in ("dead", "stopped", "silent") for s in states.values()):
            return self.failure(f"a {mode} step", exc)
        return DistError(f"rank {self.rank}: the {mode} step failed ({exc}); the run stopped on every "
                         "rank (a mode cannot be dropped on one rank only)")

    def _who(self, r: int) -> Optional[dict]:
        if r in self._known:
            return self._known[r]
        key = f"lp/who/{r}"
        try:
            if not self.store.check([key]):
                return None
            self._known[r] = json.loads(self.store.get(key))
            return self._known[r]
        except Exception:  # noqa: BLE001
            return None

    def _pid_text(self, r: int) -> str:
        who = self._who(r)
        return f" (pid {who['pid']} on {who['host']})" if who else ""

    def _beats(self, r: int) -> Optional[int]:
        try:
            return int(self.store.add(f"lp/beat/{r}", 0))
        except Exception:  # noqa: BLE001
            return None

    # --- what a step runs ---------------------------------------------------------------------

    def wrap(self, workload, cfg) -> Optional[torch.nn.Module]:
        """The model as users wrap it for ``cfg``'s mode (None: the bare model), and what its
        step communicates recorded in ``communication[mode]``.

        DDP over the trainable parameters; a mode with none (frozen, forward) runs bare.
        """
        trainable = [p for p in cfg.trainable if p.requires_grad]
        entry = {"wrapped": None, "collective": None, "params": int(sum(p.numel() for p in trainable)),
                 "tensors": len(trainable),
                 "bytes_per_step": int(sum(p.numel() * p.element_size() for p in trainable)),
                 "buckets": None, "note": None}
        if not cfg.backward or not trainable:
            entry.update(bytes_per_step=0, note="nothing to all-reduce (no trainable parameter): "
                                                "run without a wrapper, as DDP would refuse it")
            self.communication[cfg.name] = entry
            return None
        if self.wrapper == "fsdp":
            module = self._fsdp(workload, cfg)
            entry.update(wrapped="fsdp", collective="reduce_scatter + all_gather")
        else:
            from torch.nn.parallel import DistributedDataParallel as DDP

            kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            module = DDP(workload.model, **kwargs)
            entry.update(wrapped="ddp", collective="all_reduce")
            sizes = getattr(getattr(module, "reducer", None), "_get_zeros_like_grad_buckets", None)
            entry["buckets"] = len(sizes()) if callable(sizes) else None
        self.communication[cfg.name] = entry
        return module

    def _fsdp(self, workload, cfg):
        """FSDP (use_orig_params, so frozen and trainable weights may share a unit)."""
        try:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        except ImportError as exc:
            raise DistError(f"--wrap fsdp: FSDP is not available in this torch ({exc})") from None
        try:
            return FSDP(workload.model, use_orig_params=True,
                        device_id=self.device if self.device.type == "cuda" else None)
        except Exception as exc:  # noqa: BLE001
            raise DistError(f"--wrap fsdp: cannot wrap {workload.name} for {cfg.name} on "
                            f"{self.device.type} ({_first_line(exc)}); use --wrap ddp") from None

    def facts(self) -> dict:
        """The job-wide part of ``facts["distributed"]`` (the ranks are added by the checkpoint)."""
        return {"world_size": self.world_size, "backend": self.backend, "wrap": self.wrapper,
                "timeout_s": self.timeout_s, "global_batch_size": self.global_batch_size,
                "communication": self.communication}

    def rank_facts(self, facts: dict) -> dict:
        """This rank's entry of ``facts["distributed"]["ranks"]``."""
        return {"rank": self.rank, "local_rank": self.local_rank, "host": self.host, "pid": os.getpid(),
                "modes": {m: {k: e[k] for k in RANK_MODE_KEYS if k in e}
                          for m, e in (facts.get("modes") or {}).items()}}


def shard_batch(batch: Any, batch_size: int, rank: int, world: int) -> Any:
    """Rank ``rank``'s rows of every tensor whose first dimension is the batch.

    Raises:
        ValueError: the batch does not split evenly over the ranks.
    """
    if batch_size % world:
        raise ValueError(f"--batch-size {batch_size} does not split over {world} ranks; give a "
                         f"multiple of {world} (it is the global batch, split across the ranks)")
    per = batch_size // world

    def take(_where, t: torch.Tensor) -> torch.Tensor:
        if t.dim() and t.shape[0] == batch_size:
            return t[rank * per:(rank + 1) * per].clone()
        return t
    return map_tensors(batch, take)


class DistCheckpoint(Checkpoint):
    """A Checkpoint whose every write first gathers each rank's facts to rank 0, and which only
    rank 0 writes (``facts["distributed"]``: the job and every rank's step times and traces)."""

    def __init__(self, ctx: DistContext, out_dir, args: Optional[dict] = None):
        super().__init__(out_dir, args=args)
        self.ctx = ctx
        self.ranks: Optional[list] = None  # the ranks' facts as last gathered (rank 0)

    def _merged(self, facts: dict, where: str) -> dict:
        got = self.ctx.gather(self.ctx.rank_facts(facts), f"gathering the facts after {where}")
        facts = dict(facts)
        if got is not None:
            self.ranks = got
        facts["distributed"] = {**self.ctx.facts(), "ranks": self.ranks}
        return facts

    def _write(self, facts: dict, status: str) -> None:
        facts = self._merged(facts, self.progress.get("at") or "a round")
        if self.ctx.rank == 0:
            super()._write(facts, status)

    def finish(self, facts: dict) -> dict:
        facts = self._merged(facts, "the last round")
        if self.ctx.rank == 0:
            return super().finish(facts)
        return facts

    def interrupted(self, signum: int, error: Optional[str] = None) -> Optional[dict]:
        if self.ctx.rank != 0:
            return None
        return super().interrupted(signum, error=error)


def _process_state(pid: int) -> Optional[str]:
    """"dead" (gone or a zombie), "stopped", "alive", or None when /proc cannot say."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except FileNotFoundError:
        return "dead"
    except OSError:
        return None
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return {"Z": "dead", "X": "dead", "T": "stopped", "t": "stopped"}.get(state, "alive")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
