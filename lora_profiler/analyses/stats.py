"""Spread and intervals of measured times: medians with min-max, paired bootstrap intervals.

Timed rounds run every mode once (docs/FORMAT.md), so the i-th sample of two modes were taken
side by side: intervals resample rounds, keeping each round's samples together, which cancels
the machine's drift between rounds.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

BOOTSTRAP = 2000
LEVEL = 0.95


def spread(values: Sequence[float]) -> dict:
    """``{"seconds": trimmed mean, "min", "max", "n"}`` of per-round values in seconds."""
    arr = np.asarray(values, dtype=np.float64)
    if not arr.size:
        return {"seconds": None, "min": None, "max": None, "n": 0}
    return {"seconds": trimmed_mean(arr), "min": float(arr.min()), "max": float(arr.max()),
            "n": int(arr.size)}


def samples(facts: dict, mode: str) -> Optional[np.ndarray]:
    """The timed step samples (s) of an ok mode, in round order, or None."""
    entry = (facts.get("modes") or {}).get(mode) or {}
    got = (entry.get("step_time_s") or {}).get("samples") if entry.get("status") == "ok" else None
    return np.asarray(got, dtype=np.float64) if got else None


def paired_bootstrap(a: np.ndarray, b: np.ndarray, stat: Callable[[np.ndarray, np.ndarray], float],
                     seed: int = 0, n: int = BOOTSTRAP, level: float = LEVEL) -> Optional[list]:
    """[low, high] interval of ``stat(a, b)`` resampling rounds (pairs) with replacement.

    ``a`` and ``b`` are per-round samples of two modes; when their lengths differ (a mode
    failed part way), the first ``min(len)`` rounds are paired. None with fewer than 3 rounds.
    """
    k = min(len(a), len(b))
    if k < 3:
        return None
    a, b = np.asarray(a[:k]), np.asarray(b[:k])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, size=(n, k))  # (resamples, rounds)
    vals = np.array([stat(a[i], b[i]) for i in idx])
    lo, hi = np.percentile(vals, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


TRIM = 0.2  # the fraction of values cut at each end by ``trimmed_mean``


def trimmed_mean(values, trim: float = TRIM) -> float:
    """The mean of the values left when ``trim`` of them (at least one, from three values on)
    are cut at each end: robust to a disturbed sample like a median, but, unlike a sum of
    medians, it adds up — the trimmed mean of many skewed parts' sum is not biased low."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.size
    if not n:
        return float("nan")
    cut = max(1, int(n * trim)) if n >= 3 else 0
    return float(v[cut:n - cut].mean())


def paired_difference(a: np.ndarray, b: np.ndarray, trim: float = TRIM) -> float:
    """The trimmed mean of the paired differences a_i - b_i.

    Samples of two modes with the same index ran side by side (same round, same place in their
    blocks), so their difference cancels the machine's drift; trimming drops disturbed steps.
    Less noisy than a difference of medians when a step's time jumps between two levels (the
    allocator's state), and what the overhead and the ablations' savings are measured by.
    """
    k = min(len(a), len(b))
    return trimmed_mean(np.asarray(a[:k], dtype=np.float64) - np.asarray(b[:k], dtype=np.float64), trim)


def median_difference(a: np.ndarray, b: np.ndarray) -> float:
    """median(a) - median(b)."""
    return float(np.median(a) - np.median(b))


def median_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """median(a) / median(b)."""
    mb = float(np.median(b))
    return float(np.median(a)) / mb if mb else float("nan")


def relative_iqr(facts: dict, mode: str) -> Optional[float]:
    """IQR / median of a mode's timed steps (None when unknown)."""
    st = ((facts.get("modes") or {}).get(mode) or {}).get("step_time_s") or {}
    med, iqr = st.get("median"), st.get("iqr")
    return iqr / med if med and iqr is not None else None
