"""``metarec evaluate --protocol cross-domain``: cold-start users of a target domain, CDRIB's protocol.

Each held-out target line of a cold-start user is ranked against 999 sampled target items
(:func:`.data.candidates`), after the user has shown ``k`` target events (k = 0: their source
history alone). The ``k`` given events come from the user's *valid* lines, in a seeded order:
validation ranks the rest of their valid lines (users with more than ``k``), test ranks all their
test lines (users with at least ``k``). Every choice (training length by early stopping, the
kNN damping, the fine-tuning steps and rate per ``k``) is made on validation; test is scored once.
Seeds change the training, the order of the given events and the sampled negatives.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec.crossdomain import methods as M
from metarec.crossdomain.baselines import CrossKNN, emcdr_map, popularity
from metarec.crossdomain.data import N_NEGATIVES, SOURCE, TARGET, Pair, candidates
from metarec.crossdomain.encoder import EncoderConfig, encoder_scores, support_set, train_encoder
from metarec.crossdomain.ranking import rank_metrics
from metarec.evaluate.rows import Result
from metarec.stopping import EarlyStopping

K_SIZES = (0, 1, 2, 3)
FT_GRID = ((1, 0.1), (3, 0.1), (1, 1.0), (3, 1.0))  # fine-tuning (steps, lr), chosen per k on validation
KNN_ALPHAS = (0.0, 0.5)
# the meta-learners (:mod:`.encoder`), trained on episodes shaped like the test: a user entering the
# target domain with their source history and k target events, their own lines left out of the memory
META = {"meta: learned memory": EncoderConfig(embed=False, lr=3e-3),
        "meta: memory + encoder": EncoderConfig(embed=True, lr=5e-4)}
Tick = Callable[[str], None]


@dataclass(frozen=True)
class Budget:
    """Step caps; early stopping on validation NDCG@10 (k = 0) picks each model's length."""

    rec_steps: int = 6000  # RecModel minibatches at most
    rec_every: int = 300
    enc_steps: int = 8000  # encoder episodes batches at most
    enc_every: int = 50
    patience: int = 4
    enc_patience: int = 6


@dataclass(frozen=True)
class Case:
    """One evaluation set: each line's user, candidates, source history and given target items."""

    users: np.ndarray
    cands: np.ndarray
    source: list[np.ndarray]
    given: list[np.ndarray]

    def metrics(self, scores: np.ndarray) -> dict[str, Any]:
        return {**rank_metrics(scores), "n_users": len(np.unique(self.users)), "events": len(self.users)}


