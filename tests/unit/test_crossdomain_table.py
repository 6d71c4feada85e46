"""A pair of domains from a user's own table (metarec.crossdomain.table): joint indices, the seeded
cold-start split, and one readable error for each bad input, on tiny CSV and Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.crossdomain.data import SOURCE, TARGET, Pair, candidates
from metarec.crossdomain.protocol import cases, histories
from metarec.crossdomain.table import load_table_pair
from metarec.errors import DataError


def small_table() -> pd.DataFrame:
    """8 shared users (a..h), one books-only (x), one music-only (y); 12 music items; noise lines."""
    rows = []
    for k, u in enumerate("abcdefgh"):
        rows += [(u, f"b{(k + j) % 6}", "books", 1) for j in range(2)]
        rows += [(u, f"m{(2 * k + j) % 12}", "music", 1) for j in range(1 + k % 4)]
    rows += [("x", "b0", "books", 1), ("x", "b5", "books", 1), ("y", "m3", "music", 1)]
    rows += [("a", "b0", "books", 1), ("a", "m0", "music", 1)]  # duplicates, kept once
    rows += [("z", "b9", "books", 0), ("a", "m11", "music", 0)]  # label 0: no interaction, no user z, item b9
    rows += [("a", "v1", "movies", 1), ("q", "m0", "movies", 1)]  # a third domain: ignored
    return pd.DataFrame(rows, columns=["user_id", "item_id", "domain", "label"])


def big_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n):
        doms = ["books", "music"] if u < 2 * n // 3 else [["books", "music"][u % 2]]
        for d in doms:
            rows += [(f"u{u}", f"{d[0]}{i}", d, 1) for i in rng.choice(40, rng.integers(1, 6), replace=False)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "domain", "label"])


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def interactions(df: pd.DataFrame, domain: str) -> set[tuple[str, str]]:
    d = df[(df["domain"] == domain) & (df["label"] == 1)]
    return set(zip(d["user_id"].astype(str), d["item_id"].astype(str)))


def load(path: Path, held_out: float = 0.5, seed: int = 0) -> Pair:
    return load_table_pair(path, "books", "music", held_out, seed)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_joint_indices_and_cold_start_split(tmp_path: Path, suffix: str) -> None:
    df = small_table()
    p = load(write(df, tmp_path / f"t{suffix}"))
    assert (p.source, p.target, p.name, p.n_shared) == ("books", "music", "books→music", 8)
    assert p.n_users == 1 + 10  # a..h, x, y; not z (label 0) nor q (movies)
    assert (len(p.source_items), len(p.target_items), p.n_items) == (6, 12, 19)
    assert p.source_items.tolist() == list(range(1, 7)) and p.target_items.tolist() == list(range(7, 19))
    assert not set(p.source_items.tolist()) & set(p.target_items.tolist()) and 0 not in p.target_items
    src, tgt = p.train[p.train[:, 2] == SOURCE], p.train[p.train[:, 2] == TARGET]
    assert set(src[:, 1].tolist()) <= set(p.source_items.tolist())
    assert set(tgt[:, 1].tolist()) <= set(p.target_items.tolist())
    assert 0 not in p.train[:, :2] and p.train[:, 0].max() < p.n_users
    assert len(np.unique(p.train, axis=0)) == len(p.train)  # duplicates kept once
    # shared users 1..8, then x (source only) = 9, then y (target only) = 10
    assert set(src[:, 0].tolist()) == set(range(1, 10)) and 9 not in tgt[:, 0] and 10 in tgt[:, 0]
    cold = p.cold_users()
    assert len(cold) == 4 and set(cold.tolist()) <= set(range(1, 9))
    assert not set(cold.tolist()) & set(tgt[:, 0].tolist()) and set(cold.tolist()) <= set(src[:, 0].tolist())
    assert len(p.bridge_users()) == 4
    held = np.concatenate([p.valid, p.test])
    assert set(held[:, 1].tolist()) <= set(p.target_items.tolist())
    assert len(np.unique(held, axis=0)) == len(held)
    # the held-out lines are exactly the cold users' music interactions (ids sorted: a..h → 1..8, m* sorted)
    names, items = "abcdefgh", sorted({i for _, i in interactions(df, "music")})
    truth = {(u, i) for u, i in interactions(df, "music") if u in names and names.index(u) + 1 in cold}
    assert {(names[u - 1], items[i - 7]) for u, i in held.tolist()} == truth
    for u in cold.tolist():  # half (rounded down) to valid, the rest to test
        n = int((held[:, 0] == u).sum())
        assert int((p.valid[:, 0] == u).sum()) == n // 2 and int((p.test[:, 0] == u).sum()) == n - n // 2
    assert any("shared users: 8" in n for n in p.notes) and any("held out: 4" in n for n in p.notes)
    assert any(str(tmp_path / f"t{suffix}") in n for n in p.notes)


def test_works_with_candidates_and_cases(tmp_path: Path) -> None:
    p = load(write(small_table(), tmp_path / "t.csv"), held_out=0.25)
    c = candidates(p, p.test, seed=0, n_neg=5)
    assert c.shape == (len(p.test), 6) and (c[:, 0] == p.test[:, 1]).all()
    assert set(c.ravel().tolist()) <= set(p.target_items.tolist())
    src, _ = histories(p, 0)
    cs = cases(p, 0, src)
    assert len(cs[("test", 0)].users) == len(p.test)
    assert set(cs[("test", 0)].users.tolist()) <= set(p.cold_users().tolist())


def test_seeded_split_and_fraction(tmp_path: Path) -> None:
    path = write(big_table(), tmp_path / "big.parquet")
    a, b, c = load(path, 0.5, 1), load(path, 0.5, 1), load(path, 0.5, 2)
    for x in ("train", "valid", "test"):
        assert (getattr(a, x) == getattr(b, x)).all()
    assert set(a.cold_users().tolist()) != set(c.cold_users().tolist())
    assert a.n_shared == 200
    for frac in (0.2, 0.5, 0.8):
        p = load(path, frac, 3)
        assert abs(len(p.cold_users()) / p.n_shared - frac) < 0.02
        assert len(p.bridge_users()) == p.n_shared - len(p.cold_users())
    assert len(load(path, 0.001, 0).cold_users()) == 1  # at least one


def test_bad_tables_are_one_readable_error(tmp_path: Path) -> None:
    df = small_table()
    csv = write(df, tmp_path / "t.csv")
    with pytest.raises(DataError, match="missing column.*label"):
        load(write(df.drop(columns=["label"]), tmp_path / "nolabel.csv"))
    with pytest.raises(DataError, match="missing column.*item_id"):
        load(write(df.drop(columns=["item_id"]), tmp_path / "noitem.parquet"))
    with pytest.raises(DataError, match="both a label and a rating column"):
        load(write(df.assign(rating=3), tmp_path / "both.csv"))
    rated = df.rename(columns={"label": "rating"})
    with pytest.raises(DataError, match="rating must be a finite number, got 'good'"):
        load(write(rated.assign(rating=["good"] + [1] * (len(df) - 1)), tmp_path / "good.csv"))
    with pytest.raises(DataError, match="target domain 'films' is not in column domain"):
        load_table_pair(csv, "books", "films", 0.5, 0)
    with pytest.raises(DataError, match="source domain 'games' is not in column domain"):
        load_table_pair(csv, "games", "music", 0.5, 0)
    with pytest.raises(DataError, match="source and target are both 'books'"):
        load_table_pair(csv, "books", "books", 0.5, 0)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(DataError, match="held_out must be a fraction"):
            load(csv, bad)
    with pytest.raises(DataError, match="held_out 0.95 is too large"):
        load(csv, 0.95)
    with pytest.raises(DataError, match="label must be 0 or 1, got 'yes'"):
        load(write(df.assign(label=["yes"] + [1] * (len(df) - 1)), tmp_path / "yes.csv"))
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "none.csv")
    with pytest.raises(DataError, match="expected a .csv or .parquet"):
        load(tmp_path / "t.json")
    with pytest.raises(DataError, match="no user has an interaction.*in both"):
        load(write(df[~df["user_id"].isin(list("abcdefgh"))], tmp_path / "apart.csv"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_rated_table_carries_each_lines_rating(tmp_path: Path, suffix: str) -> None:
    """Explicit feedback: every line is an interaction; each train, valid and test line keeps its own
    rating (the last of duplicates), and the split is the implicit table's split."""
    df = small_table()
    df = df[df["label"] == 1].drop(columns="label")
    rng = np.random.default_rng(0)
    df = df.assign(rating=rng.integers(1, 6, len(df)).astype(float))
    df = pd.concat([df, pd.DataFrame([("a", "m0", "music", 2.5)], columns=df.columns)])  # a's last m0: 2.5
    p = load(write(df, tmp_path / f"r{suffix}"))
    implicit = load(write(small_table(), tmp_path / f"i{suffix}"))
    assert p.rated and not implicit.rated
    def rows(a: np.ndarray) -> list[list[int]]:
        return sorted(a.tolist())
    assert rows(p.train) == rows(implicit.train)  # the same lines (duplicates: the last kept, not the first)
    np.testing.assert_array_equal(p.valid, implicit.valid)
    np.testing.assert_array_equal(p.test, implicit.test)
    assert p.train_y is not None and p.valid_y is not None and p.test_y is not None
    assert (len(p.train_y), len(p.valid_y), len(p.test_y)) == (len(p.train), len(p.valid), len(p.test))
    users = {u: k for k, u in enumerate(sorted("abcdefgh"), 1)}  # shared users first, sorted
    back = {(users.get(u), d, i): r for u, i, d, r in df.itertuples(index=False)}
    s_names = sorted({i for i, d in zip(df["item_id"], df["domain"]) if d == "books"})
    t_names = sorted({i for i, d in zip(df["item_id"], df["domain"]) if d == "music"})
    name = {**{k + 1: n for k, n in enumerate(s_names)}, **{len(s_names) + 1 + k: n for k, n in enumerate(t_names)}}
    for lines, ys in ((p.valid, p.valid_y), (p.test, p.test_y)):
        for (u, i), y in zip(lines.tolist(), ys.tolist()):
            assert back[(u, "music", name[i])] == y
    for (u, i, d), y in zip(p.train.tolist(), p.train_y.tolist()):
        if u in users.values():
            assert back[(u, "books" if d == SOURCE else "music", name[i])] == y
    cold_m0 = [y for (u, i), y in zip(np.concatenate([p.valid, p.test]).tolist(),
                                      np.concatenate([p.valid_y, p.test_y]).tolist()) if u == 1 and name[i] == "m0"]
    train_m0 = [y for (u, i, d), y in zip(p.train.tolist(), p.train_y.tolist()) if u == 1 and name[i] == "m0"]
    assert (cold_m0 + train_m0) == [2.5]
