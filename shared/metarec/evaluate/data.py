"""Ratings as flat arrays for evaluation, from MovieLens (100K, 1M), CSV, Parquet or a simulated log.

Every source becomes a :class:`Ratings`: one row per rating in time order, with hashed context
ids (timestamp buckets plus the user's attributes, when the data has them) and hashed item
attribute ids (release year, genres). Values are ratings in ``rating_range``; ``threshold``
makes them binary (MovieLens: rating >= 4 is a positive).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarec.data.eventlog import DataError, read_jsonl
from metarec.data.movielens import item_attributes, load, ts_context, user_attributes
from metarec.events import label

FORMATS = ("ml-100k", "ml-1m", "csv", "parquet", "simulated")
CONTEXT_BUCKETS = 4096  # hashed (field=value) ids shared by context and item attributes
MAX_CONTEXT = 8  # hour, weekday + gender, age, occupation, zip
ITEM_ATTRS = 8  # release year + up to 7 genres


@dataclass(frozen=True)
class Ratings:
    """``N`` ratings of ``U`` users on ``I`` items, sorted by time.

    ``user (N,)``/``item (N,)`` index ``users``/``items``; ``ctx (N, F)`` and ``item_attr (I, A)``
    are hashed feature ids (0 = padding); ``item_year (I,)`` is NaN where unknown.
    """

    name: str
    users: list[str]
    items: list[str]
    user: np.ndarray
    item: np.ndarray
    value: np.ndarray
    ts: np.ndarray
    ctx: np.ndarray
    item_attr: np.ndarray
    item_year: np.ndarray
    rating_range: tuple[float, float]
    threshold: float

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def binary(self) -> np.ndarray:
        """``(N,)`` 0/1 labels: value >= threshold."""
        return (self.value >= self.threshold).astype(np.float32)


def _hash_tokens(tokens: list[str], width: int) -> list[int]:
    ids = [zlib.crc32(t.encode()) % (CONTEXT_BUCKETS - 1) + 1 for t in tokens][:width]
    return ids + [0] * (width - len(ids))


def build(name: str, users: list[str], items: list[str], values: list[float], ts: list[float],
          user_ctx: dict[str, dict[str, str]], item_tokens: dict[str, list[str]],
          item_year: dict[str, int | None], rating_range: tuple[float, float] | None = None,
          threshold: float | None = None) -> Ratings:
    """Flat arrays from parallel lists of (user, item, value, ts) and the attribute maps."""
    from metarec.model import hash_context  # here, not at the top: the module stays free of torch

    if not users:
        raise DataError(f"{name}: no ratings")
    uids, u = np.unique(np.asarray(users, dtype=object).astype(str), return_inverse=True)
    iids, i = np.unique(np.asarray(items, dtype=object).astype(str), return_inverse=True)
    t = np.asarray(ts, np.float64)
    order = np.argsort(t, kind="stable")
    v = np.asarray(values, np.float32)[order]
    cache: dict[tuple[int, int, int], list[int]] = {}
    ctx = np.zeros((len(order), MAX_CONTEXT), np.int64)
    for row, k in enumerate(order):
        hour_day = int(t[k] // 21600), int(t[k] // 86400)
        key = (int(u[k]), hour_day[0] % 4, (hour_day[1] + 3) % 7)  # 1970-01-01 was a Thursday
        if key not in cache:
            fields = {**ts_context(float(t[k])), **{f"u.{a}": b for a, b in user_ctx.get(uids[u[k]], {}).items()}}
            # the same fields as a live event's context (metarec.data.movielens.profile_context)
            cache[key] = hash_context(fields, CONTEXT_BUCKETS, MAX_CONTEXT)
        ctx[row] = cache[key]
    lo, hi = rating_range or (float(v.min()), float(v.max()))
    return Ratings(
        name=name, users=[str(x) for x in uids], items=[str(x) for x in iids], user=u[order].astype(np.int64),
        item=i[order].astype(np.int64), value=v, ts=t[order], ctx=ctx,
        item_attr=np.array([_hash_tokens(item_tokens.get(x, []), ITEM_ATTRS) for x in iids], np.int64).reshape(
            len(iids), ITEM_ATTRS),
        item_year=np.array([np.nan if (y := item_year.get(x)) is None else float(y) for x in iids]),
        rating_range=(lo, hi), threshold=threshold if threshold is not None else lo + 0.75 * (hi - lo),
    )


def _movielens(path: Path, fmt: str) -> Ratings:
    folder = path if path.is_dir() else path.parent
    events = load(folder, fmt)
    uattr = user_attributes(folder, fmt)
    iattr = item_attributes(folder, fmt)
    tokens = {k: ([f"i.year={v.year}"] if v.year else []) + [f"i.genre={g}" for g in v.genres]
              for k, v in iattr.items()}
    return build(f"{fmt}:{folder.name}", [e.user_id for e in events], [e.item_id for e in events],
                 [e.value for e in events], [e.ts for e in events], uattr, tokens,
                 {k: v.year for k, v in iattr.items()}, (1.0, 5.0), 4.0)


def _table(path: Path, fmt: str) -> Ratings:
    import pandas as pd

    try:
        df = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataError(f"{path}: cannot read as {fmt}: {exc}") from None
    alias = {"userId": "user_id", "movieId": "item_id", "user": "user_id", "item": "item_id",
             "value": "rating", "ts": "timestamp"}
    df = df.rename(columns={k: v for k, v in alias.items() if k in df.columns and v not in df.columns})
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} "
                        "(expected user_id, item_id, rating, timestamp)")
    try:
        values = df["rating"].astype(float).tolist()
        ts = df["timestamp"].astype(float).tolist()
    except (TypeError, ValueError):
        raise DataError(f"{path}: rating and timestamp must be numbers") from None
    return build(f"{fmt}:{path.name}", df["user_id"].astype(str).tolist(), df["item_id"].astype(str).tolist(),
                 values, ts, {}, {}, {})


def _simulated(path: Path) -> Ratings:
    events = list(read_jsonl(path))
    ys = [label(e.kind, e.value, "binary") for e in events]
    return build(f"simulated:{path.name}", [e.user_id for e in events], [e.item_id for e in events],
                 [float(y or 0.0) for y in ys], [e.ts for e in events],
                 {e.user_id: {"device": e.context.get("device", "")} for e in events}, {}, {}, (0.0, 1.0), 0.5)


def load_ratings(path: Path, fmt: str) -> Ratings:
    """Read ``path`` as ``fmt`` (one of :data:`FORMATS`); errors are one-line :class:`DataError`."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if fmt in ("ml-100k", "ml-1m"):
        return _movielens(path, fmt)
    if path.is_dir():
        raise DataError(f"{path}: --format {fmt} expects a file, not a folder")
    return _simulated(path) if fmt == "simulated" else _table(path, fmt)