def by_user(rows: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(rows[:, 0], kind="stable")
    r = rows[order]
    cut = np.flatnonzero(np.diff(r[:, 0])) + 1
    return {int(g[0, 0]): g[:, 1].copy() for g in np.split(r, cut) if len(g)}


def histories(pair: Pair, seed: int) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Each user's source and target training items (shuffled: the data has no timestamps)."""
    rng = np.random.default_rng(seed)
    tr = pair.train
    return tuple({u: rng.permutation(v) for u, v in by_user(tr[tr[:, 2] == d][:, :2]).items()}  # type: ignore[return-value]
                 for d in (SOURCE, TARGET))


def n_negatives(pair: Pair) -> int:
    """999, CDRIB's count; half the target catalog when that is smaller (tiny test data)."""
    return min(N_NEGATIVES, len(pair.target_items) // 2)


def cases(pair: Pair, seed: int, src: dict[int, np.ndarray]) -> dict[tuple[str, int], Case]:
    rng = np.random.default_rng(10_000 + seed)
    valid = {u: rng.permutation(v) for u, v in by_user(pair.valid).items()}
    test = by_user(pair.test)
    none = np.zeros(0, np.int64)
    out = {}
    for k in K_SIZES:
        for split in ("validation", "test"):
            lines, given = [], []
            for u in sorted(set(valid) | set(test)):  # a test user may have no valid line (k = 0 only)
                v = valid.get(u, none)
                rest = v[k:] if split == "validation" else test.get(u, none)
                if len(v) < k or len(rest) == 0:
                    continue
                lines += [(u, i) for i in rest.tolist()]
                given += [v[:k]] * len(rest)
            arr = np.array(lines, np.int64).reshape(-1, 2)
            cands = candidates(pair, arr, 100 * seed + 10 * k + (split == "test"), n_negatives(pair))
            out[(split, k)] = Case(arr[:, 0], cands, [src.get(u, none) for u in arr[:, 0].tolist()], given)
    return out


class CrossDomain:
    """Every method for one direction and seed."""

    def __init__(self, pair: Pair, seed: int, budget: Budget, tick: Tick) -> None:
        self.pair, self.seed, self.budget, self.tick = pair, seed, budget, tick
        self.src, self.tgt = histories(pair, seed)
        self.cases = cases(pair, seed, self.src)
        self.training: list[dict[str, Any]] = []

    def ndcg(self, scores: np.ndarray) -> float:
        return rank_metrics(scores)["ndcg@10"] if len(scores) else float("nan")

    def stopper(self, name: str, every: int, score: Callable[[Any, Case], np.ndarray],
                patience: int | None = None) -> EarlyStopping:
        val = self.cases[("validation", 0)]
        st = EarlyStopping(lambda m: -self.ndcg(score(m, val)), every=every, patience=patience or self.budget.patience)
        self.training.append({"method": name, "stop": st})
        return st

    def rec(self, name: str, lines: np.ndarray, dropout: float, score: Callable[[Any, Case], np.ndarray]) -> Any:
        model = M.make(self.pair, self.seed)
        # a check per pass over the lines, within [25, rec_every] minibatches (small data: frequent checks)
        stop = self.stopper(name, max(25, min(self.budget.rec_every, len(lines) // 512)), score)
        M.fit(model, self.pair, lines, self.budget.rec_steps, self.seed, stop, user_dropout=dropout)
        self.tick(f"{self.pair.name} seed {self.seed}: {name} trained ({stop.best_step} steps)")
        return model

    def emcdr(self, source_model: Any, target_model: Any) -> Any:
        """The target model with each cold-start user's vector mapped from their source vector."""
        bridge, cold = self.pair.bridge_users(), self.pair.cold_users()
        def vec(m: Any, u: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(u)
            return torch.cat([m.user_emb(t), m.user_bias(t)], 1).detach().numpy()
        f = emcdr_map(vec(source_model, bridge), vec(target_model, bridge), self.seed)
        out = copy.deepcopy(target_model)
        with torch.no_grad():
            mapped = f(torch.from_numpy(vec(source_model, cold)))
            out.user_emb.weight[cold] = mapped[:, :-1]
            out.user_bias.weight[cold] = mapped[:, -1:]
        return out

    def meta(self, name: str, cfg: EncoderConfig, users: np.ndarray, empty: np.ndarray, memory: CrossKNN,
             ) -> dict[str, tuple[str, Callable[[Case], np.ndarray]]]:
        """A meta-learner trained on episodes of ``users``; its row and its un-adapted (empty support) row."""
        def sets(c: Case) -> list[tuple[np.ndarray, np.ndarray]]:
            return [support_set(s, g, cfg.buffer) for s, g in zip(c.source, c.given)]
        stop = self.stopper(name, max(25, min(self.budget.enc_every, len(users) // 128)),
                            lambda m, c: encoder_scores(m, sets(c), c.cands), self.budget.enc_patience)
        enc = train_encoder(self.pair, self.src, self.tgt, users, cfg, self.seed, stop, steps=self.budget.enc_steps,
                            memory=memory)
        self.tick(f"{self.pair.name} seed {self.seed}: {name} trained ({stop.best_step} steps)")
        none = [support_set(empty, empty, cfg.buffer)]
        return {name: ("meta", lambda c: encoder_scores(enc, sets(c), c.cands)),
                f"{name} (no adaptation)": ("init", lambda c: encoder_scores(enc, none * len(c.users), c.cands))}

    def run(self) -> tuple[Result, dict[str, Any]]:
        p, tr = self.pair, self.pair.train
        pop = popularity(p)
        chosen: dict[str, Any] = {}
        meth: dict[str, tuple[str, Callable[[Case], np.ndarray]]] = {"popularity": ("baseline", lambda c: pop[c.cands])}
        knn = {a: CrossKNN(p, a) for a in KNN_ALPHAS}
        val0 = self.cases[("validation", 0)]
        a_best = max(KNN_ALPHAS, key=lambda a: self.ndcg(knn[a].scores(val0.source, val0.given, val0.cands)))
        chosen["knn_alpha"] = a_best
        meth["item-kNN (cross-domain)"] = ("baseline", lambda c: knn[a_best].scores(c.source, c.given, c.cands))

        own = lambda m, c: M.score(m, p, c.users, c.cands)  # noqa: E731
        unknown = lambda m, c: M.score(m, p, np.zeros_like(c.users), c.cands)  # noqa: E731
        target_model = self.rec("target-only", tr[tr[:, 2] == TARGET], 0.3, unknown)
        meth["target-only"] = ("baseline", lambda c: unknown(target_model, c))
        shared = self.rec("shared", tr, 0.1, own)
        meth["shared"] = ("baseline", lambda c: own(shared, c))
        source_model = self.rec("source-only (EMCDR)", tr[tr[:, 2] == SOURCE], 0.1,
                                lambda m, c: own(self.emcdr(m, target_model), c))
        mapped = self.emcdr(source_model, target_model)
        meth["EMCDR"] = ("baseline", lambda c: own(mapped, c))

        def finetuned(c: Case, steps: int, lr: float) -> np.ndarray:
            rng = np.random.default_rng(self.seed)
            sup = M.support_of(p, c.users, {u: s for u, s in zip(c.users.tolist(), c.source)},
                               {u: g for u, g in zip(c.users.tolist(), c.given)}, shared.cfg.buffer_size, rng)
            return M.adapted_scores(shared, p, c.users, c.cands, sup, steps, lr)
        ft = {k: max(FT_GRID, key=lambda g: self.ndcg(finetuned(self.cases[("validation", k)], *g)))
              for k in K_SIZES}
        chosen["finetune"] = {str(k): list(v) for k, v in ft.items()}
        self.tick(f"{p.name} seed {self.seed}: fine-tuning chosen {chosen['finetune']}")

        empty = np.zeros(0, np.int64)
        users = np.array(sorted(u for u, v in self.tgt.items() if len(v) >= 2 or (len(v) and u in self.src)))
        for name, cfg in META.items():
            meth.update(self.meta(name, cfg, users, empty, knn[0.0]))  # the raw counts: the memory

        res: Result = {}
        for k in K_SIZES:
            c = self.cases[("test", k)]
            for name, (kind, f) in meth.items():
                res[(str(k), name)] = {"kind": kind, **c.metrics(f(c))}
            res[(str(k), "fine-tuned")] = {"kind": "baseline", **c.metrics(finetuned(c, *ft[k]))}
        chosen["training"] = [{"method": t["method"], **{x: y for x, y in t["stop"].summary().items() if x != "curve"}}
                              for t in self.training]
        return res, chosen


def over_seeds(pair: Pair, seeds: list[int], one: Callable[[int], tuple[Result, dict[str, Any]]],
               metric: str) -> dict[str, Any]:
    """``one(seed)`` for every seed, aggregated: rows, what each seed chose, a verdict per k on ``metric``."""
    from metarec.evaluate.report import margin
    from metarec.evaluate.rows import aggregate

    t0 = time.monotonic()
    per_seed, chosen = [], []
    for s in seeds:
        r, c = one(s)
        per_seed.append(r)
        chosen.append(c)
    rows = aggregate(per_seed)
    return {"rows": rows, "seeds": seeds, "chosen": chosen,
            "margins": [margin(rows, str(k), metric) for k in K_SIZES],
            "seconds": {"total": time.monotonic() - t0}, "notes": list(pair.notes)}


def run(pair: Pair, seeds: list[int], budget: Budget, tick: Tick) -> dict[str, Any]:
    return over_seeds(pair, seeds, lambda s: CrossDomain(pair, s, budget, tick).run(), "ndcg@10")
