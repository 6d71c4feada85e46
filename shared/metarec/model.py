"""The recommendation model of our design notes: embeddings → MLP → sigmoid.

A user index, an item index and up to ``max_context`` hashed context features are embedded
(``D`` each), concatenated to ``(3D,)`` and fed to a ReLU MLP (the *decision layers*) and a
one-unit output layer. Binary mode predicts ``P(y=1) = sigmoid(logit)`` (BCE loss); rating
mode predicts ``lo + (hi - lo) * sigmoid(logit)`` (MSE loss, or ``ModelConfig.rating_loss``).

Per-user adaptation changes only the parameters named by ``ModelConfig.adapt`` (by default
the decision and output layers); the embeddings stay global. Adapted ("fast") weights are
never written into the module: they are passed to :func:`torch.func.functional_call`, or to
:func:`score_matrix`, which scores a whole catalog for a batch of users with explicit
batched matmuls (the graph exported to ONNX).

The maths is written once, in :meth:`RecModel.embed`, :meth:`RecModel.mlp` and
:meth:`RecModel.with_bias` (composed by :meth:`RecModel.logits`); ``forward``, the batched
scorers (:func:`score_matrix`, :func:`metarec.score.score_items`) and the serving adaptation
(:func:`metarec.fastadapt.adapt_explicit`) all call them. ``tests/unit/test_one_forward.py``
holds them equal for every configuration.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ModelConfig:
    """Architecture and adaptation hyper-parameters (stored as ``config.json``)."""

    n_users: int  # user vocabulary size; index 0 is "unknown user" (every new user)
    n_items: int  # item vocabulary size; index 0 is "unknown item"
    n_context_buckets: int = 1024  # hashed (field=value) context features; 0 is padding
    max_context: int = 8  # context features per event fed to the model
    dim: int = 16  # embedding width D
    hidden: tuple[int, ...] = (64, 32)  # decision-layer widths
    mode: str = "binary"  # "binary" (BCE on 0/1 labels) or "rating" (MSE on ratings)
    rating_range: tuple[float, float] = (1.0, 5.0)  # rating mode output range
    rating_threshold: float = 4.0  # binary mode: a rating >= this is a positive
    adapt: tuple[str, ...] = ("layers", "out")  # parameter-name prefixes adapted per user
    inner_steps: int = 5  # gradient steps per adaptation
    inner_lr: float = 0.5  # inner-loop SGD learning rate
    buffer_size: int = 64  # support events per user (the worker's buffer)
    bias: bool = False  # add learned user and item bias terms to the logit
    item_attrs: int = 0  # attribute ids per item (hashed like context; 0: no item attributes)
    meta_sgd: bool = False  # learned per-parameter inner learning rates (Meta-SGD), saved with the weights
    # rating mode training loss (inner and outer): "mse" | "l1" | "huber" (smooth L1, HUBER_DELTA);
    # the evaluation chooses it per method; `metarec train` keeps "mse"; serving (fastadapt) follows it
    rating_loss: str = "mse"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        raw = json.loads(text)
        for key in ("hidden", "rating_range", "adapt"):
            raw[key] = tuple(raw[key])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def hash_context(context: dict[str, str], buckets: int, width: int) -> list[int]:
    """Stable feature ids in ``1..buckets-1`` for up to ``width`` context fields, 0-padded."""
    ids = [zlib.crc32(f"{k}={v}".encode()) % (buckets - 1) + 1 for k, v in sorted(context.items())]
    ids = ids[:width]
    return ids + [0] * (width - len(ids))


class RecModel(nn.Module):
    """Embeddings → MLP → one logit per (user, item, context) row."""

    item_attr: Tensor  # (n_items, item_attrs) buffer, present when cfg.item_attrs > 0

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.user_emb = nn.Embedding(cfg.n_users, d)
        self.item_emb = nn.Embedding(cfg.n_items, d)
        self.ctx_emb = nn.Embedding(cfg.n_context_buckets, d, padding_idx=0)
        widths = (3 * d, *cfg.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(widths[-1], 1)
        for emb in (self.user_emb, self.item_emb, self.ctx_emb):
            nn.init.normal_(emb.weight, std=0.1)
        with torch.no_grad():
            self.ctx_emb.weight[0].zero_()
        if cfg.bias:
            self.user_bias = nn.Embedding(cfg.n_users, 1)
            self.item_bias = nn.Embedding(cfg.n_items, 1)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)
        if cfg.item_attrs:
            # (n_items, A) hashed attribute ids (release year, genres, ...) embedded with ctx_emb
            self.register_buffer("item_attr", torch.zeros(cfg.n_items, cfg.item_attrs, dtype=torch.long))
        if cfg.meta_sgd:
            # one learned rate per adapted weight, keyed by the parameter name with '.' → '__'
            self.inner_lrs = nn.ParameterDict({
                n.replace(".", "__"): nn.Parameter(torch.full_like(p, cfg.inner_lr))
                for n, p in self.named_parameters() if n.startswith(cfg.adapt)
            })

    def context_vec(self, ctx: Tensor) -> Tensor:
        """``(..., F)`` feature ids → ``(..., D)`` mean of the non-padding embeddings."""
        e = self.ctx_emb(ctx)
        n = (ctx > 0).sum(-1, keepdim=True).clamp(min=1).to(e.dtype)
        return e.sum(-2) / n

    def item_vec(self, items: Tensor) -> Tensor:
        """``(...,)`` item indices → ``(..., D)``: the id embedding plus the mean attribute embedding."""
        e = self.item_emb(items)
        if self.cfg.item_attrs:
            e = e + self.context_vec(self.item_attr[items])
        return e

    def embed(self, users: Tensor, items: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The first layer's three inputs: ``users (*U)``, ``items (*I)``, ``ctx (*C, F)`` →
        ``(*U, D)``, ``(*I, D)`` (with the item attributes), ``(*C, D)``."""
        return self.user_emb(users), self.item_vec(items), self.context_vec(ctx)

    @staticmethod
    def first_input(u: Tensor, it: Tensor, c: Tensor) -> Tensor:
        """``[u | i | c]`` ``(..., 3D)``: the first layer's input; its weight splits as ``[W_u | W_i | W_c]``."""
        return torch.cat([u, it, c], dim=-1)

    def mlp_weights(self) -> dict[str, Tensor]:
        """The decision and output layers' weights by parameter name, read as attributes (so the
        tensors :func:`torch.func.functional_call` substitutes are the ones used)."""
        layers = cast("list[nn.Linear]", [*self.layers, self.out])
        names = [*(f"layers.{i}" for i in range(len(self.layers))), "out"]
        return {f"{n}.{k}": getattr(layer, k) for n, layer in zip(names, layers) for k in ("weight", "bias")}

    def mlp(self, w: Mapping[str, Tensor], u: Tensor, it: Tensor, c: Tensor,
            x: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """The decision layers and the output layer on embedded inputs: the model's maths, once.

        ``w[name]`` has the parameter's shape, or a leading user axis ``(B, *shape)`` for
        per-user weights. ``u``, ``it``, ``c`` are ``(..., D)`` and broadcast against each other:
        ``(N, D)`` each for rows of their own (:meth:`forward`); ``u, c (B, 1, D)`` with
        ``it (N, D)`` or ``(B, C, D)`` to score items per user. Returns the ReLU outputs
        ``[h_1 (..., R, H_1), ...]`` and the output layer's value ``(..., R)`` (no bias terms).
        ``x``: :meth:`first_input` of equal-shaped ``u, it, c`` when the caller already built it
        (adaptation reuses it every step).
        """
        d = self.cfg.dim
        names = [*(f"layers.{i}" for i in range(len(self.layers))), "out"]
        w0, b0 = w[f"{names[0]}.weight"], w[f"{names[0]}.bias"]
        if x is not None or u.shape == it.shape == c.shape:  # one user and context per row: one matmul on [u | i | c]
            z = _linear(self.first_input(u, it, c) if x is None else x, w0, b0)
        else:  # rows share their user's u and c, whose part is computed once per user
            z = _linear(it, w0[..., d:2 * d]) + (_linear(u, w0[..., :d]) + _linear(c, w0[..., 2 * d:], b0))
        if not self.layers:  # no decision layers: the first layer was the output layer
            return [], z.squeeze(-1)
        h1 = F.relu(z, inplace=True)  # z is a fresh tensor: spare an allocation
        hs, out = self.mlp_from(w, h1, 1)
        return [h1, *hs], out

    def mlp_from(self, w: Mapping[str, Tensor], h: Tensor, start: int) -> tuple[list[Tensor], Tensor]:
        """The layers from ``layers.{start}`` on (``start == len(layers)``: the output layer alone),
        on ``h``, the input of layer ``start`` (the ReLU output of layer ``start - 1``): the tail of
        :meth:`mlp`, which adaptation runs alone when the layers below ``start`` are not adapted
        (their output is then the same every step). Returns the ReLU outputs of layers
        ``start..`` and the output layer's value ``(..., R)``."""
        names = [*(f"layers.{i}" for i in range(start, len(self.layers))), "out"]
        hs: list[Tensor] = []
        z = _linear(h, w[f"{names[0]}.weight"], w[f"{names[0]}.bias"])
        for name in names[1:]:
            hs.append(F.relu(z, inplace=True))  # z is a fresh tensor: spare an allocation
            z = _linear(hs[-1], w[f"{name}.weight"], w[f"{name}.bias"])
        return hs, z.squeeze(-1)

    def with_bias(self, logit: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """``logit`` plus the user and item bias terms when ``cfg.bias`` (``users``/``items``
        broadcast to ``logit``'s shape, as in :meth:`mlp`); the bias terms are never adapted."""
        if not self.cfg.bias:
            return logit
        return logit + self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)

    def logits(self, w: Mapping[str, Tensor], users: Tensor, items: Tensor, ctx: Tensor) -> Tensor:
        """Logits under weights ``w`` (see :meth:`mlp`) for broadcasting index tensors: ``users (N,)``,
        ``items (N,)``, ``ctx (N, F)`` → ``(N,)``; ``users (B, 1)``, ``items (N,)`` or ``(B, C)``,
        ``ctx (B, 1, F)`` → ``(B, N)`` or ``(B, C)``."""
        _, z = self.mlp(w, *self.embed(users, items, ctx))
        return self.with_bias(z, users, items)

    def forward(self, users: Tensor, items: Tensor, ctx: Tensor) -> Tensor:
        """``users (N,)``, ``items (N,)``, ``ctx (N, F)`` → logits ``(N,)``."""
        return self.logits(self.mlp_weights(), users, items, ctx)

    def predict(self, logits: Tensor) -> Tensor:
        """Logits → probabilities (binary) or ratings (rating mode)."""
        p = torch.sigmoid(logits)
        if self.cfg.mode == "rating":
            lo, hi = self.cfg.rating_range
            return lo + (hi - lo) * p
        return p

    def adapted_names(self) -> list[str]:
        """Names of the parameters adapted per user, in a fixed order."""
        return [n for n, _ in self.named_parameters() if n.startswith(self.cfg.adapt)]

    def inner_lr_map(self) -> float | dict[str, Tensor]:
        """The inner learning rate for :func:`metarec.adapt.adapt`: Meta-SGD's learned
        per-parameter rates ``{name: (*param.shape)}`` when present, else ``cfg.inner_lr``."""
        if not self.cfg.meta_sgd:
            return self.cfg.inner_lr
        return {n: self.inner_lrs[n.replace(".", "__")] for n in self.adapted_names()}

    def fast_init(self) -> dict[str, Tensor]:
        """The meta-learned initialization of the adapted parameters (live tensors)."""
        params = dict(self.named_parameters())
        return {n: params[n] for n in self.adapted_names()}


RATING_LOSSES = ("mse", "l1", "huber")
HUBER_DELTA = 0.25  # rating units: quadratic inside |error| < δ, absolute error (minus δ/2) outside


def rating_loss(pred: Tensor, y: Tensor, kind: str = "mse") -> Tensor:
    """Elementwise rating loss: ``(ŷ - y)²`` (mse), ``|ŷ - y|`` (l1: its minimizer is the median,
    what MAE rewards) or smooth L1 with ``β = HUBER_DELTA`` (huber)."""
    if kind == "mse":
        return (pred - y) ** 2
    if kind == "l1":
        return (pred - y).abs()
    if kind == "huber":
        return F.smooth_l1_loss(pred, y, reduction="none", beta=HUBER_DELTA)
    raise ValueError(f"rating_loss must be one of {', '.join(RATING_LOSSES)}, got {kind!r}")


def loss_fn(model: RecModel, logits: Tensor, y: Tensor, mask: Tensor, kind: str | None = None) -> Tensor:
    """Masked mean loss: BCE ``-log P(y|ŷ)`` / ``-log(1-P)`` in binary mode, ``rating_loss`` (MSE by
    default) in rating mode, of kind ``kind`` when given, else ``model.cfg.rating_loss``."""
    if model.cfg.mode == "rating":
        per = rating_loss(model.predict(logits), y, kind or model.cfg.rating_loss)
    else:
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def _linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """``x (..., R, K)`` by ``w (O, K)`` or per-user ``(B, O, K)``, plus ``b (O,)`` or ``(B, O)`` → ``(..., R, O)``."""
    if w.dim() == 2 and (b is None or b.dim() == 1):
        return F.linear(x, w, b)  # shared weights: exactly nn.Linear
    if x.dim() == 3 and w.dim() == 3 and b is not None and b.dim() == 2:
        return torch.bmm(x, w.transpose(-1, -2)).add_(b.unsqueeze(-2))  # per-user rows: in place on a fresh tensor
    y = F.linear(x, w) if w.dim() == 2 else x @ w.transpose(-1, -2)  # (N, K) @ (B, K, O) → (B, N, O)
    if b is None:
        return y
    return y + (b.unsqueeze(-2) if b.dim() == 2 else b)


def batched_weights(model: RecModel, fast: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The MLP weights for :meth:`RecModel.mlp` with ``fast[name] (B, ...)`` in place of the
    shared ones. Only decision/output layer weights can be per-user here."""
    w = model.mlp_weights()
    extra = sorted(set(fast) - w.keys())
    if extra:
        raise ValueError(f"score: per-user parameters {extra} are not decision or output layer weights; "
                         "score such a model row by row (metarec.adapt.predict_rows)")
    return {**w, **fast}


def score_matrix(model: RecModel, fast: dict[str, Tensor], users: Tensor, ctx: Tensor,
                 items: Tensor) -> Tensor:
    """Score ``items (N,)`` for a batch of users with per-user weights: :meth:`RecModel.logits`.

    ``fast[name]`` has a leading user axis ``(B, ...)`` for every adapted parameter; the
    others come from ``model``. ``users (B,)``, ``ctx (B, F)`` → predictions ``(B, N)``
    (or ``(B, C)`` for per-user ``items (B, C)``, :func:`metarec.score.score_items`).
    The first layer is split as ``W = [W_u | W_i | W_c]`` so the item part is one batched
    matmul ``(N, D) x (B, D, H) -> (B, N, H)`` instead of materializing ``(B, N, 3D)``.
    """
    return model.predict(model.logits(batched_weights(model, fast), users[:, None], items, ctx[:, None]))


@dataclass
class Vocab:
    """External ids ↔ model indices (index 0 is reserved for unknown ids), and the catalog's
    domains: ``item_domains[k]`` is the domain of ``items[k]`` (empty: every item is in the default
    domain ``""``)."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    item_domains: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.item_domains and len(self.item_domains) != len(self.items):
            raise ValueError(f"{len(self.item_domains)} item domains for {len(self.items)} items")
        self._u = {u: i + 1 for i, u in enumerate(self.users)}
        self._i = {it: i + 1 for i, it in enumerate(self.items)}

    def user(self, user_id: str) -> int:
        return self._u.get(user_id, 0)

    def item(self, item_id: str) -> int:
        return self._i.get(item_id, 0)

    def domains(self) -> list[str]:
        """The catalog's domains, sorted (``[""]`` for a catalog without domains)."""
        return sorted(set(self.item_domains)) if self.item_domains else [""]

    def in_domain(self, domain: str) -> np.ndarray:
        """``(len(items),)`` bool: which catalog columns belong to ``domain``."""
        if not self.item_domains:
            return np.full(len(self.items), domain == "")
        return np.asarray(self.item_domains, dtype=object) == domain

    def domain_of(self, item_id: str) -> str | None:
        """An item's domain (None: not in the catalog)."""
        k = self.item(item_id)
        return None if not k else (self.item_domains[k - 1] if self.item_domains else "")

    def to_json(self) -> str:
        doms = {"item_domains": self.item_domains} if any(self.item_domains) else {}
        return json.dumps({"users": self.users, "items": self.items, **doms})

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        raw = json.loads(text)
        return cls(users=list(raw["users"]), items=list(raw["items"]), item_domains=list(raw.get("item_domains", [])))

    @classmethod
    def of_events(cls, users: list[str], events: Iterable[Any]) -> Vocab:
        """A catalog of every item in ``events`` (sorted), each in the domain it was seen in; an item
        seen in several domains keeps its first."""
        first: dict[str, str] = {}
        for e in events:
            first.setdefault(e.item_id, e.domain)
        items = sorted(first)
        return cls(users=users, items=items, item_domains=[first[i] for i in items] if any(first.values()) else [])
