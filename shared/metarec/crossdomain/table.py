"""A pair of domains from one table of a user's own data, in the index space of :mod:`.data`.

The table (``.csv`` or ``.parquet``) has columns ``user_id, item_id, domain, label``: one line per
user and item, ``label`` 1 for an interaction and 0 for none (0 lines are ignored), ``domain`` the
name of the domain the item belongs to (lines of domains other than the two named are ignored).
Explicit feedback: a ``rating`` column (any finite numbers) instead of ``label``; every line is an
interaction with its rating (the last of duplicates), and the pair carries the ratings
(:mod:`.explicit` evaluates it by MAE and RMSE).
Unlike the Amazon folders, a ``user_id`` names the same person in every domain; an ``item_id``
names a different item in each domain. The table holds no split: a seeded fraction of the *shared
users* (an interaction in both domains) become the target's cold-start users, their target lines
removed from training and split between valid and test.

Joint indices (0 = unknown): shared users ``1 .. n_shared`` (sorted by id), then source-only, then
target-only users; source items ``1 .. I_s`` (sorted by id), target items after.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metarec.crossdomain.data import SOURCE, TARGET, Pair
from metarec.errors import DataError

COLUMNS = ("user_id", "item_id", "domain", "label")
RATED = ("user_id", "item_id", "domain", "rating")


def _read(path: Path) -> pd.DataFrame:
    """The table's four columns (ids and domain as stripped strings, label 0/1), one readable error otherwise."""
    if path.suffix not in (".csv", ".parquet"):
        raise DataError(f"{path}: expected a .csv or .parquet file, got '{path.suffix}'")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            df = pd.read_parquet(path)
    except (ValueError, OSError, ImportError) as e:
        first = str(e).splitlines()[0] if str(e) else repr(e)
        raise DataError(f"{path}: cannot be read as a table ({first})") from None
    if "rating" in df.columns and "label" in df.columns:
        raise DataError(f"{path}: both a label and a rating column; give label (implicit, 0/1) or rating (explicit)")
    if "rating" in df.columns:
        return _rated(path, df)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    out = df[list(COLUMNS)].reset_index(drop=True)
    label = pd.to_numeric(out["label"], errors="coerce")
    bad = np.flatnonzero(~label.isin([0, 1]).to_numpy())
    if len(bad):
        raise DataError(f"{path}: column label must be 0 or 1, got '{out['label'].iloc[bad[0]]}' "
                        f"(data row {bad[0] + 1})")
    return _ids(out.assign(label=label.astype(np.int64)))


