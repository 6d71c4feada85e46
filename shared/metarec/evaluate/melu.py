"""The MeLU cold-start protocol: validation search, then test on held-out users, per seed.

Stages: *training* (meta-train on the warm state's support rows), *validation* (Optuna on
held-out existing users, as new users on existing items: one study for the meta-learners,
one with the same trial budget for the global model, grids for fine-tuning and the
item-mean baseline), *test* (the four states, reported once, for ``repeats`` seeds).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from metarec.evaluate import methods as M
from metarec.evaluate import sizes
from metarec.evaluate.data import Ratings
from metarec.evaluate.melu_tasks import (
    ADAPT_MULTS,
    SUPPORT_SIZES,
    Predict,
    long_supports,
    neural,
    sampler,
    score,
    stopper,
)
from metarec.evaluate.models import OFFSET_CENTERS, ItemOffset, Net
from metarec.evaluate.rows import Result, aggregate, curve
from metarec.evaluate.search import (
    LOSSES,
    SearchResult,
    finalists,
    first_meta_trials,
    global_space,
    meta_space,
    pretrained,
    run_study,
    with_init,
    with_loss,
)
from metarec.evaluate.splits import STATES, MeluSplit, Tasks, melu_split
from metarec.model import RecModel
from metarec.stopping import EarlyStopping

FINALISTS = 2  # trials per meta algorithm (and of `global`) re-ranked at the final training length
Tick = Callable[[str], None]
__all__ = ["ADAPT_MULTS", "SUPPORT_SIZES", "Melu", "run", "score", "neural", "sampler"]


class Melu:
    """One MeLU evaluation run over a dataset."""

    def __init__(self, r: Ratings, seed: int, plan: M.Plan, net: Net, tick: Tick) -> None:
        self.r, self.seed, self.net, self.tick = r, seed, net, tick
        # early stopping: the step counts become caps of plan.epochs passes over the training users
        self.plan = plan.stopped(len(self.split(seed).train)) if plan.epochs > 0 else plan
        self.lo, self.hi = r.rating_range
        self._kept: dict[tuple[str, str, int], RecModel] = {}
        self.training: list[dict[str, Any]] = []  # each early-stopped model: steps run, curve

    # --- pieces --------------------------------------------------------------------------
    def split(self, seed: int) -> MeluSplit:
        """The MeLU split of ``seed`` with supports cut to the buffer (what serving would hold)."""
        return melu_split(self.r, seed, buffer=self.net.buffer)

    def _keep(self, kind: str, params: dict[str, Any], steps: int, seed: int,
              train: Callable[[], RecModel]) -> RecModel:
        """Models of the tested length are trained once: a validation finalist at ``self.seed`` is
        the model the first test seed trains again (the split, parameters, steps and seed decide
        it; ``adapt_mult`` is a test-time setting)."""
        if steps != self.plan.meta_steps:
            return train()
        key = (kind, json.dumps({k: v for k, v in params.items() if k != "adapt_mult"}, sort_keys=True), seed)
        if key not in self._kept:
            self._kept[key] = train()
        return self._kept[key]

    def train_meta(self, split: MeluSplit, params: dict[str, Any], steps: int, seed: int) -> RecModel:
        return self._keep("meta", params, steps, seed, lambda: self._train_meta(split, params, steps, seed))

    def train_global(self, split: MeluSplit, params: dict[str, Any], steps: int, seed: int) -> RecModel:
        return self._keep("global", params, steps, seed, lambda: self._train_global(split, params, steps, seed))

    def _stopper(self, split: MeluSplit, seen: np.ndarray, steps: int | None, every: int) -> EarlyStopping | None:
        if self.plan.epochs <= 0:
            return None
        return stopper(self.r, split, seen, every, self.plan.patience, steps, self.plan.smooth)

    def _log(self, kind: str, params: dict[str, Any], seed: int, stop: EarlyStopping | None) -> None:
        if stop is not None:
            summary = stop.summary()
            self.training.append({"kind": kind, "seed": seed, "params": params, **summary})
            self.tick(f"{kind} {params.get('algorithm', '')} seed {seed}: best at step {stop.best_step} "
                      f"of {summary['steps_run']} ({stop.stopped_by}), val MAE {stop.best_value:.4f}")

    def _train_meta(self, split: MeluSplit, params: dict[str, Any], steps: int, seed: int) -> RecModel:
        users = np.array(sorted(split.train), np.int64)
        smp = sampler(self.r, split, self.net.buffer, 10, self.plan.user_dropout)
        pre = {**M.DEFAULT_GLOBAL, "loss": params.get("loss", "mse")}
        init = self.train_global(split, pre, steps, seed) if pretrained(params, self.plan) else None
        seen = np.unique(self.r.item[split.train_rows()])
        stop = self._stopper(split, seen, int(params["inner_steps"]), self.plan.check_every(len(split.train)))
        model = M.train_meta(self.r, split.n_known_users, "rating", params, self.net, self.plan, steps, users, smp,
                             None, seed, seen, init, stop)
        self._log("meta", params, seed, stop)
        return model

    def _train_global(self, split: MeluSplit, params: dict[str, Any], steps: int, seed: int) -> RecModel:
        rows = split.train_rows()
        seen = np.unique(self.r.item[rows])
        stop = self._stopper(split, seen, None, self.plan.check_every(len(split.train)) * self.plan.global_ratio)
        model = M.train_global(self.r, split.n_known_users, "rating", params, self.net, self.plan, steps, rows,
                               split.user_index[self.r.user], self.r.value, seed, seen, stop)
        self._log("global", params, seed, stop)
        return model

    def item_offset(self, split: MeluSplit, lam_item: float, center: str) -> ItemOffset:
        rows = split.train_rows()
        return ItemOffset.fit(self.r.item[rows] + 1, self.r.value[rows].astype(np.float64), len(self.r.items) + 1,
                              lam_item, center)

    def val_mae(self, split: MeluSplit, predict: Predict, tasks: Tasks | None = None, k: int | None = None) -> float:
        """MAE of ``predict`` on ``tasks`` (the validation users by default), supports cut to ``k``
        events when given; inf when there are no users."""
        return float(score(self.r, split, split.val if tasks is None else tasks, predict, k).get("mae", np.inf))

    def best_finetune(self, split: MeluSplit, model: RecModel, tasks: Tasks | None = None,
                      k: int | None = None) -> tuple[dict[str, Any], float]:
        """The fine-tuning grid on the validation users: (steps, lr, adapted layers, loss) → MAE.
        The fine-tuning loss may differ from the one the model was trained with, as a meta-learner's
        inner loss may differ from its outer loss. ``tasks``/``k``: as :meth:`val_mae`."""
        best: tuple[dict[str, Any], float] = ({}, np.inf)
        for ft in M.ft_grid(losses=LOSSES):
            mae = self.val_mae(split, neural(model, ft["ft_steps"], ft["ft_lr"], ft["ft_adapt"], ft["ft_loss"]),
                               tasks, k)
            if mae < best[1]:
                best = (ft, mae)
        return best

    def offset_grid(self, split: MeluSplit, tasks: Tasks | None = None,
                    k: int | None = None) -> dict[tuple[str, float, float], float]:
        """Validation MAE of the item-offset baseline per (centre, λ_item, λ_user)."""
        return {(c, li, lu): self.val_mae(split, self.offset_predict(split, c, li, lu), tasks, k)
                for c in OFFSET_CENTERS for li in M.LAMBDAS for lu in M.LAMBDAS}

    # --- stages --------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        split = self.split(self.seed)
        plan = self.plan
        t_budget = 1e9

        def meta_objective(params: dict[str, Any]) -> float:
            return self.adapted_mae(split, self.train_meta(split, params, plan.trial_steps, self.seed), params)[1]

        def global_objective(params: dict[str, Any]) -> float:
            model = self.train_global(split, params, plan.trial_steps, self.seed)
            return self.best_finetune(split, model)[1]

        # the training loss is one more hyper-parameter of both studies, and a meta-learner's outer
        # (query) loss one more of the meta study. Enqueued first, for every meta algorithm: mse inside
        # and out (the plain configuration), and mse inside, huber outside (adapt with squared error,
        # meta-learn for a robust, MAE-like query loss); for `global`: mse and huber (and the
        # fine-tuning grid chooses its own loss, the counterpart of the inner/outer split)
        adapts = self.net.adapts()
        first_meta = first_meta_trials(plan, self.net.max_steps, adapts[-1])
        space = with_init(with_loss(with_loss(functools.partial(meta_space, max_steps=self.net.max_steps,
                                                                adapts=tuple(adapts))),
                                    name="outer_loss"), plan)
        meta = run_study(space, meta_objective, plan.trials, t_budget, self.seed, first_meta,
                         on_trial=lambda k, v: self.tick(f"search meta  trial {k}  val MAE {v:.4f}"))
        first_global = [{**M.DEFAULT_GLOBAL, "loss": loss} for loss in LOSSES]
        glob = run_study(with_loss(global_space), global_objective, plan.trials, t_budget, self.seed, first_global,
                         on_trial=lambda k, v: self.tick(f"search global  trial {k}  val MAE {v:.4f}"))
        # the item-offset baseline's counterpart of the loss choice: mean or median centres
        offset = self.offset_grid(split)
        c, li, lu = min(offset, key=lambda k: offset[k])
        return {"meta": meta, "global": glob, **self.final_length(split, meta, glob),
                "item_offset": {"center": c, "lam_item": li, "lam_user": lu},
                "offset_by_center": {c: min(v for k, v in offset.items() if k[0] == c) for c in OFFSET_CENTERS},
                "val_users": len(split.val)}

    def adapted_mae(self, split: MeluSplit, model: RecModel, params: dict[str, Any], tasks: Tasks | None = None,
                    k: int | None = None) -> tuple[int, float]:
        """(test-time step multiple, validation MAE) of a meta-learned model, the best over the
        ADAPT_MULTS whose steps fit ``net.max_steps`` (``tasks``/``k``: as :meth:`val_mae`)."""
        best = (0, np.inf)
        for mult in self.step_mults(int(params["inner_steps"])):
            mae = self.val_mae(split, neural(model, int(params["inner_steps"]) * mult, model.inner_lr_map()), tasks, k)
            if mae < best[1]:
                best = (mult, mae)
        return best

    def step_mults(self, inner_steps: int) -> tuple[int, ...]:
        """The test-time step multiples within the serving budget (0, un-adapted, always is)."""
        return tuple(m for m in ADAPT_MULTS if inner_steps * m <= self.net.max_steps)

    def final_length(self, split: MeluSplit, meta: SearchResult, glob: SearchResult) -> dict[str, Any]:
        """Each family's finalists (the best FINALISTS trials per meta algorithm, and of `global`)
        retrained for as many steps as the tested models and compared on validation again: a
        search trial trains for ``trial_steps`` (half as long by default), and a ranking can change
        with length (e.g. a huber outer loss overtakes mse between 300 and 600 steps)."""
        steps, out = self.plan.meta_steps, {}
        runs: list[dict[str, Any]]
        for a, cands in finalists(meta, FINALISTS, "algorithm").items():
            runs = []
            for params in cands:
                mult, mae = self.adapted_mae(split, self.train_meta(split, params, steps, self.seed), params)
                runs.append({"params": params, "adapt_mult": mult, "value": mae})
                self.tick(f"final length: {M.label(a)}  val MAE {mae:.4f}")
            out[a] = min(runs, key=lambda x: x["value"])
        runs = []
        for trial in finalists(glob, FINALISTS).get(None, [{}]):  # {}: the defaults, if no trial finished
            params = {**M.DEFAULT_GLOBAL, **trial}  # the tested model's full parameters
            ft, mae = self.best_finetune(split, self.train_global(split, params, steps, self.seed))
            runs.append({"params": params, "finetune": ft, "value": mae})
            self.tick(f"final length: global  val MAE {mae:.4f}")
        g = min(runs, key=lambda x: x["value"])
        return {"final_meta": out, "final_global": g, "finetune": g["finetune"]}

    def offset_predict(self, split: MeluSplit, center: str, lam_item: float, lam_user: float) -> Predict:
        io = self.item_offset(split, lam_item, center)
        return lambda sup, qry: io.predict(sup, qry, lam_user, self.lo, self.hi)

    def predicts(self, split: MeluSplit, chosen: dict[str, Any], seed: int) -> dict[str, tuple[str, Predict]]:
        """Every method, configured as ``chosen`` says, for the split of ``seed`` (models of the
        tested length come from the cache after their first training)."""
        mu = float(self.r.value[split.train_rows()].mean())
        preds: dict[str, tuple[str, Predict]] = {
            "mean": ("baseline", lambda sup, qry: np.full(qry.y.shape, mu)),
            "item mean + user offset": ("baseline", self.offset_predict(split, **chosen["item_offset"])),
        }
        g = self.train_global(split, chosen["global"], self.plan.meta_steps, seed)
        ft = chosen["finetune"]
        preds["global"] = ("baseline", neural(g, 0, 0.0))
        preds["fine-tuned"] = ("baseline", neural(g, ft["ft_steps"], ft["ft_lr"], ft["ft_adapt"], ft.get("ft_loss")))
        for a in M.META_ALGORITHMS:
            params = chosen["meta"][a]
            model = self.train_meta(split, params, self.plan.meta_steps, seed)
            steps = int(params["inner_steps"]) * int(params.get("adapt_mult", 1))
            preds[M.label(a)] = ("meta", neural(model, steps, model.inner_lr_map()))
            # its own initialization, un-adapted: what adaptation must never be worse than
            preds[f"{M.label(a)} (no adaptation)"] = ("init", neural(model, 0, 0.0))
        return preds

    def test(self, chosen: dict[str, Any], seed: int) -> tuple[Result, Result]:
        """Every method on every state for one seed; plus MAE by support size on new users with
        settings chosen for that size (``chosen["by_size"]`` when present), keyed ``(str(k), method)``:
        the same shape as the states, so seeds aggregate and compare the same way."""
        split = self.split(seed)
        preds = self.predicts(split, chosen, seed)
        self.tick(f"test: seed {seed}")
        out: Result = {}
        for name, (kind, predict) in preds.items():
            for state in STATES:
                out[(state, name)] = {"kind": kind, **score(self.r, split, split.states[state], predict)}
        sub = long_supports(split.states["new_users"], max(SUPPORT_SIZES))
        by_size: Result = {}
        for k in SUPPORT_SIZES:
            tuned = {**chosen, **chosen.get("by_size", {}).get(str(k), {})}
            for name, (kind, predict) in self.predicts(split, tuned, seed).items():
                mae = score(self.r, split, sub, predict, k).get("mae", np.nan)
                by_size[(str(k), name)] = {"kind": kind, "mae": mae}
        return out, by_size


def run(r: Ratings, seed: int, plan: M.Plan, tick: Tick, net: Net | None = None) -> dict[str, Any]:
    """Validation then ``plan.repeats`` test runs; returns rows (mean over seeds) and details."""
    t0 = time.monotonic()
    ev = Melu(r, seed, plan, net or Net(), tick)
    val = ev.validate()
    meta: SearchResult = val["meta"]
    final = val["final_meta"]
    chosen = {"meta": chosen_meta(final),
              "global": val["final_global"]["params"], "finetune": val["finetune"],
              "val_mae_final_length": {**{M.label(a): f["value"] for a, f in final.items()},
                                       "fine-tuned": val["final_global"]["value"]},
              "item_offset": val["item_offset"],
              "val_mae_by_loss": {"meta": _by(meta, "algorithm", "loss", "outer_loss"),
                                  "global": _by(val["global"], "loss"),
                                  "item mean + user offset": val["offset_by_center"]}}
    chosen["by_size"] = sizes.by_size(ev, chosen)
    t_val = time.monotonic() - t0
    per_seed, by_sizes = [], []
    seeds = [seed + k for k in range(plan.repeats)]
    for s in seeds:
        res, by_size = ev.test(chosen, s)
        per_seed.append(res)
        by_sizes.append(by_size)
    support_rows = aggregate(by_sizes)
    return {"rows": aggregate(per_seed), "seeds": seeds, "chosen": chosen,
            "search": {"meta": meta, "global": val["global"], "val_users": val["val_users"]},
            "support_rows": support_rows, "support_curve": curve(support_rows),
            "training": ev.training, "plan": ev.plan, "net": dataclasses.asdict(ev.net),
            "seconds": {"validation": t_val, "total": time.monotonic() - t0}}


def chosen_meta(final: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each meta algorithm's tested configuration: its final-length winner's parameters and
    test-time step multiple; the defaults with 1× steps for an algorithm no trial reached."""
    return {a: ({**M.algorithm_params(final[a]["params"], a), "adapt_mult": int(final[a]["adapt_mult"])}
                if a in final else {**M.algorithm_params(None, a), "adapt_mult": 1}) for a in M.META_ALGORITHMS}


def _by(search: SearchResult, *keys: str) -> dict[str, Any]:
    """Best validation score per value of ``keys`` (nested in that order), e.g. per algorithm and loss."""
    out: dict[str, Any] = {}
    for t in search.trials:
        if t["value"] != t["value"]:
            continue
        d = out
        for k in keys[:-1]:
            d = d.setdefault(str(t["params"].get(k)), {})
        last = str(t["params"].get(keys[-1], "mse"))
        d[last] = min(d.get(last, np.inf), float(t["value"]))
    return out
