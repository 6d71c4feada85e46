"""Batched adaptation with hand-written gradients: the serving path.

``vmap(grad(functional_call(...)))`` re-embeds the support set every step and runs autograd's
generic machinery per op. For the plain MLP of :class:`~metarec.model.RecModel` the inner loop
is just batched matmuls, so :func:`adapt_explicit` (1) embeds the support set once,
``X (B, S, 3D)``, and (2) runs the forward and the backward of the MLP by hand with ``bmm``.
It returns exactly what :func:`metarec.adapt.adapt` returns (``{name: (B, *shape)}``) and
falls back to it when the model is not the plain MLP (adapted embeddings, second-order
meta-training, a model with extra feature paths).

Meta-training keeps :func:`metarec.adapt.adapt` (it needs the meta-gradient); serving uses this
(:class:`metarec.recommend.Recommender`), and ``tests/unit/test_fastpaths.py`` holds it equal to
the ``vmap`` path and the per-user loop. ``bench/`` races the two.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from metarec.adapt import Fast, Support, adapt
from metarec.model import HUBER_DELTA, RecModel


def _plain(model: RecModel, names: list[str]) -> bool:
    """True when every adapted parameter is a weight or bias of ``layers.*`` or ``out``, and the
    model's forward is the plain embeddings → MLP of RecModel (no extra modules)."""
    allowed = {f"layers.{i}.{w}" for i in range(len(model.layers)) for w in ("weight", "bias")}
    allowed |= {"out.weight", "out.bias"}
    modules = {n for n, _ in model.named_children()}
    return set(names) <= allowed and modules == {"user_emb", "item_emb", "ctx_emb", "layers", "out"}


def adapt_explicit(model: RecModel, support: Support, steps: int, lr: float | Mapping[str, Tensor]) -> Fast:
    """Every user of ``support`` adapted with explicit batched matmuls (no autograd).

    Same contract as :func:`metarec.adapt.adapt` under ``torch.no_grad()`` (serving).
    """
    init = model.fast_init()
    names = list(init)
    if steps == 0 or not _plain(model, names) or torch.is_grad_enabled():
        with torch.no_grad():
            return adapt(model, support, steps, lr)
    cfg = model.cfg
    b, s = support.items.shape
    params = dict(model.named_parameters())
    n_layers = len(model.layers)
    # X (B, S, 3D): the support rows' embeddings, fixed during adaptation
    x = torch.cat([model.user_emb(support.users).unsqueeze(1).expand(b, s, cfg.dim),
                   model.item_emb(support.items), model.context_vec(support.ctx)], dim=-1)
    mask = support.mask
    denom = mask.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1)
    y = support.y

    def rate(n: str) -> float | Tensor:
        return lr[n] if isinstance(lr, Mapping) else lr

    # Current weights, with a user axis for the adapted ones and a broadcast view for the rest.
    cur: dict[str, Tensor] = {}
    for n in [f"layers.{i}.{w}" for i in range(n_layers) for w in ("weight", "bias")] + ["out.weight", "out.bias"]:
        p = params[n].detach()
        cur[n] = p.unsqueeze(0).repeat(b, *([1] * p.dim())) if n in init else p.unsqueeze(0).expand(b, *p.shape)
    scalar_lr = not isinstance(lr, Mapping)
    for _ in range(steps):
        hs = [x]  # inputs of each layer; hs[i + 1] = relu(z_i), kept for the ReLU backward
        h = x
        for i in range(n_layers):
            h = torch.bmm(h, cur[f"layers.{i}.weight"].transpose(1, 2))
            h += cur[f"layers.{i}.bias"].unsqueeze(1)
            h.relu_()
            hs.append(h)
        wo = cur["out.weight"]  # (B, 1, H)
        logit = torch.bmm(h, wo.transpose(1, 2)).squeeze(-1) + cur["out.bias"]  # (B, S)
        sig = torch.sigmoid(logit)
        if cfg.mode == "rating":
            lo, hi = cfg.rating_range
            g = _dloss(lo + (hi - lo) * sig - y, cfg.rating_loss) * (hi - lo) * sig * (1.0 - sig)
        else:
            g = sig - y
        g = g * mask / denom  # dL/dlogit (B, S)
        grads: dict[str, Tensor] = {
            "out.weight": torch.bmm(g.unsqueeze(1), h),  # (B, 1, H)
            "out.bias": g.sum(1, keepdim=True),  # (B, 1)
        }
        dh = g.unsqueeze(-1) * wo  # (B, S, H)
        lowest = min((int(n.split(".")[1]) for n in names if n.startswith("layers.")), default=n_layers)
        for i in reversed(range(lowest, n_layers)):
            dz = torch.ops.aten.threshold_backward(dh, hs[i + 1], 0.0)  # ReLU backward, one pass
            wn, bn = f"layers.{i}.weight", f"layers.{i}.bias"
            if wn in init:
                grads[wn] = torch.bmm(dz.transpose(1, 2), hs[i])
            if bn in init:
                grads[bn] = dz.sum(1)
            if i > lowest:
                dh = torch.bmm(dz, cur[wn])
        for n in names:
            if scalar_lr:
                cur[n].sub_(grads[n], alpha=float(lr))  # type: ignore[arg-type]
            else:
                cur[n] = cur[n] - rate(n) * grads[n]
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
