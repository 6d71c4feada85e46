"""Early stopping: checks, patience, the best weights restored, in meta-training and the global fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metarec.adapt import Support
from metarec.meta import TrainConfig, meta_train
from metarec.model import ModelConfig, RecModel
from metarec.stopping import EarlyStopping


def scripted(values: list[float]) -> tuple[EarlyStopping, list[dict[str, torch.Tensor]]]:
    """A stopper whose validation returns ``values`` in turn and records the weights it saw."""
    seen: list[dict[str, torch.Tensor]] = []
    it = iter(values)

    def validate(model: nn.Module) -> float:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(it)

    return EarlyStopping(validate, every=2, patience=2), seen


def test_stops_after_patience_and_restores_the_best() -> None:
    stop, seen = scripted([3.0, 1.0, 2.0, 1.5, 0.5])
    model = nn.Linear(2, 1)
    stopped_at = None
    for step in range(1, 21):
        with torch.no_grad():
            model.weight += 1.0  # every step changes the weights
        if stop.due(step) and stop.check(model, step):
            stopped_at = step
            break
    assert stopped_at == 8  # checks at 2, 4 (best), 6, 8: two without improvement
    assert stop.best_step == 4 and stop.stopped_by == "patience"
    assert [s for s, _ in stop.curve] == [2, 4, 6, 8]
    stop.restore(model)
    assert torch.equal(model.weight, seen[1]["weight"])  # the weights checked at step 4


def test_min_delta_counts_small_gains_as_none() -> None:
    stop = EarlyStopping(lambda m: 0.0, every=1, patience=1, min_delta=0.1)
    vals = iter([1.0, 0.95])
    stop.validate = lambda m: next(vals)
    model = nn.Linear(1, 1)
    assert not stop.check(model, 1)
    assert stop.check(model, 2)  # 0.95 is not 0.1 better than 1.0
    assert stop.best_value == 1.0


def test_smoothing_judges_the_mean_of_recent_checks() -> None:
    """One lucky check neither wins nor ends training: judged alone, the 0.6 at check 4 is the best
    and training stops at check 7; judged by the mean of 3, training goes on to the real minimum
    (the window ending at check 12), and those weights are kept."""
    values = [1.0, 0.9, 0.85, 0.6, 0.85, 0.8, 0.75, 0.72, 0.65, 0.6, 0.62, 0.64, 0.66, 0.7, 0.75, 0.8]

    def run(smooth: int) -> tuple[EarlyStopping, int, dict[int, torch.Tensor]]:
        vals = iter(values)
        stop = EarlyStopping(lambda m: next(vals), every=1, patience=3, smooth=smooth)
        model, weights = nn.Linear(1, 1), {}
        for step in range(1, len(values) + 1):
            with torch.no_grad():
                model.weight += 1.0
            weights[step] = model.weight.clone()
            if stop.check(model, step):
                break
        stop.restore(model)
        assert torch.equal(model.weight, weights[stop.best_step]), "the best window's last weights"
        return stop, step, weights

    raw, stopped, _ = run(1)
    assert (raw.best_step, raw.best_value, stopped) == (4, 0.6, 7)
    smooth, stopped, _ = run(3)
    assert (smooth.best_step, stopped) == (12, 15)
    assert smooth.best_value == pytest.approx((0.6 + 0.62 + 0.64) / 3)
    assert [v for _, v in smooth.curve] == values[:15], "the curve keeps the raw checks"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(lambda m: 0.0, every=0, patience=1)
    with pytest.raises(ValueError, match="smooth"):
        EarlyStopping(lambda m: 0.0, every=1, patience=1, smooth=0)


def _tasks(n_users: int = 6, s: int = 5) -> tuple[RecModel, np.ndarray, TrainConfig]:
    cfg = ModelConfig(n_users=n_users + 1, n_items=9, n_context_buckets=8, max_context=2, dim=4, hidden=(8,),
                      inner_steps=1, inner_lr=0.1)
    torch.manual_seed(0)
    return RecModel(cfg), np.arange(n_users), TrainConfig(meta_batch=3, steps=200, time_budget_s=1e9)


def _sampler(batch: np.ndarray, rng: np.random.Generator) -> tuple[Support, Support]:
    b = len(batch)
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))

    def one(s: int) -> Support:
        return Support(torch.as_tensor(batch + 1), torch.randint(1, 9, (b, s), generator=g),
                       torch.randint(0, 8, (b, s, 2), generator=g), torch.randint(0, 2, (b, s), generator=g).float(),
                       torch.ones(b, s))

    return one(4), one(3)


def test_meta_train_ends_early_and_keeps_the_best_checked_weights() -> None:
    model, users, tcfg = _tasks()
    snapshots: list[dict[str, torch.Tensor]] = []
    values = iter([5.0, 4.0, 1.0, 2.0, 3.0, 4.0] + [9.0] * 100)

    def validate(m: nn.Module) -> float:
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(values)

    stop = EarlyStopping(validate, every=10, patience=3)
    history = meta_train(model, None, users, tcfg, sampler=_sampler, stop=stop)
    assert len(history) == 60  # checks at 10..60; the best at 30, then 3 without improvement
    assert stop.best_step == 30 and stop.stopped_by == "patience"
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[2][k]), k
    assert not torch.equal(model.state_dict()["out.weight"], snapshots[-1]["out.weight"])


def test_meta_train_reports_a_cap_that_cut_improvement_short() -> None:
    model, users, tcfg = _tasks()
    tcfg.steps = 25
    values = iter([3.0, 2.0, 1.0])
    stop = EarlyStopping(lambda m: next(values), every=10, patience=3)
    history = meta_train(model, None, users, tcfg, sampler=_sampler, stop=stop)
    assert len(history) == 25
    assert [s for s, _ in stop.curve] == [10, 20, 25]  # the last weights are checked too
    assert stop.stopped_by == "cap" and stop.best_step == 25