def _ids(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(**{c: df[c].fillna("").astype(str).str.strip() for c in ("user_id", "item_id", "domain")})


def _rated(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """An explicit table: ``label`` 1 on every line, the rating in ``value`` (finite numbers only)."""
    missing = [c for c in RATED if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(RATED)})")
    out = df[list(RATED)].reset_index(drop=True)
    value = pd.to_numeric(out["rating"], errors="coerce")
    bad = np.flatnonzero(~np.isfinite(value.to_numpy(np.float64)))
    if len(bad):
        raise DataError(f"{path}: column rating must be a finite number, got '{out['rating'].iloc[bad[0]]}' "
                        f"(data row {bad[0] + 1})")
    return _ids(out.drop(columns="rating").assign(label=1, value=value.astype(np.float64)))


def _index(ids: list[str], start: int) -> dict[str, int]:
    return {x: start + k for k, x in enumerate(ids)}


def load_table_pair(path: Path, source: str, target: str, held_out: float, seed: int) -> Pair:
    """The direction ``source → target`` of the table at ``path``; ``held_out`` of the shared users
    (at least one, chosen with ``seed``) are the cold-start users, half of each one's target lines
    (rounded down) in valid and the rest in test, in a seeded order."""
    path = Path(path)
    if source == target:
        raise DataError(f"{path}: source and target are both '{source}'; name two different domains")
    if not 0 < held_out < 1:
        raise DataError(f"{path}: held_out must be a fraction strictly between 0 and 1, got {held_out}")
    df = _read(path)
    present = set(df["domain"].unique().tolist())
    for role, name in (("source", source), ("target", target)):
        if name not in present:
            raise DataError(f"{path}: {role} domain '{name}' is not in column domain "
                            f"(found: {', '.join(sorted(present)[:10])})")
    df = df[(df["label"] == 1) & df["domain"].isin([source, target])]
    for c in ("user_id", "item_id"):
        empty = df.index[df[c] == ""]
        if len(empty):
            raise DataError(f"{path}: column {c} is empty (data row {empty[0] + 1})")
    df = df.drop_duplicates(["user_id", "item_id", "domain"], keep="last" if "value" in df.columns else "first")
    src, tgt = df[df["domain"] == source], df[df["domain"] == target]

    su, tu = set(src["user_id"].tolist()), set(tgt["user_id"].tolist())
    shared = sorted(su & tu)
    if not shared:
        raise DataError(f"{path}: no user has an interaction (label 1) in both {source} and {target}")
    users = _index(shared, 1)
    users.update(_index(sorted(su - tu), len(users) + 1))
    users.update(_index(sorted(tu - su), len(users) + 1))
    s_ids = sorted(set(src["item_id"].tolist()))
    t_ids = sorted(set(tgt["item_id"].tolist()))
    s_items, t_items = _index(s_ids, 1), _index(t_ids, 1 + len(s_ids))

    def lines(part: pd.DataFrame, items: dict[str, int]) -> np.ndarray:
        return np.stack([part["user_id"].map(users).to_numpy(np.int64),
                         part["item_id"].map(items).to_numpy(np.int64)], 1).reshape(-1, 2)

    s_lines, t_lines = lines(src, s_items), lines(tgt, t_items)
    rated = "value" in df.columns
    t_y = tgt["value"].to_numpy(np.float64) if rated else np.zeros(len(t_lines))
    rng = np.random.default_rng(seed)
    n_shared = len(shared)
    n_cold = max(1, int(round(held_out * n_shared)))
    if n_cold >= n_shared:
        raise DataError(f"{path}: held_out {held_out} is too large: holding out {n_cold} of the {n_shared} shared "
                        "users leaves no bridge user (a shared user with target training lines)")
    cold = np.sort(rng.choice(np.arange(1, n_shared + 1), n_cold, replace=False))
    is_cold = np.isin(t_lines[:, 0], cold)
    valid, test = [], []
    held, held_y = t_lines[is_cold], t_y[is_cold]
    order = np.lexsort((held[:, 1], held[:, 0]))  # a fixed order before the seeded shuffle
    held, held_y = held[order], held_y[order]
    vy, ty = [], []
    for u in cold.tolist():
        mine = np.flatnonzero(held[:, 0] == u)
        rows = mine[rng.permutation(len(mine))]
        cut = len(rows) // 2
        valid.append(held[rows[:cut]])
        test.append(held[rows[cut:]])
        vy.append(held_y[rows[:cut]])
        ty.append(held_y[rows[cut:]])

    def dom(a: np.ndarray, d: int) -> np.ndarray:
        return np.concatenate([a, np.full((len(a), 1), d, np.int64)], 1)

    train = np.concatenate([dom(s_lines, SOURCE), dom(t_lines[~is_cold], TARGET)])
    return Pair(source=source, target=target, n_shared=n_shared, n_users=1 + len(users),
                n_items=1 + len(s_ids) + len(t_ids),
                source_items=np.arange(1, len(s_ids) + 1, dtype=np.int64),
                target_items=np.arange(len(s_ids) + 1, len(s_ids) + len(t_ids) + 1, dtype=np.int64),
                train=train.astype(np.int64), valid=np.concatenate(valid).astype(np.int64).reshape(-1, 2),
                test=np.concatenate(test).astype(np.int64).reshape(-1, 2),
                notes=(f"shared users: {n_shared} (an interaction in both {source} and {target})",
                       f"held out: {n_cold} shared users ({held_out:g}, seed {seed}) as cold-start users of {target}",
                       f"{target} (target) from {source} (source) in {path}"),
                **({"train_y": np.concatenate([src["value"].to_numpy(np.float64), t_y[~is_cold]]),
                    "valid_y": np.concatenate(vy), "test_y": np.concatenate(ty)} if rated else {}))
