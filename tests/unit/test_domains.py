"""Domains on the wire, in the state, in the catalog and in the model's features."""

from __future__ import annotations

import json

import msgspec
import pytest

from metarec import state as st
from metarec.events import DOMAIN_KEY, Event, Invalid, decode, encode, model_context, new_event
from metarec.features import current_context, encode_event, event_context_ids
from metarec.model import ModelConfig, Vocab

GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "click", "value": 1, "ts": 1000.0}
NOW = 2000.0


def test_an_event_carries_its_domain_and_the_default_is_omitted_on_the_wire() -> None:
    ev = decode(json.dumps({**GOOD, "domain": "books"}).encode(), now=NOW)
    assert isinstance(ev, Event) and ev.domain == "books"
    assert decode(encode(ev), now=NOW) == ev
    plain = decode(json.dumps(GOOD).encode(), now=NOW)
    assert isinstance(plain, Event) and plain.domain == ""
    assert b"domain" not in encode(plain), "the default domain is not written"
    for default in ("", None):
        got = decode(json.dumps({**GOOD, "domain": default}).encode(), now=NOW)
        assert isinstance(got, Event) and got.domain == ""


@pytest.mark.parametrize("domain,reason", [(3, "bad_type"), (["books"], "bad_type"), ("  ", "bad_value"),
                                           ("bo\x00oks", "bad_value"), ("b\u202eooks", "bad_value"),
                                           ("x" * 129, "bad_value")])
def test_a_bad_domain_is_invalid_with_the_field_named(domain: object, reason: str) -> None:
    got = decode(json.dumps({**GOOD, "domain": domain}).encode(), now=NOW)
    assert isinstance(got, Invalid) and got.reason == reason and "domain" in got.detail


def test_the_context_may_not_use_the_domain_key() -> None:
    got = decode(json.dumps({**GOOD, "context": {DOMAIN_KEY: "books"}}).encode(), now=NOW)
    assert isinstance(got, Invalid) and got.reason == "bad_value" and "reserved" in got.detail


def test_the_state_keeps_each_events_domain_and_reads_states_from_before_domains() -> None:
    evs = [new_event("u", "a", "click", 1, 10, domain="books"), new_event("u", "b", "click", 1, 11)]
    s, _ = st.step(None, evs)
    assert [b.domain for b in s.buffer] == ["books", ""]
    assert st.loads(st.dumps(s)) == s
    old = msgspec.json.encode({"user_id": "u", "events_seen": 1, "buffer": [["e", "a", "click", 1.0, 10.0, {}]]})
    assert st.loads(old).buffer[0].domain == "", "a state written before domains: the default domain"


def test_the_domain_is_one_more_context_feature() -> None:
    cfg = ModelConfig(n_users=3, n_items=3)
    assert model_context({"device": "tv"}, "") == {"device": "tv"}
    assert model_context({"device": "tv"}, "books") == {"device": "tv", DOMAIN_KEY: "books"}
    books, music = (new_event("u", "a", "click", 1, 10, {"device": "tv"}, domain=d) for d in ("books", "music"))
    plain = new_event("u", "a", "click", 1, 10, {"device": "tv"})
    ids = {d: event_context_ids(e, cfg) for d, e in (("books", books), ("music", music), ("", plain))}
    assert len(set(ids.values())) == 3 and all(len(v) == cfg.max_context for v in ids.values())
    vocab = Vocab(users=["u"], items=["a"])
    s, new = st.step(None, [books])
    assert encode_event(new[0], vocab, cfg)[1] == ids["books"], "live and training features agree"
    # recommending in another domain: the newest event's context, with that domain's feature
    assert current_context(s.buffer, cfg) == list(ids["books"])
    assert current_context(s.buffer, cfg, "music") == list(ids["music"])
    assert current_context(s.buffer, cfg, "") == list(ids[""])


def test_the_catalog_knows_each_items_domain() -> None:
    evs = [new_event("u", "b", "click", 1, 1, domain="music"), new_event("u", "a", "click", 1, 2, domain="books"),
           new_event("u", "b", "click", 1, 3, domain="books")]
    v = Vocab.of_events(["u"], evs)
    assert v.items == ["a", "b"] and v.item_domains == ["books", "music"]  # b: the domain it was first seen in
    assert v.domains() == ["books", "music"] and v.domain_of("b") == "music" and v.domain_of("zz") is None
    assert v.in_domain("books").tolist() == [True, False]
    assert Vocab.from_json(v.to_json()) == v
    plain = Vocab.of_events(["u"], [new_event("u", "a", "click", 1, 1)])
    assert plain.item_domains == [] and plain.domains() == [""] and plain.in_domain("").all()
    assert "item_domains" not in plain.to_json(), "a catalog without domains is written as before"
    with pytest.raises(ValueError, match="item domains"):
        Vocab(items=["a", "b"], item_domains=["books"])


def test_latest_keeps_each_users_newest_per_domain_and_overall() -> None:
    """The worker's GET view: per (user, domain), and without a domain the user's newest, as an LRU."""
    from metarec.recommendation import Recommendation
    from services.adapter.views import Latest

    def rec(user: str, domain: str, at: float) -> Recommendation:
        return Recommendation(user_id=user, domain=domain, items=["i"], scores=[1.0], model_version="v",
                              events_seen=1, last_event_ts=at, emitted_at=at)

    latest = Latest(size=3)
    latest.remember(rec("a", "books", 1.0))
    latest.remember(rec("a", "music", 2.0))
    latest.remember(rec("b", "books", 3.0))
    assert latest.get("a", "books").emitted_at == 1.0  # type: ignore[union-attr]
    assert latest.get("a").domain == "music" and latest.get("b").domain == "books"  # type: ignore[union-attr]
    latest.remember(rec("a", "books", 4.0))  # a's newest is books again
    assert latest.get("a").emitted_at == 4.0  # type: ignore[union-attr]
    latest.remember(rec("c", "books", 5.0))  # evicts the oldest entry: (a, music)
    assert latest.get("a", "music") is None and latest.get("a").domain == "books"  # type: ignore[union-attr]
    latest.remember(rec("d", "books", 6.0))  # evicts (b, books): b has nothing left
    latest.remember(rec("e", "books", 7.0))  # evicts (a, books)
    assert latest.get("b") is None and latest.get("a") is None and latest.get("x") is None
    assert latest.get("e").emitted_at == 7.0  # type: ignore[union-attr]
