"""The initialization's own query loss in the outer objective (``TrainConfig.init_loss_weight``).

References built with plain autograd, one user at a time: weight 0 is today's outer step
(second-order MAML against a ``create_graph=True`` loop), and with weight ``w`` every algorithm's
outer gradient is its weight-0 gradient plus ``w`` times the gradient of the un-adapted
initialization's query loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from metarec.adapt import Support
from metarec.features import EventTable
from metarec.meta import TrainConfig, init_query_loss, meta_train, outer_step
from metarec.model import ModelConfig, RecModel, loss_fn

Grads = dict[str, torch.Tensor]


def _model(meta_sgd: bool = False) -> RecModel:
    torch.manual_seed(0)
    cfg = ModelConfig(n_users=6, n_items=12, n_context_buckets=32, max_context=2, dim=4, hidden=(8, 6),
                      inner_steps=2, inner_lr=0.3, bias=True, item_attrs=2, meta_sgd=meta_sgd)
    m = RecModel(cfg)
    with torch.no_grad():
        m.item_attr.copy_(torch.randint(0, 32, (12, 2)))
    return m


def _tasks(b: int = 3, s: int = 5, q: int = 4) -> tuple[Support, Support]:
    g = torch.Generator().manual_seed(11)
    users = torch.tensor([0, 2, 5])[:b]  # user 0 is the unknown user, as for a dropped-out task
    mask = torch.ones(b, s)
    mask[0, s // 2:] = 0.0  # padding

    def part(n: int, m: torch.Tensor) -> Support:
        return Support(users, torch.randint(1, 12, (b, n), generator=g), torch.randint(0, 32, (b, n, 2), generator=g),
                       torch.randint(0, 2, (b, n), generator=g).float(), m)

    return part(s, mask), part(q, torch.ones(b, q))


def _query_logits(m: RecModel, params: Grads, fast: list[Grads], qry: Support) -> torch.Tensor:
    out = [functional_call(m, {**params, **fast[b]}, (qry.users[b].expand(qry.items.shape[1]), qry.items[b],
                                                       qry.ctx[b])) for b in range(len(qry))]
    return torch.stack(out)


def _hand_adapt(m: RecModel, params: Grads, sup: Support, first_order: bool) -> list[Grads]:
    """Each user's fast weights after ``inner_steps`` SGD steps (graph kept unless first order)."""
    names = m.adapted_names()
    lr = m.inner_lr_map()
    out = []
    for b in range(len(sup)):
        fast = {n: params[n] for n in names}
        for _ in range(m.cfg.inner_steps):
            u = sup.users[b].expand(sup.items.shape[1])
            logits = functional_call(m, {**params, **fast}, (u, sup.items[b], sup.ctx[b]))
            gs = torch.autograd.grad(loss_fn(m, logits, sup.y[b], sup.mask[b]), list(fast.values()),
                                     create_graph=not first_order)
            fast = {n: fast[n] - (lr[n] if isinstance(lr, dict) else lr) * g for n, g in zip(names, gs)}
        out.append(fast)
    return out


def _grad(m: RecModel, loss: torch.Tensor) -> Grads:
    params = dict(m.named_parameters())
    gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), gs)}


def _reference(m: RecModel, sup: Support, qry: Support, algorithm: str, w: float) -> tuple[float, Grads]:
    """Outer loss and gradient of ``algorithm`` with init-loss weight ``w``, by hand."""
    params = dict(m.named_parameters())
    names = m.adapted_names()
    init = [{n: params[n] for n in names}] * len(qry)
    init_loss = loss_fn(m, _query_logits(m, params, init, qry), qry.y, qry.mask)
    g_init = _grad(m, init_loss)
    if algorithm == "reptile":
        fast = [{n: v.detach() for n, v in f.items()} for f in _hand_adapt(m, params, sup, True)]
        q_loss = loss_fn(m, _query_logits(m, params, fast, qry), qry.y, qry.mask)
        g = _grad(m, q_loss)
        both = Support(sup.users, *(torch.cat([a, c], 1) for a, c in ((sup.items, qry.items), (sup.ctx, qry.ctx),
                                                                      (sup.y, qry.y), (sup.mask, qry.mask))))
        phi = _hand_adapt(m, params, both, True)
        for n in names:
            g[n] = (params[n] - torch.stack([f[n] for f in phi]).mean(0)).detach()
    else:
        fast = _hand_adapt(m, params, sup, first_order=algorithm == "fomaml")
        q_loss = loss_fn(m, _query_logits(m, params, fast, qry), qry.y, qry.mask)
        g = _grad(m, q_loss)
    total = {n: g[n] + w * g_init[n] for n in g}
    return float((q_loss + w * init_loss).detach()), total


