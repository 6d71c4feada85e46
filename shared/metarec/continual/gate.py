"""The validation gate: a candidate is published only if it beats the serving version on the
newest users' events, test-then-train.

The window's events are cut in time: meta-training sees only events before the cut; the gate
predicts each user's events after it (at most ``query_size`` per user), adapted on that user's
events before it (at most ``buffer_size``, possibly none: a new user). Both models are judged the
same way, each with its own vocabulary (an item new to the serving version is its unknown item).
Binary mode compares the adapted logloss (AUC reported too); rating mode the adapted MAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from metarec.adapt import adapt, predict_rows
from metarec.events import Event
from metarec.features import EventTable, pad_support
from metarec.model import RecModel, Vocab
from metarec.quality import auc, logloss


def cut_time(events: Sequence[Event], holdout_fraction: float) -> float:
    """The event time from which the newest ``holdout_fraction`` of ``events`` is held out."""
    ts = np.array([e.ts for e in events], np.float64)
    return float(np.quantile(ts, 1.0 - holdout_fraction)) if len(ts) else 0.0


def evaluate(model: RecModel, vocab: Vocab, events: Sequence[Event], cut_ts: float,
             query_size: int = 16) -> dict[str, float]:
    """Adapted quality on every user's events at or after ``cut_ts`` (see the module doc)."""
    cfg = model.cfg
    table = EventTable.build(events, vocab, cfg)
    sup_rows, qry_rows, users = [], [], []
    for k in range(len(table.users)):
        lo, hi = int(table.start[k]), int(table.start[k + 1])
        at = lo + int(np.searchsorted(table.ts[lo:hi], cut_ts, side="left"))
        if at >= hi:
            continue  # nothing to predict for this user
        sup_rows.append(np.arange(max(lo, at - cfg.buffer_size), at))
        qry_rows.append(np.arange(at, min(hi, at + query_size)))
        users.append(int(table.user_idx[lo]))
    out: dict[str, float] = {"users": float(len(users)), "rows": float(sum(len(r) for r in qry_rows))}
    if not users:
        return out
    y, p = adapted_predictions(model, table, sup_rows, qry_rows, users, query_size)
    if cfg.mode == "binary":
        out["logloss"], out["auc"] = logloss(y, p), auc(y, p)
    else:
        out["mae"] = float(np.mean(np.abs(y - p)))
        out["rmse"] = float(np.sqrt(np.mean((y - p) ** 2)))
    return out


def adapted_predictions(model: RecModel, table: EventTable, sup_rows: Sequence[np.ndarray],
                        qry_rows: Sequence[np.ndarray], users: Sequence[int],
                        query_width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions of the query rows, each user adapted on their support rows (as the worker
    adapts: the model's inner steps and rates), flattened user after user."""
    cfg = model.cfg
    model.eval()
    sup = pad_support(table, sup_rows, users, cfg.buffer_size)
    qry = pad_support(table, qry_rows, users, query_width)
    with torch.no_grad():
        lr = model.inner_lr_map()
        lr = {k: v.detach() for k, v in lr.items()} if isinstance(lr, dict) else lr
        fast = adapt(model, sup, cfg.inner_steps, lr)
        pred = model.predict(predict_rows(model, fast, qry.users, qry.items, qry.ctx)).numpy()
    m = qry.mask.numpy() > 0
    return qry.y.numpy()[m], pred[m]


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str  # "better", or one of REASONS
    current: dict[str, float] = field(default_factory=dict)
    candidate: dict[str, float] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return "logloss" if "logloss" in self.candidate or "logloss" in self.current else "mae"

    def figures(self) -> dict[str, float]:
        """Flat figures for the manifest, the announcement and the log."""
        return {f"{who}_{k}": v for who, d in (("current", self.current), ("candidate", self.candidate))
                for k, v in d.items()}

    def describe(self) -> str:
        m = self.metric
        cur, cand = self.current.get(m, float("nan")), self.candidate.get(m, float("nan"))
        return f"{self.reason}: adapted {m} {cand:.4f} (candidate) vs {cur:.4f} (serving) on " \
               f"{int(self.candidate.get('users', 0))} held-out users"


def judge(current: dict[str, float], candidate: dict[str, float], min_gain: float = 0.0,
          min_users: int = 10) -> Verdict:
    """Accept when the candidate's adapted loss (logloss, or MAE) is lower than the current's by more
    than ``min_gain`` on at least ``min_users`` held-out users."""
    metric = "logloss" if "logloss" in candidate else "mae"
    if candidate.get("users", 0) < min_users:
        return Verdict(False, "too_few_users", current, candidate)
    cur, cand = current.get(metric, float("nan")), candidate.get(metric, float("nan"))
    if not (np.isfinite(cand) and np.isfinite(cur)):
        return Verdict(False, "not_finite", current, candidate)
    if cand < cur - min_gain:
        return Verdict(True, "better", current, candidate)
    return Verdict(False, "not_better", current, candidate)
