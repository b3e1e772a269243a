"""Names shared by capture and analysis: the scope prefix and scope names, phases, modes.

Torch-free and at the bottom of the package: capture writes these names into traces and the
analyses parse them back, so both import them from here and nothing is spelled twice.

Scope names (``record_function`` ranges, docs/FORMAT.md) have the form
``<prefix><kind>/<path>[#<part>]``: ``lp/phase/forward``, ``lp/module/model.layers.0.mlp``,
``lp/adapter/model.layers.0.self_attn.q_proj#lora_A``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

SCOPE_PREFIX = "lp/"

# Phases of one training step, in the order they run.
PHASES: tuple[str, ...] = ("zero_grad", "forward", "backward", "optimizer")
# Phases whose work the trace attributes op by op (the optimizer is measured, not traced).
TRACED_PHASES: tuple[str, ...] = ("forward", "backward")

# The four base modes; strategies and ablation variants are built on them (workload/variants.py).
BASE_MODES: tuple[str, ...] = ("full", "lora", "frozen", "forward")
# The mode whose step the overhead is measured against.
FLOOR_MODE = "frozen"

# Parts of an adapted layer: the frozen base and the adapter path's parts.
ADAPTER_PARTS: tuple[str, ...] = ("base", "dropout", "lora_A", "lora_B", "dora", "scale_add")


def phase_scope(phase: str, prefix: str = SCOPE_PREFIX) -> str:
    """Scope name of a training-step phase, e.g. ``lp/phase/forward``."""
    return f"{prefix}phase/{phase}"


def module_scope(path: str, prefix: str = SCOPE_PREFIX) -> str:
    """Scope name of a module that is not an adapter, e.g. ``lp/module/model.norm``."""
    return f"{prefix}module/{path}"


def adapter_scope(path: str, part: str = "", prefix: str = SCOPE_PREFIX) -> str:
    """Scope name of an adapted layer (``part`` empty) or one of its parts (ADAPTER_PARTS)."""
    return f"{prefix}adapter/{path}" + (f"#{part}" if part else "")


class ScopeName(NamedTuple):
    """A parsed scope name: kind (phase | module | adapter | other), path, part ('' for none)."""

    kind: str
    path: str
    part: str


def parse_scope(name: str, prefix: str = SCOPE_PREFIX) -> Optional[ScopeName]:
    """Parse a scope name written with ``prefix``; None when it does not start with it."""
    if not name.startswith(prefix):
        return None
    kind, _, rest = name[len(prefix):].partition("/")
    if kind == "adapter":
        path, _, part = rest.partition("#")
        return ScopeName("adapter", path, part)
    if kind in ("phase", "module"):
        return ScopeName(kind, rest, "")
    return ScopeName("other", rest, "")
