"""A seeded simulator of user behaviour: latent tastes, item popularity, context effects.

Each user has a taste vector ``t_u`` and each item a latent vector ``v_i`` and a popularity
(Zipf). Impressions are drawn by popularity; the click probability is
``sigmoid(sharpness * <t_u, v_i> + ctx_effect(device, hour) · v_i + bias)``. A clicked
impression is a ``click`` (sometimes a ``purchase``); an unclicked one a ``view`` with value 0.
Users' events are spread over ``days`` and interleaved in time, as in a live stream.
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


def simulate(cfg: SimConfig) -> list[Event]:
    """The whole event log, in time order."""
    rng = np.random.default_rng(cfg.seed)
    taste = rng.normal(size=(cfg.users, cfg.latent)) / np.sqrt(cfg.latent)
    vecs = rng.normal(size=(cfg.items, cfg.latent))
    pop = 1.0 / np.arange(1, cfg.items + 1) ** 0.8
    pop = pop[rng.permutation(cfg.items)]
    pop /= pop.sum()
    ctx_shift = {
        ("device", d): rng.normal(scale=cfg.context_strength, size=cfg.latent) / np.sqrt(cfg.latent)
        for d in DEVICES
    } | {("hour", h): rng.normal(scale=cfg.context_strength, size=cfg.latent) / np.sqrt(cfg.latent)
         for h in HOURS}
    home_device = rng.integers(0, len(DEVICES), size=cfg.users)
    counts = np.maximum(3, rng.lognormal(np.log(cfg.mean_events), 0.7, size=cfg.users)).astype(int)

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
            logit = cfg.sharpness * taste[u] @ vecs[i] + shift @ vecs[i] + cfg.bias
            clicked = rng.random() < 1.0 / (1.0 + np.exp(-logit))
            kind = ("purchase" if rng.random() < cfg.purchase_rate else "click") if clicked else "view"
            events.append(Event(
                event_id=uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | len(events)).hex,
                user_id=f"u{u}", item_id=f"i{i}", kind=kind, value=1.0 if clicked else 0.0,
                ts=round(float(t), 3), context={"device": device, "hour": hour},
            ))
    events.sort(key=lambda e: e.ts)
    return events
