"""Metric definitions of both protocols, tie-aware where a ranking is involved.

Rating metrics average per user (MeLU): ``mae`` is each user's mean absolute error averaged
over users, ``rmse`` the square root of the users' mean squared errors averaged over users.
Ranking metrics break ties by averaging over every ordering of the tied items, so a constant
predictor scores exactly the random-order value.
"""

from __future__ import annotations

import math

import numpy as np

from metarec.quality import auc, logloss

__all__ = ["auc", "logloss", "user_errors", "ndcg_at_k", "mean_ndcg", "sampled_rank_metrics", "rmse"]


def user_errors(y: np.ndarray, p: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """``(mae, rmse)`` of ``(B, Q)`` targets and predictions over the masked entries, user-averaged."""
    m = mask > 0
    n = m.sum(1)
    keep = n > 0
    err = np.where(m, p - y, 0.0)
    mae = np.abs(err).sum(1)[keep] / n[keep]
    mse = (err ** 2).sum(1)[keep] / n[keep]
    if not keep.any():
        return float("nan"), float("nan")
    return float(mae.mean()), float(math.sqrt(mse.mean()))


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error over all entries (pooled)."""
    return float(np.sqrt(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))) if len(y) else float("nan")


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2))  # rank r (1-based) → 1 / log2(1 + r)


def ndcg_at_k(rel: np.ndarray, score: np.ndarray, k: int, gain: str = "exp") -> float:
    """nDCG@k of one list: true relevances ``rel (Q,)``, predicted ``score (Q,)``.

    Gain ``2^r - 1`` (``exp``) or ``r`` (``lin``); discount ``1 / log2(1 + rank)``. Items with
    tied scores share the mean gain of their group at each of the group's positions (the
    expectation over tie orderings). NaN when every gain is zero.
    """
    rel = np.asarray(rel, np.float64)
    score = np.asarray(score, np.float64)
    g = np.power(2.0, rel) - 1.0 if gain == "exp" else rel.copy()
    disc = _discounts(len(rel))
    disc[k:] = 0.0
    ideal = float((np.sort(g)[::-1] * disc).sum())
    if ideal <= 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    s, gs = score[order], g[order]
    dcg, pos = 0.0, 0
    while pos < len(s):
        end = pos + 1
        while end < len(s) and s[end] == s[pos]:
            end += 1
        dcg += gs[pos:end].mean() * disc[pos:end].sum()
        pos = end
    return dcg / ideal


def mean_ndcg(y: np.ndarray, p: np.ndarray, mask: np.ndarray, k: int, gain: str = "exp") -> float:
    """Mean over users of :func:`ndcg_at_k` on each user's masked ``(B, Q)`` row."""
    vals = [ndcg_at_k(y[b][mask[b] > 0], p[b][mask[b] > 0], k, gain) for b in range(len(y)) if (mask[b] > 0).any()]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def sampled_rank_metrics(pos: np.ndarray, neg: np.ndarray, k: int = 10) -> tuple[float, float]:
    """``(HR@k, NDCG@k)`` of positives ``pos (E,)`` ranked against their negatives ``neg (E, M)``.

    With ``g`` negatives scored above and ``t`` tied, the positive's rank is uniform on
    ``g+1 .. g+1+t``; both metrics are expectations over that rank.
    """
    pos = np.asarray(pos, np.float64)[:, None]
    neg = np.asarray(neg, np.float64)
    if len(pos) == 0:
        return float("nan"), float("nan")
    above = (neg > pos).sum(1)
    tied = (neg == pos).sum(1)
    hr, nd = np.zeros(len(pos)), np.zeros(len(pos))
    for e in range(len(pos)):
        ranks = np.arange(above[e] + 1, above[e] + tied[e] + 2)
        hr[e] = np.mean(ranks <= k)
        nd[e] = np.mean(np.where(ranks <= k, 1.0 / np.log2(1.0 + ranks), 0.0))
    return float(hr.mean()), float(nd.mean())
