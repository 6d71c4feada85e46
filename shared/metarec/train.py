"""`metarec train`: meta-train on an event log and write a versioned model directory."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec import __version__, artifact
from metarec.events import Event
from metarec.features import EventTable
from metarec.meta import TrainConfig, adaptation_report, meta_train
from metarec.model import ModelConfig, RecModel, Vocab


def events_digest(events: Sequence[Event]) -> str:
    """A content hash of the events (order-sensitive), for the manifest."""
    h = hashlib.sha256()
    for e in events:
        h.update(f"{e.user_id}\t{e.item_id}\t{e.kind}\t{e.value}\t{e.ts}\n".encode())
    return h.hexdigest()


def split_users(events: Sequence[Event], val_fraction: float, seed: int) -> tuple[list[str], set[str]]:
    """All user ids (sorted) and a seeded random validation subset."""
    users = sorted({e.user_id for e in events})
    rng = np.random.default_rng(seed)
    n_val = int(round(len(users) * val_fraction))
    val = {users[i] for i in rng.permutation(len(users))[:n_val]}
    return users, val


def train(events: Sequence[Event], out: Path, model_kw: dict[str, Any], tcfg: TrainConfig,
          source: str = "", on_step: Callable[[int, float], None] | None = None) -> Path:
    """Meta-train a model on ``events`` and save it under ``out``; returns the version directory."""
    if not events:
        raise ValueError("no events to train on")
    t0 = time.monotonic()
    users, val = split_users(events, tcfg.val_fraction, tcfg.seed)
    vocab = Vocab.of_events([u for u in users if u not in val], events)  # the catalog, with its domains
    items = vocab.items
    if tcfg.algorithm == "metasgd":  # the learned rates are parameters, saved with the weights
        model_kw = {**model_kw, "meta_sgd": True}
    cfg = ModelConfig(n_users=len(vocab.users) + 1, n_items=len(items) + 1, **model_kw)
    table = EventTable.build(events, vocab, cfg)
    ok = [k for k in range(len(table.users)) if table.count(k) >= tcfg.min_events]
    train_ks = np.array([k for k in ok if table.users[k] not in val])
    val_ks = np.array([k for k in ok if table.users[k] in val])
    if len(train_ks) < 2:
        raise ValueError(f"only {len(train_ks)} users have >= {tcfg.min_events} labelled events; need at least 2")
    torch.manual_seed(tcfg.seed)
    model = RecModel(cfg)
    history = meta_train(model, table, train_ks, tcfg, on_step)
    model.eval()
    report = adaptation_report(model, table, val_ks) if len(val_ks) else {}
    manifest = {
        "metarec_version": __version__,
        "torch_version": torch.__version__,
        "data": {"source": source, "sha256": events_digest(events), "events": len(events),
                 "users": len(users), "items": len(items), "labelled_rows": int(len(table.y))},
        "train": {**asdict(tcfg), "outer_steps_done": len(history), "seconds": round(time.monotonic() - t0, 1),
                  "first_loss": float(np.mean(history[:20])), "last_loss": float(np.mean(history[-20:])),
                  "train_users": int(len(train_ks)), "val_users": int(len(val_ks))},
        "validation": report,
    }
    return artifact.save(model, vocab, out, manifest)


def save_evaluated(model: RecModel, vocab: Vocab, out: Path, config: dict[str, Any], figures: dict[str, Any],
                   source: str) -> Path:
    """Save a model trained from an evaluation's ``best.json``: the manifest records the algorithm,
    the configuration and the validation figures before and after adaptation."""
    manifest = {
        "metarec_version": __version__,
        "torch_version": torch.__version__,
        "data": {"source": source, "dataset": config["dataset"], "users": len(vocab.users),
                 "items": len(vocab.items)},
        "train": {"algorithm": config["algorithm"], "from_config": config, "protocol": "melu",
                  "early_stopping": figures.get("early_stopping")},
        "validation": {k: figures[k] for k in ("val_mae_init", "val_mae_adapted", "new_users_mae",
                                               "evaluated_new_users_mae", "adapt_steps")},
    }
    return artifact.save(model, vocab, out, manifest)
