"""Vectorised nesting against a brute-force definition on random nested intervals."""

from __future__ import annotations

import numpy as np
import pytest

from lora_profiler.events.nesting import enclosing, nest, thread_groups


def random_forest(rng, n_threads=3, per_thread=120):
    """Properly nested intervals (integer times, shared starts and ends allowed)."""
    g, s, e = [], [], []
    for th in range(n_threads):
        stack = [(0, 10_000)]
        t = 0
        while len([x for x in g if x == th]) < per_thread and stack:
            lo, hi = stack[-1]
            t = max(t, lo)
            if t >= hi or rng.random() < 0.2:
                stack.pop()
                continue
            start = int(rng.integers(t, min(hi, t + 50) + 1))
            end = int(rng.integers(start, min(hi, start + 400) + 1))
            g.append(th), s.append(start), e.append(end)
            if rng.random() < 0.5:
                stack.append((start, end))      # children go inside
            else:
                t = end                          # next sibling after it
    return np.array(g), np.array(s, float), np.array(e, float)


def brute_parent(g, s, e):
    order = np.lexsort((-e, s, g))
    rank = np.empty(len(s), int)
    rank[order] = np.arange(len(s))
    out = []
    for i in range(len(s)):
        c = [j for j in range(len(s)) if j != i and g[j] == g[i] and s[j] <= s[i]
             and e[j] >= e[i] and rank[j] < rank[i]]
        out.append(max(c, key=lambda j: rank[j]) if c else -1)
    return np.array(out), rank


@pytest.mark.parametrize("seed", range(4))
def test_parent_depth_enclosing_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    g, s, e = random_forest(rng)
    order, parent, depth = nest(g, s, e)
    want, rank = brute_parent(g, s, e)
    assert parent.tolist() == want.tolist()
    for i in range(len(s)):                       # depth = number of ancestors
        d, p = 0, parent[i]
        while p >= 0:
            d, p = d + 1, parent[p]
        assert depth[i] == d
    qg = rng.integers(0, 4, 300)                  # thread 3 has no intervals
    qt = rng.uniform(-10, 10_100, 300)
    got = enclosing(order, parent, g, s, e, qg, qt)
    for q in range(300):
        c = [j for j in range(len(s)) if g[j] == qg[q] and s[j] <= qt[q] <= e[j]]
        assert got[q] == (max(c, key=lambda j: rank[j]) if c else -1)


def test_empty_and_groups():
    order, parent, depth = nest(np.zeros(0, int), np.zeros(0), np.zeros(0))
    assert len(parent) == 0
    assert enclosing(order, parent, np.zeros(0, int), np.zeros(0), np.zeros(0),
                     np.array([0]), np.array([1.0])).tolist() == [-1]
    grp, n = thread_groups(np.array([5, 5, 7, 5]), np.array([1, 2, 1, 1]))
    assert n == 3 and grp[0] == grp[3] and len(set(grp.tolist())) == 3
