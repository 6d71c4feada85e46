"""Meta-learning the initialization: MAML over users as tasks (MeLU-style).

Each task is one user. A random cut in the user's time-ordered events splits it into a
support set (up to ``buffer_size`` events before the cut: what the worker's buffer would
hold) and a query set (the next ``query_size`` events: what the user does next). The inner
loop adapts the decision layers on the support set (:func:`metarec.adapt.adapt`, vmapped
over the meta-batch); the outer loss is the adapted model's query loss, back-propagated to
the initialization and the global embeddings (second order, or first order for ``fomaml``).
With probability ``user_dropout`` a task sees the "unknown user" embedding, as every user
new to the model does online.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from metarec.adapt import Support, adapt, predict_rows
from metarec.features import EventTable, pad_support
from metarec.model import RecModel, loss_fn
from metarec.quality import auc, logloss

ALGORITHMS = ("maml", "fomaml")


@dataclass
class TrainConfig:
    """Outer-loop hyper-parameters."""

    algorithm: str = "maml"  # maml (second order) | fomaml (first order)
    meta_batch: int = 32  # users (tasks) per outer step
    outer_lr: float = 3e-3  # Adam learning rate of the initialization and embeddings
    steps: int = 2000  # outer steps at most
    time_budget_s: float = 150.0  # stop after this many seconds of meta-training
    query_size: int = 16  # query events per task
    user_dropout: float = 0.5  # chance a task uses the unknown-user embedding
    min_events: int = 4  # users with fewer labelled events are not tasks
    val_fraction: float = 0.1  # users held out for the adaptation report
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")


def episode(table: EventTable, users: np.ndarray, rng: np.random.Generator, buffer_size: int,
            query_size: int, user_dropout: float = 0.0) -> tuple[Support, Support]:
    """Support and query sets for the users (table positions) ``users``."""
    sup_rows, qry_rows, idx = [], [], []
    for k in users:
        n = table.count(int(k))
        cut = int(rng.integers(1, n))  # at least one query event
        sup_rows.append(table.gather(int(k), max(0, cut - buffer_size), cut))
        qry_rows.append(table.gather(int(k), cut, cut + query_size))
        drop = rng.random() < user_dropout
        idx.append(0 if drop else int(table.user_idx[table.start[int(k)]]))
    return pad_support(table, sup_rows, idx, buffer_size), pad_support(table, qry_rows, idx, query_size)


def query_loss(model: RecModel, fast: dict[str, torch.Tensor], query: Support) -> torch.Tensor:
    logits = predict_rows(model, fast, query.users, query.items, query.ctx)
    return loss_fn(model, logits, query.y, query.mask)


def meta_train(model: RecModel, table: EventTable, users: np.ndarray, cfg: TrainConfig,
               on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Meta-train ``model`` in place on the tasks ``users``; returns the outer loss per step."""
    mc = model.cfg
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.outer_lr)
    history: list[float] = []
    t0 = time.monotonic()
    for it in range(cfg.steps):
        batch = rng.choice(users, size=min(cfg.meta_batch, len(users)), replace=False)
        sup, qry = episode(table, batch, rng, mc.buffer_size, cfg.query_size, cfg.user_dropout)
        fast = adapt(model, sup, mc.inner_steps, mc.inner_lr, first_order=cfg.algorithm == "fomaml")
        loss = query_loss(model, fast, qry)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        history.append(float(loss))
        if on_step:
            on_step(it, float(loss))
        if time.monotonic() - t0 > cfg.time_budget_s:
            break
    return history


def adaptation_report(model: RecModel, table: EventTable, users: np.ndarray, seed: int = 0,
                      query_size: int = 16) -> dict[str, float]:
    """Query-set quality on ``users`` before (``init_*``) and after (``adapted_*``) adaptation.

    Each user is treated as new (unknown-user embedding); the cut is at half their events.
    """
    mc = model.cfg
    rows_s, rows_q = [], []
    for k in users:
        n = table.count(int(k))
        cut = max(1, n // 2)
        rows_s.append(table.gather(int(k), max(0, cut - mc.buffer_size), cut))
        rows_q.append(table.gather(int(k), cut, cut + query_size))
    zeros = [0] * len(users)
    sup = pad_support(table, rows_s, zeros, mc.buffer_size)
    qry = pad_support(table, rows_q, zeros, query_size)
    out: dict[str, float] = {"users": float(len(users))}
    with torch.no_grad():
        for name, steps in (("init", 0), ("adapted", mc.inner_steps)):
            fast = adapt(model, sup, steps, mc.inner_lr)
            logits = predict_rows(model, fast, qry.users, qry.items, qry.ctx)
            m = qry.mask.numpy() > 0
            out[f"{name}_loss"] = float(loss_fn(model, logits, qry.y, qry.mask))
            if mc.mode == "binary":
                p = torch.sigmoid(logits).numpy()[m]
                y = qry.y.numpy()[m]
                out[f"{name}_auc"] = auc(y, p)
                out[f"{name}_logloss"] = logloss(y, p)
    return out
