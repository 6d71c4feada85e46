"""The prequential (test-then-train) protocol on a time-ordered stream.

The first ``train_fraction`` of the time span trains (meta-training for the meta methods,
supervised training for the global model, ``learn_one`` for River); in the rest every event
is predicted before it is learned from: a neural method adapts on the user's last
``buffer`` events strictly before the event, River predicts then learns. Positives are
ratings >= the threshold. Metrics overall and by the user's number of earlier events.
Validation repeats the same split inside the training part (its last 20% of time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from metarec.adapt import Support
from metarec.evaluate import methods as M
from metarec.evaluate import online as O
from metarec.evaluate.data import Ratings
from metarec.evaluate.models import ItemOffset, Net, batch, predict_adapted
from metarec.evaluate.rows import aggregate
from metarec.evaluate.search import SearchResult, global_space, meta_space, run_study
from metarec.evaluate.stream import N_NEG, Stream, by_bucket, make_stream, metrics, table_of
from metarec.model import RecModel

FT_STEPS = (0, 1, 3, 5, 10)
FT_LRS = (0.03, 0.3, 1.0)
Tick = Callable[[str], None]
Scorer = Callable[[Stream, np.ndarray], np.ndarray]  # (stream, event positions) → (E, 1 + negatives)


def neural_scorer(r: Ratings, model: RecModel, steps: int, lr: Any, adapt_layers: str | None = None,
                  ranking: bool = True, chunk: int = 512) -> Scorer:
    """Scores of each event's item (column 0) and its negatives, adapted on the event's support."""
    y = r.binary()

    def score(st: Stream, ev: np.ndarray) -> np.ndarray:
        out = []
        for a in range(0, len(ev), chunk):
            e = ev[a:a + chunk]
            x = st.test[e]
            idx = st.user_index[r.user[x]]
            sup = batch(r, [st.support[k] for k in e], idx, y, max(1, max(len(st.support[k]) for k in e)))
            items = np.concatenate([r.item[x][:, None], st.negatives[e]], 1) if ranking else r.item[x][:, None]
            q = items.shape[1]
            qry = Support(torch.from_numpy(idx), torch.from_numpy(items + 1),
                          torch.from_numpy(np.repeat(r.ctx[x][:, None, :], q, 1)),
                          torch.zeros(len(e), q), torch.ones(len(e), q))
            out.append(predict_adapted(model, sup, qry, steps, lr, adapt_layers, chunk=chunk))
        return np.concatenate(out)

    return score


def offset_scorer(r: Ratings, st: Stream, lam_item: float, lam_user: float) -> Scorer:
    y = r.binary().astype(np.float64)
    io = ItemOffset.fit(r.item[st.train] + 1, y[st.train], len(r.items) + 1, lam_item)

    def score(s: Stream, ev: np.ndarray) -> np.ndarray:
        x = s.test[ev]
        sup = batch(r, [s.support[k] for k in ev], s.user_index[r.user[x]], r.binary())
        items = np.concatenate([r.item[x][:, None], s.negatives[ev]], 1) + 1
        qry = Support(sup.users, torch.from_numpy(items), torch.zeros(len(ev), items.shape[1], 1, dtype=torch.long),
                      torch.zeros(items.shape), torch.ones(items.shape))
        return io.predict(sup, qry, lam_user, 0.01, 0.99)

    return score


def river_run(r: Ratings, st: Stream, params: dict[str, Any], seed: int, ranking: bool = True) -> np.ndarray:
    """River ``BiasedMF`` on 0/1 labels: learn the training part, then predict-then-learn the test part."""
    from river import optim, reco

    model = reco.BiasedMF(n_factors=int(params["n_factors"]), bias_optimizer=optim.SGD(float(params["lr"])),
                          latent_optimizer=optim.SGD(float(params["lr"])), l2_bias=float(params["l2"]),
                          l2_latent=float(params["l2"]),
                          latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed), seed=seed)
    y = r.binary()
    users, items = r.user.astype(str), r.item.astype(str)
    for x in st.train:
        model.learn_one(users[x], items[x], float(y[x]))
    width = 1 + N_NEG if ranking else 1
    out = np.zeros((len(st.test), width))
    for e, x in enumerate(st.test):
        u = users[x]
        out[e, 0] = model.predict_one(u, items[x])
        if ranking and y[x] > 0:
            out[e, 1:] = [model.predict_one(u, str(i)) for i in st.negatives[e]]
        model.learn_one(u, items[x], float(y[x]))
    return np.clip(out, 0.0, 1.0)


def river_space(trial: Any) -> dict[str, Any]:
    """River BiasedMF: factors, SGD learning rate, L2."""
    return {"n_factors": trial.suggest_categorical("n_factors", [5, 10, 20, 40]),
            "lr": trial.suggest_float("lr", 1e-3, 0.2, log=True),
            "l2": trial.suggest_float("l2", 1e-5, 0.1, log=True)}


class Prequential:
    """One prequential evaluation run over a dataset."""

    def __init__(self, r: Ratings, seed: int, plan: M.Plan, net: Net, tick: Tick,
                 train_fraction: float = 0.8, max_val_events: int = 2000) -> None:
        self.r, self.seed, self.plan, self.net, self.tick = r, seed, plan, net, tick
        self.train_fraction, self.max_val = train_fraction, max_val_events
        self.y = r.binary()

    def train_meta(self, st: Stream, params: dict[str, Any], steps: int, seed: int) -> RecModel:
        table = table_of(self.r, st.train, st.user_index, self.y)
        users = np.array([k for k in range(len(table.users)) if table.count(k) >= 4], np.int64)
        init = self.train_global(st, M.DEFAULT_GLOBAL, steps, seed) if self.plan.pretrain else None
        return M.train_meta(self.r, int(st.user_index.max()), "binary", params, self.net, self.plan, steps, users,
                            None, table, seed, np.unique(self.r.item[st.train]), init)

    def train_global(self, st: Stream, params: dict[str, Any], steps: int, seed: int) -> RecModel:
        return M.train_global(self.r, int(st.user_index.max()), "binary", params, self.net, self.plan, steps,
                              st.train, st.user_index[self.r.user], self.y, seed, np.unique(self.r.item[st.train]))

    def val_auc(self, st: Stream, scorer: Scorer) -> float:
        ev = np.arange(len(st.test))
        return float(metrics(self.r, st, scorer(st, ev), ev)["auc"])

    def validate(self) -> dict[str, Any]:
        r, plan = self.r, self.plan
        full = make_stream(r, np.arange(len(r)), self.train_fraction, self.net.buffer, self.seed)
        val = make_stream(r, full.train, 0.8, self.net.buffer, self.seed, self.max_val)

        kept: dict[str, tuple[float, RecModel, dict[str, Any]]] = {}  # family → best trial's model

        def keep(family: str, value: float, model: RecModel, params: dict[str, Any]) -> None:
            if family not in kept or value < kept[family][0]:
                kept[family] = (value, model, params)

        def meta_objective(params: dict[str, Any]) -> float:
            model = self.train_meta(val, params, plan.trial_steps, self.seed)
            v = -self.val_auc(val, neural_scorer(r, model, int(params["inner_steps"]), model.inner_lr_map(),
                                                 ranking=False))
            keep("meta", v, model, params)
            return v

        ft_of: list[dict[str, Any]] = []

        def global_objective(params: dict[str, Any]) -> float:
            model = self.train_global(val, params, plan.trial_steps, self.seed)
            best: tuple[dict[str, Any], float] = ({}, np.inf)
            for ft in M.ft_grid(FT_STEPS, FT_LRS):
                v = -self.val_auc(val, neural_scorer(r, model, ft["ft_steps"], ft["ft_lr"], ft["ft_adapt"],
                                                     ranking=False))
                if v < best[1]:
                    best = (ft, v)
            ft_of.append(best[0])
            keep("global", best[1], model, best[0])
            return best[1]

        def river_objective(params: dict[str, Any]) -> float:
            s = river_run(r, val, params, self.seed, ranking=False)
            return -float(metrics(r, val, s, np.arange(len(val.test)))["auc"])

        first = [M.algorithm_params({"inner_lr": 0.3}, a) for a in M.META_ALGORITHMS]
        meta = run_study(meta_space, meta_objective, plan.trials, 1e9, self.seed, first,
                         on_trial=lambda k, v: self.tick(f"search meta  trial {k}  val AUC {-v:.4f}"))
        glob = run_study(global_space, global_objective, plan.trials, 1e9, self.seed, [dict(M.DEFAULT_GLOBAL)],
                         on_trial=lambda k, v: self.tick(f"search global  trial {k}  val AUC {-v:.4f}"))
        riv = run_study(river_space, river_objective, plan.trials, 1e9, self.seed,
                        [{"n_factors": 10, "lr": 0.02, "l2": 1e-3}],
                        on_trial=lambda k, v: self.tick(f"search river  trial {k}  val AUC {-v:.4f}"))
        best_g = min(range(len(glob.trials)), key=lambda i: glob.trials[i]["value"])
        lam = min(((li, lu) for li in M.LAMBDAS for lu in M.LAMBDAS),
                  key=lambda p: -self.val_auc(val, offset_scorer(r, val, *p)))
        online = self.choose_online(make_stream(r, full.train, 0.8, self.net.buffer, self.seed), kept)
        return {"meta": meta, "global": glob, "river": riv, "finetune": ft_of[best_g], "lambdas": lam,
                "online": online, "val_events": len(val.test)}

    def choose_online(self, st: Stream, kept: dict[str, tuple[float, RecModel, dict[str, Any]]]
                      ) -> dict[str, dict[str, Any]]:
        """Online item-offset rates per family, on the *whole* validation stream (no subsample:
        the offsets learn from every event, as on test), with the best trial's model of each study."""
        _, meta, mp = kept["meta"]
        _, glob, ft = kept["global"]
        scorers = {"meta": neural_scorer(self.r, meta, int(mp["inner_steps"]), meta.inner_lr_map(), ranking=False),
                   "global": neural_scorer(self.r, glob, 0, 0.0, ranking=False),
                   "fine-tuned": neural_scorer(self.r, glob, ft["ft_steps"], ft["ft_lr"], ft["ft_adapt"],
                                               ranking=False)}
        ev = np.arange(len(st.test))
        items, y = self.r.item[st.test][:, None], self.y[st.test]
        out = {}
        for family, scorer in scorers.items():
            out[family] = O.choose(scorer(st, ev), items, y)
            c = out[family]
            self.tick(f"online items: {family}  eta {c['eta']}  lam {c['lam']}  eta_global {c['eta_global']}  "
                      f"val AUC {c['val_auc']:.4f}")
        return out

    def test(self, chosen: dict[str, Any], seed: int) -> tuple[dict[tuple[str, str], dict[str, Any]],
                                                                 dict[str, list[tuple[float, float]]]]:
        r = self.r
        st = make_stream(r, np.arange(len(r)), self.train_fraction, self.net.buffer, seed)
        mu = float(self.y[st.train].mean())
        scores: dict[str, tuple[str, np.ndarray]] = {}
        ev = np.arange(len(st.test))
        scores["mean"] = ("baseline", np.full((len(ev), 1 + N_NEG), mu))
        scores["item mean + user offset"] = ("baseline", offset_scorer(r, st, *chosen["lambdas"])(st, ev))
        g = self.train_global(st, chosen["global"], self.plan.meta_steps, seed)
        scores["global"] = ("baseline", neural_scorer(r, g, 0, 0.0)(st, ev))
        ft = chosen["finetune"]
        scores["fine-tuned"] = ("baseline", neural_scorer(r, g, ft["ft_steps"], ft["ft_lr"], ft["ft_adapt"])(st, ev))
        self.tick("test: global model")
        scores["river BiasedMF"] = ("baseline", river_run(r, st, chosen["river"], seed))
        self.tick("test: river")
        for a in M.META_ALGORITHMS:
            params = chosen["meta"][a]
            model = self.train_meta(st, params, self.plan.meta_steps, seed)
            scores[M.label(a)] = ("meta", neural_scorer(r, model, int(params["inner_steps"]),
                                                        model.inner_lr_map())(st, ev))
            self.tick(f"test: {M.label(a)}")
        on = chosen["online"]
        scores = O.add_online(scores, {"global": on["global"], "fine-tuned": on["fine-tuned"],
                                       **{M.label(a): on["meta"] for a in M.META_ALGORITHMS}},
                              np.concatenate([r.item[st.test][:, None], st.negatives], 1), self.y[st.test])
        out: dict[tuple[str, str], dict[str, Any]] = {}
        over_time: dict[str, list[tuple[float, float]]] = {}
        ts = r.ts[st.test]
        edges = np.linspace(ts.min(), ts.max() + 1e-9, 11)
        win = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, 9)
        for name, (kind, s) in scores.items():
            for split, m in by_bucket(r, st, s).items():
                out[(split, name)] = {"kind": kind, **m}
            over_time[name] = [((w + 0.5) / 10, float(metrics(r, st, s, ev[win == w])["auc"]))
                               for w in range(10) if (win == w).sum() > 10]
        return out, over_time


