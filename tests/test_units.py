"""Durations, bytes and parameter counts read back as the number they show, with no exponent."""

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lora_profiler.units import fmt_bytes, fmt_params, fmt_s, fmt_us

SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
BYTES = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
COUNTS = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}


def read_back(text, units):
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?) ?([A-Za-z]*)", text)
    assert m, f"not a plain number with a unit: {text!r}"
    return float(m.group(1)) * units[m.group(2)], m.group(1)


def close(shown, value, digits):
    # 3 significant figures (or the whole number when it has more digits): half a unit in the last place
    return math.isclose(shown, value, rel_tol=0.5 * 10 ** (1 - digits) + 1e-12, abs_tol=0.0)


@settings(deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e5, allow_nan=False))
def test_seconds_read_back_without_exponent(x):
    for v in (x, -x):
        shown, number = read_back(fmt_s(v), SECONDS)
        assert close(shown, v, 3)
        assert float(number) == 0 or abs(float(number)) >= 1 or fmt_s(v).endswith(" us")


@settings(deadline=None)
@given(st.floats(min_value=1e-3, max_value=1e9, allow_nan=False))
def test_microseconds_are_seconds_scaled(us):
    assert fmt_us(us) == fmt_s(us * 1e-6)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=2**50))
def test_bytes_read_back(n):
    shown, _ = read_back(fmt_bytes(n), BYTES)
    assert shown == n if n < 1024 else close(shown, n, 3)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=10**12))
def test_parameter_counts_read_back(n):
    shown, _ = read_back(fmt_params(n), COUNTS)
    assert close(shown, n, 3)


def test_values_at_a_unit_boundary_move_up():
    assert fmt_s(999.6e-6) == "1 ms" and fmt_s(0.99996) == "1 s" and fmt_bytes(1023.99 * 2**20) == "1 GiB"
    assert fmt_params(999_999) == "1M" and fmt_params(950) == "950"
    assert fmt_s(None) == "n/a" and fmt_bytes(None) == "n/a"
