"""A seeded simulator of user behaviour: latent tastes, item popularity, context effects, drift.

Each user has a taste vector ``t_u`` and each item a latent vector ``v_i`` and a popularity
(Zipf). Impressions are drawn by popularity; the click probability is
``sigmoid(sharpness * <t_u, v_i> + ctx_effect(device, hour) · v_i + bias)``. A clicked
impression is a ``click`` (sometimes a ``purchase``); an unclicked one a ``view`` with value 0.
Users' events are spread over ``days`` and interleaved in time, as in a live stream.

Drift (``SimConfig.drift_at``, off by default): from that point of the time span on, every
user's taste moves, ``t' = sqrt(1 - a²) t + a f`` (``a = drift_taste``, ``f`` a fresh taste),
item popularity is mixed with a re-permuted Zipf (weight ``drift_popularity``), and
``new_items`` items (ids ``i{items}`` … ``i{items + new_items - 1}``) appear, taking
``new_item_share`` of the impressions. Drift draws from a second generator and the events before
the shift are exactly those of the same log without drift (same ids, items, outcomes).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from metarec.events import Event

DEVICES = ("mobile", "desktop", "tv")
HOURS = ("night", "morning", "afternoon", "evening")


@dataclass
class SimConfig:
    """Knobs of the simulator; the defaults make a log that meta-trains in about a minute."""

    users: int = 600  # number of users
    items: int = 500  # catalog size
    latent: int = 8  # taste dimensions
    mean_events: float = 60.0  # mean events per user (lognormal)
    sharpness: float = 2.5  # how strongly taste drives clicks
    context_strength: float = 0.8  # how strongly device and hour shift preferences
    bias: float = -1.0  # base click log-odds
    purchase_rate: float = 0.15  # share of clicks that are purchases
    days: float = 30.0  # time span of the log
    start_ts: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    seed: int = 0
    drift_at: float | None = None  # fraction of the time span at which tastes and popularity shift; None: never
    drift_taste: float = 0.8  # a in t' = sqrt(1 - a²) t + a·fresh: 0 keeps tastes, 1 replaces them
    drift_popularity: float = 1.0  # weight of the re-permuted Zipf in the popularity after the shift
    new_items: int = 0  # items that exist only after the shift
    new_item_share: float = 0.25  # share of the impressions after the shift that go to new items

    def drift_ts(self) -> float:
        """Event time of the shift (``inf`` without drift)."""
        return float("inf") if self.drift_at is None else self.start_ts + self.drift_at * self.days * 86400.0


def _zipf(n: int, rng: np.random.Generator) -> np.ndarray:
    pop = 1.0 / np.arange(1, n + 1) ** 0.8
    pop = pop[rng.permutation(n)]
    return pop / pop.sum()


def _outcome(rng: np.random.Generator, logit: float, purchase_rate: float) -> str:
    clicked = rng.random() < 1.0 / (1.0 + np.exp(-logit))
    return ("purchase" if rng.random() < purchase_rate else "click") if clicked else "view"


def simulate(cfg: SimConfig) -> list[Event]:
    """The whole event log, in time order."""
    rng = np.random.default_rng(cfg.seed)
    taste = rng.normal(size=(cfg.users, cfg.latent)) / np.sqrt(cfg.latent)
    vecs = rng.normal(size=(cfg.items, cfg.latent))
    pop = _zipf(cfg.items, rng)
    ctx_shift = {
        ("device", d): rng.normal(scale=cfg.context_strength, size=cfg.latent) / np.sqrt(cfg.latent)
        for d in DEVICES
    } | {("hour", h): rng.normal(scale=cfg.context_strength, size=cfg.latent) / np.sqrt(cfg.latent)
         for h in HOURS}
    home_device = rng.integers(0, len(DEVICES), size=cfg.users)
    counts = np.maximum(3, rng.lognormal(np.log(cfg.mean_events), 0.7, size=cfg.users)).astype(int)

    # the world after the shift, from its own generator (the main one's draws stay as without drift)
    drng = np.random.default_rng([cfg.seed, 1])
    a = float(np.clip(cfg.drift_taste, 0.0, 1.0))
    taste2 = np.sqrt(1 - a * a) * taste + a * drng.normal(size=taste.shape) / np.sqrt(cfg.latent)
    vecs2 = np.concatenate([vecs, drng.normal(size=(cfg.new_items, cfg.latent))])
    b = float(np.clip(cfg.drift_popularity, 0.0, 1.0))
    old = (1 - b) * pop + b * _zipf(cfg.items, drng)
    share = cfg.new_item_share if cfg.new_items else 0.0
    pop2 = np.concatenate([(1 - share) * old, share * _zipf(cfg.new_items, drng)])
    drift_ts = cfg.drift_ts()

    events: list[Event] = []
    span = cfg.days * 86400.0
    for u in range(cfg.users):
        n = counts[u]
        ts = np.sort(cfg.start_ts + rng.uniform(0, span, size=n))
        items = rng.choice(cfg.items, size=n, p=pop)
        for t, i in zip(ts, items):
            device = DEVICES[home_device[u]] if rng.random() < 0.8 else DEVICES[rng.integers(len(DEVICES))]
            hour = HOURS[int((t % 86400) // 21600)]
            shift = ctx_shift[("device", device)] + ctx_shift[("hour", hour)]
            kind = _outcome(rng, cfg.sharpness * taste[u] @ vecs[i] + shift @ vecs[i] + cfg.bias, cfg.purchase_rate)
            eid = uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | len(events)).hex
            if t >= drift_ts:  # the drifted world: another item, another outcome (the draws above still made)
                i = int(drng.choice(len(pop2), p=pop2))
                logit = cfg.sharpness * taste2[u] @ vecs2[i] + shift @ vecs2[i] + cfg.bias
                kind = _outcome(drng, logit, cfg.purchase_rate)
            events.append(Event(
                event_id=eid, user_id=f"u{u}", item_id=f"i{i}", kind=kind, value=0.0 if kind == "view" else 1.0,
                ts=round(float(t), 3), context={"device": device, "hour": hour},
            ))
    events.sort(key=lambda e: e.ts)
    return events
