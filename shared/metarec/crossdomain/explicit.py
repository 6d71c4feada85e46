"""Cross-domain on explicit ratings (a user's own table with a ``rating`` column): MAE and RMSE.

The held-out shared users (:func:`.table.load_table_pair`) enter the target domain with their
source ratings and ``k`` target ratings (the first ``k`` of their valid lines); validation predicts
the rest of their valid lines (users with more than ``k``), test all their test lines (users with
at least ``k``). Every method is the one rating model (:class:`metarec.model.RecModel`, rating
mode, user and item biases, the domain as a context feature) or a count:

- ``mean`` and ``item mean + user offset`` (the target's item means plus the user's mean
  residual over their source and given ratings, shrunk by a count chosen per k on validation);
- ``target-only`` (trained on the target's lines; a cold user is the unknown user) and ``shared``
  (both domains' lines: a cold user's vector comes from their source ratings);
- ``fine-tuned``: ``shared`` adapted on the user's source and given ratings, its steps and rate
  (none among them) chosen per k on validation;
- ``Meta-SGD``: ``shared`` meta-trained on episodes of the bridge users (their source ratings plus
  0–3 target ratings as support, other target ratings as query), learned per-weight rates; early
  stopping on validation MAE; with its un-adapted row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec.adapt import Support, adapt, predict_rows
from metarec.crossdomain.data import SOURCE, TARGET, Pair
from metarec.crossdomain.methods import BUCKETS, DIM, HIDDEN, domain_ctx, padded
from metarec.crossdomain.protocol import K_SIZES, Tick, by_user, over_seeds
from metarec.evaluate.rows import Result
from metarec.meta import outer_step
from metarec.model import ModelConfig, RecModel, loss_fn
from metarec.stopping import EarlyStopping, step_and_check

FT_GRID = ((0, 0.0), (1, 0.02), (3, 0.02), (1, 0.1), (3, 0.1))  # (steps, lr); (0, 0): no fine-tuning
SHRINK = (0.0, 1.0, 5.0)  # the user offset's prior count
BUFFER = 64  # source ratings a user's adaptation sees at most (their last)
QUERY = 16  # target ratings per episode's query at most
STEPS = 6000  # minibatches (or meta-batches) per model at most: early stopping picks the length


@dataclass(frozen=True)
class Rated:
    """One evaluation set: per user, their support (source then given target ratings) and lines."""

    users: np.ndarray  # (B,)
    support: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per user: items, ratings, domains
    items: list[np.ndarray]  # per user: the target items to predict
    y: list[np.ndarray]  # their ratings

    def metrics(self, pred: list[np.ndarray]) -> dict[str, float]:
        err = np.concatenate(pred) - np.concatenate(self.y)
        return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
                "n_users": float(len(self.users))}


def rated_cases(pair: Pair) -> dict[tuple[str, int], Rated]:
    """``(validation | test, k)`` → :class:`Rated`: given ratings are a user's first ``k`` valid lines."""
    assert pair.train_y is not None and pair.valid_y is not None and pair.test_y is not None
    src_rows = pair.train[pair.train[:, 2] == SOURCE]
    src_y = pair.train_y[pair.train[:, 2] == SOURCE]
    src = {u: (src_rows[r, 1], src_y[r]) for u, r in by_user(np.c_[src_rows[:, 0], np.arange(len(src_rows))]).items()}
    valid = by_user(np.c_[pair.valid[:, 0], np.arange(len(pair.valid))])  # user → their valid line numbers
    test = by_user(np.c_[pair.test[:, 0], np.arange(len(pair.test))])
    none = (np.zeros(0, np.int64), np.zeros(0))
    out = {}
    for k in K_SIZES:
        for split, lines, ys, pool in (("validation", pair.valid, pair.valid_y, valid),
                                       ("test", pair.test, pair.test_y, test)):
            users, sup, items, y = [], [], [], []
            for u in sorted(pool):
                given = valid.get(u, np.zeros(0, np.int64))[:k]
                rows = pool[u][k:] if split == "validation" else pool[u]
                if len(given) < k or not len(rows):
                    continue
                s_it, s_y = src.get(u, none)
                s_it, s_y = s_it[-BUFFER:], s_y[-BUFFER:]
                users.append(u)
                sup.append((np.concatenate([s_it, pair.valid[given, 1]]), np.concatenate([s_y, pair.valid_y[given]]),
                            np.r_[np.full(len(s_it), SOURCE), np.full(len(given), TARGET)]))
                items.append(lines[rows, 1])
                y.append(ys[rows])
            out[(split, k)] = Rated(np.array(users, np.int64), sup, items, y)
    return out


