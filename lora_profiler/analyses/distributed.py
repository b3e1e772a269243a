"""The report's ``distributed`` section for a run made under torchrun: every rank's step times,
the slowest rank and the spread, what each mode communicated (measured in each rank's traces,
against what its wrapper all-reduces: trainable parameters x element size), and the LoRA
attribution per rank (torch-free)."""

from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from ..events import Trace
from .communication import Collectives
from .ranks import spread

# the collective that carries a wrapper's gradients
GRADIENT_COLLECTIVE = {"ddp": "all_reduce", "fsdp": "reduce_scatter_tensor"}


def rank_facts(facts: dict, rank: dict) -> dict:
    """``facts`` with the modes' timed samples of ``rank`` (its entry of distributed.ranks)."""
    out = copy.deepcopy(facts)
    for mode, e in (rank.get("modes") or {}).items():
        if mode in out.get("modes", {}):
            out["modes"][mode].update(copy.deepcopy(e))
    return out


def distributed_summary(facts: dict, rank_traces: dict) -> Optional[dict]:
    """``report["distributed"]`` (docs/FORMAT.md), or None for a single-process run.

    Args:
        facts: the run's facts.json.
        rank_traces: rank -> mode -> Trace of that rank's files.
    """
    from .lora import lora_attribution

    d = facts.get("distributed")
    if not d:
        return None
    ranks = [r for r in d.get("ranks") or [] if r]
    step = {}
    for mode in facts.get("modes") or {}:
        per = {r["rank"]: ((r["modes"].get(mode) or {}).get("step_time_s") or {}).get("median") for r in ranks}
        step[mode] = {"per_rank_s": {str(k): v for k, v in per.items()}, **spread(per)}
    wrap = d.get("wrap") or "ddp"
    grad = GRADIENT_COLLECTIVE.get(wrap, "all_reduce")
    comm = {}
    for mode, exp in (d.get("communication") or {}).items():
        per = {}
        for rank, traces in sorted(rank_traces.items()):
            t: Optional[Trace] = traces.get(mode)
            if t is None:
                continue
            s = Collectives(t).summary()
            g = [x["bytes_by_collective"].get(grad, 0) for x in s["per_step"]]
            per[str(rank)] = {
                "bytes_per_step": s["bytes_per_step"],
                "gradient_bytes_per_step": float(np.median(g)) if g else None,
                "time_per_step_s": _s(s["time_per_step_us"]),
                "exposed_per_step_s": _s(s["exposed_per_step_us"]),
                "overlap_fraction": s["overlap_fraction"],
                "collectives": s["collectives"],
            }
        want = exp.get("bytes_per_step")
        got = [v["gradient_bytes_per_step"] for v in per.values()]
        comm[mode] = {"wrapped": exp.get("wrapped"), "collective": grad if exp.get("wrapped") else None,
                      "expected_bytes_per_step": want, "trainable_params": exp.get("params"),
                      "per_rank": per,
                      "matches": (all(g == want for g in got) if got and want is not None else None)}
    attribution = {}
    for r in ranks:
        traces = rank_traces.get(r["rank"]) or {}
        try:
            att = lora_attribution(rank_facts(facts, r), traces)
        except Exception as exc:  # noqa: BLE001 - one rank's traces unreadable: say so, keep the rest
            attribution[str(r["rank"])] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        if att is None:
            continue
        attribution[str(r["rank"])] = {
            "overhead_s": att["overhead_s"], "residual_s": att["residual_s"], "components": att["components"],
            "communication_s": (att["causes"].get("communication") or {}).get("seconds"),
            "vs_full_communication_s": ((att.get("vs_full") or {}).get("causes", {}).get("communication") or {})
            .get("seconds")}
    return {"world_size": d.get("world_size"), "backend": d.get("backend"), "wrap": wrap,
            "global_batch_size": d.get("global_batch_size"), "step_time": step,
            "communication": comm, "attribution_per_rank": attribution}


def _s(us):
    return us * 1e-6 if us is not None else None
