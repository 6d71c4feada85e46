"""Scoring the catalog for a batch of adapted users, and top-K with exclusions.

Two scorers share one interface (``score(users, ctx, fast) -> (B, N)``): :class:`OnnxScorer`
runs the exported graph in one onnxruntime session for every user, passing each user's
adapted weights as inputs; :class:`TorchScorer` is the reference. Column ``j`` of a score
matrix is item index ``j + 1`` (index 0 is the unknown item).

For large catalogs the candidate scorers (:class:`OnnxCandidateScorer`, :class:`TorchCandidateScorer`)
score only per-user item subsets ``items (B, C)`` (from :mod:`metarec.candidates`) with the same
maths, one onnxruntime session for all users; :func:`top_k_items` ranks them.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from metarec.model import RecModel, score_matrix

FastNp = dict[str, np.ndarray]


class Scorer(Protocol):
    def score(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp) -> np.ndarray:
        """``users (B,)`` int64, ``ctx (B, F)`` int64, ``fast[name] (B, ...)`` → ``(B, N)`` float32."""
        ...


class CandidateScorer(Protocol):
    def score(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp, items: np.ndarray) -> np.ndarray:
        """As :meth:`Scorer.score`, each row scoring its own ``items (B, C)`` int64 → ``(B, C)`` float32."""
        ...


#: what one onnxruntime call's widest hidden activation (users × items × width float32) may take:
#: about two cores' L2 caches. With MovieLens-100K's 1,682 items, 64 users in one call scored at
#: 0.61 ms per user and calls of 8–16 users at 0.43 (the (B, N, 64) activation spilled to L3).
CALL_BYTES = 8 << 20
DEFAULT_WIDTH = 64  # hidden width assumed when the graph's inputs do not show it (only `out` adapted)


class OnnxScorer:
    """One onnxruntime session over ``model.onnx``; adapted weights are graph inputs.

    A batch is run in calls of at most ``rows_per_call`` users (default: as many as keep the
    widest activation within :data:`CALL_BYTES`, from the graph's catalog size and layer widths;
    0 = one call), because past the cache the per-user cost rises.
    """

    def __init__(self, path: Path, threads: int = 1, rows_per_call: int | None = None) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.rows_per_call = self._rows_per_call() if rows_per_call is None else max(0, int(rows_per_call))

    def _rows_per_call(self) -> int:
        n_items = self.session.get_outputs()[0].shape[-1]
        if not isinstance(n_items, int) or n_items <= 0:
            return 0
        widths = [i.shape[1] for i in self.session.get_inputs()
                  if i.name.startswith("fast.layers.") and i.name.endswith(".weight") and isinstance(i.shape[1], int)]
        return max(1, CALL_BYTES // (n_items * max(widths, default=DEFAULT_WIDTH) * 4))

    def score(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp) -> np.ndarray:
        step = self.rows_per_call
        if not step or len(users) <= step:
            return self._run(users, ctx, fast)
        parts = [self._run(users[a:a + step], ctx[a:a + step], {k: v[a:a + step] for k, v in fast.items()})
                 for a in range(0, len(users), step)]
        return np.concatenate(parts)

    def _run(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp) -> np.ndarray:
        feed: dict[str, np.ndarray] = {"users": users.astype(np.int64), "ctx": ctx.astype(np.int64)}
        for name in self.inputs[2:]:
            feed[name] = np.ascontiguousarray(fast[name.removeprefix("fast.")], dtype=np.float32)
        return self.session.run(["scores"], feed)[0]


class TorchScorer:
    """The same scores computed by :func:`metarec.model.score_matrix` in torch."""

    def __init__(self, model: RecModel) -> None:
        self.model = model
        self.items = torch.arange(1, model.cfg.n_items, dtype=torch.long)

    def score(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp) -> np.ndarray:
        with torch.no_grad():
            f = {k: torch.as_tensor(v) for k, v in fast.items()}
            s = score_matrix(self.model, f, torch.as_tensor(users), torch.as_tensor(ctx), self.items)
        return s.numpy()


def top_k(scores: np.ndarray, k: int, exclude: Sequence[Collection[int]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best columns (best first) and their scores, skipping ``exclude[b]``.

    ``scores (B, N)`` → ``(cols (B, k'), vals (B, k'))`` with ``k' = min(k, N)``; excluded
    columns come last with score ``-inf`` only if fewer than ``k'`` remain.
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    for b, cols in enumerate(exclude):
        if cols:
            s[b, np.fromiter(cols, dtype=np.int64)] = -np.inf
    kk = min(k, s.shape[1])
    part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
    vals = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def score_items(model: RecModel, fast: dict[str, Tensor], users: Tensor, ctx: Tensor, items: Tensor) -> Tensor:
    """Like :func:`~metarec.model.score_matrix`, but user ``b`` scores its own ``items[b]``
    (:meth:`RecModel.logits`, bias terms and item attributes included).

    ``users (B,)``, ``ctx (B, F)``, ``items (B, C)``, ``fast[name] (B, ...)`` → ``(B, C)``.
    """
    return score_matrix(model, fast, users, ctx, items)  # the same maths broadcasts over (B, C) items


class CandidateGraph(nn.Module):
    """``(users (B,), ctx (B, F), items (B, C), *fast (B, ...)) -> scores (B, C)``."""

    def __init__(self, model: RecModel) -> None:
        super().__init__()
        self.model = model
        self.names = model.adapted_names()

    def forward(self, users: Tensor, ctx: Tensor, items: Tensor, *fast: Tensor) -> Tensor:
        return score_items(self.model, dict(zip(self.names, fast)), users, ctx, items)


def export_candidate_onnx(model: RecModel, path: Path | io.BytesIO) -> None:
    """Export :class:`CandidateGraph` (batch and candidate axes dynamic)."""
    from metarec.artifact import ONNX_OPSET

    b, c = 2, 3
    fast = [p.detach().unsqueeze(0).repeat(b, *([1] * p.dim())) for p in model.fast_init().values()]
    names = ["users", "ctx", "items", *(f"fast.{n}" for n in model.adapted_names())]
    axes = {n: {0: "batch"} for n in [*names, "scores"]}
    axes["items"] = {0: "batch", 1: "candidates"}
    axes["scores"] = {0: "batch", 1: "candidates"}
    args = (torch.zeros(b, dtype=torch.long), torch.zeros(b, model.cfg.max_context, dtype=torch.long),
            torch.ones(b, c, dtype=torch.long), *fast)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(CandidateGraph(model).eval(), args,
                          path if isinstance(path, io.BytesIO) else str(path),  # type: ignore[arg-type]
                          dynamo=False, opset_version=ONNX_OPSET, input_names=names, output_names=["scores"],
                          dynamic_axes=axes)


class OnnxCandidateScorer:
    """One onnxruntime session scoring per-user candidate items; built from the model (one trace)."""

    def __init__(self, model: RecModel, threads: int = 1) -> None:
        buf = io.BytesIO()
        export_candidate_onnx(model, buf)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def score(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp, items: np.ndarray) -> np.ndarray:
        """``items (B, C)`` int64 item indices → ``(B, C)`` float32."""
        feed: dict[str, np.ndarray] = {"users": users.astype(np.int64), "ctx": ctx.astype(np.int64),
                                       "items": items.astype(np.int64)}
        for name in self.inputs[3:]:
            feed[name] = np.ascontiguousarray(fast[name.removeprefix("fast.")], dtype=np.float32)
        return self.session.run(["scores"], feed)[0]


class TorchCandidateScorer:
    """The reference for :class:`OnnxCandidateScorer`."""

    def __init__(self, model: RecModel) -> None:
        self.model = model

    def score(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp, items: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            f = {k: torch.as_tensor(v) for k, v in fast.items()}
            s = score_items(self.model, f, torch.as_tensor(users), torch.as_tensor(ctx), torch.as_tensor(items))
        return s.numpy()


def top_k_items(scores: np.ndarray, items: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` over candidate scores: ``(cols (B, k'), vals (B, k'))`` with cols = item index - 1,
    as :func:`top_k` returns; padding (``~valid``) ranks last with ``-inf``."""
    cols, vals = top_k(np.where(valid, scores, -np.inf), k)
    return np.take_along_axis(items, cols, axis=1) - 1, vals
