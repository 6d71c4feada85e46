"""Model building, training and prediction shared by both protocols and every method.

The meta-learned methods and the neural baselines use the same :class:`~metarec.model.RecModel`
(user, item and context embeddings, item attributes, user and item biases → MLP). Meta
methods train with :func:`metarec.meta.meta_train`; the global (non-meta) model with plain
minibatch Adam on the same rows; fine-tuning and adaptation both go through
:func:`metarec.adapt.adapt`. Item ``j`` of :class:`Ratings` is model index ``j + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metarec.adapt import Support, predict_rows
from metarec.averaging import WeightAverage
from metarec.evaluate.data import CONTEXT_BUCKETS, ITEM_ATTRS, MAX_CONTEXT, Ratings
from metarec.fastadapt import adapt_explicit
from metarec.model import ModelConfig, RecModel, loss_fn
from metarec.stopping import EarlyStopping

# which parameters adapt per user (``ModelConfig.adapt`` prefixes), by search-space name
ADAPT = {"out": ("out",), "last+out": ("layers.1", "out"), "layers+out": ("layers", "out")}
META_ALGORITHMS = ("maml", "fomaml", "metasgd", "reptile")
LABELS = {"maml": "MAML", "fomaml": "FOMAML", "metasgd": "Meta-SGD", "reptile": "Reptile"}


@dataclass(frozen=True)
class Net:
    """Architecture shared by every neural method."""

    dim: int = 16  # embedding width
    hidden: tuple[int, int] = (64, 32)  # decision layers
    # what serving may spend on one adaptation: at most ``buffer`` of a user's events are all any
    # method sees, and a meta-learner's test-time steps (inner steps x the chosen multiple) are at most
    # ``max_steps``. The defaults cap nothing the search can choose (5 inner steps x 4 = 20); today's
    # served cost is ``--buffer 64 --max-adapt-steps 5`` (measured on ML-100K: docs/evaluation.md)
    buffer: int = 100  # support events per user at most
    max_steps: int = 20  # test-time adaptation steps at most
    # the most a meta-learner adapts (a key of ADAPT, each adapting more than the one before): a
    # lower cap makes every adaptation step cheaper (the layers below the adapted ones run once)
    max_adapt: str = "layers+out"

    def adapts(self) -> list[str]:
        """The adapted-layer choices within ``max_adapt`` (the meta search's), fewest layers first."""
        keys = list(ADAPT)
        if self.max_adapt not in ADAPT:
            raise ValueError(f"--max-adapt-layers must be one of {', '.join(keys)}, got {self.max_adapt!r}")
        return keys[:keys.index(self.max_adapt) + 1]


def make_model(r: Ratings, n_users: int, mode: str, adapt_layers: str, inner_steps: int, inner_lr: float,
               net: Net, seed: int, meta_sgd: bool = False, rating_loss: str = "mse") -> RecModel:
    """A fresh seeded model for ``r`` with ``n_users`` known users (index 0 = unknown); ``rating_loss``
    is its training (and adaptation) loss in rating mode (:func:`metarec.model.rating_loss`)."""
    cfg = ModelConfig(
        n_users=n_users + 1, n_items=len(r.items) + 1, n_context_buckets=CONTEXT_BUCKETS, max_context=MAX_CONTEXT,
        dim=net.dim, hidden=net.hidden, mode=mode, rating_range=r.rating_range, rating_threshold=r.threshold,
        adapt=ADAPT[adapt_layers], inner_steps=inner_steps, inner_lr=inner_lr, buffer_size=net.buffer,
        bias=True, item_attrs=ITEM_ATTRS, meta_sgd=meta_sgd, rating_loss=rating_loss,
    )
    torch.manual_seed(seed)
    model = RecModel(cfg)
    with torch.no_grad():
        model.item_attr[1:] = torch.from_numpy(r.item_attr)
    return model


def targets(r: Ratings, mode: str) -> np.ndarray:
    return r.value if mode == "rating" else r.binary()


def batch(r: Ratings, rows: Sequence[np.ndarray], user_idx: Sequence[int], y: np.ndarray,
          width: int | None = None) -> Support:
    """Padded ``(B, S)`` support/query of row-id arrays (one per user) into ``r``."""
    s = max(1, width or max((len(x) for x in rows), default=1))
    b = len(rows)
    items = np.zeros((b, s), np.int64)
    ctx = np.zeros((b, s, r.ctx.shape[1]), np.int64)
    yy = np.zeros((b, s), np.float32)
    mask = np.zeros((b, s), np.float32)
    for j, x in enumerate(rows):
        x = x[:s]
        n = len(x)
        items[j, :n], ctx[j, :n], yy[j, :n], mask[j, :n] = r.item[x] + 1, r.ctx[x], y[x], 1.0
    return Support(torch.as_tensor(np.asarray(user_idx, np.int64)), torch.from_numpy(items), torch.from_numpy(ctx),
                   torch.from_numpy(yy), torch.from_numpy(mask))


def fit_global(model: RecModel, r: Ratings, rows: np.ndarray, user_idx: np.ndarray, y: np.ndarray, steps: int,
               lr: float, weight_decay: float, user_dropout: float, seed: int, batch_size: int = 512,
               stop: EarlyStopping | None = None, ema: float = 0.0) -> None:
    """Plain supervised training of ``model`` on rows ``rows`` (the non-meta global model).

    With ``stop``, ``steps`` is a cap: the model is checked on validation users every
    ``stop.every`` minibatches and the best checked weights are kept (as meta-training does).

    ``user_idx (N,)`` is each row's model user index; with probability ``user_dropout`` a row
    uses the unknown user (index 0), which new users get at test time — the same device the
    meta-learner uses, so both know what to do with a user they have never seen. ``ema``: as
    meta-training's (:mod:`metarec.averaging`), so both are judged and kept the same way.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    avg = WeightAverage(model, ema)
    step = 0
    for step in range(1, steps + 1):
        pick = rng.integers(0, len(rows), size=min(batch_size, len(rows)))
        x = rows[pick]
        u = np.where(rng.random(len(x)) < user_dropout, 0, user_idx[x])
        logits = model(torch.from_numpy(u), torch.from_numpy(r.item[x] + 1), torch.from_numpy(r.ctx[x]))
        yy = torch.from_numpy(y[x])
        loss = loss_fn(model, logits, yy, torch.ones_like(yy))
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg.update(model)
        if stop is not None and stop.due(step) and stop.check(avg.view(model), step):
            break
    if stop is not None:
        stop.finish(avg.view(model), step)
    avg.settle(model)


def fill_unseen_items(model: RecModel, seen: np.ndarray) -> None:
    """Give items absent from training (``seen``: item codes seen) the mean trained id embedding
    and bias, so a new item is an average item plus what its attributes say."""
    idx = np.setdiff1d(np.arange(1, model.cfg.n_items), np.asarray(seen) + 1)
    if len(idx) == 0:
        return
    keep = torch.from_numpy(np.asarray(seen) + 1)
    with torch.no_grad():
        model.item_emb.weight[idx] = model.item_emb.weight[keep].mean(0)
        if model.cfg.bias:
            model.item_bias.weight[idx] = model.item_bias.weight[keep].mean(0)


def predict_adapted(model: RecModel, sup: Support, qry: Support, steps: int,
                    lr: float | dict[str, torch.Tensor], adapt_layers: str | None = None,
                    chunk: int = 256, loss: str | None = None) -> np.ndarray:
    """Predictions ``(B, Q)`` (ratings or probabilities) after ``steps`` SGD steps on ``sup``.

    ``adapt_layers`` (a key of :data:`ADAPT`) overrides the model's adapted layers and ``loss``
    its rating loss (fine-tuning).
    """
    out = []
    params = dict(model.named_parameters())
    fast0: dict[str, torch.Tensor] | None = None
    if adapt_layers is not None:
        fast0 = {n: p for n, p in params.items() if n.startswith(ADAPT[adapt_layers])}
    with torch.no_grad():
        for a in range(0, len(sup), chunk):
            s = Support(*(t[a:a + chunk] for t in (sup.users, sup.items, sup.ctx, sup.y, sup.mask)))
            fast = adapt_explicit(model, s, steps, lr, fast0=fast0, loss=loss)  # the serving path
            q = slice(a, a + chunk)
            logits = predict_rows(model, fast, qry.users[q], qry.items[q], qry.ctx[q])
            out.append(model.predict(logits).numpy())
    return np.concatenate(out) if out else np.zeros((0, qry.items.shape[1]))


OFFSET_CENTERS = ("mean", "median")  # item-offset baseline: the squared-error and the absolute-error twin


@dataclass
class ItemOffset:
    """Baseline: a shrunk item centre plus a shrunk user offset learned from the support set.

    ``center="mean"`` (for squared error): ``item[j] = (Σ y + λ_i μ) / (n_j + λ_i)`` over training
    rows, ``offset_u = Σ_support (y - item) / (n_u + λ_u)``. ``center="median"`` (its absolute-error
    twin: MAE is minimized by the median): ``item[j] = m + n_j / (n_j + λ_i) · (median_j - m)`` with
    ``m`` the global median, ``offset_u = n_u / (n_u + λ_u) · median_support(y - item)``.
    Prediction ``item + offset_u``, clipped to the rating range.
    """

    mu: float  # global mean (or median)
    item_mean: np.ndarray  # (I + 1,) item centre by model item index; index 0 (unknown) is mu
    center: str = "mean"

    @classmethod
    def fit(cls, items: np.ndarray, y: np.ndarray, n_items: int, lam_item: float,
            center: str = "mean") -> ItemOffset:
        n = np.bincount(items, minlength=n_items)
        denom = n + lam_item
        if center == "mean":
            mu = float(y.mean())
            s = np.bincount(items, weights=y, minlength=n_items)
            return cls(mu, np.where(denom > 0, (s + lam_item * mu) / np.maximum(denom, 1e-12), mu))
        if center == "median":
            mu = float(np.median(y))
            med = group_median(items, y, n_items, mu)
            return cls(mu, mu + np.where(denom > 0, n / np.maximum(denom, 1e-12), 0.0) * (med - mu), center)
        raise ValueError(f"center must be one of {', '.join(OFFSET_CENTERS)}, got {center!r}")

    def predict(self, sup: Support, qry: Support, lam_user: float, lo: float, hi: float) -> np.ndarray:
        m = sup.mask.numpy()
        resid = (sup.y.numpy() - self.item_mean[sup.items.numpy()]) * m
        n = m.sum(1)
        if self.center == "mean":
            offset = resid.sum(1) / (n + lam_user)
        else:
            offset = np.zeros(len(n))
            has = n > 0
            med = np.nanmedian(np.where(m[has] > 0, resid[has], np.nan), axis=1)
            offset[has] = n[has] / (n[has] + lam_user) * med
        return np.clip(self.item_mean[qry.items.numpy()] + offset[:, None], lo, hi)


def group_median(keys: np.ndarray, y: np.ndarray, n_keys: int, empty: float) -> np.ndarray:
    """``(n_keys,)`` median of ``y`` per key (``keys (N,)`` in ``0..n_keys-1``); ``empty`` where none."""
    order = np.lexsort((y, keys))
    ys = y[order]
    n = np.bincount(keys, minlength=n_keys)
    start = np.cumsum(n) - n
    has = n > 0
    out = np.full(n_keys, empty, np.float64)
    lo_i, hi_i = start[has] + (n[has] - 1) // 2, start[has] + n[has] // 2  # the middle one or two
    out[has] = (ys[lo_i] + ys[hi_i]) / 2.0
    return out
