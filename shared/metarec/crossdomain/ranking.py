"""Sampled ranking metrics: each held-out item ranked against its sampled negatives.

``scores (L, 1 + n)`` has each line's held-out item in column 0. With ``g`` negatives scored
above it and ``e`` tied with it, its rank under a uniformly random tie break is uniform on
``g + 1 .. g + e + 1``; every metric is that expectation, exactly (a popularity baseline ties a
lot, and a fixed tie rule would flatter or punish it). Metrics average over lines, as CDRIB
(ICDE 2022) does: MRR (no cut-off), NDCG@k = 1 / log2(rank + 1) within the top k, HR@k.
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10)
METRICS = ("mrr", *(f"ndcg@{k}" for k in KS), *(f"hr@{k}" for k in KS))


def ranks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) possible 1-based rank of column 0 in each row, ties included."""
    pos = scores[:, :1]
    neg = scores[:, 1:]
    g = (neg > pos).sum(1)
    e = (neg == pos).sum(1)
    return g + 1, g + e + 1


def _mean_over(f: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean of ``f[r]`` (``f`` indexed by rank, ``f[0] = 0``) for ``r`` uniform on ``lo .. hi``."""
    c = np.cumsum(f)
    return (c[hi] - c[lo - 1]) / (hi - lo + 1)


def line_metrics(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric per line, ``(L,)``."""
    lo, hi = ranks(np.asarray(scores, np.float64))
    r = np.arange(scores.shape[1] + 1, dtype=np.float64)
    r[0] = np.inf  # f[0] = 0 for every f below
    out = {"mrr": _mean_over(1.0 / r, lo, hi)}
    for k in KS:
        inside = (r <= k)
        out[f"ndcg@{k}"] = _mean_over(np.where(inside, 1.0 / np.log2(r + 1.0), 0.0), lo, hi)
        out[f"hr@{k}"] = _mean_over(inside.astype(np.float64), lo, hi)
    return out


def rank_metrics(scores: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRICS`, averaged over lines."""
    return {k: float(v.mean()) for k, v in line_metrics(scores).items()}
