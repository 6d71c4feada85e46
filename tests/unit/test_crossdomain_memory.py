"""The learned memory nests the item-kNN baseline: untrained, it ranks as the kNN does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metarec.crossdomain.baselines import CrossKNN
from metarec.crossdomain.data import SOURCE, TARGET, candidates, load_pair
from metarec.crossdomain.encoder import KNN_FEATURE, EncoderConfig, HistoryEncoder, memory_features, pad
from tests.unit.crossdomain_data import write_pair


def test_the_untrained_memory_ranks_every_line_as_the_item_knn(tmp_path: Path) -> None:
    pair = load_pair(write_pair(tmp_path))
    knn = CrossKNN(pair)
    lines = pair.test
    cands = candidates(pair, lines, seed=1, n_neg=30)
    train = pair.train
    src = {int(u): train[(train[:, 0] == u) & (train[:, 2] == SOURCE), 1] for u in np.unique(lines[:, 0])}
    given = {int(u): pair.valid[pair.valid[:, 0] == u, 1][:1] for u in src}  # k = 1 target event
    sets = [(np.concatenate([src[int(u)], given[int(u)]]),
             np.concatenate([np.full(len(src[int(u)]), SOURCE), np.full(len(given[int(u)]), TARGET)]))
            for u in lines[:, 0]]
    feats = memory_features(knn, sets, cands)
    cross, within = knn.raw([s[0][s[1] == SOURCE] for s in sets], [s[0][s[1] == TARGET] for s in sets], cands)
    assert np.allclose(feats[..., KNN_FEATURE].numpy(), np.log1p(cross + within), atol=1e-5)
    torch.manual_seed(0)
    model = HistoryEncoder(pair.n_items, EncoderConfig(embed=False))
    model.knn = knn
    with torch.no_grad():
        z = model.scores(pad(sets), torch.from_numpy(cands), feats).numpy()
    want = knn.scores([s[0][s[1] == SOURCE] for s in sets], [s[0][s[1] == TARGET] for s in sets], cands)
    assert (cross + within).max() > 0, "the planted pair must give the kNN something to rank"
    for b in range(len(lines)):  # the same order wherever the kNN's counts differ (ties: its popularity)
        a, w = z[b], cross[b] + within[b]
        i, j = np.triu_indices(len(a), 1)
        differ = w[i] != w[j]
        assert np.array_equal(np.sign(a[i] - a[j])[differ], np.sign(want[b][i] - want[b][j])[differ])
