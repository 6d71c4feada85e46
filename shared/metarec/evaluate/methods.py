"""Training plans and the methods' hyper-parameters, shared by both protocols.

Every budget is counted in steps and trials, not seconds, so a seed reproduces its numbers;
``--budget-minutes`` picks the counts (calibrated on 2 CPU cores) and is also a hard stop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec.evaluate.data import Ratings
from metarec.evaluate.models import LABELS, META_ALGORITHMS, Net, fill_unseen_items, fit_global, make_model
from metarec.meta import Sampler, TrainConfig, meta_train
from metarec.model import RecModel
from metarec.stopping import EarlyStopping

# init_loss_weight 1: the un-adapted init's query loss counts as much as the adapted one's (meta.py)
DEFAULT_META = {"inner_lr": 0.05, "inner_steps": 3, "adapt": "layers+out", "outer_lr": 3e-3, "init_loss_weight": 1.0}
DEFAULT_GLOBAL = {"lr": 3e-3, "weight_decay": 1e-4}
FT_STEPS = (0, 1, 3, 5, 10, 20, 40)  # fine-tuning grid: steps ...
FT_LRS = (0.003, 0.01, 0.03, 0.1, 0.3)  # ... learning rates ...
FT_ADAPT = ("out", "layers+out")  # ... and adapted layers
LAMBDAS = (0.1, 1.0, 3.0, 10.0, 30.0)  # shrinkage grid of the item-mean + user-offset baseline


@dataclass(frozen=True)
class Plan:
    """How much work each stage gets."""

    meta_steps: int  # outer steps of each final meta-learned model
    trial_steps: int  # outer steps of a model trained inside a search trial
    trials: int  # search trials per method family (meta-learning and global model alike)
    repeats: int  # test repetitions with seeds seed, seed+1, ...
    global_ratio: int = 4  # global-model minibatch steps per meta step (a meta step sees ~4x the rows)
    meta_batch: int = 32  # users per outer step
    user_dropout: float = 0.5  # share of tasks/rows that use the unknown-user embedding
    pretrain: bool = False  # start meta-training from a supervised global model (same steps as `global`)
    # melu: training length by early stopping on the validation users (0: fixed step counts).
    # meta_steps and trial_steps then become caps of `epochs` passes over the training users, a
    # check every `check_epochs` passes, stop after `patience` checks without improvement; `global`
    # gets global_ratio x as many minibatch steps with the same checks
    epochs: float = 0.0
    check_epochs: float = 1.0
    patience: int = 6
    smooth: int = 1  # each check judged by the mean of the last `smooth` (see metarec.stopping)
    # the weights' moving average, meta and global alike (metarec.averaging), its horizon in passes
    # over the training users (0: off, the raw weights)
    ema_epochs: float = 0.0

    def stopped(self, n_train_users: int) -> Plan:
        """With early stopping: the step caps for ``n_train_users`` training users (a search trial
        trains as long as a tested model, so the final-length re-rank is free)."""
        if self.epochs <= 0:
            return self
        cap = max(20, int(np.ceil(self.epochs * n_train_users / self.meta_batch)))
        return dataclasses.replace(self, meta_steps=cap, trial_steps=cap)

    def check_every(self, n_train_users: int) -> int:
        """Outer steps between early-stopping checks."""
        return max(1, int(round(self.check_epochs * n_train_users / self.meta_batch)))

    def ema_decay(self, n_train_users: int, ratio: int = 1) -> float:
        """The moving average's decay ``1 - 1/H`` for a horizon of ``H = ema_epochs`` passes, in
        steps (``ratio`` x the meta steps for the global model's minibatches); 0 when off."""
        if self.ema_epochs <= 0:
            return 0.0
        return 1.0 - 1.0 / max(1.0, self.ema_epochs * n_train_users / self.meta_batch * ratio)

    @classmethod
    def for_budget(cls, minutes: float, repeats: int, scale: float = 1.0) -> Plan:
        """Counts that fit ``minutes`` on 2 cores for ml-100k (``scale`` < 1 for bigger data)."""
        unit = max(minutes, 0.2) * scale
        # 20 min on ml-100k: 600 outer steps per final model (2400 minibatches for `global`),
        # 300 per search trial, 10 + 10 trials; ~15 min wall with 1 thread per run
        return cls(meta_steps=max(20, int(30 * unit)), trial_steps=max(10, int(15 * unit)),
                   trials=max(2, int(0.5 * unit)), repeats=repeats)

    def early_stopped(self, epochs: float = 40.0, min_trials: int = 4, smooth: int = 3,
                      ema_epochs: float = 3.0) -> Plan:
        """The melu plan: lengths by early stopping (at most ``epochs`` passes over the training
        users, each check judged by the mean of the last ``smooth``, on the weights' moving average
        over ``ema_epochs`` passes), and at least ``min_trials`` trials per family, so every
        algorithm gets one."""
        return dataclasses.replace(self, epochs=epochs, trials=max(self.trials, min_trials), smooth=smooth,
                                   ema_epochs=ema_epochs)


def meta_model(r: Ratings, n_users: int, mode: str, params: dict[str, Any], net: Net, seed: int) -> RecModel:
    return make_model(r, n_users, mode, params["adapt"], int(params["inner_steps"]), float(params["inner_lr"]),
                      net, seed, meta_sgd=params["algorithm"] == "metasgd", rating_loss=params.get("loss", "mse"))


def train_meta(r: Ratings, n_users: int, mode: str, params: dict[str, Any], net: Net, plan: Plan, steps: int,
               users: np.ndarray, sampler: Sampler | None, table: Any, seed: int,
               seen_items: np.ndarray, init_from: RecModel | None = None,
               stop: EarlyStopping | None = None) -> RecModel:
    """A meta-learned model (``params["algorithm"]``) trained for ``steps`` outer steps,
    from a fresh initialization or from ``init_from``'s weights (a pretrained global model);
    ``params["loss"]`` (default "mse") is its inner rating loss (and what it adapts with when
    serving), ``params["outer_loss"]`` its outer (query) loss, the inner one when absent."""
    model = meta_model(r, n_users, mode, params, net, seed)
    if init_from is not None:
        model.load_state_dict(init_from.state_dict(), strict=False)  # Meta-SGD's rates stay at inner_lr
    cfg = TrainConfig(algorithm=params["algorithm"], meta_batch=plan.meta_batch, outer_lr=float(params["outer_lr"]),
                      steps=steps, time_budget_s=1e9, query_size=10, user_dropout=plan.user_dropout, seed=seed,
                      init_loss_weight=float(params.get("init_loss_weight", 0.0)),
                      outer_loss=params.get("outer_loss") if mode == "rating" else None, ema=plan.ema_decay(len(users)))
    meta_train(model, table, users, cfg, sampler=sampler, stop=stop)
    model.eval()
    fill_unseen_items(model, seen_items)
    return model


def train_global(r: Ratings, n_users: int, mode: str, params: dict[str, Any], net: Net, plan: Plan, steps: int,
                 rows: np.ndarray, user_idx: np.ndarray, y: np.ndarray, seed: int,
                 seen_items: np.ndarray, stop: EarlyStopping | None = None) -> RecModel:
    """The global (non-meta) model, same architecture, trained on the same rows (with the rating
    loss ``params["loss"]``, "mse" if absent; fine-tuning adapts with the same loss)."""
    model = make_model(r, n_users, mode, "layers+out", 0, 0.0, net, seed, rating_loss=params.get("loss", "mse"))
    fit_global(model, r, rows, user_idx, y, steps * plan.global_ratio, float(params["lr"]),
               float(params["weight_decay"]), plan.user_dropout, seed, stop=stop,
               ema=plan.ema_decay(len(np.unique(user_idx[rows])), plan.global_ratio))
    model.eval()
    fill_unseen_items(model, seen_items)
    return model


def ft_grid(steps: tuple[int, ...] = FT_STEPS, lrs: tuple[float, ...] = FT_LRS,
            losses: tuple[str | None, ...] = (None,)) -> Iterator[dict[str, Any]]:
    """The fine-tuning grid's distinct configurations, in search order: no fine-tuning first (the
    same predictions whatever the layers and loss), then every loss × layers × steps × lr.
    ``ft_loss`` is set only when a loss is named (None: the model's own)."""
    yield {"ft_steps": 0, "ft_lr": 0.0, "ft_adapt": FT_ADAPT[0], **({"ft_loss": losses[0]} if losses[0] else {})}
    for loss in losses:
        for layers in FT_ADAPT:
            for n in (k for k in steps if k):
                for lr in lrs:
                    yield {"ft_steps": n, "ft_lr": lr, "ft_adapt": layers, **({"ft_loss": loss} if loss else {})}


def algorithm_params(best: dict[str, Any] | None, algorithm: str) -> dict[str, Any]:
    return {**DEFAULT_META, **(best or {}), "algorithm": algorithm}


def label(algorithm: str) -> str:
    return LABELS[algorithm]


def set_threads(n: int = 2) -> None:
    torch.set_num_threads(n)


__all__ = ["META_ALGORITHMS", "Plan", "train_meta", "train_global"]
