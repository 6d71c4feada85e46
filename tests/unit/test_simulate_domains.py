"""The simulator's catalog domains: off changes nothing; on, items split by domain and tastes carry over."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from typing import Any

import msgspec
import numpy as np
import pytest

from metarec.data.simulate import SimConfig, item_domain, simulate
from metarec.events import Event

# sha256 of msgspec.json.encode(simulate(...)) for these configs, from the simulator before domains
# existed (event ids are drawn from the seeded generator, so the whole wire form is stable): without
# domains every seeded log must stay byte for byte
GOLDEN = {
    "plain": "e3c88ee808fd121a9cce1b65a5c9d400e6828abc7b2d994b9a2a1e39ee9d49f2",
    "drift": "7fa71f2b1ee06fce0c4b9194c8541374fa0e2875bc6db9723069b19d23ea5095",
}
SMALL = SimConfig(users=30, items=40, mean_events=10, seed=3)
BM = ("books", "music")


def with_(cfg: SimConfig, **kw: Any) -> SimConfig:
    return dataclasses.replace(cfg, **kw)


def digest(events: list[Event]) -> str:
    return hashlib.sha256(msgspec.json.encode(events)).hexdigest()


def test_no_domains_is_the_old_simulator_byte_for_byte() -> None:
    events = simulate(SMALL)
    assert all(e.domain == "" for e in events)
    assert digest(events) == GOLDEN["plain"]
    # the domain knobs do nothing while domains is empty
    assert digest(simulate(with_(SMALL, domain_taste=1.0, domain_mix=0.1))) == GOLDEN["plain"]
    assert digest(simulate(with_(SMALL, drift_at=0.5, new_items=5))) == GOLDEN["drift"]
    assert item_domain(SMALL, "i7") == ""


def test_item_domain_is_round_robin() -> None:
    cfg = with_(SMALL, domains=("a", "b", "c"))
    assert [item_domain(cfg, f"i{i}") for i in range(6)] == ["a", "b", "c", "a", "b", "c"]
    assert item_domain(cfg, 4) == "b"


@pytest.mark.parametrize("domains", [("books", "books"), ("books", ""), (" ",)])
def test_bad_domains_are_refused(domains: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="domains"):
        simulate(with_(SMALL, domains=domains))


def test_events_carry_their_items_domain_and_users_span_domains() -> None:
    cfg = SimConfig(users=200, items=60, mean_events=40, seed=1, domains=BM)
    events = simulate(cfg)
    assert {e.domain for e in events} == set(BM)
    assert all(e.domain == item_domain(cfg, e.item_id) for e in events)
    per_domain: dict[str, int] = defaultdict(int)
    for e in events:
        per_domain[e.domain] += 1
    assert min(per_domain.values()) > 0.25 * len(events)  # both domains are well used
    seen: dict[str, list[str]] = defaultdict(list)
    for e in events:
        seen[e.user_id].append(e.domain)
    active = [ds for ds in seen.values() if len(ds) >= 20]
    assert len(active) > 50
    assert sum(len(set(ds)) == 2 for ds in active) > 0.7 * len(active)
    # some users live mostly in one domain
    shares = [max(ds.count(d) for d in BM) / len(ds) for ds in active]
    assert sum(s > 0.85 for s in shares) >= 5


def test_domains_keep_the_logs_ids_users_times_and_contexts() -> None:
    plain, split = simulate(SMALL), simulate(with_(SMALL, domains=BM))
    key = [(e.event_id, e.user_id, e.ts, e.context) for e in plain]
    assert [(e.event_id, e.user_id, e.ts, e.context) for e in split] == key


def test_domains_with_drift_keep_the_events_before_the_shift_and_their_domain() -> None:
    cfg = with_(SMALL, users=60, domains=BM, drift_at=0.4, new_items=6)
    drifted, plain = simulate(cfg), simulate(with_(cfg, drift_at=None))
    cut = cfg.drift_ts()
    assert [e for e in drifted if e.ts < cut] == [e for e in plain if e.ts < cut]
    after = [(a, b) for a, b in zip(drifted, plain) if a.ts >= cut]
    assert after and all(a.domain == b.domain == item_domain(cfg, a.item_id) for a, b in after)


def cross_domain_fit(cfg: SimConfig) -> float:
    """How well a user's item preferences in books predict those in music, on held-out users.

    Each user's per-item click rates (shrunk to their own mean, then centred on it: no user-level
    effects) in each domain; a linear map books → music fitted on half the users; the correlation of
    its predictions with the other half's music preferences, both less the item means (no item effects).
    About 0 when tastes are unrelated across domains.
    """
    clicks, shown = np.zeros((cfg.users, cfg.items)), np.zeros((cfg.users, cfg.items))
    for e in simulate(cfg):
        u, i = int(e.user_id[1:]), int(e.item_id[1:])
        shown[u, i] += 1
        clicks[u, i] += e.value
    prefs = []
    for d in range(len(cfg.domains)):
        c, m = clicks[:, d::len(cfg.domains)], shown[:, d::len(cfg.domains)]
        mean = c.sum(1, keepdims=True) / np.maximum(m.sum(1, keepdims=True), 1)
        prefs.append((c + mean) / (m + 1) - mean)
    books, music = prefs
    half = cfg.users // 2
    x = np.c_[books, np.ones(cfg.users)]
    w, *_ = np.linalg.lstsq(x[:half], music[:half], rcond=None)
    item_mean = music[:half].mean(0)
    return float(np.corrcoef((x[half:] @ w - item_mean).ravel(), (music[half:] - item_mean).ravel())[0, 1])


def test_taste_is_shared_across_domains() -> None:
    cfg = SimConfig(users=1200, items=16, latent=2, mean_events=40, seed=3, domains=BM)
    shared = cross_domain_fit(cfg)  # default domain_taste: a small per-domain offset
    unrelated = cross_domain_fit(with_(cfg, domain_taste=1.0))
    assert shared > 0.25
    assert abs(unrelated) < 0.15 and shared > unrelated + 0.2
