"""From user states to fresh top-K: adapt a batch of users, score the catalog, rank.

:class:`Recommender` is the one object the worker calls. Given the states of the users that
changed, it adapts them all in one vectorized call, scores the catalog through onnxruntime
with their adapted weights, and returns one :class:`Recommendation` per user and served domain
(a user's adaptation learns from their events in every domain; each domain's top-K is ranked in
that domain's context, among that domain's items; given a candidate scorer, a domain's rows score
only its own items, so serving D domains costs one catalog, not D). Before it
learns from a user's new labelled events it predicts them with the un-adapted initialization
and with the user's previously adapted weights (a bounded cache), for live quality.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from metarec.adapt import Fast, predict_rows
from metarec.artifact import Bundle
from metarec.fastadapt import adapt_explicit
from metarec.features import Encoded, current_context, event_context_ids, support_from_buffers, target
from metarec.recommendation import Recommendation
from metarec.score import CandidateScorer, Scorer, top_k, top_k_items
from metarec.state import Buffered, UserState

__all__ = ["LiveSample", "Recommendation", "Recommender", "Timings"]


@dataclass
class LiveSample:
    """Labels of newly seen events and the predictions made before learning from them."""

    y: list[float] = field(default_factory=list)
    init: list[float] = field(default_factory=list)
    adapted: list[float] = field(default_factory=list)


@dataclass
class Timings:
    adapt_s: float = 0.0
    score_s: float = 0.0


class Recommender:
    """Adapts and ranks for batches of users with one model bundle and one scorer."""

    def __init__(self, bundle: Bundle, scorer: Scorer, top_k: int = 10, inner_steps: int | None = None,
                 inner_lr: float | None = None, cache_users: int = 2048, domains: Sequence[str] = (),
                 candidates: CandidateScorer | None = None) -> None:
        self.bundle = bundle
        known = bundle.vocab.domains()
        unknown = [d for d in domains if d not in known]
        if unknown:
            raise ValueError(f"domains {', '.join(map(repr, unknown))} are not in the model's catalog "
                             f"({', '.join(map(repr, known))})")
        self.domains = list(dict.fromkeys(domains)) or known  # served: the catalog's, unless configured
        # each served domain's columns (None: the whole catalog, no mask to apply)
        self._columns = {d: (None if (m := bundle.vocab.in_domain(d)).all() else m) for d in self.domains}
        # with a candidate scorer, rows of a domain with a mask score only its items (indices from 1)
        self._items = {d: np.flatnonzero(m) + 1 for d, m in self._columns.items() if m is not None}
        self.candidates = candidates if self._items else None
        self.model = bundle.model
        self.cfg = bundle.model.cfg
        self.scorer = scorer
        self.k = top_k
        self.steps = self.cfg.inner_steps if inner_steps is None else inner_steps
        lr = self.model.inner_lr_map() if inner_lr is None else inner_lr  # Meta-SGD: learned per-parameter rates
        self.lr: float | dict[str, torch.Tensor] = (
            {k: v.detach() for k, v in lr.items()} if isinstance(lr, dict) else float(lr))
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()  # user → flat adapted weights (P,)
        self.cache_users = cache_users
        self._encoded: dict[str, Encoded] = {}  # event_id → encoded support row
        self.init = {k: v.detach() for k, v in self.model.fast_init().items()}
        self._init_flat = torch.cat([v.reshape(-1) for v in self.init.values()]).numpy()

    def warm_up(self) -> None:
        """Run one adaptation and one scoring call so the first real batch is not the slow one."""
        probe = UserState(user_id="\x00warm-up", events_seen=1, buffer=(Buffered("w", "", "click", 1.0, 0.0, {}),))
        self.recommend([probe])
        self.cache.pop(probe.user_id, None)

    def adapt(self, states: Sequence[UserState]) -> Fast:
        """Adapted weights of every user in ``states``: ``{name: (B, ...)}``."""
        if len(self._encoded) > 64 * max(self.cache_users, 1024):
            self._encoded.clear()  # a bounded cache: start over rather than track recency per event
        sup = support_from_buffers([s.user_id for s in states], [s.buffer for s in states],
                                   self.bundle.vocab, self.cfg, self._encoded)
        with torch.no_grad():  # detached: with 0 steps the "adapted" weights are the init's parameters
            return {k: v.detach() for k, v in adapt_explicit(self.model, sup, self.steps, self.lr).items()}

    def live_predictions(self, states: Sequence[UserState], new: Sequence[Sequence[Buffered]]) -> LiveSample:
        """Predict each user's ``new`` labelled events with the init and with their previous
        adapted weights (only where those exist, or the user had no earlier events), in two
        batched calls."""
        out = LiveSample()
        if self.cfg.mode != "binary":
            return out
        vocab, cfg = self.bundle.vocab, self.cfg
        rows: list[tuple[UserState, list[tuple[Buffered, float]], np.ndarray | None]] = []
        for st, evs in zip(states, new):
            labelled = [(e, t) for e in evs if (t := target(e.kind, e.value, cfg)) is not None]
            prior = self.cache.get(st.user_id)
            if labelled and (prior is not None or st.events_seen <= len(evs)):
                rows.append((st, labelled, prior))  # else: weights from before these events are gone
        if not rows:
            return out
        r, q = len(rows), max(len(lab) for _, lab, _ in rows)
        items = np.zeros((r, q), np.int64)
        ctx = np.zeros((r, q, cfg.max_context), np.int64)
        for j, (_, lab, _) in enumerate(rows):
            items[j, :len(lab)] = [vocab.item(e.item_id) for e, _ in lab]
            ctx[j, :len(lab)] = [event_context_ids(e, cfg) for e, _ in lab]
        users = torch.tensor([vocab.user(st.user_id) for st, _, _ in rows])
        init = {k: v.unsqueeze(0).expand(r, *v.shape) for k, v in self.init.items()}
        flat = np.stack([p if p is not None else self._init_flat for _, _, p in rows])
        adapted = self._unflatten(torch.from_numpy(flat))
        it, cx = torch.from_numpy(items), torch.from_numpy(ctx)
        with torch.no_grad():
            p_init = torch.sigmoid(predict_rows(self.model, init, users, it, cx)).numpy()
            p_ad = torch.sigmoid(predict_rows(self.model, adapted, users, it, cx)).numpy()
        for j, (_, lab, _) in enumerate(rows):
            out.y += [t for _, t in lab]
            out.init += p_init[j, :len(lab)].tolist()
            out.adapted += p_ad[j, :len(lab)].tolist()
        return out

    def recommend(self, states: Sequence[UserState], now: float | None = None,
                  timings: Timings | None = None, domains: Sequence[str] | None = None) -> list[Recommendation]:
        """Fresh top-K for each state (consumed items excluded), adapting them all at once: one
        recommendation per user and domain (``domains``, default: the served ones), user by user."""
        doms = self.domains if domains is None else list(domains)
        missing = [d for d in doms if d not in self._columns]
        if missing:
            raise ValueError(f"domains {', '.join(map(repr, missing))} are not served (serving "
                             f"{', '.join(map(repr, self.domains))})")
        if not states or not doms:
            return []
        t0 = time.perf_counter()
        fast = {k: v.numpy() for k, v in self.adapt(states).items()}
        t1 = time.perf_counter()
        vocab, cfg, nd = self.bundle.vocab, self.cfg, len(doms)
        # rows user-major: user b in domain d is row b * nd + d (its adapted weights repeated)
        users = np.repeat(np.array([vocab.user(s.user_id) for s in states], np.int64), nd)
        ctx = np.array([current_context(s.buffer, cfg, d) for s in states for d in doms], np.int64)
        fast_rows = {k: np.repeat(v, nd, axis=0) for k, v in fast.items()} if nd > 1 else fast
        excl = [{i - 1 for c in s.consumed if (i := vocab.item(c)) > 0} for s in states]
        excl_rows = [e for e in excl for _ in doms]
        if self.candidates is not None and all(d in self._items for d in doms):
            cols, vals = self._rank_in_domains(users, ctx, fast_rows, [d for _ in states for d in doms], excl_rows)
        else:
            scores = self.scorer.score(users, ctx, fast_rows)
            masks = [(j, m) for j, d in enumerate(doms) if (m := self._columns[d]) is not None]
            if masks and not scores.flags.writeable:
                scores = scores.copy()
            for j, m in masks:
                scores[j::nd, ~m] = -np.inf  # another domain's items: never recommended here
            cols, vals = top_k(scores, self.k, excl_rows)
        t2 = time.perf_counter()
        if timings is not None:
            timings.adapt_s, timings.score_s = t1 - t0, t2 - t1
        flat = np.concatenate([v.reshape(len(states), -1) for v in fast.values()], axis=1)
        for b, s in enumerate(states):
            self._remember(s.user_id, flat[b].copy())
        emitted = time.time() if now is None else now
        rows = [(s, d) for s in states for d in doms]  # the scored rows' order
        return [
            Recommendation(
                user_id=s.user_id, domain=d,
                items=[vocab.items[c] for c, v in zip(cols[r], vals[r]) if np.isfinite(v)],
                scores=[round(float(v), 6) for v in vals[r] if np.isfinite(v)],
                model_version=self.bundle.version, events_seen=s.events_seen,
                last_event_ts=s.last_event_ts, emitted_at=emitted,
            )
            for r, (s, d) in enumerate(rows)
        ]

    def _rank_in_domains(self, users: np.ndarray, ctx: np.ndarray, fast: dict[str, np.ndarray],
                         doms: Sequence[str], exclude: Sequence[set[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Top-K of each row among its domain's items only (``doms[r]``), consumed ones skipped:
        columns as :func:`top_k` gives them (item index - 1)."""
        assert self.candidates is not None
        width = max(len(self._items[d]) for d in doms)
        items = np.ones((len(doms), width), np.int64)  # padding: any real item, never valid
        valid = np.zeros((len(doms), width), bool)
        for r, d in enumerate(doms):
            own = self._items[d]
            items[r, :len(own)], valid[r, :len(own)] = own, True
            if exclude[r]:
                valid[r, :len(own)] &= ~np.isin(own - 1, np.fromiter(exclude[r], np.int64))
        return top_k_items(self.candidates.score(users, ctx, fast, items), items, valid, self.k)

    def _unflatten(self, flat: torch.Tensor) -> Fast:
        """``(R, P)`` flat adapted weights → ``{name: (R, *shape)}`` (views)."""
        out, at = {}, 0
        for k, v in self.init.items():
            n = v.numel()
            out[k] = flat[:, at:at + n].reshape(flat.shape[0], *v.shape)
            at += n
        return out

    def _remember(self, user_id: str, fast: np.ndarray) -> None:
        if self.cache_users <= 0:
            return
        self.cache[user_id] = fast
        self.cache.move_to_end(user_id)
        while len(self.cache) > self.cache_users:
            self.cache.popitem(last=False)
