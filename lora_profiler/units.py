"""Human-readable units."""

from __future__ import annotations

from typing import Optional


def fmt_s(seconds: Optional[float]) -> str:
    """Seconds as s / ms / us with 3 significant figures."""
    if seconds is None:
        return "n/a"
    a = abs(seconds)
    if a >= 1:
        return f"{seconds:.3g} s"
    if a >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def fmt_bytes(n: Optional[float]) -> str:
    """Bytes as B / KiB / MiB / GiB."""
    if n is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"
