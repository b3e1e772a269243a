"""What a run's numbers mean for the user's choice: a few sentences, each computed from the report.

``advice(report)`` reads the speedups, the attribution's largest causes, the ablations and the
reliability findings and says what to try (``dropout is 56% of the overhead: try dropout=0``)
and what not to act on. Every number in a sentence comes from the report; nothing is typed in.
"""

from __future__ import annotations

from typing import Optional

from .units import fmt_s

# cause -> what to try when it is a large part of LoRA's overhead
TRY = {
    "dropout": "LoRA's dropout draws a mask and copies every adapted layer's input: try dropout=0 "
               "(PEFT then skips it; `--validate` measures the saving as the no-dropout ablation)",
    "lora_A": "the adapter matmuls grow with the rank and the number of adapted layers: a lower rank or "
              "fewer targets cuts them",
    "lora_B": "the adapter matmuls grow with the rank and the number of adapted layers: a lower rank or "
              "fewer targets cuts them",
    "scale": "the multiply by alpha/r is a separate op per layer: fold it into lora_B (fold-scale) or use a "
             "fused LoRA kernel",
    "add": "adding the adapter output to the base output is a separate op per layer: a fused LoRA kernel "
           "removes it",
    "adapter_other": "other ops inside the adapted layers (dtype casts) cost time: check the "
                     "adapters' dtype matches the model's",
    "dora": "DoRA recomputes the norm of W + BA in every step: plain LoRA drops it; merged weights at inference "
            "do not pay it",
    "grad_accumulation": "the adapters' gradient accumulation (one AccumulateGrad node per parameter) costs "
                         "time: fewer, larger adapters amortise it",
    "grad_input_sum": "each adapted layer's input receives two gradients to add: fewer adapted layers cut it",
    "dispatch": "the adapter path is many small ops whose launch and Python cost dominate: torch.compile, "
                "CUDA graphs or a larger batch amortise it",
    "optimizer": "the adapters' optimizer step is many tiny tensors: try AdamW(foreach=True) or fused=True",
    "rest_of_network": "the rest of the network runs slower beside the adapters (memory or cache pressure, "
                       "or noise): nothing on the adapter path to tune; repeat the run to tell which",
    "page_faults_unseen": "the timed steps took page faults the profiled ones did not (the allocator gave memory "
                          "back to the OS between steps): a larger malloc trim threshold or another allocator "
                          "can avoid them",
    "mode_only_nodes": "backward nodes only LoRA runs, off the adapter path, cost time",
}


def _ratio(v: Optional[float]) -> str:
    return f"{v:.2f}x" if v else "n/a"


def advice(report: dict, top: int = 2, min_share: float = 0.15) -> list[str]:
    """Sentences on what the run means for the user's choice, most important first.

    Args:
        report: the report dict.
        top: at most this many causes get a suggestion.
        min_share: a cause must be at least this share of the overhead to get one.

    Returns:
        Sentences (markdown), possibly empty (no lora or full mode).
    """
    out: list[str] = []
    sp = report.get("speedup") or {}
    modes = report.get("modes") or {}
    t = {m: (e.get("step_time_s") or {}).get("median") for m, e in modes.items() if e.get("status") == "ok"}
    lora, ideal = sp.get("lora_vs_full"), sp.get("ideal_vs_full")
    if lora and ideal and t.get("full") and t.get("frozen") and t.get("lora"):
        possible = t["full"] - t["frozen"]
        got = t["full"] - t["lora"]
        if got <= 0:
            out.append(f"**LoRA is not faster here**: {_ratio(lora)} of full fine-tuning's speed "
                       f"({fmt_s(t['lora'])} against {fmt_s(t['full'])} per step), while the frozen floor "
                       f"allows {_ratio(ideal)}. Choose LoRA here for its memory, not its speed.")
        else:
            share = got / possible if possible > 0 else None
            out.append(f"**LoRA is {_ratio(lora)} faster than full fine-tuning**; the frozen floor allows "
                       f"{_ratio(ideal)}: LoRA keeps "
                       + (f"{100 * share:.0f}% of the time it could save" if share is not None else "the time it saves")
                       + f" ({fmt_s(got)} of {fmt_s(possible)} per step).")
    att = report.get("attribution") or {}
    total = att.get("overhead_s")
    if total and total > 0:
        labels = att.get("labels") or {}
        causes = sorted(((c, v.get("seconds") or 0.0) for c, v in (att.get("causes") or {}).items()),
                        key=lambda kv: -kv[1])
        shown = 0
        for cause, sec in causes:
            if shown >= top or sec <= 0 or sec / total < min_share:
                break
            label = labels.get(cause, cause)
            what = TRY.get(cause, "")
            out.append(f"**{label} is {100 * sec / total:.0f}% of LoRA's overhead** ({fmt_s(sec)} of "
                       f"{fmt_s(total)} per step)" + (f": {what}." if what else "."))
            shown += 1
        if not shown:
            out.append(f"No single cause is {100 * min_share:.0f}% of LoRA's {fmt_s(total)} overhead: it is spread "
                       "over many small ones.")
        res = att.get("residual_s")
        if res is not None and abs(res) > 0.1 * abs(total):
            out.append(f"The causes leave {fmt_s(res)} ({100 * res / total:.0f}%) of the overhead unexplained: "
                       "treat the split as approximate.")
    for row in att.get("validation") or []:
        if row.get("measured_s") is None or row.get("agrees") is None:
            continue
        verdict = row.get("verdict") or ("agrees" if row["agrees"] else "disagrees")
        out.append(f"Ablation **{row['variant']}** saved {fmt_s(row['measured_s'])} per step, "
                   f"{fmt_s(row['predicted_s'])} predicted: {verdict}.")
    rel = att.get("reliability") or []
    if rel:
        names = "; ".join(f["numbers"] for f in rel[:3]) + (f"; and {len(rel) - 3} more" if len(rel) > 3 else "")
        out.append(f"Before acting on them, note {len(rel)} number(s) marked unreliable ({names}): "
                   "a quieter machine or more steps (`steps=`, `profile_steps=`) firms them up.")
    return out
