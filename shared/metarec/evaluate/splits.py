"""The MeLU cold-start split (KDD 2019) and the prequential time split.

MeLU: items are *existing* (released before ``new_year``, default 1998) or *new*; without
release years, items first seen after the 80% quantile of first-seen times are new. Users are
split 80/20 at random into existing and new; a further ``val_fraction`` of the existing users
is held out for validation (treated as new users, on existing items). Four states —
``warm`` (existing × existing, the training state), ``new_users``, ``new_items``,
``new_users_new_items`` — each keep users with ``lo..hi`` ratings, ``n_query`` random query
items per user and the rest as support (in random order, so a prefix is a random subset). With
``buffer``, a support keeps its first ``buffer`` events: what a worker holding the user's last
``buffer`` events would adapt on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarec.evaluate.data import Ratings

STATES = ("warm", "new_users", "new_items", "new_users_new_items")


@dataclass(frozen=True)
class Tasks:
    """Evaluation tasks of one state: per user, support and query row ids into :class:`Ratings`."""

    name: str
    users: np.ndarray  # (B,) user codes
    support: list[np.ndarray]
    query: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class MeluSplit:
    train: dict[int, np.ndarray]  # user code → training rows (warm, minus the warm query rows)
    val: Tasks  # validation users on existing items
    states: dict[str, Tasks]
    user_index: np.ndarray  # (U,) model user index: 1.. for training users, 0 for everyone else
    item_new: np.ndarray  # (I,) bool

    @property
    def n_known_users(self) -> int:
        return int(self.user_index.max())

    def train_rows(self) -> np.ndarray:
        return np.concatenate(list(self.train.values())) if self.train else np.zeros(0, np.int64)


def new_items(r: Ratings, new_year: int = 1998, quantile: float = 0.8) -> np.ndarray:
    """``(I,)`` True for new items: by release year when known, else by first-seen time."""
    if np.isfinite(r.item_year).any():
        return np.nan_to_num(r.item_year, nan=-1.0) >= new_year
    first = np.full(len(r.items), np.inf)
    np.minimum.at(first, r.item, r.ts)
    return first > np.quantile(first, quantile)


def _tasks(name: str, rows_by_user: dict[int, np.ndarray], rng: np.random.Generator, lo: int, hi: int,
           n_query: int) -> Tasks:
    users, sup, qry = [], [], []
    for u in sorted(rows_by_user):
        rows = rows_by_user[u]
        if lo <= len(rows) <= hi:
            perm = rng.permutation(rows)
            users.append(u)
            qry.append(perm[:n_query])
            sup.append(perm[n_query:])
    return Tasks(name, np.asarray(users, np.int64), sup, qry)


def _group(rows: np.ndarray, user: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(user[rows], kind="stable")
    rows = rows[order]
    keys, first = np.unique(user[rows], return_index=True)
    return {int(k): part for k, part in zip(keys, np.split(rows, first[1:]))}


def melu_split(r: Ratings, seed: int, new_user_fraction: float = 0.2, val_fraction: float = 0.1,
               lo: int = 13, hi: int = 100, n_query: int = 10, new_year: int = 1998,
               buffer: int | None = None) -> MeluSplit:
    """The four MeLU states, the validation users and the training rows for one seed (supports cut
    to ``buffer`` events when given; the query and training rows are the same either way)."""
    rng = np.random.default_rng(seed)
    n_users = len(r.users)
    perm = rng.permutation(n_users)
    n_new = int(round(new_user_fraction * n_users))
    n_val = int(round(val_fraction * (n_users - n_new)))
    is_new = np.zeros(n_users, bool)
    is_new[perm[:n_new]] = True
    is_val = np.zeros(n_users, bool)
    is_val[perm[n_new:n_new + n_val]] = True
    item_new = new_items(r, new_year)
    row_item_new = item_new[r.item]
    all_rows = np.arange(len(r))
    existing = ~is_new[r.user] & ~is_val[r.user]

    def state(users_mask: np.ndarray, items_new: bool) -> dict[int, np.ndarray]:
        return _group(all_rows[users_mask & (row_item_new == items_new)], r.user)

    warm_rows = state(existing, False)
    states = {
        "warm": _tasks("warm", warm_rows, rng, lo, hi, n_query),
        "new_users": _tasks("new_users", state(is_new[r.user], False), rng, lo, hi, n_query),
        "new_items": _tasks("new_items", state(existing, True), rng, lo, hi, n_query),
        "new_users_new_items": _tasks("new_users_new_items", state(is_new[r.user], True), rng, lo, hi, n_query),
    }
    val = _tasks("val", state(is_val[r.user], False), rng, lo, hi, n_query)
    held = {int(u): set(q.tolist()) for u, q in zip(states["warm"].users, states["warm"].query)}
    train = {}
    for u, rows in warm_rows.items():
        keep = rows if u not in held else np.array([x for x in rows if x not in held[u]], np.int64)
        if len(keep) >= 3:
            train[u] = keep
    user_index = np.zeros(n_users, np.int64)
    for k, u in enumerate(sorted(train)):
        user_index[u] = k + 1
    if buffer is not None:
        val, states = _cut(val, buffer), {k: _cut(t, buffer) for k, t in states.items()}
    return MeluSplit(train, val, states, user_index, item_new)


def _cut(tasks: Tasks, buffer: int) -> Tasks:
    return Tasks(tasks.name, tasks.users, [s[:buffer] for s in tasks.support], tasks.query)
