"""Loaders of the evaluation data: MovieLens-1M on a tiny synthetic copy, CSV, and the MeLU split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metarec.data.movielens import item_attributes, user_attributes
from metarec.errors import DataError
from metarec.evaluate.data import load_ratings
from metarec.evaluate.splits import melu_split, new_items


def _ml1m(folder: Path) -> Path:
    folder.mkdir()
    lines = []
    for u in range(1, 31):
        for k in range(20):
            item = (u * 7 + k) % 12 + 1
            lines.append(f"{u}::{item}::{(u + k) % 5 + 1}::{978300000 + u * 100 + k}")
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    (folder / "users.dat").write_text(
        "\n".join(f"{u}::{'MF'[u % 2]}::{[1, 18, 25, 35][u % 4]}::{u % 20}::{10000 + u}" for u in range(1, 31)) + "\n",
        encoding="latin-1")
    years = [1995, 1996, 1997, 1998, 1999, 2000]
    (folder / "movies.dat").write_text(
        "\n".join(f"{i}::Movie {i} caf\u00e9 ({years[i % 6]})::Comedy|Drama" for i in range(1, 13)) + "\n",
        encoding="latin-1")
    return folder


def test_ml1m_format_from_its_folder(tmp_path: Path) -> None:
    folder = _ml1m(tmp_path / "ml-1m")
    assert user_attributes(folder, "ml-1m")["2"] == {"gender": "M", "age": "25", "occupation": "2", "zip": "10"}
    info = item_attributes(folder, "ml-1m")["3"]
    assert info.year == 1998 and info.genres == ("Comedy", "Drama")
    r = load_ratings(folder, "ml-1m")
    assert len(r) == 600 and len(r.users) == 30 and r.rating_range == (1.0, 5.0) and r.threshold == 4.0
    assert np.all(np.diff(r.ts) >= 0) and (r.ctx > 0).sum(1).min() == 6  # hour, weekday + 4 user attributes
    assert (r.item_attr > 0).sum(1).min() == 3  # year + 2 genres
    assert new_items(r).sum() == 6  # released 1998 or later
    s = melu_split(r, seed=0, lo=13, hi=100)
    assert set(s.states) == {"warm", "new_users", "new_items", "new_users_new_items"}
    for t in s.states.values():
        for sup, q in zip(t.support, t.query):
            assert len(q) == 10 and not set(sup) & set(q)
    assert s.user_index[s.states["new_users"].users].max(initial=0) == 0


def test_csv_without_years_splits_items_by_first_seen_time(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    rows = ["user_id,item_id,rating,timestamp"] + [f"u{u},i{i},{(u + i) % 5 + 1},{i * 1000 + u}"
                                                    for u in range(10) for i in range(20)]
    path.write_text("\n".join(rows))
    r = load_ratings(path, "csv")
    assert len(r) == 200 and np.isnan(r.item_year).all()
    assert new_items(r).sum() == 4  # first seen after the 80% quantile


def test_parquet_reads_like_the_same_csv(tmp_path: Path) -> None:
    """``--format parquet`` works with the pinned install (pyarrow) and reads what CSV reads,
    the column aliases included; a file that is not parquet is one readable DataError."""
    import pandas as pd

    df = pd.DataFrame({"userId": [f"u{u}" for u in range(6) for _ in range(5)],
                       "movieId": [f"i{i}" for _ in range(6) for i in range(5)],
                       "rating": [float((u + i) % 5 + 1) for u in range(6) for i in range(5)],
                       "timestamp": [1000.0 * i + u for u in range(6) for i in range(5)]})
    df.to_parquet(tmp_path / "r.parquet")
    df.to_csv(tmp_path / "r.csv", index=False)
    a, b = load_ratings(tmp_path / "r.parquet", "parquet"), load_ratings(tmp_path / "r.csv", "csv")
    assert len(a) == 30 and len(a.users) == 6 and len(a.items) == 5
    assert np.array_equal(a.value, b.value) and np.array_equal(a.ts, b.ts) and np.array_equal(a.user, b.user)
    with pytest.raises(DataError, match="cannot read as parquet"):
        load_ratings(tmp_path / "r.csv", "parquet")


@pytest.mark.movielens
def test_ml100k_melu_split(ml100k: Path) -> None:
    r = load_ratings(ml100k, "ml-100k")
    assert len(r) == 100_000 and len(r.users) == 943
    s = melu_split(r, seed=0)
    assert len(s.states["new_users"]) > 100 and s.item_new.sum() == 65
