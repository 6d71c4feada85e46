"""Per-user adaptation: a few SGD steps from the meta-learned initialization.

Fast weights live in dicts and go through :func:`torch.func.functional_call`; the module
is never modified. :func:`adapt` adapts a batch of users at once with ``vmap`` over padded,
masked support sets; :func:`adapt_loop` is the plain per-user reference it must equal.
Gradients flow from the adapted weights back to the initialization and the embeddings, so
the same code serves meta-training (second order unless ``first_order``) and serving
(wrap in ``torch.no_grad()``: ``torch.func.grad`` still differentiates inside it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from metarec.model import RecModel, loss_fn

Fast = dict[str, Tensor]


@dataclass(frozen=True)
class Support:
    """Padded support sets of ``B`` users, ``S`` events each, ``F`` context features."""

    users: Tensor  # (B,) int64 user indices
    items: Tensor  # (B, S) int64 item indices
    ctx: Tensor  # (B, S, F) int64 context feature ids
    y: Tensor  # (B, S) float targets (0/1 or ratings)
    mask: Tensor  # (B, S) float, 1.0 for real labelled events, 0.0 for padding

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def row(self, b: int) -> Support:
        """User ``b`` alone, as a batch of one."""
        sl = slice(b, b + 1)
        return Support(self.users[sl], self.items[sl], self.ctx[sl], self.y[sl], self.mask[sl])


def user_loss(model: RecModel, slow: Mapping[str, Tensor], fast: Fast, user: Tensor, items: Tensor,
              ctx: Tensor, y: Tensor, mask: Tensor, loss: str | None = None) -> Tensor:
    """Masked loss of one user's ``S`` events under ``slow ∪ fast`` parameters (a scalar); rating
    loss ``loss``, the model's own when None."""
    users = user.expand(items.shape[0])
    logits = functional_call(model, {**slow, **fast}, (users, items, ctx))
    return loss_fn(model, logits, y, mask, loss)


def _lr_of(lr: float | Mapping[str, Tensor], name: str) -> float | Tensor:
    return lr[name] if isinstance(lr, Mapping) else lr


def adapt(model: RecModel, support: Support, steps: int, lr: float | Mapping[str, Tensor],
          fast0: Fast | None = None, first_order: bool = False, loss: str | None = None) -> Fast:
    """Adapt every user of ``support`` in one vectorized call.

    Returns fast weights with a leading user axis: ``{name: (B, *param.shape)}``.
    ``lr`` is a scalar or, for Meta-SGD, a per-parameter tensor of the parameter's shape.
    A user whose mask is all zero keeps the initialization. ``loss`` overrides the model's
    rating loss (fine-tuning a model with another loss than it was trained with).
    """
    init = fast0 if fast0 is not None else model.fast_init()
    slow = {n: p for n, p in model.named_parameters() if n not in init}

    def one_user(fast: Fast, user: Tensor, items: Tensor, ctx: Tensor, y: Tensor, mask: Tensor) -> Fast:
        for _ in range(steps):
            g = grad(lambda f: user_loss(model, slow, f, user, items, ctx, y, mask, loss))(fast)
            if first_order:
                g = {k: v.detach() for k, v in g.items()}
            fast = {k: fast[k] - _lr_of(lr, k) * g[k] for k in fast}
        return fast

    if steps == 0:
        return {k: v.unsqueeze(0).expand(len(support), *v.shape) for k, v in init.items()}
    return vmap(one_user, in_dims=(None, 0, 0, 0, 0, 0))(
        init, support.users, support.items, support.ctx, support.y, support.mask
    )


def adapt_loop(model: RecModel, support: Support, steps: int, lr: float) -> Fast:
    """Reference implementation: one user at a time with plain autograd, stacked at the end."""
    init = model.fast_init()
    slow = {n: p for n, p in model.named_parameters() if n not in init}
    per_user: list[Fast] = []
    for b in range(len(support)):
        s = support.row(b)
        fast = {k: v.detach().clone().requires_grad_(True) for k, v in init.items()}
        for _ in range(steps):
            loss = user_loss(model, slow, fast, s.users[0], s.items[0], s.ctx[0], s.y[0], s.mask[0])
            gs = torch.autograd.grad(loss, list(fast.values()), allow_unused=True)
            fast = {
                k: (v - lr * g if g is not None else v).detach().requires_grad_(True)
                for (k, v), g in zip(fast.items(), gs)
            }
        per_user.append({k: v.detach() for k, v in fast.items()})
    return {k: torch.stack([f[k] for f in per_user]) for k in init}


def predict_rows(model: RecModel, fast: Fast, users: Tensor, items: Tensor, ctx: Tensor) -> Tensor:
    """Logits of ``(B, Q)`` (user, item) rows, user ``b`` under its own fast weights."""
    slow = {n: p for n, p in model.named_parameters() if n not in fast}

    def one(f: Fast, user: Tensor, it: Tensor, c: Tensor) -> Tensor:
        return functional_call(model, {**slow, **f}, (user.expand(it.shape[0]), it, c))

    return vmap(one)(fast, users, items, ctx)