def make(pair: Pair, seed: int, meta_sgd: bool = False) -> RecModel:
    assert pair.train_y is not None
    lo, hi = float(pair.train_y.min()), float(pair.train_y.max())
    cfg = ModelConfig(n_users=pair.n_users, n_items=pair.n_items, n_context_buckets=BUCKETS, max_context=1,
                      dim=DIM, hidden=HIDDEN, mode="rating", rating_range=(lo, hi if hi > lo else lo + 1.0),
                      adapt=("layers", "out"), bias=True, inner_steps=3, inner_lr=0.02, meta_sgd=meta_sgd)
    torch.manual_seed(seed)
    return RecModel(cfg)


def _ctx(pair: Pair, domains: np.ndarray) -> np.ndarray:
    return np.array([domain_ctx(pair, SOURCE), domain_ctx(pair, TARGET)])[domains]


def support(pair: Pair, users: np.ndarray, sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Support:
    """Per user ``(items, ratings, domains)`` → a padded :class:`Support` (domains as context ids)."""
    return padded(users, [(it, _ctx(pair, dom), y) for it, y, dom in sets])


def predict(model: RecModel, pair: Pair, case: Rated, steps: int = 0, lr: Any = None,
            unknown: bool = False) -> list[np.ndarray]:
    """Each user's target ratings, after ``steps`` adaptation steps on their support."""
    users = np.zeros_like(case.users) if unknown else case.users
    q = max(len(i) for i in case.items)
    items = np.zeros((len(users), q), np.int64)
    for j, i in enumerate(case.items):
        items[j, :len(i)] = i
    ctx = torch.full((len(users), q, 1), domain_ctx(pair, TARGET), dtype=torch.long)
    with torch.no_grad():
        if steps:
            fast = adapt(model, support(pair, users, case.support), steps, lr)
        else:
            fast = {k: v.unsqueeze(0).expand(len(users), *v.shape) for k, v in model.fast_init().items()}
        p = model.predict(predict_rows(model, fast, torch.from_numpy(users), torch.from_numpy(items), ctx)).numpy()
    return [p[j, :len(i)].astype(np.float64) for j, i in enumerate(case.items)]


class Explicit:
    """Every method for one seed."""

    def __init__(self, pair: Pair, seed: int, tick: Tick, steps: int | None = None, every: int = 200,
                 patience: int = 4) -> None:
        self.pair, self.seed, self.tick = pair, seed, tick
        self.steps, self.every, self.patience = STEPS if steps is None else steps, every, patience
        self.cases = rated_cases(pair)
        self.training: list[dict[str, Any]] = []

    def mae(self, pred: list[np.ndarray], case: Rated) -> float:
        return case.metrics(pred)["mae"] if len(case.users) else float("nan")

    def stopper(self, name: str, validate: Any, every: int) -> EarlyStopping:
        st = EarlyStopping(validate, every=every, patience=self.patience)
        self.training.append({"method": name, "stop": st})
        return st

    def fit(self, name: str, lines: np.ndarray, ys: np.ndarray, unknown: bool) -> RecModel:
        """Supervised rating regression on ``lines [user, item, domain]``, early stopping on validation (k = 0)."""
        model, p, rng = make(self.pair, self.seed), self.pair, np.random.default_rng(self.seed)
        val = self.cases[("validation", 0)]
        stop = self.stopper(name, lambda m: self.mae(predict(m, p, val, unknown=unknown), val),
                            max(25, min(self.every, len(lines) // 256)))
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        model.train()
        step = 0
        for step in range(1, self.steps + 1):
            r = rng.integers(0, len(lines), 256)
            u = np.where(rng.random(len(r)) < 0.1, 0, lines[r, 0])
            logits = model(torch.from_numpy(u), torch.from_numpy(lines[r, 1]),
                           torch.from_numpy(_ctx(p, lines[r, 2]))[:, None])
            y = torch.from_numpy(ys[r].astype(np.float32))
            if step_and_check(opt, loss_fn(model, logits, y, torch.ones_like(y)), stop, model, step):
                break
        stop.finish(model, step)
        model.eval()
        self.tick(f"{p.name} seed {self.seed}: {name} trained ({stop.best_step} steps)")
        return model

    def meta(self, shared: RecModel) -> RecModel:
        """Meta-SGD from ``shared``: episodes of bridge users, early stopping on validation MAE over k."""
        p, rng = self.pair, np.random.default_rng(self.seed + 1)
        assert p.train_y is not None
        model = make(p, self.seed, meta_sgd=True)
        model.load_state_dict(shared.state_dict(), strict=False)
        tr, ty = p.train, p.train_y
        src, tgt = (by_user(np.c_[tr[tr[:, 2] == d, 0], np.flatnonzero(tr[:, 2] == d)]) for d in (SOURCE, TARGET))
        users = np.array([u for u in p.bridge_users().tolist() if len(tgt.get(u, ())) >= 2], np.int64)
        vals = [self.cases[("validation", k)] for k in K_SIZES]
        stop = self.stopper("Meta-SGD", lambda m: float(np.mean(
            [self.mae(predict(m, p, c, m.cfg.inner_steps, m.inner_lr_map()), c) for c in vals if len(c.users)])),
            max(25, min(self.every // 4, len(users) // 32)))
        opt = torch.optim.Adam(model.parameters(), lr=5e-4)
        step = 0
        for step in range(1, self.steps + 1):
            batch = rng.choice(users, min(32, len(users)), replace=False)
            sup, qry = [], []
            for u in batch.tolist():
                t = rng.permutation(tgt[u])
                k = int(rng.integers(0, min(4, len(t))))
                s = src.get(u, np.zeros(0, np.int64))[-BUFFER:]
                sup.append((tr[np.r_[s, t[:k]], 1], ty[np.r_[s, t[:k]]], tr[np.r_[s, t[:k]], 2]))
                qry.append((tr[t[k:k + QUERY], 1], ty[t[k:k + QUERY]], tr[t[k:k + QUERY], 2]))
            ids = np.where(rng.random(len(batch)) < 0.5, 0, batch)  # a cold user's vector is less sure
            opt.zero_grad()
            outer_step(model, support(p, ids, sup), support(p, ids, qry), "metasgd")
            opt.step()
            if stop.due(step) and stop.check(model, step):
                break
        stop.finish(model, step)
        model.eval()
        self.tick(f"{p.name} seed {self.seed}: Meta-SGD trained ({stop.best_step} steps)")
        return model

    def run(self) -> tuple[Result, dict[str, Any]]:
        p = self.pair
        assert p.train_y is not None
        tr, ty = p.train, p.train_y
        on_t = tr[:, 2] == TARGET
        t_mean = float(ty[on_t].mean())
        item_mean = {d: _means(tr[tr[:, 2] == d, 1], ty[tr[:, 2] == d], p.n_items) for d in (SOURCE, TARGET)}

        def offset(c: Rated, shrink: float) -> list[np.ndarray]:
            out = []
            for (it, y, dom), items in zip(c.support, c.items):
                resid = y - np.where(dom == SOURCE, item_mean[SOURCE][0][it], item_mean[TARGET][0][it])
                off = resid.sum() / (len(resid) + shrink) if len(resid) else 0.0
                out.append(item_mean[TARGET][0][items] + off)
            return out
        chosen: dict[str, Any] = {"shrink": {}, "finetune": {}}
        meth: dict[str, tuple[str, Any]] = {
            "mean": ("baseline", lambda c, k: [np.full(len(i), t_mean) for i in c.items])}
        for k in K_SIZES:
            v = self.cases[("validation", k)]
            chosen["shrink"][str(k)] = min(SHRINK, key=lambda a: self.mae(offset(v, a), v))
        meth["item mean + user offset"] = ("baseline", lambda c, k: offset(c, chosen["shrink"][str(k)]))
        target_only = self.fit("target-only", tr[on_t], ty[on_t], unknown=True)
        meth["target-only"] = ("baseline", lambda c, k: predict(target_only, p, c, unknown=True))
        shared = self.fit("shared", tr, ty, unknown=False)
        meth["shared"] = ("baseline", lambda c, k: predict(shared, p, c))
        for k in K_SIZES:
            v = self.cases[("validation", k)]
            chosen["finetune"][str(k)] = min(FT_GRID, key=lambda g: self.mae(predict(shared, p, v, g[0], g[1]), v))

        def finetuned(c: Rated, k: int) -> list[np.ndarray]:
            steps, lr = chosen["finetune"][str(k)]
            return predict(shared, p, c, steps, lr)
        meth["fine-tuned"] = ("baseline", finetuned)
        ms = self.meta(shared)
        meth["Meta-SGD"] = ("meta", lambda c, k: predict(ms, p, c, ms.cfg.inner_steps, ms.inner_lr_map()))
        meth["Meta-SGD (no adaptation)"] = ("init", lambda c, k: predict(ms, p, c))
        res: Result = {}
        for k in K_SIZES:
            c = self.cases[("test", k)]
            for name, (kind, f) in meth.items():
                res[(str(k), name)] = {"kind": kind, **c.metrics(f(c, k))}
        chosen["training"] = [{"method": t["method"], **{x: y for x, y in t["stop"].summary().items() if x != "curve"}}
                              for t in self.training]
        return res, chosen


def _means(items: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item index: mean rating (the domain's mean where unrated) and count."""
    s, c = np.bincount(items, y, n), np.bincount(items, None, n)
    fill = float(y.mean()) if len(y) else 0.0
    return np.where(c > 0, s / np.maximum(c, 1), fill), c


def run(pair: Pair, seeds: list[int], tick: Tick, steps: int | None = None) -> dict[str, Any]:
    return over_seeds(pair, seeds, lambda s: Explicit(pair, s, tick, steps=steps).run(), "mae")
