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
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass, field

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

    def forward(self, users: Tensor, items: Tensor, ctx: Tensor) -> Tensor:
        """``users (N,)``, ``items (N,)``, ``ctx (N, F)`` → logits ``(N,)``."""
        h = torch.cat([self.user_emb(users), self.item_vec(items), self.context_vec(ctx)], dim=-1)
        for layer in self.layers:
            h = F.relu(layer(h))
        logit = self.out(h).squeeze(-1)
        if self.cfg.bias:
            logit = logit + self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return logit

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


def score_matrix(model: RecModel, fast: dict[str, Tensor], users: Tensor, ctx: Tensor,
                 items: Tensor) -> Tensor:
    """Score ``items (N,)`` for a batch of users with per-user weights.

    ``fast[name]`` has a leading user axis ``(B, ...)`` for every adapted parameter; the
    others come from ``model``. ``users (B,)``, ``ctx (B, F)`` → predictions ``(B, N)``.
    The first layer is split as ``W = [W_u | W_i | W_c]`` so the item part is one batched
    matmul ``(N, D) x (B, H, D) -> (B, N, H)`` instead of materializing ``(B, N, 3D)``.
    """
    d = model.cfg.dim
    params = dict(model.named_parameters())

    def p(name: str) -> Tensor:
        if name in fast:
            return fast[name]
        return params[name].unsqueeze(0).expand(users.shape[0], *params[name].shape)

    u = model.user_emb(users)  # (B, D)
    c = model.context_vec(ctx)  # (B, D)
    it = model.item_vec(items)  # (N, D)
    w0, b0 = p("layers.0.weight"), p("layers.0.bias")  # (B, H, 3D), (B, H)
    per_user = torch.einsum("bhd,bd->bh", w0[:, :, :d], u) + torch.einsum("bhd,bd->bh", w0[:, :, 2 * d:], c)
    h = torch.einsum("nd,bhd->bnh", it, w0[:, :, d:2 * d]) + (per_user + b0).unsqueeze(1)
    h = F.relu(h)
    for i in range(1, len(model.layers)):
        w, b = p(f"layers.{i}.weight"), p(f"layers.{i}.bias")
        h = F.relu(torch.einsum("bnh,bkh->bnk", h, w) + b.unsqueeze(1))
    wo, bo = p("out.weight"), p("out.bias")  # (B, 1, H), (B, 1)
    logits = torch.einsum("bnh,bh->bn", h, wo[:, 0, :]) + bo
    if model.cfg.bias:
        logits = logits + model.user_bias(users) + model.item_bias(items).squeeze(-1)  # (B, 1) + (N,)
    return model.predict(logits)


@dataclass
class Vocab:
    """External ids ↔ model indices. Index 0 is reserved for unknown ids."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._u = {u: i + 1 for i, u in enumerate(self.users)}
        self._i = {it: i + 1 for i, it in enumerate(self.items)}

    def user(self, user_id: str) -> int:
        return self._u.get(user_id, 0)

    def item(self, item_id: str) -> int:
        return self._i.get(item_id, 0)

    def to_json(self) -> str:
        return json.dumps({"users": self.users, "items": self.items})

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        raw = json.loads(text)
        return cls(users=list(raw["users"]), items=list(raw["items"]))
