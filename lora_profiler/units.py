"""Human-readable units: durations, bytes and counts, 3 significant figures, never an exponent."""

from __future__ import annotations

from typing import Optional


def _num(x: float) -> str:
    """3 significant figures without an exponent (1234.5 -> '1234', 0.01234 -> '0.0123')."""
    s = f"{x:.3g}"
    return f"{x:.0f}" if "e+" in s else (f"{x:.3f}".rstrip("0").rstrip(".") if "e-" in s else s)


def _scaled(value: float, units: tuple) -> str:
    """``value`` in the largest of ``units`` ((name, size), largest first) it reaches once
    rounded to 3 significant figures (999.96 us is '1 ms', not '1e+03 us')."""
    a = abs(value)
    for name, size in units[:-1]:
        if float(f"{a / size:.3g}") >= 1:
            return f"{_num(value / size)} {name}"
    name, size = units[-1]
    return f"{_num(value / size)} {name}"


_SECONDS = (("s", 1.0), ("ms", 1e-3), ("us", 1e-6))
_BYTES = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))


def fmt_s(seconds: Optional[float]) -> str:
    """Seconds as s / ms / us with 3 significant figures."""
    return "n/a" if seconds is None else _scaled(seconds, _SECONDS)


def fmt_us(us: Optional[float]) -> str:
    """Microseconds as us / ms / s with 3 significant figures."""
    return "n/a" if us is None else _scaled(us * 1e-6, _SECONDS)


def fmt_bytes(n: Optional[float]) -> str:
    """Bytes as B / KiB / MiB / GiB."""
    if n is None:
        return "n/a"
    if abs(n) < 1024:
        return f"{int(n)} B"
    return _scaled(n, _BYTES)


def fmt_params(n: Optional[float]) -> str:
    """A parameter count as 950, 12.3K, 1.10M, 7.00B."""
    if n is None:
        return "n/a"
    for name, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if float(f"{abs(n) / size:.3g}") >= 1:
            return f"{_num(n / size)}{name}"
    return f"{int(n)}"
