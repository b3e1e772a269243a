"""The workload and its adapters in words, one source for the terminal summary, report.md and
report.html: parameter counts in K/M/B, the batch by what it is (tokens, images, features), the
adapters' kinds and their rank distribution (not the first layer's)."""

from __future__ import annotations

from ..units import fmt_params


def batch_text(wl: dict) -> str:
    """'batch 2 x seq 32 (64 tokens per step)', 'batch 8 x 3x32x32 images', ..."""
    info = wl.get("batch") or {}
    desc = info.get("description")
    if not desc:
        bs, seq = wl.get("batch_size"), wl.get("seq_len")
        desc = f"batch {bs} x seq {seq}" if bs is not None and seq is not None else "batch"
    tokens = info.get("tokens") if info else wl.get("tokens_per_step")
    if info.get("kind", "tokens") == "tokens" and tokens:
        desc += f" ({tokens:,} tokens per step)"
    return desc


def _distribution(summary: dict | None, single) -> str:
    """'8' for a uniform value, '4-16 (4 x2, 8 x4, 16 x2)' for per-layer values."""
    if not summary:
        return "n/a" if single is None else f"{single:g}"
    if summary.get("uniform"):
        return f"{summary['min']:g}"
    counts = ", ".join(f"{v} x{n}" for v, n in (summary.get("counts") or {}).items())
    return f"{summary['min']:g}-{summary['max']:g} ({counts})"


def adapters_text(ad: dict) -> str:
    """'20 peft adapters (lora; rank 8, alpha 16, dropout 0.05), 81.9K trainable parameters
    (+ 1.54K in classifier)'."""
    kinds = ad.get("kinds") or {}
    kind = ", ".join(f"{k} x{n}" if len(kinds) > 1 else str(k) for k, n in kinds.items()) or "lora"
    rank = _distribution(ad.get("rank_summary"), ad.get("rank"))
    alpha = _distribution(ad.get("alpha_summary"), ad.get("alpha"))
    settings = [f"rank {rank}", f"alpha {alpha}"]
    if ad.get("dropout") is not None:
        settings.append(f"dropout {ad['dropout']:g}")
    text = (f"{ad.get('count', 0)} {ad.get('source', '?')} adapters ({kind}; {', '.join(settings)}), "
            f"{ad.get('trainable_params', 0) or 0:,} trainable parameters")
    extra = ad.get("extra_trainable") or {}
    if extra:
        text += f" (of which outside the adapters: {extra_text(extra)})"
    if ad.get("unsupported"):
        text += f"; not broken down: {', '.join(ad['unsupported'])}"
    return text


def _short(path: str) -> str:
    """A module path without PEFT's wrappers: 'classifier', 'layer.0.attention.self.query'."""
    for wrapper in ("base_model.model.", ".modules_to_save.default", ".base_layer"):
        path = path.replace(wrapper, "")
    return path


def extra_text(extra: dict) -> str:
    """Trainable parameters outside the adapters, ``{module path: count}``, in a few words:
    '3.08K in 9 modules: classifier 1.03K, 8 x 256 (encoder.layer.0.attention.self.query, ...)'."""
    total = sum(extra.values())
    by_size: dict = {}
    for path, n in sorted(extra.items(), key=lambda kv: -kv[1]):
        by_size.setdefault(n, []).append(_short(path))
    parts = []
    for n, paths in by_size.items():
        parts.append(f"{paths[0]} {fmt_params(n)}" if len(paths) == 1 else
                     f"{len(paths)} x {fmt_params(n)} ({paths[0]}, ...)")
    shown = "; ".join(parts[:3]) + ("; ..." if len(parts) > 3 else "")
    return f"{fmt_params(total)} in {len(extra)} module{'s' * (len(extra) != 1)}: {shown}"


def model_text(wl: dict) -> str:
    """'llama, 5.1M parameters, float32; batch 2 x seq 32 (64 tokens per step)'."""
    dtype = f", {wl['dtype']}" if wl.get("dtype") else ""
    return f"{wl.get('arch', '?')}, {fmt_params(wl.get('total_params'))} parameters{dtype}; {batch_text(wl)}"
