"""Training and scoring on a :class:`~.data.Pair`, every method on the one model definition.

Every neural method is a :class:`metarec.model.RecModel` in binary mode: user, item and context
embeddings into the MLP, user and item biases. An event's domain is a context feature (the
domain embedding), hashed as the live path hashes ``domain=<name>``
(:func:`metarec.model.hash_context`). Implicit feedback: each positive line trains against
``N_NEG`` items drawn uniformly from the same domain. Fine-tuning goes through
:func:`metarec.adapt.adapt`. (The meta-learners are not ``RecModel``: see :mod:`.encoder`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from metarec.adapt import Fast, Support, adapt
from metarec.crossdomain.data import SOURCE, TARGET, Pair
from metarec.model import ModelConfig, RecModel, hash_context, loss_fn
from metarec.stopping import EarlyStopping, step_and_check

BUCKETS = 64  # context hash buckets: the two domains' features
N_NEG = 4  # training negatives per positive
DIM, HIDDEN = 32, (64, 32)
CHUNK = 128  # lines scored at once


def domain_ctx(pair: Pair, domain: int) -> int:
    """The context feature id of an event in ``domain`` (what the live path hashes)."""
    name = pair.source if domain == SOURCE else pair.target
    return hash_context({"domain": name}, BUCKETS, 1)[0]


def make(pair: Pair, seed: int) -> RecModel:
    """A fresh seeded model for ``pair``; fine-tuning adapts its MLP (steps and rate are the caller's)."""
    cfg = ModelConfig(n_users=pair.n_users, n_items=pair.n_items, n_context_buckets=BUCKETS, max_context=1,
                      dim=DIM, hidden=HIDDEN, mode="binary", adapt=("layers", "out"), bias=True)
    torch.manual_seed(seed)
    return RecModel(cfg)


def with_negatives(pair: Pair, users: np.ndarray, items: np.ndarray, domains: np.ndarray,
                   rng: np.random.Generator, n_neg: int = N_NEG) -> tuple[np.ndarray, ...]:
    """Positives plus ``n_neg`` same-domain random items each: (users, items, ctx ids, labels)."""
    neg = np.empty((len(items), n_neg), np.int64)
    for d in (SOURCE, TARGET):
        sel = domains == d
        pool = pair.domain_items(d)
        neg[sel] = pool[rng.integers(0, len(pool), (int(sel.sum()), n_neg))]
    ctx = np.array([domain_ctx(pair, SOURCE), domain_ctx(pair, TARGET)])[domains]
    return (np.concatenate([users, np.repeat(users, n_neg)]), np.concatenate([items, neg.ravel()]),
            np.concatenate([ctx, np.repeat(ctx, n_neg)]),
            np.concatenate([np.ones(len(items)), np.zeros(neg.size)]).astype(np.float32))


def fit(model: RecModel, pair: Pair, lines: np.ndarray, steps: int, seed: int, stop: EarlyStopping | None,
        lr: float = 2e-3, user_dropout: float = 0.0, batch: int = 512) -> None:
    """Supervised BCE on ``lines (N, 3) [user, item, domain]``; with ``stop``, ``steps`` is a cap."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step = 0
    for step in range(1, steps + 1):
        x = lines[rng.integers(0, len(lines), batch)]
        u = np.where(rng.random(len(x)) < user_dropout, 0, x[:, 0])
        uu, ii, cc, yy = with_negatives(pair, u, x[:, 1], x[:, 2], rng)
        logits = model(torch.from_numpy(uu), torch.from_numpy(ii), torch.from_numpy(cc)[:, None])
        y = torch.from_numpy(yy)
        loss = loss_fn(model, logits, y, torch.ones_like(y))
        if step_and_check(opt, loss, stop, model, step):
            break
    if stop is not None:
        stop.finish(model, step)
    model.eval()


def score(model: RecModel, pair: Pair, users: np.ndarray, cands: np.ndarray, fast: Fast | None = None) -> np.ndarray:
    """``(L, C)`` logits of each line's candidates (target domain), line ``l`` as user ``users[l]``
    under its own fast weights ``{name: (L, ...)}`` when given."""
    out = np.empty(cands.shape, np.float32)
    c = torch.full((1, 1, 1), domain_ctx(pair, TARGET), dtype=torch.long)
    with torch.no_grad():
        base = model.mlp_weights()
        for a in range(0, len(users), CHUNK):
            sl = slice(a, a + CHUNK)
            u = torch.from_numpy(users[sl])[:, None]
            it = torch.from_numpy(cands[sl])
            w: Mapping[str, torch.Tensor] = base if fast is None else {**base, **{k: v[sl] for k, v in fast.items()}}
            out[sl] = model.logits(w, u, it, c.expand(len(u), 1, 1)).numpy()
    return out


def support_of(pair: Pair, users: np.ndarray, source_hist: dict[int, np.ndarray], target_k: dict[int, np.ndarray],
               buffer: int, rng: np.random.Generator) -> Support:
    """Each user's adaptation set: their latest ``buffer`` source lines (items) and their given target
    items, each positive with one same-domain negative, padded."""
    rows = []
    for u in users.tolist():
        src = source_hist.get(u, np.zeros(0, np.int64))[-buffer:]
        tgt = target_k.get(u, np.zeros(0, np.int64))
        items = np.concatenate([src, tgt])
        dom = np.concatenate([np.full(len(src), SOURCE), np.full(len(tgt), TARGET)])
        _, ii, cc, yy = with_negatives(pair, np.full(len(items), u), items, dom, rng, 1)
        rows.append((ii, cc, yy))
    return padded(users, rows)


def padded(users: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Support:
    """Per user ``(items, context ids, targets)`` of any length → one padded :class:`Support`."""
    s = max(1, max((len(r[0]) for r in rows), default=1))
    b = len(rows)
    it, cx = np.zeros((b, s), np.int64), np.zeros((b, s, 1), np.int64)
    y, mask = np.zeros((b, s), np.float32), np.zeros((b, s), np.float32)
    for j, (ii, cc, yy) in enumerate(rows):
        n = len(ii)
        it[j, :n], cx[j, :n, 0], y[j, :n], mask[j, :n] = ii, cc, yy, 1.0
    t = torch.from_numpy
    return Support(t(users.astype(np.int64)), t(it), t(cx), t(y), t(mask))


def adapted_scores(model: RecModel, pair: Pair, users: np.ndarray, cands: np.ndarray, sup: Support,
                   steps: int, lr: Any) -> np.ndarray:
    """Scores after ``steps`` SGD steps per line's user on ``sup`` (one row per line)."""
    if steps == 0:
        return score(model, pair, users, cands)
    out = []
    for a in range(0, len(users), CHUNK):
        sl = slice(a, a + CHUNK)
        part = Support(sup.users[sl], sup.items[sl], sup.ctx[sl], sup.y[sl], sup.mask[sl])
        with torch.no_grad():
            fast = adapt(model, part, steps, lr)
        out.append(score(model, pair, users[sl], cands[sl], fast))
    return np.concatenate(out)

