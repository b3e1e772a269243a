"""Human-readable units (defined once in ``lora_profiler.units``, shared with the analyses)."""

from ..units import fmt_bytes, fmt_s  # noqa: F401
