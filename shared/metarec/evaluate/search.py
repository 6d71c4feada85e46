"""Validation search with Optuna: one study per method family, the same trial budget for each.

A study runs ``n_trials`` seeded TPE trials (deterministic for a seed) and stops early only
if ``timeout_s`` runs out — then the report says the search was cut short, because a cut
short search does not reproduce exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from metarec.evaluate.models import ADAPT, META_ALGORITHMS

Objective = Callable[[dict[str, Any]], float]
INIT_LOSS_WEIGHTS = (0.0, 0.3, 1.0, 3.0)  # TrainConfig.init_loss_weight choices of the meta search
# rating losses a family may train with (ModelConfig.rating_loss), searched on the melu protocol for
# the meta and global studies alike (huber, not l1: pure L1 adapted worse in a quick validation
# check, docs/evaluation.md); mse first: the enqueued defaults keep today's configuration
LOSSES = ("mse", "huber")
Space = Callable[[optuna.Trial], dict[str, Any]]
INITS = ("global", "scratch")  # where a meta trial starts (with_init)


@dataclass
class SearchResult:
    best: dict[str, Any]  # parameters of the best trial
    value: float  # its validation score (lower is better)
    trials: list[dict[str, Any]] = field(default_factory=list)  # every trial: params + value
    seconds: float = 0.0
    cut_short: bool = False  # stopped by the time limit before n_trials

    def best_where(self, **fixed: Any) -> dict[str, Any] | None:
        """The best trial's parameters among trials with ``fixed`` values (e.g. an algorithm)."""
        ok = [t for t in self.trials if all(t["params"].get(k) == v for k, v in fixed.items())]
        ok = [t for t in ok if t["value"] == t["value"]]  # drop NaN
        return min(ok, key=lambda t: t["value"])["params"] if ok else None


INNER_STEPS = (1, 3, 5)  # a meta-learner's inner-loop steps, the choices of the search


def inner_steps_upto(max_steps: int) -> list[int]:
    """The inner-step choices within a test-time step budget (at least one step)."""
    return [s for s in INNER_STEPS if s <= max_steps] or [INNER_STEPS[0]]


def meta_space(trial: optuna.Trial, max_steps: int = max(INNER_STEPS),
               adapts: tuple[str, ...] = tuple(ADAPT)) -> dict[str, Any]:
    """Meta-learning: algorithm, inner learning rate and steps (at most ``max_steps``), adapted
    layers (one of ``adapts``), outer learning rate, and the weight of the un-adapted
    initialization's loss in the outer objective (0 = plain MAML)."""
    return {
        "algorithm": trial.suggest_categorical("algorithm", list(META_ALGORITHMS)),
        "inner_lr": trial.suggest_float("inner_lr", 1e-3, 1.0, log=True),
        "inner_steps": trial.suggest_categorical("inner_steps", inner_steps_upto(max_steps)),
        "adapt": trial.suggest_categorical("adapt", list(adapts)),
        "outer_lr": trial.suggest_float("outer_lr", 5e-4, 1e-2, log=True),
        "init_loss_weight": trial.suggest_categorical("init_loss_weight", list(INIT_LOSS_WEIGHTS)),
    }


def global_space(trial: optuna.Trial) -> dict[str, Any]:
    """The global (non-meta) model: learning rate and weight decay (its fine-tuning is a grid)."""
    return {
        "lr": trial.suggest_float("lr", 5e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
    }


def with_loss(space: Space, losses: tuple[str, ...] = LOSSES, name: str = "loss") -> Space:
    """``space`` plus a loss, one more categorical hyper-parameter ``name``: ``"loss"`` is the
    training (a meta-learner's inner) loss, ``"outer_loss"`` a meta-learner's query loss."""
    def spaced(trial: optuna.Trial) -> dict[str, Any]:
        return {**space(trial), name: trial.suggest_categorical(name, list(losses))}

    return spaced


def with_init(space: Space, plan: Any) -> Space:
    """``space`` plus where meta-training starts, ``init``: ``scratch`` (a fresh network) or
    ``global`` (the supervised global model's weights, meta-tuned from there). Only with early
    stopping (``plan.epochs > 0``); else ``plan.pretrain`` decides for every trial."""
    if plan.epochs <= 0:
        return space

    def spaced(trial: optuna.Trial) -> dict[str, Any]:
        return {**space(trial), "init": trial.suggest_categorical("init", list(INITS))}

    return spaced


def pretrained(params: dict[str, Any], plan: Any) -> bool:
    """Does this meta trial start from the global model (its ``init``, else the plan's flag)?"""
    return str(params.get("init", "global" if plan.pretrain else "scratch")) == "global"


def first_meta_trials(plan: Any, max_steps: int = max(INNER_STEPS), adapt: str = "layers+out") -> list[dict[str, Any]]:
    """The meta trials enqueued before TPE, so a small budget still covers every algorithm.

    With early stopping (the melu default): every algorithm meta-tuned from the global model with
    MSE inside and huber outside (the ML-1M validation users preferred a huber outer loss and the
    global start: docs/evaluation.md), Meta-SGD with 5 inner steps; then the same from scratch.
    Without: today's order, mse inside and out first, then a huber outer loss. Inner steps above
    ``max_steps`` become the most that fit; each adapts ``adapt`` (the most the serving budget allows)."""
    from metarec.evaluate.methods import algorithm_params

    fit = inner_steps_upto(max_steps)

    def params(a: str, **more: Any) -> dict[str, Any]:
        p = {**algorithm_params(None, a), "adapt": adapt, **more}
        return {**p, "inner_steps": max([s for s in fit if s <= p["inner_steps"]], default=fit[0])}

    if plan.epochs <= 0:
        return [params(a, loss=LOSSES[0], outer_loss=outer) for outer in LOSSES for a in META_ALGORITHMS]
    order = ("metasgd", "maml", "fomaml", "reptile")
    return [params(a, **({"inner_steps": 5} if a == "metasgd" else {}), loss="mse", outer_loss="huber", init=init)
            for init in INITS for a in order]


def run_study(space: Space, objective: Objective, n_trials: int,
              timeout_s: float, seed: int, first: list[dict[str, Any]] | None = None,
              on_trial: Callable[[int, float], None] | None = None) -> SearchResult:
    """Minimize ``objective(params)`` over ``space``; ``first`` are trials enqueued before TPE."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed,
                                                                                        n_startup_trials=4))
    for params in first or []:
        study.enqueue_trial(params)
    t0 = time.monotonic()
    done = 0
    for k in range(n_trials):
        if time.monotonic() - t0 > timeout_s:
            break
        trial = study.ask()
        params = space(trial)
        value = float(objective(params))
        study.tell(trial, value if value == value else float("inf"))
        done = k + 1
        if on_trial:
            on_trial(done, value)
    trials = [{"params": t.params, "value": t.value} for t in study.trials if t.value is not None]
    best = study.best_trial
    value = float(best.value) if best.value is not None else float("inf")
    return SearchResult(best.params, value, trials, time.monotonic() - t0, done < n_trials)


def finalists(result: SearchResult, k: int, per: str | None = None) -> dict[Any, list[dict[str, Any]]]:
    """The ``k`` best trials' parameters (by validation score, NaN dropped) per value of ``per``
    (e.g. per algorithm; one group keyed None without ``per``): the candidates re-ranked at the
    final training length."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for t in sorted((t for t in result.trials if t["value"] == t["value"]), key=lambda t: t["value"]):
        group = groups.setdefault(t["params"].get(per) if per else None, [])
        if len(group) < k:
            group.append(t["params"])
    return groups
