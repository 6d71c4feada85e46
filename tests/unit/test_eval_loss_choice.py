"""The training-loss choice of the melu evaluation: rating losses against hand-computed values and
gradients, ``mse`` reproducing the previous loss bit for bit (one loss and a short meta-training
run), adaptation with L1 equal to the per-user reference, and the item-offset baseline's median twin
against a hand example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch import Tensor

import metarec.adapt
import metarec.meta
from metarec.adapt import Support, adapt, adapt_loop
from metarec.evaluate.models import ItemOffset, group_median
from metarec.evaluate.search import LOSSES, with_loss
from metarec.meta import TrainConfig, meta_train
from metarec.model import HUBER_DELTA, ModelConfig, RecModel, loss_fn


def _model(rating_loss: str = "mse", seed: int = 0, adapt_layers: tuple[str, ...] = ("layers", "out")) -> RecModel:
    torch.manual_seed(seed)
    return RecModel(ModelConfig(n_users=7, n_items=30, dim=4, hidden=(8, 6), n_context_buckets=16, max_context=3,
                                mode="rating", rating_range=(1.0, 5.0), adapt=adapt_layers, inner_steps=2,
                                inner_lr=0.05, bias=True, rating_loss=rating_loss))


def _support(b: int = 4, s: int = 7, seed: int = 0) -> Support:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, s, generator=g) > 0.25).float()
    mask[:, 0] = 1.0
    return Support(users=torch.randint(0, 7, (b,), generator=g), items=torch.randint(1, 30, (b, s), generator=g),
                   ctx=torch.randint(0, 16, (b, s, 3), generator=g),
                   y=torch.randint(1, 6, (b, s), generator=g).float(), mask=mask)


def _old_loss_fn(model: RecModel, logits: Tensor, y: Tensor, mask: Tensor, kind: str | None = None) -> Tensor:
    """``loss_fn`` before the choice existed (rating mode), copied literally (``kind`` is accepted
    for the newer signature; the callers under test pass None, the model's own loss)."""
    assert kind is None
    per = (model.predict(logits) - y) ** 2
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


# logits 0 and ln 3 → σ 0.5 and 0.75 → ratings 3 and 4 on [1, 5]; the third event is padding
LOGITS = [0.0, math.log(3.0), 0.0]
Y, MASK = [4.0, 2.0, 5.0], [1.0, 1.0, 0.0]


@pytest.mark.parametrize(("kind", "value", "dl_dpred"), [
    ("mse", (1.0 + 4.0) / 2, [2 * -1.0, 2 * 2.0]),  # (ŷ - y)², d/dŷ = 2(ŷ - y)
    ("l1", (1.0 + 2.0) / 2, [-1.0, 1.0]),  # |ŷ - y|, d/dŷ = sign(ŷ - y)
    ("huber", (1.0 - HUBER_DELTA / 2 + 2.0 - HUBER_DELTA / 2) / 2, [-1.0, 1.0]),  # both errors outside δ
])
def test_rating_loss_value_and_gradient_by_hand(kind: str, value: float, dl_dpred: list[float]) -> None:
    m = _model(kind)
    z = torch.tensor(LOGITS, requires_grad=True)
    loss = loss_fn(m, z, torch.tensor(Y), torch.tensor(MASK))
    loss.backward()
    assert_allclose(float(loss.detach()), value, rtol=1e-6)
    dpred_dz = [4 * 0.5 * 0.5, 4 * 0.75 * 0.25]  # (hi - lo) σ (1 - σ)
    expected = [dl_dpred[0] * dpred_dz[0] / 2, dl_dpred[1] * dpred_dz[1] / 2, 0.0]  # mean over 2 real events
    assert z.grad is not None
    assert_allclose(z.grad.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_huber_is_quadratic_inside_delta() -> None:
    m = _model("huber")
    z = torch.tensor([0.0], requires_grad=True)  # ŷ = 3, y = 3.1: error −0.1, inside δ = 0.25
    loss = loss_fn(m, z, torch.tensor([3.1]), torch.ones(1))
    loss.backward()
    assert_allclose(float(loss.detach()), 0.5 * 0.1 ** 2 / HUBER_DELTA, rtol=1e-5)
    assert z.grad is not None
    assert_allclose(float(z.grad[0]), (-0.1 / HUBER_DELTA) * 4 * 0.25, rtol=1e-5)


def test_unknown_loss_names_the_value() -> None:
    with pytest.raises(ValueError, match="'l3'"):
        loss_fn(_model("l3"), torch.zeros(1), torch.ones(1), torch.ones(1))


def test_mse_is_the_previous_loss_bit_for_bit() -> None:
    m = _model()  # ModelConfig's default rating_loss
    assert m.cfg.rating_loss == "mse" and LOSSES[0] == "mse"
    sup = _support()
    logits = torch.randn(sup.y.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loss_fn(m, logits, sup.y, sup.mask), _old_loss_fn(m, logits, sup.y, sup.mask))


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_mse_meta_training_reproduces_the_previous_numbers(algorithm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short meta-training run with ``rating_loss="mse"`` equals the same run with the old loss
    patched into the inner (adapt) and outer (meta) loops: same losses, same weights."""
    def run() -> tuple[list[float], dict[str, Tensor]]:
        m = _model("mse")
        cfg = TrainConfig(algorithm=algorithm, meta_batch=4, steps=3, query_size=7, seed=0, init_loss_weight=1.0)
        hist = meta_train(m, None, np.arange(4), cfg, sampler=lambda b, rng: (_support(seed=1), _support(seed=2)))
        return hist, {k: v.detach().clone() for k, v in m.state_dict().items()}

    new_hist, new_w = run()
    monkeypatch.setattr(metarec.adapt, "loss_fn", _old_loss_fn)
    monkeypatch.setattr(metarec.meta, "loss_fn", _old_loss_fn)
    old_hist, old_w = run()
    assert new_hist == old_hist
    assert all(torch.equal(new_w[k], old_w[k]) for k in new_w)


@pytest.mark.parametrize("kind", ["l1", "huber"])
def test_robust_adaptation_equals_per_user_loop_and_lowers_its_loss(kind: str) -> None:
    m = _model(kind)
    sup = _support()
    with torch.no_grad():
        fast = adapt(m, sup, 3, 0.05)
    ref = adapt_loop(m, sup, 3, 0.05)
    for k in fast:
        assert_allclose(fast[k].numpy(), ref[k].numpy(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        init = adapt(m, sup, 0, 0.0)
        before = float(loss_fn(m, metarec.adapt.predict_rows(m, init, sup.users, sup.items, sup.ctx), sup.y, sup.mask))
        after = float(loss_fn(m, metarec.adapt.predict_rows(m, fast, sup.users, sup.items, sup.ctx), sup.y, sup.mask))
    assert after < before


def test_with_loss_adds_one_categorical() -> None:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"x": 1.0, "loss": LOSSES[1]})
    params = with_loss(lambda t: {"x": t.suggest_float("x", 0.0, 2.0)})(study.ask())
    assert params == {"x": 1.0, "loss": LOSSES[1]}


def test_group_median_by_hand() -> None:
    keys = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3])
    y = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 1.0, 5.0, 5.0, 4.0])
    assert_allclose(group_median(keys, y, 5, -1.0), [-1.0, 4.0, 2.5, 4.5, -1.0])


def test_item_offset_median_twin_by_hand() -> None:
    """Items 1–3 rated (5, 1, 4), (2, 3), (4, 4, 4, 1); global median 4. With λ_i = 1: item 1 →
    4 + 3/4 (4 − 4) = 4, item 2 → 4 + 2/3 (2.5 − 4) = 3, item 3 → 4 + 4/5 (4 − 4) = 4, unseen item
    4 → 4. User 1's residuals (1, −2, 0) have median 0; user 2's (1, 1) median 1, shrunk by
    2 / (2 + λ_u)."""
    items = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3])
    y = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 4.0, 4.0, 4.0, 1.0])
    io = ItemOffset.fit(items, y, 5, 1.0, "median")
    assert_allclose(io.item_mean, [4.0, 4.0, 3.0, 4.0, 4.0])
    sup = Support(torch.tensor([0, 0]), torch.tensor([[1, 2, 3], [1, 3, 0]]), torch.zeros(2, 3, 1, dtype=torch.long),
                  torch.tensor([[5.0, 1.0, 4.0], [5.0, 5.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    qry = Support(torch.tensor([0, 0]), torch.tensor([[2, 4], [2, 4]]), torch.zeros(2, 2, 1, dtype=torch.long),
                  torch.zeros(2, 2), torch.ones(2, 2))
    p = io.predict(sup, qry, 2.0, 1.0, 5.0)
    assert_allclose(p, [[3.0, 4.0], [3.0 + 0.5, 4.0 + 0.5]])  # user 1: median(1, −2, 0) = 0
    empty = Support(sup.users, sup.items, sup.ctx, sup.y, torch.zeros(2, 3))  # no support: no offset
    assert_allclose(io.predict(empty, qry, 0.0, 1.0, 5.0), [[3.0, 4.0], [3.0, 4.0]])


def test_item_offset_mean_is_unchanged() -> None:
    items, y = np.array([1, 1, 2]), np.array([5.0, 3.0, 2.0])
    io = ItemOffset.fit(items, y, 4, 2.0)  # μ = 10/3: item 1 (8 + 20/3)/4, item 2 (2 + 20/3)/3
    mu = 10.0 / 3.0
    assert_allclose(io.item_mean, [mu, (8 + 2 * mu) / 4, (2 + 2 * mu) / 3, mu])
    sup = Support(torch.tensor([0]), torch.tensor([[1, 2]]), torch.zeros(1, 2, 1, dtype=torch.long),
                  torch.tensor([[5.0, 2.0]]), torch.ones(1, 2))
    qry = Support(torch.tensor([0]), torch.tensor([[3]]), torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 1),
                  torch.ones(1, 1))
    offset = ((5.0 - io.item_mean[1]) + (2.0 - io.item_mean[2])) / (2 + 1.0)
    assert_allclose(io.predict(sup, qry, 1.0, 1.0, 5.0), [[mu + offset]])
