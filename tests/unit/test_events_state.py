"""Event validation as data, the per-user state transition, and top-K."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metarec import state as st
from metarec.events import Event, Invalid, decode, encode, new_event
from metarec.score import top_k

GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "click", "value": 1, "ts": 1.5,
        "context": {"device": "mobile"}}


def raw(**over: object) -> bytes:
    d = {**GOOD, **over}
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


def test_a_valid_event_round_trips() -> None:
    ev = decode(raw())
    assert isinstance(ev, Event) and ev.user_id == "u1" and ev.context == {"device": "mobile"}
    assert decode(encode(ev)) == ev


@pytest.mark.parametrize("payload, reason", [
    (b"{not json", "bad_json"),
    (b"[1, 2]", "bad_type"),
    (raw(user_id=...), "missing_field"),
    (raw(user_id=42), "bad_type"),
    (raw(value="1"), "bad_type"),
    (raw(value=True), "bad_type"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","kind":"click","value":NaN,"ts":1}', "bad_json"),
    (raw(kind="rate", value=float("inf")), "bad_json"),  # Infinity is not JSON
    (raw(kind="rate", value=11), "bad_value"),
    (raw(kind="teleport"), "unknown_kind"),
    (raw(value=0.5), "bad_value"),
    (raw(ts=-1), "bad_timestamp"),
    (raw(context={"a": 1}), "bad_type"),
    (raw(context={str(i): "x" for i in range(40)}), "bad_value"),
    (raw(user_id=""), "bad_value"),
    (b"x" * 10_000, "oversized"),
    (None, "missing_field"),
])
def test_invalid_events_are_data_with_a_reason(payload: bytes | None, reason: str) -> None:
    out = decode(payload)
    assert isinstance(out, Invalid), out
    assert out.reason == reason, out.detail
    assert out.detail
    assert out.raw == (payload or b"")


def test_nan_literal_in_json_is_rejected_even_if_parsed() -> None:
    out = decode(raw(kind="rate", value=float("nan")))  # json.dumps writes NaN
    assert isinstance(out, Invalid) and out.reason in ("bad_json", "bad_value")


def ev(i: int, item: str = "a", user: str = "u") -> Event:
    return new_event(user, item, "click", 1, ts=float(i), event_id=f"e{i}")


def test_step_buffers_counts_and_bounds() -> None:
    s, new = st.step(None, [ev(0, "a"), ev(1, "b")], buffer_size=3, consumed_size=2)
    assert s.events_seen == 2 and len(new) == 2 and s.last_event_ts == 1.0
    s, new = st.step(s, [ev(2, "c"), ev(3, "a")], buffer_size=3, consumed_size=2)
    assert s.events_seen == 4
    assert [b.item_id for b in s.buffer] == ["b", "c", "a"]  # oldest dropped
    assert s.consumed == ("c", "a")  # bounded, most recent last, no duplicates


def test_step_drops_redelivered_events() -> None:
    s, _ = st.step(None, [ev(0), ev(1)])
    s2, new = st.step(s, [ev(1)])
    assert new == () and s2 == s


def test_step_refuses_mixed_users() -> None:
    with pytest.raises(ValueError, match="one user per call"):
        st.step(None, [ev(0, user="a"), ev(1, user="b")])


def test_state_serialization_round_trips() -> None:
    s, _ = st.step(None, [ev(0), ev(1, "b")])
    assert st.loads(st.dumps(s)) == s


def test_top_k_excludes_and_orders() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]], np.float32)
    cols, vals = top_k(scores, 2, [{1}, set()])
    assert cols.tolist() == [[3, 2], [0, 1]]
    assert vals[0].tolist() == pytest.approx([0.7, 0.5])
    cols, vals = top_k(scores, 4, [{0, 1, 2}, set()])
    assert cols[0, 0] == 3 and np.isneginf(vals[0, 1:]).all()


def test_a_dead_letter_keeps_the_raw_bytes_the_reason_and_the_origin() -> None:
    import base64
    import hashlib
    import json

    from metarec.deadletter import record

    for raw, reason in ((b'{"event_id": 1', "bad_json"), (b"\xff\xfe not utf-8", "bad_encoding")):
        bad = decode(raw)
        assert isinstance(bad, Invalid) and bad.reason == reason, bad
        msg = json.loads(record(bad, "events", 3, 41, key=b"u1", now=12.5))
        assert msg["reason"] == reason and msg["detail"]
        assert base64.b64decode(msg["raw_b64"]) == raw
        assert msg["raw_text"] == (raw.decode() if raw.startswith(b"{") else None)
        assert msg["raw_size"] == len(raw) and msg["raw_sha256"] == hashlib.sha256(raw).hexdigest()
        assert msg["raw_truncated"] is False
        assert msg["source"] == {"topic": "events", "partition": 3, "offset": 41}
        assert msg["key"] == "u1" and msg["dead_lettered_at"] == 12.5


def test_state_and_recommendations_stay_out_of_the_garbage_collector() -> None:
    import gc

    from metarec.recommend import Recommendation

    evs = [Event(event_id=f"e{i}", user_id="u1", item_id=f"i{i}", kind="view", value=1.0, ts=float(i),
                 context={"device": "web"}) for i in range(3)]
    state, new = st.step(None, evs)
    rec = Recommendation(user_id="u1", items=["i1"], scores=[0.5], model_version="v", events_seen=3,
                         last_event_ts=2.0, emitted_at=3.0)
    assert not gc.is_tracked(state) and not any(gc.is_tracked(b) for b in new) and not gc.is_tracked(rec)
    assert st.loads(st.dumps(state)) == state  # still the same data


def test_a_replay_longer_than_the_buffer_is_not_counted_twice() -> None:
    """A rebalance or crash replays from the committed offset; the replay may span more events
    than the buffer remembers ids of. The position (partition, offset) recognizes all of them."""
    from metarec.pipeline import Applied, apply

    evs = [new_event("u", f"i{i}", "click", 1, ts=float(i), event_id=f"e{i}") for i in range(200)]
    state = None
    for off, e in enumerate(evs):
        out = apply(encode(e), b"u", state, buffer_size=8, consumed_size=8, position=(3, 1000 + off))
        assert isinstance(out, Applied)
        state = out.state
    assert state is not None and state.events_seen == 200 and (state.partition, state.offset) == (3, 1199)
    for off, e in enumerate(evs):  # the whole partition again, from an old committed offset
        out = apply(encode(e), b"u", state, buffer_size=8, consumed_size=8, position=(3, 1000 + off))
        assert isinstance(out, Applied) and out.new == () and out.state is state
    without = None  # without positions only the last 8 ids are known: the old behaviour
    for e in evs + evs:
        without, _ = st.step(without, [e], buffer_size=8, consumed_size=8)
    assert without.events_seen > 200
    moved = apply(encode(new_event("u", "i", "view", 1, ts=1.0, event_id="fresh")), b"u", state, 8, 8,
                  position=(5, 2))  # another partition (the topic was repartitioned): applied
    assert isinstance(moved, Applied) and moved.new and moved.state.partition == 5
