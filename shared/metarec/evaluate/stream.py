"""The prequential stream: a time-ordered split with each test event's support and sampled
negatives, and the metrics over it, overall and by the user's number of earlier events.

Used by :mod:`metarec.evaluate.prequential` (the protocol) for both the test split and the
validation split inside the training period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarec.evaluate.data import Ratings
from metarec.evaluate.metrics import auc, logloss, rmse, sampled_rank_metrics
from metarec.features import EventTable

BUCKETS = {"hist_0": (0, 0), "hist_1_5": (1, 5), "hist_6_20": (6, 20), "hist_21_plus": (21, 10**9)}
N_NEG = 99  # sampled negatives per test event (items the user never rated)


@dataclass(frozen=True)
class Stream:
    """A prequential split: training rows, then test rows with their supports and negatives."""

    train: np.ndarray  # row ids before the cut
    test: np.ndarray  # (E,) row ids after the cut, in time order
    hist: np.ndarray  # (E,) the user's earlier events (all time)
    support: list[np.ndarray]  # per test event: the user's last ``buffer`` earlier rows
    negatives: np.ndarray  # (E, N_NEG) item codes the user never rated
    user_index: np.ndarray  # (U,) model index: users with training events 1.., others 0


def make_stream(r: Ratings, rows: np.ndarray, train_fraction: float, buffer: int, seed: int,
                max_test: int | None = None) -> Stream:
    """Split ``rows`` (time-ordered row ids) at ``train_fraction`` of their time span."""
    rng = np.random.default_rng(seed)
    ts = r.ts[rows]
    cut = ts.min() + train_fraction * (ts.max() - ts.min())
    train, test = rows[ts < cut], rows[ts >= cut]
    if max_test is not None and len(test) > max_test:
        test = np.sort(rng.choice(test, max_test, replace=False))
    user_index = np.zeros(len(r.users), np.int64)
    known = np.unique(r.user[train])
    user_index[known] = np.arange(1, len(known) + 1)
    by_user: dict[int, list[int]] = {}
    pos_of: dict[int, int] = {}
    for x in rows:  # time order
        lst = by_user.setdefault(int(r.user[x]), [])
        pos_of[int(x)] = len(lst)
        lst.append(int(x))
    hist = np.array([pos_of[int(x)] for x in test], np.int64)
    support = [np.asarray(by_user[int(r.user[x])][max(0, p - buffer):p], np.int64) for x, p in zip(test, hist)]
    catalog = np.unique(r.item[train])
    rated = {u: set(r.item[np.asarray(v)].tolist()) for u, v in by_user.items()}
    negs = np.zeros((len(test), N_NEG), np.int64)
    for e, x in enumerate(test):
        seen = rated[int(r.user[x])]
        cand = [int(c) for c in rng.choice(catalog, size=N_NEG * 3) if c not in seen][:N_NEG]
        while len(cand) < N_NEG:
            c = int(rng.choice(catalog))
            if c not in seen or len(seen) >= len(catalog):
                cand.append(c)
        negs[e] = cand
    return Stream(train, test, hist, support, negs, user_index)


def table_of(r: Ratings, rows: np.ndarray, user_index: np.ndarray, y: np.ndarray) -> EventTable:
    """An :class:`EventTable` (grouped by user, time order) of ``rows`` for :func:`meta_train`."""
    order = np.lexsort((r.ts[rows], r.user[rows]))
    rows = rows[order]
    users, first = np.unique(r.user[rows], return_index=True)
    return EventTable(users=[r.users[u] for u in users], start=np.append(first, len(rows)).astype(np.int64),
                      user_idx=user_index[r.user[rows]], item=r.item[rows] + 1, ctx=r.ctx[rows],
                      y=y[rows].astype(np.float32), ts=r.ts[rows])


def metrics(r: Ratings, st: Stream, scores: np.ndarray, ev: np.ndarray) -> dict[str, float]:
    """AUC, logloss, root Brier score of events ``ev`` from ``scores (E, 1 + negatives)`` (column 0
    the event's item); with negatives also HR@10 and NDCG@10 of each positive event."""
    y = r.binary()[st.test[ev]]
    p = np.clip(scores[ev, 0], 1e-6, 1 - 1e-6)
    out: dict[str, float] = {"auc": auc(y, p), "logloss": logloss(y, p), "rmse": rmse(y, p), "events": len(ev)}
    if scores.shape[1] > 1:
        pos = ev[y > 0]
        out["hr@10"], out["ndcg@10"] = sampled_rank_metrics(scores[pos, 0], scores[pos, 1:], 10)
    return out


def by_bucket(r: Ratings, st: Stream, scores: np.ndarray) -> dict[str, dict[str, float]]:
    """:func:`metrics` over all test events and per :data:`BUCKETS` of the user's earlier events."""
    allev = np.arange(len(st.test))
    res = {"all": metrics(r, st, scores, allev)}
    for name, (lo, hi) in BUCKETS.items():
        res[name] = metrics(r, st, scores, allev[(st.hist >= lo) & (st.hist <= hi)])
    return res
