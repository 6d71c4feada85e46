"""The four Amazon cross-domain directions load as their README describes (skips without
``../shared/data/amazon-cdr``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metarec.crossdomain.data import SOURCE, TARGET, load_pair
from metarec.crossdomain.protocol import cases, histories

# folder: (target, source, shared users at least, cold-start users about)
DIRECTIONS = {"game_video": ("game", "video", 2190, 220), "video_game": ("video", "game", 2190, 220),
              "cloth_sport": ("cloth", "sport", 9800, 950), "sport_cloth": ("sport", "cloth", 9800, 950)}


@pytest.mark.parametrize("folder", sorted(DIRECTIONS))
def test_each_direction_matches_the_readme(amazon_cdr: Path, folder: str) -> None:
    target, source, shared, cold = DIRECTIONS[folder]
    p = load_pair(amazon_cdr / folder)
    assert (p.target, p.source) == (target, source)
    assert shared <= p.n_shared < shared + 50
    assert abs(len(p.cold_users()) - cold) < 0.1 * cold
    # every cold-start user has source history and no target training line
    src_users = set(p.train[p.train[:, 2] == SOURCE, 0].tolist())
    tgt_users = set(p.train[p.train[:, 2] == TARGET, 0].tolist())
    assert set(p.cold_users().tolist()) <= src_users and not set(p.cold_users().tolist()) & tgt_users
    assert len(p.bridge_users()) > 0.7 * p.n_shared
    src, _ = histories(p, 0)
    c = cases(p, 0, src)[("test", 0)]
    assert c.cands.shape == (len(p.test), 1000) and (c.cands[:, 0] == p.test[:, 1]).all()
    assert np.isin(c.cands, p.target_items).all()
