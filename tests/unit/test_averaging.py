"""Weight averaging (metarec.averaging): the EMA's maths, and meta-training and the global fit
checking and keeping the averaged weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from metarec.averaging import WeightAverage
from metarec.evaluate.data import ITEM_ATTRS, MAX_CONTEXT, Ratings
from metarec.evaluate.models import Net, fit_global, make_model
from metarec.meta import TrainConfig, meta_train
from metarec.stopping import EarlyStopping
from tests.unit.test_early_stopping import _sampler, _tasks


def test_the_average_follows_the_ema_formula() -> None:
    model = nn.Linear(2, 1)
    avg = WeightAverage(model, 0.9)
    expect = None
    for step in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(float(step))
        avg.update(model)
        expect = float(step) if expect is None else 0.9 * expect + 0.1 * step  # the first update copies
        assert torch.allclose(avg.view(model).weight, torch.full((1, 2), expect)), step
    assert avg.view(model) is not model
    avg.settle(model)
    assert torch.allclose(model.weight, torch.full((1, 2), expect))


def test_decay_zero_is_the_raw_weights() -> None:
    model = nn.Linear(2, 1)
    before = model.weight.clone()
    avg = WeightAverage(model, 0.0)
    avg.update(model)
    assert avg.view(model) is model
    avg.settle(model)
    assert torch.equal(model.weight, before)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decays_are_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(1, 1), decay)
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(ema=decay)


def test_meta_train_checks_and_keeps_the_averaged_weights() -> None:
    """With ``ema`` the checks see the average, not the raw weights, and the model trained is the
    best checked average; without, the raw weights (the same seed gives different models)."""
    def train(ema: float) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
        model, users, tcfg = _tasks()
        seen: list[dict[str, torch.Tensor]] = []
        values = iter([3.0, 1.0, 2.0, 2.5, 2.6] + [9.0] * 50)

        def validate(m: nn.Module) -> float:
            seen.append({k: v.clone() for k, v in m.state_dict().items()})
            return next(values)

        stop = EarlyStopping(validate, every=10, patience=3)
        meta_train(model, None, users, dataclasses.replace(tcfg, ema=ema), sampler=_sampler, stop=stop)
        assert stop.best_step == 20
        return model, seen

    raw, raw_seen = train(0.0)
    averaged, avg_seen = train(0.9)
    for k, v in averaged.state_dict().items():
        assert torch.equal(v, avg_seen[1][k]), k
    # the first check saw the same number of steps from the same start: raw and averaged differ
    assert not torch.equal(avg_seen[0]["out.weight"], raw_seen[0]["out.weight"])
    assert not torch.equal(averaged.state_dict()["out.weight"], raw.state_dict()["out.weight"])


def test_the_global_fit_averages_too() -> None:
    rng = np.random.default_rng(0)
    n, users, items = 400, 20, 15
    r = Ratings(name="toy", users=[str(u) for u in range(users)], items=[str(i) for i in range(items)],
                user=rng.integers(0, users, n), item=rng.integers(0, items, n),
                value=rng.integers(1, 6, n).astype(np.float32), ts=np.zeros(n), ctx=np.zeros((n, MAX_CONTEXT), np.int64),
                item_attr=np.zeros((items, ITEM_ATTRS), np.int64), item_year=np.full(items, np.nan),
                rating_range=(1.0, 5.0), threshold=4.0)
    rows, uidx = np.arange(n), r.user + 1
    fits = {}
    for ema in (0.0, 0.95):
        m = make_model(r, users, "rating", "layers+out", 0, 0.0, Net(dim=4, hidden=(8, 4)), 0)
        fit_global(m, r, rows, uidx, r.value, 30, 1e-2, 0.0, 0.5, 0, batch_size=32, ema=ema)
        fits[ema] = m
    assert not torch.equal(fits[0.0].out.weight, fits[0.95].out.weight)


def test_the_plan_sets_the_horizon_in_passes_over_the_training_users() -> None:
    from metarec.evaluate.methods import Plan

    plan = Plan(meta_steps=10, trial_steps=10, trials=2, repeats=1)
    assert plan.ema_decay(4000) == 0.0, "off unless asked: an old best.json trains as it did"
    melu = plan.early_stopped()
    assert melu.ema_epochs == 3.0
    assert melu.ema_decay(3200) == pytest.approx(1 - 1 / 300)  # 3 passes of 100 steps
    assert melu.ema_decay(3200, ratio=4) == pytest.approx(1 - 1 / 1200)  # the global model's minibatches
    assert melu.ema_decay(1) == 0.0  # a horizon under one step: the raw weights
