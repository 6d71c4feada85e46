"""Events → model indices and padded tensors.

:class:`EventTable` holds a whole event log as flat arrays grouped by user (for
meta-training and evaluation); :func:`support_from_buffers` turns the worker's per-user
buffers into a padded :class:`~metarec.adapt.Support` batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from metarec.adapt import Support
from metarec.events import Event, label, model_context
from metarec.model import ModelConfig, Vocab, hash_context
from metarec.state import Buffered


@lru_cache(maxsize=65536)
def _ctx_ids(fields: tuple[tuple[str, str], ...], buckets: int, width: int) -> tuple[int, ...]:
    return tuple(hash_context(dict(fields), buckets, width))


def context_ids(context: dict[str, str], cfg: ModelConfig) -> tuple[int, ...]:
    """Hashed context feature ids, memoized: live contexts come from a small set of values."""
    return _ctx_ids(tuple(sorted(context.items())), cfg.n_context_buckets, cfg.max_context)


def event_context_ids(ev: Event | Buffered, cfg: ModelConfig) -> tuple[int, ...]:
    """An event's context feature ids, its domain's included (:func:`metarec.events.model_context`)."""
    return context_ids(model_context(ev.context, ev.domain), cfg)


def target(kind: str, value: float, cfg: ModelConfig) -> float | None:
    """Training target of one event under ``cfg.mode`` (``None``: not a training row)."""
    return label(kind, value, cfg.mode, cfg.rating_threshold)


@dataclass(frozen=True)
class EventTable:
    """Labelled events grouped by user, time-ordered within each user.

    Rows ``start[k]:start[k+1]`` belong to user ``users[k]`` (an external id); arrays are
    ``item (N,)``, ``ctx (N, F)``, ``y (N,)``, ``ts (N,)``, ``user_idx (N,)`` (vocab index).
    """

    users: list[str]
    start: np.ndarray
    user_idx: np.ndarray
    item: np.ndarray
    ctx: np.ndarray
    y: np.ndarray
    ts: np.ndarray

    @classmethod
    def build(cls, events: Sequence[Event], vocab: Vocab, cfg: ModelConfig) -> EventTable:
        by_user: dict[str, list[tuple[float, int, list[int], float]]] = {}
        for e in events:
            y = target(e.kind, e.value, cfg)
            if y is None:
                continue
            row = (e.ts, vocab.item(e.item_id), list(event_context_ids(e, cfg)), y)
            by_user.setdefault(e.user_id, []).append(row)
        users = sorted(by_user)
        rows = [r for u in users for r in sorted(by_user[u], key=lambda r: r[0])]
        sizes = [len(by_user[u]) for u in users]
        return cls(
            users=users,
            start=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            user_idx=np.repeat([vocab.user(u) for u in users], sizes).astype(np.int64),
            item=np.array([r[1] for r in rows], dtype=np.int64),
            ctx=np.array([r[2] for r in rows], dtype=np.int64).reshape(len(rows), cfg.max_context),
            y=np.array([r[3] for r in rows], dtype=np.float32),
            ts=np.array([r[0] for r in rows], dtype=np.float64),
        )

    def count(self, k: int) -> int:
        return int(self.start[k + 1] - self.start[k])

    def gather(self, k: int, lo: int, hi: int) -> np.ndarray:
        """Row numbers of user ``k``'s events ``lo:hi`` (0-based within the user)."""
        return np.arange(self.start[k] + lo, self.start[k] + min(hi, self.count(k)))


def pad_support(table: EventTable, rows: Sequence[np.ndarray], user_idx: Sequence[int],
                width: int | None = None) -> Support:
    """A padded batch from row-number arrays, one per user (an empty array is allowed)."""
    lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    r = np.concatenate(rows).astype(np.int64) if len(rows) else np.zeros(0, np.int64)
    return _scatter(np.asarray(user_idx, np.int64), lengths, width, table.item[r], table.ctx[r], table.y[r],
                    np.ones(len(r), np.float32))


def _scatter(users: np.ndarray, lengths: np.ndarray, width: int | None, items: np.ndarray, ctx: np.ndarray,
             y: np.ndarray, mask: np.ndarray) -> Support:
    """Padded ``(B, width)`` arrays (width: the longest, at least 1) from flat per-event arrays
    laid out user after user, ``lengths[j]`` events for user ``j``."""
    b, f = len(lengths), ctx.shape[1]
    s = max(1, width or int(lengths.max(initial=1)))
    rows_j = np.repeat(np.arange(b), lengths)
    rows_k = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out: tuple[np.ndarray, ...] = (np.zeros((b, s), np.int64), np.zeros((b, s, f), np.int64),
                                   np.zeros((b, s), np.float32), np.zeros((b, s), np.float32))
    for dst, src in zip(out, (items, ctx, y, mask)):
        dst[rows_j, rows_k] = src
    return Support(torch.from_numpy(users), *(torch.from_numpy(a) for a in out))


Encoded = tuple[int, tuple[int, ...], float, float]  # item index, context ids, target, mask


def encode_event(ev: Buffered, vocab: Vocab, cfg: ModelConfig) -> Encoded:
    t = target(ev.kind, ev.value, cfg)
    return vocab.item(ev.item_id), event_context_ids(ev, cfg), 0.0 if t is None else t, 0.0 if t is None else 1.0


def support_from_buffers(user_ids: Sequence[str], buffers: Sequence[Sequence[Buffered]], vocab: Vocab,
                         cfg: ModelConfig, cache: dict[str, Encoded] | None = None) -> Support:
    """The worker's buffers as a padded batch; events without a target are masked out.

    ``cache`` (event_id → encoding) skips re-encoding events seen in earlier batches; the
    caller bounds it.
    """
    b, f = len(user_ids), cfg.max_context
    lengths = np.fromiter((len(x) for x in buffers), np.int64, b)
    events = [ev for buf in buffers for ev in buf]
    if cache is None:
        enc = [encode_event(ev, vocab, cfg) for ev in events]
    else:
        enc = []
        for ev in events:
            e = cache.get(ev.event_id)
            if e is None:
                e = cache[ev.event_id] = encode_event(ev, vocab, cfg)
            enc.append(e)
    # one Python pass over the events, then a vectorized scatter into the padded arrays
    cols = list(zip(*enc)) if enc else [(), (), (), ()]
    users = np.array([vocab.user(u) for u in user_ids], np.int64)
    return _scatter(users, lengths, None, np.asarray(cols[0], np.int64),
                    np.asarray(cols[1], np.int64).reshape(-1, f), np.asarray(cols[2], np.float32),
                    np.asarray(cols[3], np.float32))


def current_context(buffer: Sequence[Buffered], cfg: ModelConfig, domain: str | None = None) -> list[int]:
    """Context feature ids we recommend for: the user's newest event's context, in ``domain``
    (default: that event's domain)."""
    newest = buffer[-1] if buffer else None
    ctx = newest.context if newest else {}
    return list(context_ids(model_context(ctx, (newest.domain if newest else "") if domain is None else domain), cfg))