def _outer(m: RecModel, sup: Support, qry: Support, algorithm: str, w: float | None) -> tuple[float, Grads]:
    m.zero_grad()
    loss = outer_step(m, sup, qry, algorithm) if w is None else outer_step(m, sup, qry, algorithm, w)
    return float(loss), {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                         for n, p in m.named_parameters()}


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "reptile"])
def test_weight_zero_is_todays_outer_step(algorithm: str) -> None:
    m = _model(meta_sgd=algorithm == "metasgd")
    sup, qry = _tasks()
    loss_default, g_default = _outer(m, sup, qry, algorithm, None)
    loss0, g0 = _outer(m, sup, qry, algorithm, 0.0)
    ref_loss, ref = _reference(m, sup, qry, algorithm, 0.0)
    assert loss0 == loss_default
    assert loss0 == pytest.approx(ref_loss, rel=1e-5)
    for n in ref:
        torch.testing.assert_close(g0[n], g_default[n], rtol=0, atol=0, msg=n)
        torch.testing.assert_close(g0[n], ref[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "reptile"])
def test_weighted_outer_gradient_is_the_hand_built_sum(algorithm: str) -> None:
    m = _model(meta_sgd=algorithm == "metasgd")
    sup, qry = _tasks()
    w = 0.7
    loss, got = _outer(m, sup, qry, algorithm, w)
    ref_loss, ref = _reference(m, sup, qry, algorithm, w)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6, msg=n)
    _, g0 = _outer(m, sup, qry, algorithm, 0.0)
    assert any(not torch.allclose(got[n], g0[n]) for n in m.adapted_names())  # the term does something


def test_init_query_loss_is_the_unadapted_prediction_loss() -> None:
    m = _model()
    _, qry = _tasks()
    logits = m(qry.users[:, None].expand_as(qry.items).reshape(-1), qry.items.reshape(-1),
               qry.ctx.reshape(-1, qry.ctx.shape[-1])).reshape(qry.items.shape)
    torch.testing.assert_close(init_query_loss(m, qry), loss_fn(m, logits, qry.y, qry.mask))


def test_meta_train_passes_the_weight_to_the_outer_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """``meta_train`` hands ``TrainConfig.init_loss_weight`` to every outer step (so weight 0 is
    today's training, by the test above), a positive weight changes the trained initialization,
    a negative one is refused, and the evaluation's default is one of the search's choices."""
    import metarec.meta as meta
    from metarec.evaluate.methods import DEFAULT_META
    from metarec.evaluate.search import INIT_LOSS_WEIGHTS

    rng = np.random.default_rng(0)
    n_users, per = 6, 10
    n = n_users * per
    table = EventTable(users=[f"u{k}" for k in range(n_users)], start=np.arange(0, n + 1, per),
                       user_idx=np.repeat(np.arange(n_users), per), item=rng.integers(1, 12, n),
                       ctx=rng.integers(0, 32, (n, 2)), y=rng.integers(0, 2, n).astype(np.float32),
                       ts=np.arange(n, dtype=float))
    seen: list[float] = []

    def spy(*args: object) -> torch.Tensor:
        seen.append(float(args[4]))  # type: ignore[arg-type]  # (model, sup, qry, algorithm, weight, outer_loss)
        return outer_step(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(meta, "outer_step", spy)
    weights = {}
    for w in (0.0, 1.0):
        m = _model()
        hist = meta_train(m, table, np.arange(n_users), TrainConfig(steps=3, meta_batch=4, query_size=4,
                                                                    init_loss_weight=w))
        assert len(hist) == 3 and seen[-3:] == [w] * 3
        weights[w] = {k: v.detach().clone() for k, v in m.state_dict().items()}
    assert any(not torch.equal(weights[1.0][k], weights[0.0][k]) for k in m.adapted_names())
    with pytest.raises(ValueError, match="init_loss_weight"):
        TrainConfig(init_loss_weight=-1.0)
    assert DEFAULT_META["init_loss_weight"] in INIT_LOSS_WEIGHTS  # enqueued defaults are valid choices
