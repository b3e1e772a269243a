"""Check the attribution by ablation: the saving each variant should bring, predicted from the
LoRA run's causes, against the saving measured (T_lora - T_variant, timed interleaved, no
profiler; the trimmed mean of the paired step differences, like the overhead). See
``workload/variants.py`` for what each variant changes.

Predictions use only the lora mode's attribution and what the variant recorded in facts:

- ``no-dropout``: the dropout cause (its ops, forward and backward) and its dispatch (the dropout
  module's Python, the engine's gap before its backward nodes);
- ``fold-scale``: the scale cause and its dispatch;
- ``upper-half``: every cause of the removed layers (``by_layer``), the optimizer scaled by the
  measured AdamW time over the remaining adapters, the input-gradient sums in proportion to the
  adapters removed — less the floor's input-gradient work (``floor_only_nodes``), which the
  variant does since its backward runs through every block;
- ``rank-xN``: the lora_A and lora_B causes (forward, backward) scaled by the measured time ratio
  of the adapter matmuls at N times the rank, the optimizer by the measured AdamW ratio: a
  negative saving.

What a variant changes beyond these (e.g. the rest of the network's memory pressure) is not
predicted; a disagreement says so.
"""

from __future__ import annotations

from typing import Optional

from ..units import fmt_s
from . import stats

TOLERANCE = 0.25  # relative difference under which a prediction agrees with the measurement


def _cause(att: dict, name: str, phase: Optional[str] = None) -> float:
    c = (att.get("causes") or {}).get(name)
    if not c:
        return 0.0
    return float(c["phases"].get(phase, 0.0)) if phase else float(c["seconds"])


def _dispatch(att: dict, part: str) -> float:
    return float((att.get("dispatch_parts") or {}).get(part, 0.0))


def predict(name: str, variant: dict, att: dict) -> tuple[Optional[float], dict]:
    """(predicted saving in s, its parts) for a variant, or (None, {"why": ...})."""
    if name == "no-dropout":
        parts = {"dropout": _cause(att, "dropout"), "dispatch": _dispatch(att, "dropout")}
    elif name == "fold-scale":
        parts = {"scale": _cause(att, "scale"), "dispatch": _dispatch(att, "scale")}
    elif name == "upper-half":
        removed = set(variant.get("removed_layers") or [])
        by_layer = att.get("by_layer") or {}
        if not removed or not by_layer:
            return None, {"why": "no per-layer attribution to remove layers from"}
        layers = sum(v for path, row in by_layer.items() if path in removed for v in row.values())
        opt = variant.get("optimizer") or {}
        ratio = opt["after_s"] / opt["before_s"] if opt.get("before_s") else 0.5
        parts = {"removed_layers": layers,
                 "optimizer": _cause(att, "optimizer") * (1.0 - ratio),
                 "grad_input_sum": _cause(att, "grad_input_sum") * len(removed) / max(len(by_layer), 1),
                 "floor_input_grads": _cause(att, "floor_only_nodes")}
    elif name.startswith("rank-x"):
        mm = variant.get("matmuls") or []
        if not mm:
            return None, {"why": "no adapter matmul timings recorded"}
        fwd = sum(m["fwd_x_s"] for m in mm) / max(sum(m["fwd_r_s"] for m in mm), 1e-12)
        bwd = sum(m["bwd_x_s"] for m in mm) / max(sum(m["bwd_r_s"] for m in mm), 1e-12)
        opt = variant.get("optimizer") or {}
        oratio = opt["after_s"] / opt["before_s"] if opt.get("before_s") else 1.0
        ab_f = _cause(att, "lora_A", "forward") + _cause(att, "lora_B", "forward")
        ab_b = _cause(att, "lora_A", "backward") + _cause(att, "lora_B", "backward")
        parts = {"matmuls_forward": -ab_f * (fwd - 1.0), "matmuls_backward": -ab_b * (bwd - 1.0),
                 "optimizer": -_cause(att, "optimizer") * (oratio - 1.0),
                 "ratios": {"forward": fwd, "backward": bwd, "optimizer": oratio}}
    else:
        return None, {"why": f"no prediction for variant {name!r}"}
    total = sum(v for k, v in parts.items() if k != "ratios")
    return total, parts


def validate(facts: dict, att: Optional[dict], base: str = "lora") -> list:
    """One entry per timed variant: ``{"variant", "summary", "predicted_s", "measured_s", "ci_s",
    "agrees", "parts", "why"}`` (docs/FORMAT.md)."""
    if not att:
        return []
    t_base = stats.samples(facts, base)
    out = []
    for name, entry in (facts.get("modes") or {}).items():
        if entry.get("variant_of") != base or entry.get("strategy"):
            continue
        row = {"variant": name, "summary": (entry.get("variant") or {}).get("summary"),
               "predicted_s": None, "measured_s": None, "ci_s": None, "agrees": None}
        if entry.get("status") != "ok":
            row["why"] = f"{entry.get('status')}: {entry.get('error')}"
            out.append(row)
            continue
        t_var = stats.samples(facts, name)
        if t_base is not None and t_var is not None:
            row["measured_s"] = stats.paired_difference(t_base, t_var)
            row["ci_s"] = stats.paired_bootstrap(t_base, t_var, stats.paired_difference)
        pred, parts = predict(name, entry.get("variant") or {}, att)
        row["predicted_s"] = pred
        row["parts"] = parts
        if pred is not None and row["measured_s"] is not None:
            m, ci = row["measured_s"], row["ci_s"]
            close = abs(pred - m) <= TOLERANCE * abs(m)
            inside = bool(ci) and ci[0] <= pred <= ci[1]
            row["agrees"] = bool(close or inside)
            row["error"] = (pred - m) / m if m else None
            wide = bool(ci) and (ci[1] - ci[0]) > 2 * max(abs(pred), abs(m))
            row["verdict"] = ("agrees" if close else "inconclusive" if wide
                              else "agrees within the interval" if inside else "disagrees")
            if row["verdict"] == "inconclusive":
                row["why"] = (f"the measured saving's 95% interval ({fmt_s(ci[0])} – {fmt_s(ci[1])}) is too "
                              "wide to test the prediction: the machine was noisy; more --steps narrow it")
            elif not row["agrees"]:
                row["why"] = (f"predicted {fmt_s(pred)}, measured {fmt_s(m)}"
                              + (f" (95% interval {fmt_s(ci[0])} – {fmt_s(ci[1])})" if ci else "")
                              + ": the attribution misses or misplaces part of this cause")
        out.append(row)
    return out


def summary_line(rows: list) -> Optional[str]:
    """'3 of 4 ablations agree with the attribution (within 25% or inside the measured interval)'."""
    judged = [r for r in rows if r.get("agrees") is not None]
    if not judged:
        return None
    ok = sum(bool(r["agrees"]) for r in judged)
    unsure = sum(r.get("verdict") == "inconclusive" for r in judged)
    return (f"{ok} of {len(judged)} ablations agree with the attribution (predicted saving within "
            f"{100 * TOLERANCE:.0f}% of the measured one, or inside its 95% interval)"
            + (f"; {unsure} inconclusive (interval too wide)" if unsure else ""))
