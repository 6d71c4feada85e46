"""A pair of domains with shared users, in one index space.

A folder of the Amazon cross-domain data (``../shared/data/amazon-cdr/game_video``) holds one
domain (``game``): ``train.txt``, ``valid.txt``, ``test.txt`` of ``user<TAB>item`` lines. Its
sibling with the names swapped (``video_game``) holds the other. Users ``0 .. n-1`` are the same
people in both; larger ids name different people in each folder. The *cold-start users* of the
target domain are shared users with no target line in training: their target lines are the
valid and test lines, and their only history is in the source domain.

Joint indices (0 = unknown, as in :class:`metarec.model.RecModel`): shared user ``u`` → ``u + 1``;
source-only then target-only users after them; source items ``1 .. I_s``, target items after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarec.data.eventlog import DataError

SOURCE, TARGET = 0, 1  # domain codes of a training line
N_NEGATIVES = 999  # sampled items each held-out item is ranked against (CDRIB's protocol)


@dataclass(frozen=True)
class Pair:
    """One direction ``source → target`` of a pair, every index joint."""

    source: str
    target: str
    n_shared: int  # shared users (ids 0 .. n_shared - 1 in both folders)
    n_users: int  # joint user vocabulary, 0 = unknown
    n_items: int  # joint item vocabulary, 0 = unknown
    source_items: np.ndarray  # (I_s,) joint indices of the source domain's items
    target_items: np.ndarray  # (I_t,)
    train: np.ndarray  # (N, 3) int64 [user, item, domain]: both domains' training lines
    valid: np.ndarray  # (V, 2) [user, item]: cold-start users' target lines for validation
    test: np.ndarray  # (T, 2) [user, item]: the same users' target lines for test
    notes: tuple[str, ...] = ()
    # explicit ratings (a table with a rating column): one value per line of train, valid and test
    train_y: np.ndarray | None = None
    valid_y: np.ndarray | None = None
    test_y: np.ndarray | None = None

    @property
    def rated(self) -> bool:
        return self.train_y is not None

    @property
    def name(self) -> str:
        return f"{self.source}→{self.target}"

    def domain_items(self, domain: int) -> np.ndarray:
        return self.source_items if domain == SOURCE else self.target_items

    def bridge_users(self) -> np.ndarray:
        """Shared users with training lines in both domains (what a mapping or an episode learns from)."""
        both = [set(self.train[self.train[:, 2] == d, 0].tolist()) for d in (SOURCE, TARGET)]
        return np.array(sorted(both[0] & both[1] & set(range(1, self.n_shared + 1))), np.int64)

    def cold_users(self) -> np.ndarray:
        return np.unique(np.concatenate([self.valid[:, 0], self.test[:, 0]]))


def _lines(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: no such file (a cross-domain folder has train.txt, valid.txt and test.txt)")
    if not path.read_text().strip():
        return np.zeros((0, 2), np.int64)
    try:
        a = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path}: expected 'user<TAB>item' integer lines ({e})") from None
    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    if a.shape[1] != 2 or (a < 0).any():
        raise DataError(f"{path}: expected two non-negative integers per line, got {a.shape[1]} columns")
    return a


def sibling(folder: Path) -> Path:
    """``game_video`` → ``video_game``: the folder of the other domain."""
    parts = folder.name.split("_")
    if len(parts) != 2:
        raise DataError(f"{folder}: a cross-domain folder is named target_source (e.g. game_video)")
    other = folder.parent / f"{parts[1]}_{parts[0]}"
    if not other.is_dir():
        raise DataError(f"{other}: the source domain's folder is missing (it pairs with {folder.name})")
    return other


def _shared_count(folders: tuple[Path, Path], cold_max: int) -> tuple[int, str]:
    for f in folders:
        info = f / "data_info.txt"
        m = re.search(r"common user num\s+(\d+)", info.read_text()) if info.is_file() else None
        if m:
            return int(m.group(1)), f"shared users: {m.group(1)} (from {info.name})"
    return cold_max + 1, f"shared users: {cold_max + 1} (1 + the largest cold-start id; no data_info count)"


def load_pair(folder: Path) -> Pair:
    """The direction whose *target* is the domain held in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    src_dir = sibling(folder)
    target, source = folder.name.split("_")
    t = {s: _lines(folder / f"{s}.txt") for s in ("train", "valid", "test")}
    s = {sp: _lines(src_dir / f"{sp}.txt") for sp in ("train", "valid", "test")}
    cold_max = int(max(np.concatenate([t["valid"][:, 0], t["test"][:, 0], s["valid"][:, 0], s["test"][:, 0]])))
    n, note = _shared_count((folder, src_dir), cold_max)
    src_users = int(max(a[:, 0].max(initial=-1) for a in s.values())) + 1
    tgt_users = int(max(a[:, 0].max(initial=-1) for a in t.values())) + 1
    n_src_only = max(0, src_users - n)

    def users(u: np.ndarray, dom: int) -> np.ndarray:
        off = n + 1 if dom == SOURCE else n + 1 + n_src_only
        return np.where(u < n, u + 1, off + (u - n))

    n_si = int(max(a[:, 1].max(initial=-1) for a in s.values())) + 1
    n_ti = int(max(a[:, 1].max(initial=-1) for a in t.values())) + 1
    train = np.concatenate([
        np.stack([users(s["train"][:, 0], SOURCE), s["train"][:, 1] + 1, np.full(len(s["train"]), SOURCE)], 1),
        np.stack([users(t["train"][:, 0], TARGET), t["train"][:, 1] + 1 + n_si, np.full(len(t["train"]), TARGET)], 1),
    ])
    held = {sp: np.stack([users(t[sp][:, 0], TARGET), t[sp][:, 1] + 1 + n_si], 1) for sp in ("valid", "test")}
    cold = np.concatenate([held["valid"][:, 0], held["test"][:, 0]])
    if (cold > n).any() or np.isin(cold, train[train[:, 2] == TARGET, 0]).any():
        raise DataError(f"{folder}: a valid/test user is not a cold-start shared user (has target training lines)")
    return Pair(source=source, target=target, n_shared=n, n_users=n + 1 + n_src_only + max(0, tgt_users - n),
                n_items=1 + n_si + n_ti, source_items=np.arange(1, n_si + 1),
                target_items=np.arange(n_si + 1, n_si + n_ti + 1),
                train=train.astype(np.int64), valid=held["valid"].astype(np.int64), test=held["test"].astype(np.int64),
                notes=(note, f"{target} (target) from {src_dir.name}'s {source} (source)"))


def candidates(pair: Pair, lines: np.ndarray, seed: int, n_neg: int = N_NEGATIVES) -> np.ndarray:
    """``(L, 1 + n_neg)`` item indices: each line's held-out item (column 0), then ``n_neg`` target
    items drawn without replacement from those the user has no valid or test line with."""
    rng = np.random.default_rng(seed)
    held = np.concatenate([pair.valid, pair.test])
    seen: dict[int, set[int]] = {}
    for u, i in held.tolist():
        seen.setdefault(u, set()).add(i)
    items = pair.target_items
    out = np.empty((len(lines), 1 + n_neg), np.int64)
    for r, (u, i) in enumerate(lines.tolist()):
        excl = seen.get(u, set()) | {i}
        draw = items[rng.choice(len(items), n_neg + len(excl), replace=False)]
        out[r, 0] = i
        out[r, 1:] = draw[~np.isin(draw, list(excl))][:n_neg]
    return out
