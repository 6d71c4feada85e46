"""Maths against references: one hand-computed SGD step, adaptation lowers the support loss,
meta-gradients reach the slow weights, vmap equals the per-user loop, ONNX equals torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from metarec.adapt import Support, adapt, adapt_loop, predict_rows, user_loss
from metarec.artifact import export_onnx, onnx_input_names
from metarec.model import ModelConfig, RecModel, loss_fn, score_matrix
from metarec.score import OnnxScorer, TorchScorer


def make_model(seed: int = 0, **kw: object) -> RecModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_users=7, n_items=30, dim=4, hidden=(8, 6), n_context_buckets=16, max_context=3, **kw)
    return RecModel(cfg)


def make_support(model: RecModel, b: int = 5, s: int = 9, seed: int = 0) -> Support:
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    mask = (torch.rand(b, s, generator=g) > 0.25).float()
    mask[0] = 0.0  # a user with no labelled events keeps the initialization
    y = (torch.rand(b, s, generator=g) > 0.5).float()
    if cfg.mode == "rating":
        y = torch.randint(1, 6, (b, s), generator=g).float()
    return Support(
        users=torch.randint(0, cfg.n_users, (b,), generator=g),
        items=torch.randint(1, cfg.n_items, (b, s), generator=g),
        ctx=torch.randint(0, cfg.n_context_buckets, (b, s, cfg.max_context), generator=g),
        y=y, mask=mask,
    )


def test_one_sgd_step_matches_hand_computed_gradient() -> None:
    """A single inner step on a one-event support set equals w - lr * dL/dw computed by hand
    for the output layer: dBCE/dlogit = sigmoid(z) - y, dz/dw_out = h (last hidden activation)."""
    model = make_model(adapt=("out",))
    sup = make_support(model, b=1, s=1)
    sup = Support(sup.users, sup.items, sup.ctx, torch.ones(1, 1), torch.ones(1, 1))
    lr = 0.3
    with torch.no_grad():
        fast = adapt(model, sup, steps=1, lr=lr)
        u, i, c = model.user_emb(sup.users), model.item_emb(sup.items[0]), model.context_vec(sup.ctx[0])
        h = torch.cat([u, i, c], -1)
        for layer in model.layers:
            h = torch.relu(layer(h))
        z = model.out(h).squeeze(-1)
        dz = torch.sigmoid(z) - 1.0
        w_ref = model.out.weight - lr * dz[:, None] * h
        b_ref = model.out.bias - lr * dz
    assert_allclose(fast["out.weight"][0].numpy(), w_ref.numpy(), rtol=1e-5, atol=1e-6)
    assert_allclose(fast["out.bias"][0].numpy(), b_ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["binary", "rating"])
def test_adaptation_lowers_the_support_loss(mode: str) -> None:
    model = make_model(mode=mode)
    sup = make_support(model)
    slow = {n: p for n, p in model.named_parameters() if n not in model.fast_init()}
    with torch.no_grad():
        init = {k: v.unsqueeze(0).expand(len(sup), *v.shape) for k, v in model.fast_init().items()}
        fast = adapt(model, sup, steps=5, lr=0.1 if mode == "binary" else 0.02)
    for b in range(1, len(sup)):  # user 0 has no labelled events
        args = (sup.users[b], sup.items[b], sup.ctx[b], sup.y[b], sup.mask[b])
        with torch.no_grad():
            before = user_loss(model, slow, {k: v[b] for k, v in init.items()}, *args)
            after = user_loss(model, slow, {k: v[b] for k, v in fast.items()}, *args)
        assert float(after) < float(before)
    for k, v in fast.items():  # the all-masked user keeps the initialization exactly
        assert torch.equal(v[0], model.fast_init()[k].detach())


def test_module_is_never_modified_by_adaptation() -> None:
    model = make_model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    adapt(model, make_support(model), steps=3, lr=0.5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_vmap_equals_per_user_loop() -> None:
    model = make_model()
    sup = make_support(model, b=6)
    with torch.no_grad():
        batched = adapt(model, sup, steps=4, lr=0.2)
    loop = adapt_loop(model, sup, steps=4, lr=0.2)
    for k in batched:
        assert_allclose(batched[k].numpy(), loop[k].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_reaches_slow_weights_and_init(first_order: bool) -> None:
    model = make_model()
    sup, qry = make_support(model, seed=1), make_support(model, seed=2)
    fast = adapt(model, sup, steps=2, lr=0.3, first_order=first_order)
    logits = predict_rows(model, fast, qry.users, qry.items, qry.ctx)
    loss_fn(model, logits, qry.y, qry.mask).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in ("item_emb.weight", "user_emb.weight", "ctx_emb.weight", "layers.0.weight", "out.weight"):
        assert grads[name] is not None and float(grads[name].abs().sum()) > 0, name


def test_second_order_gradient_differs_from_first_order() -> None:
    """MAML's meta-gradient includes the Hessian term; dropping it (FOMAML) changes it."""
    def meta_grad(first_order: bool) -> torch.Tensor:
        model = make_model(seed=3)
        sup, qry = make_support(model, seed=4), make_support(model, seed=5)
        fast = adapt(model, sup, steps=2, lr=0.5, first_order=first_order)
        loss_fn(model, predict_rows(model, fast, qry.users, qry.items, qry.ctx), qry.y, qry.mask).backward()
        return model.layers[0].weight.grad.clone()

    assert not torch.allclose(meta_grad(False), meta_grad(True), atol=1e-7)


def test_score_matrix_equals_forward_rowwise() -> None:
    model = make_model()
    sup = make_support(model, b=3)
    with torch.no_grad():
        fast = adapt(model, sup, steps=2, lr=0.3)
        items = torch.arange(1, model.cfg.n_items)
        ctx = sup.ctx[:, -1]
        mat = score_matrix(model, fast, sup.users, ctx, items)
        n = len(items)
        rows = predict_rows(model, fast, sup.users, items.expand(3, n), ctx[:, None, :].expand(3, n, -1))
    assert_allclose(mat.numpy(), torch.sigmoid(rows).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["binary", "rating"])
def test_onnx_equals_torch(tmp_path, mode: str) -> None:
    model = make_model(mode=mode).eval()
    sup = make_support(model, b=4)
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    with torch.no_grad():
        fast = {k: v.numpy() for k, v in adapt(model, sup, steps=3, lr=0.05).items()}
    users, ctx = sup.users.numpy(), sup.ctx[:, 0].numpy()
    ort_scores = OnnxScorer(path).score(users, ctx, fast)
    torch_scores = TorchScorer(model).score(users, ctx, fast)
    assert ort_scores.shape == (4, model.cfg.n_items - 1)
    assert_allclose(ort_scores, torch_scores, rtol=1e-5, atol=1e-5)
    assert not np.allclose(ort_scores[1], ort_scores[2])  # personal weights really are inputs
    assert onnx_input_names(model)[:2] == ["users", "ctx"]
