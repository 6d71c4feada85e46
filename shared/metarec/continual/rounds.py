"""One round of continual meta-learning: grow the catalog, meta-train warm-started, gate.

The candidate starts from the serving version's weights (and its Adam state starts fresh, at a
smaller learning rate than training from scratch), learns on the window's events before the gate's
cut, and is judged on the events after it (:mod:`.gate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from metarec.continual.catalog import grow
from metarec.continual.gate import Verdict, cut_time, evaluate, judge
from metarec.events import Event
from metarec.features import EventTable
from metarec.meta import TrainConfig, meta_train
from metarec.model import RecModel, Vocab


@dataclass(frozen=True)
class RoundConfig:
    steps: int = 300  # outer steps at most
    budget_s: float = 60.0  # seconds of meta-training at most
    outer_lr: float = 1e-3
    meta_batch: int = 32
    query_size: int = 16
    user_dropout: float = 0.5
    holdout_fraction: float = 0.2
    min_gain: float = 0.0
    min_users: int = 10  # held-out users the gate needs
    min_events: int = 4  # labelled events a training task needs
    algorithm: str | None = None  # None: metasgd for a Meta-SGD model, else maml
    seed: int = 0


@dataclass
class Candidate:
    model: RecModel
    vocab: Vocab
    verdict: Verdict
    new_items: list[str] = field(default_factory=list)
    train_users: int = 0
    steps: int = 0
    seconds: float = 0.0
    cut_ts: float = 0.0


def run_round(model: RecModel, vocab: Vocab, events: Sequence[Event], cfg: RoundConfig,
              seed: int | None = None) -> Candidate:
    """A candidate trained on ``events`` (the window) and the gate's verdict on it."""
    t0 = time.monotonic()
    cut = cut_time(events, cfg.holdout_fraction)
    before = [e for e in events if e.ts < cut]
    cand, cvocab, new = grow(model, vocab, events)
    table = EventTable.build(before, cvocab, cand.cfg)
    ks = np.array([k for k in range(len(table.users)) if table.count(k) >= max(2, cfg.min_events)])
    steps = 0
    if len(ks) >= 2:
        algorithm = cfg.algorithm or ("metasgd" if cand.cfg.meta_sgd else "maml")
        tcfg = TrainConfig(algorithm=algorithm, meta_batch=cfg.meta_batch, outer_lr=cfg.outer_lr, steps=cfg.steps,
                           time_budget_s=cfg.budget_s, query_size=cfg.query_size, user_dropout=cfg.user_dropout,
                           min_events=cfg.min_events, seed=cfg.seed if seed is None else seed)
        cand.train()
        steps = len(meta_train(cand, table, ks, tcfg))
    cand.eval()
    model.eval()
    current = evaluate(model, vocab, events, cut, cfg.query_size)
    candidate = evaluate(cand, cvocab, events, cut, cfg.query_size)
    verdict = judge(current, candidate, cfg.min_gain, cfg.min_users) if steps else \
        Verdict(False, "too_few_users", current, candidate)
    return Candidate(cand, cvocab, verdict, new, int(len(ks)), steps, time.monotonic() - t0, cut)


def sabotage(model: RecModel, seed: int = 0) -> RecModel:
    """A deliberately bad copy of ``model`` (its output layer negated, noise on the rest of the MLP):
    what the gate and the rollback must catch. For tests and drills, never for serving."""
    import copy

    bad = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in bad.named_parameters():
            if name.startswith("out."):
                p.neg_().mul_(3.0)
            elif name.startswith("layers."):
                p.add_(torch.randn(p.shape, generator=g) * p.std())
    return bad
