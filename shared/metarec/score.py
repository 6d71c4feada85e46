"""Scoring the catalog for a batch of adapted users, and top-K with exclusions.

Two scorers share one interface (``score(users, ctx, fast) -> (B, N)``): :class:`OnnxScorer`
runs the exported graph in one onnxruntime session for every user, passing each user's
adapted weights as inputs; :class:`TorchScorer` is the reference. Column ``j`` of a score
matrix is item index ``j + 1`` (index 0 is the unknown item).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch

from metarec.model import RecModel, score_matrix

FastNp = dict[str, np.ndarray]


class Scorer(Protocol):
    def score(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp) -> np.ndarray:
        """``users (B,)`` int64, ``ctx (B, F)`` int64, ``fast[name] (B, ...)`` → ``(B, N)`` float32."""
        ...


class OnnxScorer:
    """One onnxruntime session over ``model.onnx``; adapted weights are graph inputs."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def score(self, users: np.ndarray, ctx: np.ndarray, fast: FastNp) -> np.ndarray:
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
