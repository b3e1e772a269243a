"""Group-by on numpy columns: per-key count, sum, min, max, mean without per-row Python."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np


@dataclass(frozen=True)
class Groups:
    """Per-key aggregates of one value column; arrays are aligned with ``keys`` (ascending)."""

    keys: np.ndarray     # (g,) int
    count: np.ndarray    # (g,) int64
    total: np.ndarray    # (g,) float64
    min: np.ndarray      # (g,) float64
    max: np.ndarray      # (g,) float64

    @property
    def mean(self) -> np.ndarray:
        return self.total / np.maximum(self.count, 1)


def group(keys: np.ndarray, values: np.ndarray) -> Groups:
    """Aggregate ``values`` per distinct key.

    Args:
        keys: (n,) integer keys (e.g. name ids).
        values: (n,) float values (e.g. dur_us).
    """
    keys = np.asarray(keys)
    values = np.asarray(values, dtype=np.float64)
    if keys.size == 0:
        z = np.zeros(0)
        return Groups(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), z, z, z)
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])           # (g,) first row per key
    count = np.diff(np.r_[starts, k.size]).astype(np.int64)
    return Groups(keys=k[starts], count=count, total=np.add.reduceat(v, starts),
                  min=np.minimum.reduceat(v, starts), max=np.maximum.reduceat(v, starts))


def stats(values: np.ndarray) -> Dict[str, Optional[float]]:
    """count, total, mean, median, p95, min, max of a 1-D array (None when empty)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"count": 0, "total": 0.0, "mean": None, "median": None, "p95": None,
                "min": None, "max": None}
    return {"count": int(v.size), "total": float(v.sum()), "mean": float(v.mean()),
            "median": float(np.median(v)), "p95": float(np.quantile(v, 0.95)),
            "min": float(v.min()), "max": float(v.max())}


def top_rows(rows: List[dict], key: str, k: Optional[int]) -> List[dict]:
    """Rows sorted by ``key`` descending, the first ``k`` (all when k is None)."""
    rows = sorted(rows, key=lambda r: -(r.get(key) or 0.0))
    return rows if k is None else rows[:k]