def run(r: Ratings, seed: int, plan: M.Plan, tick: Tick, net: Net | None = None) -> dict[str, Any]:
    """Validation then ``plan.repeats`` test runs; returns rows (mean over seeds) and details."""
    t0 = time.monotonic()
    ev = Prequential(r, seed, plan, net or Net(buffer=64), tick)
    val = ev.validate()
    meta: SearchResult = val["meta"]
    chosen = {"meta": {a: M.algorithm_params({"inner_lr": 0.3, **(meta.best_where(algorithm=a) or {})}, a)
                       for a in M.META_ALGORITHMS},
              "global": {**M.DEFAULT_GLOBAL, **val["global"].best}, "finetune": val["finetune"],
              "river": val["river"].best, "lambdas": val["lambdas"], "online": val["online"]}
    t_val = time.monotonic() - t0
    seeds = [seed + k for k in range(plan.repeats)]
    per_seed, times = [], []
    for s in seeds:
        res, over_time = ev.test(chosen, s)
        per_seed.append(res)
        times.append(over_time)
    return {"rows": aggregate(per_seed), "seeds": seeds, "chosen": chosen,
            "search": {"meta": meta, "global": val["global"], "river": val["river"]},
            "auc_over_time": times[0], "seconds": {"validation": t_val, "total": time.monotonic() - t0},
            "notes": [f"validation stream: {val['val_events']} events (last 20% of the training period)",
                      "rmse is the root Brier score of P(positive) against the 0/1 label; River BiasedMF "
                      "is trained on the same 0/1 labels and its prediction clipped to [0, 1]",
                      "item mean + user offset: item means from the training period (not updated online), "
                      "the user offset from the same support window the neural methods adapt on",
                      "'+ online items': the row's scorer plus per-item logit offsets learned test-then-train "
                      "by SGD on the test stream from zero at the cut (evaluate/online.py); rates chosen on "
                      "the whole validation stream, once for the meta family (its best trial's model), "
                      "once each for global and fine-tuned (see chosen.online)"]}
