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

Domains (``SimConfig.domains``, none by default): item ``i`` belongs to ``domains[i % len(domains)]``
(round-robin, :func:`item_domain`; new items too) and each event carries its item's domain. Each user
splits their activity over the domains by a Dirichlet share (``domain_mix``; small: mostly one domain)
and has one taste per domain, ``sqrt(1 - c²) t_u + c g_ud`` (``c = domain_taste``): the same ``t_u``
drives clicks everywhere, so knowing a user in one domain helps in another. Domains draw from a third
generator, so an event's id, user, time and context are those of the same log without domains.
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
    domains: tuple[str, ...] = ()  # catalog domains (item i is in domains[i % len]); (): one default domain ""
    domain_taste: float = 0.3  # c in t_ud = sqrt(1 - c²) t_u + c·g_ud: 0 one taste everywhere, 1 unrelated tastes
    domain_mix: float = 1.0  # Dirichlet concentration of a user's activity over domains; small: mostly one

    def drift_ts(self) -> float:
        """Event time of the shift (``inf`` without drift)."""
        return float("inf") if self.drift_at is None else self.start_ts + self.drift_at * self.days * 86400.0


def item_domain(cfg: SimConfig, item: str | int) -> str:
    """The domain of an item (id ``"i17"`` or index ``17``): round-robin over ``cfg.domains``; ``""`` without."""
    if not cfg.domains:
        return ""
    index = item if isinstance(item, int) else int(item.removeprefix("i"))
    return cfg.domains[index % len(cfg.domains)]


def _check_domains(domains: tuple[str, ...]) -> None:
    if any(not isinstance(d, str) or not d.strip() for d in domains) or len(set(domains)) != len(domains):
        raise ValueError(f"domains must be distinct non-blank names, got {domains!r}")


def _in_domain(pop: np.ndarray, d: int, n_domains: int) -> tuple[np.ndarray, np.ndarray]:
    """The items of domain ``d`` (indices ``d, d + n, …``) and their popularity, normalised within it."""
    idx = np.arange(d, len(pop), n_domains)
    p = pop[idx]
    total = p.sum()
    return idx, (p / total if total > 0 else np.full(len(idx), 1.0 / max(len(idx), 1)))


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

    # domains, from a third generator (none of its draws are made without domains)
    _check_domains(cfg.domains)
    n_dom = len(cfg.domains)
    xrng = np.random.default_rng([cfg.seed, 2])
    if n_dom:
        c = float(np.clip(cfg.domain_taste, 0.0, 1.0))
        offset = xrng.normal(size=(n_dom, *taste.shape)) / np.sqrt(cfg.latent)
        dtaste = np.sqrt(1 - c * c) * taste[None] + c * offset  # (domain, user, latent)
        dtaste2 = np.sqrt(1 - c * c) * taste2[None] + c * offset
        mix = xrng.dirichlet(np.full(n_dom, max(cfg.domain_mix, 1e-3)), size=cfg.users)
        catalog = [_in_domain(pop, d, n_dom) for d in range(n_dom)]
        catalog2 = [_in_domain(pop2, d, n_dom) for d in range(n_dom)]
        if any(len(idx) == 0 for idx, _ in catalog):
            raise ValueError(f"{cfg.items} items cannot fill {n_dom} domains")

    events: list[Event] = []
    span = cfg.days * 86400.0
    for u in range(cfg.users):
        n = counts[u]
        ts = np.sort(cfg.start_ts + rng.uniform(0, span, size=n))
        items = rng.choice(cfg.items, size=n, p=pop)
        doms, picks = np.zeros(n, dtype=int), items.copy()
        if n_dom:  # each impression: a domain by the user's share, an item by popularity within it
            doms = xrng.choice(n_dom, size=n, p=mix[u])
            for d, (idx, p) in enumerate(catalog):
                at = doms == d
                picks[at] = xrng.choice(idx, size=int(at.sum()), p=p)
        for t, i, pick, d in zip(ts, items, picks, doms):
            device = DEVICES[home_device[u]] if rng.random() < 0.8 else DEVICES[rng.integers(len(DEVICES))]
            hour = HOURS[int((t % 86400) // 21600)]
            shift = ctx_shift[("device", device)] + ctx_shift[("hour", hour)]
            kind = _outcome(rng, cfg.sharpness * taste[u] @ vecs[i] + shift @ vecs[i] + cfg.bias, cfg.purchase_rate)
            eid = uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | len(events)).hex
            if n_dom:  # the domain's item, the user's taste there, the outcome from the domains' generator
                i = pick
                logit = cfg.sharpness * dtaste[d, u] @ vecs[i] + shift @ vecs[i] + cfg.bias
                kind = _outcome(xrng, logit, cfg.purchase_rate)
            if t >= drift_ts:  # the drifted world: another item, another outcome (the draws above still made)
                if n_dom:  # another item of the same domain
                    idx2, p2 = catalog2[d]
                    i = int(idx2[drng.choice(len(idx2), p=p2)])
                    logit = cfg.sharpness * dtaste2[d, u] @ vecs2[i] + shift @ vecs2[i] + cfg.bias
                else:
                    i = int(drng.choice(len(pop2), p=pop2))
                    logit = cfg.sharpness * taste2[u] @ vecs2[i] + shift @ vecs2[i] + cfg.bias
                kind = _outcome(drng, logit, cfg.purchase_rate)
            events.append(Event(
                event_id=eid, user_id=f"u{u}", item_id=f"i{i}", kind=kind, value=0.0 if kind == "view" else 1.0,
                ts=round(float(t), 3), context={"device": device, "hour": hour},
                domain=cfg.domains[d] if n_dom else "",
            ))
    events.sort(key=lambda e: e.ts)
    return events
