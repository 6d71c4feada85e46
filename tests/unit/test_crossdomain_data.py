"""Reading a pair of domains (metarec.crossdomain.data) and sampling the ranking candidates,
on a tiny synthetic pair written the way the Amazon folders are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metarec.crossdomain.data import SOURCE, TARGET, candidates, load_pair
from metarec.errors import DataError
from tests.unit.crossdomain_data import write_pair


def test_joint_indices_and_cold_start_users(tmp_path: Path) -> None:
    folder = write_pair(tmp_path)
    p = load_pair(folder)
    assert (p.source, p.target, p.name) == ("books", "music", "books→music")
    assert p.n_shared == 40
    # shared users keep one index in both domains; domain-only users get their own
    src_users = set(p.train[p.train[:, 2] == SOURCE, 0].tolist())
    tgt_users = set(p.train[p.train[:, 2] == TARGET, 0].tolist())
    assert max(src_users | tgt_users) < p.n_users and min(src_users | tgt_users) >= 1
    assert {u for u in src_users & tgt_users} <= set(range(1, p.n_shared + 1))
    # items: source first, then target, never overlapping, 0 unused
    assert set(p.train[p.train[:, 2] == SOURCE, 1].tolist()) <= set(p.source_items.tolist())
    assert set(p.train[p.train[:, 2] == TARGET, 1].tolist()) <= set(p.target_items.tolist())
    assert not set(p.source_items.tolist()) & set(p.target_items.tolist())
    assert 0 not in p.source_items and 0 not in p.target_items
    # cold-start users: shared, no target training line, some source history
    cold = p.cold_users()
    assert len(cold) == 10 and not set(cold.tolist()) & tgt_users and set(cold.tolist()) <= src_users
    assert set(p.valid[:, 1].tolist()) | set(p.test[:, 1].tolist()) <= set(p.target_items.tolist())
    assert len(p.bridge_users()) == 30


def test_candidates_rank_each_line_against_unseen_target_items(tmp_path: Path) -> None:
    p = load_pair(write_pair(tmp_path))
    c = candidates(p, p.test, seed=3, n_neg=40)
    assert c.shape == (len(p.test), 41)
    assert (c[:, 0] == p.test[:, 1]).all()
    held = {}
    for u, i in np.concatenate([p.valid, p.test]).tolist():
        held.setdefault(u, set()).add(i)
    for (u, _), row in zip(p.test.tolist(), c):
        assert len(set(row[1:].tolist())) == 40  # without replacement
        assert not set(row[1:].tolist()) & held[u]  # never an item the user has a held-out line with
        assert set(row.tolist()) <= set(p.target_items.tolist())
    assert (candidates(p, p.test, seed=3, n_neg=40) == c).all()
    assert (candidates(p, p.test, seed=4, n_neg=40) != c).any()


def test_bad_folders_are_one_readable_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        load_pair(tmp_path / "nope_none")
    lone = tmp_path / "x_y"
    lone.mkdir()
    with pytest.raises(DataError, match="source domain's folder is missing"):
        load_pair(lone)
    folder = write_pair(tmp_path / "bad")
    (folder / "test.txt").write_text("1\tnot-a-number\n")
    with pytest.raises(DataError, match="integer lines"):
        load_pair(folder)
    odd = tmp_path / "oddname"
    odd.mkdir()
    with pytest.raises(DataError, match="target_source"):
        load_pair(odd)
