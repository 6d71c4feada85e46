"""Settings re-chosen per support size: each is the validation argmin at that size."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import sim_ratings


@pytest.fixture(scope="module")
def ratings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return sim_ratings(tmp_path_factory, users=80, items=60, mean_events=30, seed=3)


def test_each_size_gets_the_validation_argmin_of_its_own_grid(ratings) -> None:  # type: ignore[no-untyped-def]
    import torch

    from metarec.evaluate import methods as M
    from metarec.evaluate.melu import Melu, chosen_meta, neural, score
    from metarec.evaluate.melu_tasks import ADAPT_MULTS, SUPPORT_SIZES, long_supports
    from metarec.evaluate.models import Net
    from metarec.evaluate.search import LOSSES
    from metarec.evaluate.sizes import by_size

    torch.set_num_threads(1)
    plan = M.Plan(meta_steps=10, trial_steps=5, trials=2, repeats=1)
    ev = Melu(ratings, 0, plan, Net(dim=8, hidden=(16, 8), buffer=40), lambda s: None)
    full_ft = {"ft_steps": 10, "ft_lr": 0.1, "ft_adapt": "layers+out", "ft_loss": "huber"}
    chosen = {"global": M.DEFAULT_GLOBAL, "finetune": full_ft, "meta": chosen_meta({}),
              "item_offset": {"center": "mean", "lam_item": 3.0, "lam_user": 3.0}}
    got = by_size(ev, chosen)
    assert set(got) == {str(k) for k in SUPPORT_SIZES}
    split = ev.split(0)  # supports cut to the 40-event buffer, as by_size saw them
    g = ev.train_global(split, chosen["global"], plan.meta_steps, 0)  # the cached model by_size scored
    for k in (1, 5):
        val = long_supports(split.val, k)
        assert got[str(k)]["val_users"] == len(val) > 0
        assert all(len(s) >= k for s in val.support)

        def mae(f: dict, k: int = k, val=val) -> float:  # type: ignore[no-untyped-def, type-arg]
            return float(score(ratings, split, val, neural(g, f["ft_steps"], f["ft_lr"], f["ft_adapt"],
                                                           f["ft_loss"]), k)["mae"])

        best = mae(got[str(k)]["finetune"])
        assert best <= min(mae(f) for f in M.ft_grid(losses=LOSSES)) + 1e-12  # the grid's minimum
        assert best <= mae(full_ft) + 1e-12
        assert all(m["adapt_mult"] in ADAPT_MULTS for m in got[str(k)]["meta"].values())
    assert np.isfinite(best)


def test_episode_support_sizes_cover_the_first_events_a_stream_sees() -> None:
    """Full supports half the time; else sizes from 1 up, small ones often (log-uniform share)."""
    from metarec.evaluate.melu_tasks import support_size

    rng = np.random.default_rng(0)
    m = 100
    sizes = np.array([support_size(m, m, rng) for _ in range(20000)])
    assert sizes.min() >= 1 and sizes.max() <= m
    assert 0.47 < float(np.mean(sizes == m)) < 0.53  # the MeLU states' full supports
    # 1-5 of 100 events: 2.5 % from the uniform quarter, ~10 % from the log-uniform quarter
    assert 0.09 < float(np.mean(sizes <= 5)) < 0.14
    assert set(range(1, 6)) <= set(sizes.tolist())
    assert {support_size(1, m, rng) for _ in range(50)} == {1}
    assert {support_size(500, m, rng) for _ in range(200)} <= set(range(1, m + 1))  # cut to the buffer


def test_melu_episodes_draw_their_supports_from_support_size(ratings) -> None:  # type: ignore[no-untyped-def]
    from metarec.evaluate.melu_tasks import sampler, support_size
    from metarec.evaluate.splits import melu_split

    split = melu_split(ratings, 0)
    users = np.array(sorted(split.train), np.int64)[:16]
    sup, qry = sampler(ratings, split, 40, 10, 0.0)(users, np.random.default_rng(5))
    got = sup.mask.sum(1).numpy().astype(int)
    rng = np.random.default_rng(5)  # the same draws, replayed: permutation, then the size
    want = []
    for u in users:
        rows = rng.permutation(split.train[int(u)])
        rest = rows[min(10, len(rows) // 2):]
        want.append(support_size(len(rest), 40, rng))
        rng.random()  # the user-dropout draw
    assert got.tolist() == want
    assert qry.mask.sum(1).min() >= 1
