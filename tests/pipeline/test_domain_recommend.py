"""Recommendations per domain, in memory: a real trained two-domain model, onnxruntime scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metarec import artifact
from metarec import state as st
from metarec.events import new_event
from metarec.recommend import Recommender
from metarec.score import OnnxCandidateScorer, OnnxScorer
from tests.conftest import DOMAINS


def recommender(model_dir: Path, **kw: object) -> Recommender:
    bundle = artifact.load(model_dir)
    return Recommender(bundle, OnnxScorer(bundle.onnx_path), **{"top_k": 5, **kw})  # type: ignore[arg-type]


def books_user(n: int = 6, user: str = "new-user") -> st.UserState:
    """A user new to the model with ``n`` events in books (clicks and views), none in music."""
    books = [f"i{k}" for k in range(0, 60, 2)]  # the simulator's round-robin: even items are books
    evs = [new_event(user, books[k], "click" if k % 2 else "view", float(k % 2), 100.0 + k, domain="books")
           for k in range(n)]
    return st.step(None, evs)[0]


def test_each_served_domain_gets_its_own_top_k_of_its_own_items(domain_model_dir: Path) -> None:
    rec = recommender(domain_model_dir)
    vocab = rec.bundle.vocab
    assert rec.domains == list(DOMAINS) and vocab.domains() == list(DOMAINS)
    states = [books_user(user="a"), books_user(3, user="b")]
    recs = rec.recommend(states, now=0.0)
    assert [(r.user_id, r.domain) for r in recs] == [("a", "books"), ("a", "music"), ("b", "books"), ("b", "music")]
    for r, s in zip(recs, [s for s in states for _ in DOMAINS]):
        assert len(r.items) == 5 and all(vocab.domain_of(i) == r.domain for i in r.items)
        assert not {b.item_id for b in s.buffer} & set(r.items), "consumed items are excluded"
    # a domain's row in a batch of domains is what recommending in that domain alone gives
    for j, d in enumerate(DOMAINS):
        alone = rec.recommend(states[:1], now=0.0, domains=[d])[0]
        assert alone.items == recs[j].items
        np.testing.assert_allclose(alone.scores, recs[j].scores, atol=1e-5)


def test_history_in_one_domain_moves_the_other_domains_top_k(domain_model_dir: Path) -> None:
    """A books-only user's music recommendations come from their adapted model, not the init's."""
    adapted = recommender(domain_model_dir).recommend([books_user()], now=0.0, domains=["music"])[0]
    init = recommender(domain_model_dir, inner_steps=0).recommend([books_user()], now=0.0, domains=["music"])[0]
    assert adapted.domain == init.domain == "music"
    assert not np.allclose(adapted.scores, init.scores, atol=1e-4)


def test_the_first_event_in_the_new_domain_changes_its_top_k(domain_model_dir: Path) -> None:
    rec = recommender(domain_model_dir, top_k=10)
    s = books_user()
    before = rec.recommend([s], now=0.0, domains=["music"])[0]
    item = next(i for i in reversed(rec.bundle.vocab.items) if rec.bundle.vocab.domain_of(i) == "music"
                and i not in before.items)  # not in the top-K: what changes is the adaptation's doing
    s, _ = st.step(s, [new_event(s.user_id, item, "click", 1.0, 200.0, domain="music")])
    after = rec.recommend([s], now=0.0, domains=["music"])[0]
    assert set(after.items) != set(before.items), "other items entered the top-K"
    assert not np.allclose(after.scores, before.scores, atol=1e-3)


def test_a_worker_serves_the_domains_it_is_configured_for(domain_model_dir: Path, model_dir: Path) -> None:
    only = recommender(domain_model_dir, domains=["music"])
    assert [r.domain for r in only.recommend([books_user()], now=0.0)] == ["music"]
    with pytest.raises(ValueError, match="not in the model's catalog"):
        recommender(domain_model_dir, domains=["films"])
    with pytest.raises(ValueError, match="not served"):
        only.recommend([books_user()], domains=["books"])
    plain = recommender(model_dir)  # a catalog without domains: one recommendation per user, as before
    assert plain.domains == [""]
    got = plain.recommend([st.step(None, [new_event("u", "i1", "click", 1.0, 1.0)])[0]], now=0.0)
    assert [r.domain for r in got] == [""] and len(got[0].items) == 5


def test_scoring_only_each_domains_items_ranks_as_the_masked_catalog(domain_model_dir: Path) -> None:
    """The candidate path (a domain's rows score its own items) gives the masked full catalog's
    top-K: same items, same scores, consumed items still excluded, for one domain and for both."""
    masked = recommender(domain_model_dir, top_k=8)
    cands = recommender(domain_model_dir, top_k=8, candidates=OnnxCandidateScorer(masked.bundle.model))
    assert masked.candidates is None and cands.candidates is not None
    states = [books_user(user="a"), books_user(3, user="b"), books_user(1, user="c")]
    for doms in (None, ["music"], ["books"]):
        want, got = masked.recommend(states, now=0.0, domains=doms), cands.recommend(states, now=0.0, domains=doms)
        assert [(r.user_id, r.domain) for r in got] == [(r.user_id, r.domain) for r in want]
        for w, g in zip(want, got):
            assert g.items == w.items and len(g.items) == 8
            np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)


def test_a_catalog_without_domains_keeps_the_full_catalog_scorer(model_dir: Path) -> None:
    bundle = artifact.load(model_dir)
    rec = recommender(model_dir, candidates=OnnxCandidateScorer(bundle.model))
    assert rec.candidates is None, "nothing to cut: the whole catalog is the one domain"
