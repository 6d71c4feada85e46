"""The simulator's drift scenario: off changes nothing; on, the world after the shift is another one."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from typing import Any

import numpy as np

from metarec.data.simulate import SimConfig, simulate
from metarec.events import Event

# digest of simulate(SimConfig(users=30, items=20, mean_events=10, seed=5)) from the simulator
# before drift existed: drift off must keep every seeded log byte for byte
GOLDEN = "0a3008e253388c6e10d634d7205ad9b8cd3a525f6c0ef7b4811396e238a6b6fe"


def digest(events: list[Event]) -> str:
    h = hashlib.sha256()
    for e in events:
        h.update(f"{e.event_id}\t{e.user_id}\t{e.item_id}\t{e.kind}\t{e.value!r}\t{e.ts!r}\t"
                 f"{sorted(e.context.items())}\n".encode())
    return h.hexdigest()


def with_(cfg: SimConfig, **kw: Any) -> SimConfig:
    return dataclasses.replace(cfg, **kw)


SMALL = SimConfig(users=30, items=20, mean_events=10, seed=5)


def test_drift_off_is_the_old_simulator_byte_for_byte() -> None:
    assert digest(simulate(SMALL)) == GOLDEN
    # the drift knobs do nothing while drift_at is None
    assert digest(simulate(with_(SMALL, drift_taste=1.0, drift_popularity=0.3, new_items=7))) == GOLDEN


def test_events_before_the_shift_are_those_of_the_undrifted_log() -> None:
    cfg = with_(SMALL, users=60, drift_at=0.4, new_items=5)
    drifted, plain = simulate(cfg), simulate(with_(cfg, drift_at=None))
    cut = cfg.drift_ts()
    assert [e for e in drifted if e.ts < cut] == [e for e in plain if e.ts < cut]
    after = [(a, b) for a, b in zip(drifted, plain) if a.ts >= cut]
    assert after and all(a.event_id == b.event_id and a.ts == b.ts for a, b in after)
    assert sum(a.item_id != b.item_id for a, b in after) > len(after) // 2  # another world after it


def test_new_items_appear_only_after_the_shift_with_their_share() -> None:
    cfg = SimConfig(users=80, items=40, mean_events=30, seed=1, drift_at=0.5, new_items=10, new_item_share=0.3)
    events = simulate(cfg)
    new = {f"i{i}" for i in range(cfg.items, cfg.items + cfg.new_items)}
    before = [e for e in events if e.ts < cfg.drift_ts()]
    after = [e for e in events if e.ts >= cfg.drift_ts()]
    assert before and after
    assert not any(e.item_id in new for e in before)
    share = sum(e.item_id in new for e in after) / len(after)
    assert 0.25 < share < 0.35
    assert len({e.item_id for e in after} & new) >= 8  # most new items are shown
    known = {f"i{i}" for i in range(cfg.items + cfg.new_items)}
    assert {e.item_id for e in events} <= known


def user_ctr_correlation(cfg: SimConfig) -> float:
    """Across users, the correlation of each user's click rate before the shift with after it."""
    cut = cfg.drift_ts() if cfg.drift_at is not None else cfg.start_ts + cfg.days * 86400.0 / 2
    pre: dict[str, list[float]] = {}
    post: dict[str, list[float]] = {}
    for e in simulate(cfg):
        (pre if e.ts < cut else post).setdefault(e.user_id, []).append(e.value)
    users = [u for u in pre if len(pre[u]) >= 10 and len(post.get(u, [])) >= 10]
    a = np.array([np.mean(pre[u]) for u in users])
    b = np.array([np.mean(post[u]) for u in users])
    return float(np.corrcoef(a, b)[0, 1])


def test_taste_drift_changes_who_clicks() -> None:
    base = SimConfig(users=250, items=60, mean_events=100, seed=2)
    stable = user_ctr_correlation(base)
    # the post-shift draws come from another generator, the world stays: users keep their click rates
    same_world = user_ctr_correlation(with_(base, drift_at=0.5, drift_taste=0.0, drift_popularity=0.0))
    moved = user_ctr_correlation(with_(base, drift_at=0.5, drift_taste=1.0, drift_popularity=0.0))
    assert stable > 0.3 and same_world > 0.3
    assert moved < 0.15 and moved < stable - 0.2


def test_popularity_drift_changes_what_is_shown() -> None:
    base = SimConfig(users=200, items=50, mean_events=40, seed=4, drift_at=0.5, drift_taste=0.0)

    def shift(cfg: SimConfig) -> float:
        """Total variation distance between the item distributions before and after the shift."""
        events = simulate(cfg)
        pre = Counter(e.item_id for e in events if e.ts < cfg.drift_ts())
        post = Counter(e.item_id for e in events if e.ts >= cfg.drift_ts())
        n_pre, n_post = sum(pre.values()), sum(post.values())
        return 0.5 * sum(abs(pre[i] / n_pre - post[i] / n_post) for i in pre.keys() | post.keys())

    kept, moved = shift(with_(base, drift_popularity=0.0)), shift(with_(base, drift_popularity=1.0))
    assert kept < 0.15 < 0.3 < moved
