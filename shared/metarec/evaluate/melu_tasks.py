"""Pieces of the MeLU cold-start protocol: meta-training episodes, a predictor's metrics on a
state's tasks (supports optionally cut to ``k`` events), predictors from trained models."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from metarec.adapt import Support
from metarec.evaluate.data import Ratings
from metarec.evaluate.metrics import mean_ndcg, user_errors
from metarec.evaluate.models import batch, fill_unseen_items, predict_adapted
from metarec.evaluate.splits import MeluSplit, Tasks
from metarec.meta import Sampler
from metarec.model import RecModel
from metarec.stopping import EarlyStopping

SUPPORT_SIZES = (1, 3, 5, 10, 20)
# test-time adaptation steps of a meta-learned model, as multiples of its meta-training inner
# steps, chosen on validation per trial (the counterpart of the fine-tuning grid of `global`, which
# includes 0 steps too): 0 lets a support size where adaptation hurts on validation keep the init
ADAPT_MULTS = (0, 1, 2, 4)
Predict = Callable[[Support, Support], np.ndarray]


#: an episode's support-size draw: (events available after the query, buffer, rng) -> size
SupportSize = Callable[[int, int, np.random.Generator], int]
#: shares of full, uniform and log-uniform support sizes
SIZE_SHARES = (0.5, 0.25, 0.25)


def support_size(n: int, buffer: int, rng: np.random.Generator,
                 shares: tuple[float, float, float] = SIZE_SHARES) -> int:
    """An episode's support size out of ``m = min(n, buffer)`` events: all of them half the time
    (the MeLU states' full supports), else a uniform size (a quarter) or a log-uniform one (a
    quarter: each octave 1, 2–3, 4–7, … as likely, so the first events a stream sees are trained
    for); ``shares`` (full, uniform, log-uniform) changes the mixture.

    Before, full and uniform sizes only: 1–5 events were 20 % of ML-1M's episodes (27.5 % now), but
    nearly all from users with few training events: a user with 100 or more was cut to 1–5 in at
    most 2.5 % of their episodes (11 % now), the case the by-size curve measures
    (docs/evaluation.md, "Support sizes in training")."""
    m = min(n, buffer)
    z = rng.random()
    if z < shares[0]:
        return m
    if z < shares[0] + shares[1]:
        return int(rng.integers(1, m + 1))
    return int(min(m, max(1, np.floor(np.exp(rng.uniform(0.0, np.log(m + 1)))))))


def sampler(r: Ratings, split: MeluSplit, buffer: int, n_query: int, user_dropout: float,
            size: SupportSize = support_size) -> Sampler:
    """MeLU-style episodes: a random ``n_query`` of the user's training rows is the query, a
    random prefix of the rest, of ``size`` events (:func:`support_size`; at most ``buffer``), the
    support."""
    y = r.value

    def sample(users: np.ndarray, rng: np.random.Generator) -> tuple[Support, Support]:
        sup, qry, idx = [], [], []
        for u in users:
            rows = rng.permutation(split.train[int(u)])
            q = min(n_query, len(rows) // 2)
            rest = rows[q:]
            sup.append(rest[:min(size(len(rest), buffer, rng), buffer)])
            qry.append(rows[:q])
            idx.append(0 if rng.random() < user_dropout else int(split.user_index[int(u)]))
        return batch(r, sup, idx, y), batch(r, qry, idx, y, n_query)

    return sample


def score(r: Ratings, split: MeluSplit, tasks: Tasks, predict: Predict, k: int | None = None) -> dict[str, float]:
    """MeLU metrics of ``predict`` on ``tasks`` (support cut to ``k`` events when given)."""
    if len(tasks) == 0:
        return {"n_users": 0}
    sup_rows = [s[:k] for s in tasks.support] if k else tasks.support
    idx = split.user_index[tasks.users]
    sup, qry = batch(r, sup_rows, idx, r.value), batch(r, tasks.query, idx, r.value)
    p = predict(sup, qry)
    y, m = qry.y.numpy(), qry.mask.numpy()
    mae, rmse = user_errors(y, p, m)
    return {"mae": mae, "rmse": rmse, "ndcg@1": mean_ndcg(y, p, m, 1), "ndcg@3": mean_ndcg(y, p, m, 3),
            "ndcg_lin@3": mean_ndcg(y, p, m, 3, "lin"), "n_users": len(tasks)}


def neural(model: RecModel, steps: int, lr: Any, adapt_layers: str | None = None, loss: str | None = None) -> Predict:
    return lambda sup, qry: predict_adapted(model, sup, qry, steps, lr, adapt_layers, loss=loss)


def long_supports(tasks: Tasks, k: int) -> Tasks:
    """The users of ``tasks`` with at least ``k`` support events (the MAE-by-support subset)."""
    keep = [j for j in range(len(tasks)) if len(tasks.support[j]) >= k]
    return Tasks(tasks.name, tasks.users[keep], [tasks.support[j] for j in keep], [tasks.query[j] for j in keep])


# the global model's early-stopping probe: its validation MAE after the best of these fine-tunings
# (steps, lr; all decision layers, huber) — what it is judged by, as a meta-learner by its adapted MAE
GLOBAL_PROBE = ((3, 0.1), (10, 0.1), (10, 0.3))


def stopper(r: Ratings, split: MeluSplit, seen_items: np.ndarray, every: int, patience: int,
            steps: int | None, smooth: int = 1) -> EarlyStopping:
    """Early stopping on the validation users: a meta-learned model is scored by its MAE after
    ``steps`` adaptation steps with its own rates, the global model (``steps=None``) by its best
    fine-tuned MAE over :data:`GLOBAL_PROBE`. Scored on a copy whose unseen items get the
    average embedding, as the tested model does (:func:`fill_unseen_items`)."""
    def validate(model: Any) -> float:
        m = copy.deepcopy(model)
        fill_unseen_items(m, seen_items)
        if steps is not None:
            return score(r, split, split.val, neural(m, steps, m.inner_lr_map())).get("mae", np.inf)
        return min(score(r, split, split.val, neural(m, n, lr, "layers+out", "huber")).get("mae", np.inf)
                   for n, lr in GLOBAL_PROBE)

    return EarlyStopping(validate, every=max(1, every), patience=patience, smooth=smooth)
