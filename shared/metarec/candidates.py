"""The candidate stage for large catalogs: popularity plus nearest neighbours of recent items.

Scoring every item for every touched user costs ``B · N`` MLP evaluations; past ~10k items
that dominates. :class:`CandidateIndex` bounds it to at most ``limit`` items per user: the
nearest neighbours (cosine, in the model's item-embedding space) of the user's most recent
items, then the most popular items, consumed items left out. Neighbour lists are computed
lazily, for the items users actually touch, and cached (one ``(q, D) x (D, N)`` matmul and
``topk`` for the ``q`` new items of a batch; :func:`item_neighbours` computes all of them at
once for small catalogs); popularity is counted from events and can be updated online with
:meth:`CandidateIndex.observe`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import torch


def _unit(emb: np.ndarray) -> torch.Tensor:
    e = torch.as_tensor(emb, dtype=torch.float32)
    return e / e.norm(dim=1, keepdim=True).clamp(min=1e-12)


def neighbours_of(unit: torch.Tensor, rows: np.ndarray, k: int) -> np.ndarray:
    """``(len(rows), k)`` indices of the ``k`` most cosine-similar other items of each row
    (``unit (N, D)`` row-normalized). Row 0 (the unknown item) is never a neighbour."""
    n = unit.shape[0]
    k = max(0, min(k, n - 2))
    if k == 0 or len(rows) == 0:
        return np.zeros((len(rows), k), np.int64)
    r = torch.as_tensor(rows, dtype=torch.long)
    with torch.no_grad():
        sim = unit[r] @ unit.T  # (q, N)
        sim[:, 0] = -np.inf
        sim[torch.arange(len(rows)), r] = -np.inf  # not its own neighbour
        return sim.topk(k, dim=1).indices.numpy()


def item_neighbours(emb: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """``emb (N, D)`` → ``(N, k)``: every item's neighbours at once (chunked; for small catalogs)."""
    unit = _unit(emb)
    rows = np.arange(unit.shape[0])
    return np.concatenate([neighbours_of(unit, rows[lo:lo + chunk], k) for lo in range(0, len(rows), chunk)])


class CandidateIndex:
    """Per-user candidate item indices (``1..N-1``) for a catalog of ``N - 1`` items.

    ``item_emb (N, D)`` includes row 0; ``popularity (N,)`` counts events per item index.
    """

    def __init__(self, item_emb: np.ndarray, popularity: np.ndarray | None = None, neighbours: int = 20,
                 popular: int = 200) -> None:
        self.n = int(item_emb.shape[0])
        self.unit = _unit(item_emb)
        self.k = neighbours
        self._nbr = np.zeros((self.n, max(0, min(neighbours, self.n - 2))), np.int64)
        self._known = np.zeros(self.n, bool)  # rows of _nbr computed so far
        self.counts = np.zeros(self.n, np.float64) if popularity is None else np.asarray(popularity, np.float64)
        self.n_popular = popular
        self._popular: np.ndarray | None = None

    def neighbours(self, items: np.ndarray) -> np.ndarray:
        """``(len(items), k)`` neighbour lists, computing (and caching) the missing ones."""
        items = np.asarray(items, np.int64)
        todo = np.unique(items[~self._known[items]])
        if len(todo):
            self._nbr[todo] = neighbours_of(self.unit, todo, self.k)
            self._known[todo] = True
        return self._nbr[items]

    def observe(self, items: Sequence[int] | np.ndarray) -> None:
        """Count events on ``items`` (item indices) toward popularity."""
        np.add.at(self.counts, np.asarray(items, np.int64), 1.0)
        self._popular = None

    def popular(self) -> np.ndarray:
        """The ``popular`` most frequent item indices, most frequent first (ties by index)."""
        if self._popular is None:
            c = self.counts.copy()
            c[0] = -np.inf
            m = min(self.n_popular, self.n - 1)
            top = np.argpartition(-c, m - 1)[:m] if m < self.n else np.arange(self.n)
            self._popular = top[np.lexsort((top, -c[top]))]
            self._popular = self._popular[self._popular > 0]
        return self._popular

    def candidates(self, recent: Sequence[Sequence[int]], limit: int,
                   exclude: Sequence[Collection[int]] = ()) -> tuple[np.ndarray, np.ndarray]:
        """For each user, up to ``limit`` item indices: neighbours of ``recent[b]`` (newest
        first), then popular items; items in ``exclude[b]`` (item indices) left out.

        Returns ``items (B, C)`` int64 (0-padded) and ``valid (B, C)`` bool, ``C <= limit``.
        """
        pop = self.popular()
        newest = [np.asarray([i for i in reversed(list(rec)) if 0 < i < self.n], np.int64) for rec in recent]
        if newest:
            self.neighbours(np.concatenate(newest))  # one matmul for all the batch's new items
        rows: list[np.ndarray] = []
        for b, r in enumerate(newest):
            pool = np.concatenate([self._nbr[r].ravel(), pop]) if len(r) else pop
            _, first = np.unique(pool, return_index=True)
            pool = pool[np.sort(first)]  # de-duplicated, in priority order
            if b < len(exclude) and exclude[b]:
                pool = pool[~np.isin(pool, np.fromiter(exclude[b], np.int64))]
            rows.append(pool[:limit])
        c = max(1, max((len(r) for r in rows), default=1))
        items = np.zeros((len(rows), c), np.int64)
        valid = np.zeros((len(rows), c), bool)
        for b, r in enumerate(rows):
            items[b, :len(r)], valid[b, :len(r)] = r, True
        return items, valid
