"""Prediction-quality measures: AUC, logloss, and their rolling form for live monitoring."""

from __future__ import annotations

from collections import deque

import numpy as np


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half); NaN if one class is absent."""
    y = np.asarray(y, dtype=np.float64) > 0.5
    p = np.asarray(p, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sp = p[order]
    # average ranks over ties
    _, first, counts = np.unique(sp, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy ``-[y log p + (1-y) log(1-p)]``."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    if len(y) == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class Rolling:
    """The last ``window`` (label, prediction) pairs of one model, with AUC and logloss over them."""

    def __init__(self, window: int) -> None:
        self.y: deque[float] = deque(maxlen=window)
        self.p: deque[float] = deque(maxlen=window)

    def add(self, y: float, p: float) -> None:
        self.y.append(y)
        self.p.append(p)

    def __len__(self) -> int:
        return len(self.y)

    def auc(self) -> float:
        return auc(np.fromiter(self.y, float), np.fromiter(self.p, float))

    def logloss(self) -> float:
        return logloss(np.fromiter(self.y, float), np.fromiter(self.p, float))
