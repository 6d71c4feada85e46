"""A separate outer (query) loss for meta-training: the inner loop keeps the model's rating loss,
the query loss is the one named, and the meta-gradient equals a hand-built ``create_graph=True``
one. ``outer_loss=None`` is the previous behaviour bit for bit."""

from __future__ import annotations

import pytest
import torch
from numpy.testing import assert_allclose

from metarec.adapt import Support, adapt, predict_rows
from metarec.meta import TrainConfig, outer_step
from metarec.model import ModelConfig, RecModel, loss_fn


def _model(rating_loss: str = "mse") -> RecModel:
    torch.manual_seed(0)
    return RecModel(ModelConfig(n_users=7, n_items=30, dim=4, hidden=(8, 6), n_context_buckets=16, max_context=3,
                                mode="rating", rating_range=(1.0, 5.0), adapt=("layers", "out"), inner_steps=2,
                                inner_lr=0.05, bias=True, rating_loss=rating_loss))


def _rows(seed: int, b: int = 4, s: int = 6) -> Support:
    g = torch.Generator().manual_seed(seed)
    return Support(users=torch.randint(0, 7, (b,), generator=g), items=torch.randint(1, 30, (b, s), generator=g),
                   ctx=torch.randint(0, 16, (b, s, 3), generator=g),
                   y=torch.randint(1, 6, (b, s), generator=g).float(), mask=torch.ones(b, s))


def _grads(model: RecModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _hand_built(model: RecModel, sup: Support, qry: Support, outer: str) -> dict[str, torch.Tensor]:
    """Per-user inner SGD with the model's own loss and create_graph=True, then the query loss of
    kind ``outer`` averaged over the batch's query rows."""
    model.zero_grad()
    init = model.fast_init()
    logits = []
    for b in range(len(sup)):
        fast = {k: v.unsqueeze(0) for k, v in init.items()}
        one = Support(sup.users[b:b + 1], sup.items[b:b + 1], sup.ctx[b:b + 1], sup.y[b:b + 1], sup.mask[b:b + 1])
        for _ in range(model.cfg.inner_steps):
            loss = loss_fn(model, predict_rows(model, fast, one.users, one.items, one.ctx), one.y, one.mask)
            g = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {k: v - model.cfg.inner_lr * gk for (k, v), gk in zip(fast.items(), g)}
        logits.append(predict_rows(model, fast, qry.users[b:b + 1], qry.items[b:b + 1], qry.ctx[b:b + 1])[0])
    loss_fn(model, torch.stack(logits), qry.y, qry.mask, outer).backward()
    return _grads(model)


@pytest.mark.parametrize("outer", ["l1", "huber"])
def test_meta_gradient_with_another_outer_loss_equals_hand_built(outer: str) -> None:
    model, sup, qry = _model("mse"), _rows(1), _rows(2)
    want = _hand_built(model, sup, qry, outer)
    model.zero_grad()
    outer_step(model, sup, qry, "maml", outer_loss=outer)
    got = _grads(model)
    assert set(got) == set(want)
    for n in want:
        assert_allclose(got[n].numpy(), want[n].numpy(), rtol=1e-4, atol=1e-6, err_msg=n)


def test_outer_loss_changes_the_gradient_but_not_the_inner_loop() -> None:
    model, sup, qry = _model("mse"), _rows(3), _rows(4)
    outer_step(model, sup, qry, "maml")
    same = _grads(model)
    model.zero_grad()
    outer_step(model, sup, qry, "maml", outer_loss="mse")  # naming the model's own loss changes nothing
    assert all(torch.equal(same[n], g) for n, g in _grads(model).items())
    model.zero_grad()
    outer_step(model, sup, qry, "maml", outer_loss="l1")
    assert any(not torch.allclose(same[n], g) for n, g in _grads(model).items())
    # the inner loop is the model's: adapting never looks at the outer loss
    with torch.no_grad():
        a = adapt(model, sup, 2, 0.05)
    assert model.cfg.rating_loss == "mse" and all(torch.isfinite(v).all() for v in a.values())


@pytest.mark.parametrize("algorithm", ["fomaml", "metasgd", "reptile"])
def test_every_algorithm_takes_an_outer_loss(algorithm: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_users=7, n_items=30, dim=4, hidden=(8, 6), n_context_buckets=16, max_context=3, mode="rating",
                      adapt=("out",), inner_steps=1, inner_lr=0.05, bias=True, meta_sgd=algorithm == "metasgd")
    model = RecModel(cfg)
    sup, qry = _rows(5), _rows(6)
    a = float(outer_step(model, sup, qry, algorithm, outer_loss="l1"))
    model.zero_grad()
    b = float(outer_step(model, sup, qry, algorithm))
    assert a == a and b == b and a != b  # reported loss is the outer loss: L1 and MSE differ


def test_unknown_outer_loss_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="outer_loss.*'l3'"):
        TrainConfig(outer_loss="l3")


@pytest.mark.parametrize("kind", ["l1", "huber"])
def test_adapting_with_another_loss_equals_a_model_trained_with_it(kind: str) -> None:
    """``adapt(..., loss=kind)`` (the fine-tuning grid's loss choice) is the adaptation of the same
    weights in a model whose own rating loss is ``kind``; and it differs from adapting with mse."""
    a, b = _model("mse"), _model(kind)
    b.load_state_dict(a.state_dict())
    sup = _rows(7)
    with torch.no_grad():
        got = adapt(a, sup, 3, 0.1, loss=kind)
        want = adapt(b, sup, 3, 0.1)
        plain = adapt(a, sup, 3, 0.1)
    for n in want:
        assert_allclose(got[n].numpy(), want[n].numpy(), rtol=1e-6, atol=1e-7)
    assert any(not torch.allclose(got[n], plain[n]) for n in got)


def test_finalists_are_the_best_trials_per_group_nan_dropped() -> None:
    from metarec.evaluate.search import SearchResult, finalists

    trials = [{"params": {"algorithm": a, "x": x}, "value": v}
              for a, x, v in [("maml", 1, 0.30), ("maml", 2, 0.10), ("maml", 3, 0.20), ("reptile", 4, float("nan")),
                              ("reptile", 5, 0.50)]]
    res = SearchResult(best={}, value=0.1, trials=trials)
    per = finalists(res, 2, "algorithm")
    assert [p["x"] for p in per["maml"]] == [2, 3]
    assert [p["x"] for p in per["reptile"]] == [5]
    assert [p["x"] for p in finalists(res, 2)[None]] == [2, 3]
