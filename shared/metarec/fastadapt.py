"""Batched adaptation with hand-written gradients: the serving path.

``vmap(grad(functional_call(...)))`` re-embeds the support set every step and runs autograd's
generic machinery per op. When only decision/output layer weights adapt (every configuration
`metarec train` and the evaluation use), the inner loop is just batched matmuls, so
:func:`adapt_explicit` (1) embeds the support set once with :meth:`RecModel.embed` (item
attributes included) and (2) runs the model's own forward, :meth:`RecModel.mlp` and
:meth:`RecModel.with_bias` with per-user weights, and the backward of the MLP by hand. The
bias terms and the embeddings are global during adaptation: they shape the logit, so the
gradient, but get no update. Meta-SGD's per-parameter rates are a ``Mapping`` ``lr``.

It returns exactly what :func:`metarec.adapt.adapt` returns (``{name: (B, *shape)}``) and falls
back to it when an embedding or bias parameter is adapted (:func:`fast_path_ok` is False) or
autograd is on (meta-training needs the meta-gradient). Serving uses it
(:class:`metarec.recommend.Recommender`); ``tests/unit/test_one_forward.py`` holds it equal to
the ``vmap`` path for every configuration, ``tests/unit/test_fastpaths.py`` to the per-user loop.
``bench/`` races the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from metarec.adapt import Fast, Support, adapt
from metarec.model import HUBER_DELTA, RecModel


def fast_path_ok(model: RecModel, names: Iterable[str] | None = None) -> bool:
    """True when every adapted parameter (``names``, else those ``cfg.adapt`` names) is a weight or
    bias of ``layers.*`` or ``out``, whatever ``cfg.bias``, ``cfg.item_attrs`` and ``cfg.meta_sgd`` are."""
    return set(model.adapted_names() if names is None else names) <= model.mlp_weights().keys()


def adapt_explicit(model: RecModel, support: Support, steps: int, lr: float | Mapping[str, Tensor],
                   fast0: Fast | None = None, loss: str | None = None) -> Fast:
    """Every user of ``support`` adapted with explicit batched matmuls (no autograd).

    Same contract as :func:`metarec.adapt.adapt` under ``torch.no_grad()`` (serving): ``lr`` is
    a scalar or, for Meta-SGD, ``{name: (*param.shape)}``; ``fast0`` the starting weights of the
    adapted parameters (the model's own adapted ones when None; fine-tuning names other layers)
    and ``loss`` a rating loss other than the model's; returns ``{name: (B, *param.shape)}``.
    The layers below the lowest adapted one are the same every step: their output is computed once.
    """
    init = model.fast_init() if fast0 is None else dict(fast0)
    names = list(init)
    if steps == 0 or not fast_path_ok(model, names) or torch.is_grad_enabled():
        with torch.no_grad():
            return adapt(model, support, steps, lr, fast0=fast0, loss=loss)
    cfg = model.cfg
    kind = loss or cfg.rating_loss
    b, s = support.items.shape
    n_layers = len(model.layers)
    users = support.users[:, None].expand(b, s)  # (B, S): one row per support event
    u, it, c = model.embed(users, support.items, support.ctx)  # (B, S, D) each
    x = model.first_input(u, it, c)  # (B, S, 3D): the first layer's input, for its weight gradient
    mask, y = support.mask, support.y
    denom = mask.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1)
    # the bias terms are global here: their part of the logit is the same every step
    bias = model.with_bias(torch.zeros(b, s), users, support.items) if cfg.bias else None

    # Current weights: a user axis (an own copy) for the adapted ones, shared (O, K) tensors for the rest.
    shared = {n: p.detach() for n, p in model.mlp_weights().items()}
    cur = {**shared, **{n: init[n].detach().unsqueeze(0).repeat(b, *([1] * init[n].dim())) for n in names}}
    lowest = min((int(n.split(".")[1]) for n in names if n.startswith("layers.")), default=n_layers)
    # ins[i]: the input of layer i (ins[n_layers]: of the output layer); below `lowest`, fixed
    fixed = [x, *model.mlp(shared, u, it, c, x)[0][:lowest]] if lowest else [x]
    for _ in range(steps):
        if lowest:  # only the layers from `lowest` on change
            hs, z = model.mlp_from(cur, fixed[lowest], lowest)
        else:
            hs, z = model.mlp(cur, u, it, c, x)  # ReLU outputs [(B, S, H_i)], (B, S)
        ins = [*fixed, *hs]  # fixed is [x] when every layer adapts
        logit = z if bias is None else z.add_(bias)  # (B, S): z is fresh, as with_bias(z, ...)
        if cfg.mode == "rating":
            lo, hi = cfg.rating_range
            sig = torch.sigmoid(logit)  # d predict / d logit = (hi - lo) σ (1 - σ)
            g = _dloss(model.predict(logit) - y, kind) * (hi - lo) * sig * (1.0 - sig)
        else:
            g = torch.sigmoid(logit) - y  # BCE with logits
        g = g * mask / denom  # dL/dlogit (B, S)
        grads: dict[str, Tensor] = {
            "out.weight": g.unsqueeze(1) @ ins[-1],  # (B, 1, H)
            "out.bias": g.sum(1, keepdim=True),  # (B, 1)
        }
        dh = g.unsqueeze(-1) * cur["out.weight"]  # (B, S, H)
        for i in reversed(range(lowest, n_layers)):
            dz = torch.ops.aten.threshold_backward(dh, ins[i + 1], 0.0)  # ReLU backward, one pass
            wn, bn = f"layers.{i}.weight", f"layers.{i}.bias"
            if wn in init:
                grads[wn] = dz.mT @ ins[i]  # (B, H_i, K)
            if bn in init:
                grads[bn] = dz.sum(1)
            if i > lowest:
                dh = dz @ cur[wn]
        for n in names:
            if isinstance(lr, Mapping):
                cur[n].addcmul_(lr[n], grads[n], value=-1.0)  # Meta-SGD: a learned rate per weight
            else:
                cur[n].sub_(grads[n], alpha=float(lr))
    return {n: cur[n] for n in names}


def _dloss(err: Tensor, kind: str) -> Tensor:
    """d loss / d prediction of :func:`metarec.model.rating_loss` at ``err = prediction − y``."""
    if kind == "mse":
        return 2.0 * err
    if kind == "l1":
        return torch.sign(err)
    if kind == "huber":  # smooth L1: err / δ inside |err| < δ, sign(err) outside
        return torch.where(err.abs() < HUBER_DELTA, err / HUBER_DELTA, torch.sign(err))
    raise ValueError(f"unknown rating_loss {kind!r}")
