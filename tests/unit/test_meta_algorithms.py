"""Meta-learning algorithms against references: hand-built second-order MAML, Meta-SGD's learned
rates, Reptile's direction, vmap == loop on the extended model (biases, item attributes)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metarec.adapt import Support, adapt, adapt_loop
from metarec.meta import outer_step
from metarec.model import ModelConfig, RecModel, loss_fn


def _model(**kw: object) -> RecModel:
    torch.manual_seed(0)
    cfg = ModelConfig(n_users=6, n_items=12, n_context_buckets=32, max_context=2, dim=4, hidden=(8, 6),
                      inner_steps=2, inner_lr=0.3, bias=True, item_attrs=2, **kw)  # type: ignore[arg-type]
    m = RecModel(cfg)
    with torch.no_grad():
        m.item_attr.copy_(torch.randint(0, 32, (12, 2)))
    return m


def _batch(b: int, s: int, seed: int) -> Support:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, s)
    mask[0, s // 2:] = 0.0  # padding
    return Support(torch.randint(0, 6, (b,), generator=g), torch.randint(1, 12, (b, s), generator=g),
                   torch.randint(0, 32, (b, s, 2), generator=g), torch.randint(0, 2, (b, s), generator=g).float(),
                   mask)


def _hand_maml_grads(m: RecModel, sup: Support, qry: Support) -> dict[str, torch.Tensor]:
    """Second-order MAML with plain autograd: a loop over users and create_graph=True."""
    params = dict(m.named_parameters())
    names = m.adapted_names()
    all_logits = []
    for b in range(len(sup)):
        fast = {n: params[n] for n in names}
        for _ in range(m.cfg.inner_steps):
            u = sup.users[b].expand(sup.items.shape[1])
            logits = functional_call(m, {**params, **fast}, (u, sup.items[b], sup.ctx[b]))
            loss = loss_fn(m, logits, sup.y[b], sup.mask[b])
            gs = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: fast[n] - m.cfg.inner_lr * g for n, g in zip(names, gs)}
        uq = qry.users[b].expand(qry.items.shape[1])
        all_logits.append(functional_call(m, {**params, **fast}, (uq, qry.items[b], qry.ctx[b])))
    loss = loss_fn(m, torch.stack(all_logits), qry.y, qry.mask)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)}


def _grads(m: RecModel) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in m.named_parameters()}


def test_second_order_meta_gradient_equals_create_graph_reference() -> None:
    m = _model()
    sup, qry = _batch(3, 5, 1), _batch(3, 4, 2)
    qry = Support(sup.users, qry.items, qry.ctx, qry.y, torch.ones_like(qry.mask))
    ref = _hand_maml_grads(m, sup, qry)
    m.zero_grad()
    outer_step(m, sup, qry, "maml")
    got = _grads(m)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6, msg=n)
    m.zero_grad()
    outer_step(m, sup, qry, "fomaml")
    fo = _grads(m)
    assert any(not torch.allclose(fo[n], ref[n], atol=1e-6) for n in m.adapted_names())


def test_meta_sgd_learns_its_rates_and_serving_uses_them() -> None:
    m = _model(meta_sgd=True)
    sup, qry = _batch(4, 6, 3), _batch(4, 5, 4)
    qry = Support(sup.users, qry.items, qry.ctx, qry.y, torch.ones_like(qry.mask))
    before = {k: v.detach().clone() for k, v in m.inner_lrs.items()}
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        outer_step(m, sup, qry, "metasgd")
        opt.step()
    assert all(m.inner_lrs[k].grad is not None for k in before)
    assert any(not torch.allclose(m.inner_lrs[k], before[k]) for k in before)
    lr = m.inner_lr_map()
    assert isinstance(lr, dict) and set(lr) == set(m.adapted_names())
    assert RecModel(m.cfg).load_state_dict(m.state_dict()) is not None  # the rates are in the state dict
    with pytest.raises(ValueError, match="meta_sgd"):
        outer_step(_model(), sup, qry, "metasgd")


def test_reptile_moves_init_toward_adapted_weights() -> None:
    m = _model()
    sup, qry = _batch(3, 5, 5), _batch(3, 4, 6)
    m.zero_grad()
    outer_step(m, sup, qry, "reptile")
    init = m.fast_init()
    from metarec.meta import _combine

    with torch.no_grad():
        phi = adapt(m, _combine(sup, qry), m.cfg.inner_steps, m.cfg.inner_lr, first_order=True)
    for n, p in init.items():
        torch.testing.assert_close(p.grad, (p - phi[n].mean(0)).detach())
    assert m.item_emb.weight.grad is not None and m.item_emb.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("adapt_names", [("out",), ("layers.1", "out"), ("layers", "out")])
def test_vmap_equals_loop_with_bias_and_attributes(adapt_names: tuple[str, ...]) -> None:
    m = _model(adapt=adapt_names)
    sup = _batch(4, 6, 7)
    with torch.no_grad():
        a = adapt(m, sup, 3, 0.2)
    b = adapt_loop(m, sup, 3, 0.2)
    assert set(a) == {n for n, _ in m.named_parameters() if n.startswith(adapt_names)}
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-6)
