"""Spread and intervals against brute-force references."""

import itertools

import numpy as np
import pytest

from lora_profiler.analyses import stats


def test_paired_difference_trims_each_end():
    a = np.array([10.0, 11, 12, 13, 14, 15, 16, 17, 18, 100])  # one disturbed lora step
    b = np.zeros(10)
    # 20% of 10 pairs: 2 cut at each end; the mean of the 6 in the middle
    assert stats.paired_difference(a, b) == pytest.approx(np.mean([12, 13, 14, 15, 16, 17]))
    assert stats.paired_difference(a[:3], b[:3]) == pytest.approx(11.0)  # too few to cut: the mean
    # pairs are by index: drift common to both modes cancels
    drift = np.linspace(0, 50, 10)
    assert stats.paired_difference(5 + drift, drift) == pytest.approx(5.0)


def test_paired_bootstrap_against_enumeration():
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 1, 5), rng.normal(8, 1, 5)
    lo, hi = stats.paired_bootstrap(a, b, stats.paired_difference, n=20000)
    # every resample of 5 pairs, enumerated: the interval is its 2.5 and 97.5 percentiles
    values = sorted(stats.paired_difference(a[list(i)], b[list(i)])
                    for i in itertools.product(range(5), repeat=5))
    ref_lo, ref_hi = np.percentile(values, [2.5, 97.5])
    assert lo == pytest.approx(ref_lo, abs=0.05) and hi == pytest.approx(ref_hi, abs=0.05)
    assert stats.paired_bootstrap(a[:2], b[:2], stats.paired_difference) is None


def test_spread():
    assert stats.spread([3.0, 1.0, 2.0]) == {"seconds": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert stats.spread([])["n"] == 0
