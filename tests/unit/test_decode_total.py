"""decode is total: every input gives an Event or an Invalid with a known reason, never an exception.

Property-based (Hypothesis): arbitrary bytes; valid events mutated by byte flips, truncation,
insertions, duplicate members, deep nesting, huge and non-finite numbers and Unicode edge cases.
Whatever decode accepts satisfies the event invariants; every dead-letter record stays bounded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from metarec import deadletter
from metarec.events import KINDS, LIMITS, MS_THRESHOLD, REASONS, Event, Invalid, Limits, decode, encode

NOW = 1_767_225_600.0  # 2026-01-01
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "click", "value": 1, "ts": NOW - 60,
        "context": {"device": "mobile"}}
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_total(raw: object, limits: Limits = LIMITS) -> Event | Invalid:
    out = decode(raw, limits, now=NOW)  # must not raise
    assert isinstance(out, Event | Invalid)
    if isinstance(out, Invalid):
        assert out.reason in REASONS and out.reason != "internal_error", out
        assert out.detail and len(out.detail) < 1000
    else:
        check_invariants(out, limits)
    return out


def check_invariants(ev: Event, lim: Limits) -> None:
    """What the rest of the worker may rely on for every accepted event."""
    for s in (ev.event_id, ev.user_id, ev.item_id):
        assert 0 < len(s) <= lim.max_id_chars and s.strip()
        s.encode("utf-8")  # no lone surrogates: keys and logs can always encode it
        assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in s)
    assert ev.kind in KINDS
    assert math.isfinite(ev.value) and math.isfinite(ev.ts) and 0 <= ev.ts <= NOW + lim.max_future_s
    assert len(ev.context) <= lim.max_context_fields
    for k, v in ev.context.items():
        assert isinstance(k, str) and isinstance(v, str) and len(v) <= lim.max_context_chars
        (k + v).encode("utf-8")
    again = decode(encode(ev), lim, now=NOW)
    assert again == ev, "an accepted event round-trips"


@FAST
@given(hs.binary(max_size=20_000))
def test_arbitrary_bytes(raw: bytes) -> None:
    out = check_total(raw)
    if isinstance(out, Invalid):
        assert out.raw == raw


@FAST
@given(hs.text(max_size=300))
def test_arbitrary_text_including_lone_surrogates(raw: str) -> None:
    check_total(raw)


@FAST
@given(hs.data())
def test_valid_events_mutated_at_the_byte_level(data: hs.DataObject) -> None:
    raw = bytearray(json.dumps(GOOD).encode())
    for _ in range(data.draw(hs.integers(1, 6))):
        op = data.draw(hs.sampled_from(["flip", "cut", "insert", "delete"]))
        if not raw:
            break
        at = data.draw(hs.integers(0, len(raw) - 1))
        if op == "flip":
            raw[at] ^= 1 << data.draw(hs.integers(0, 7))
        elif op == "cut":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = data.draw(hs.binary(min_size=1, max_size=8))
        else:
            del raw[at]
    check_total(bytes(raw))


_json_leaf = (hs.none() | hs.booleans() | hs.integers(min_value=-(10**400), max_value=10**400)
              | hs.floats(allow_nan=False, allow_infinity=False) | hs.text(max_size=50))
_json = hs.recursive(_json_leaf, lambda kids: hs.lists(kids, max_size=4) | hs.dictionaries(hs.text(max_size=8), kids,
                                                                                         max_size=4), max_leaves=20)


@FAST
@given(hs.sampled_from(sorted(GOOD)), _json)
def test_any_json_value_in_any_field(field: str, value: object) -> None:
    raw = msgspec.json.encode({**GOOD, field: value})
    check_total(raw)


@FAST
@given(hs.sampled_from(["event_id", "user_id", "item_id"]),
       hs.text(hs.characters(codec=None, exclude_categories=()), min_size=0, max_size=200))
def test_unicode_edge_cases_in_ids(field: str, text: str) -> None:
    raw = json.dumps({**GOOD, field: text}, ensure_ascii=True).encode()  # lone surrogates survive as escapes
    check_total(raw)


@FAST
@given(hs.sampled_from(["value", "ts"]), hs.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400",
                                                           "9" * 400, "-" + "9" * 400, "0x10", "01"]))
def test_huge_and_non_finite_numbers(field: str, literal: str) -> None:
    raw = json.dumps({**GOOD, field: "@"}).replace('"@"', literal).encode()
    assert isinstance(check_total(raw), Invalid)


@given(hs.integers(1, 5000), hs.sampled_from(["[", '{"a":']))
@settings(max_examples=60, deadline=None)
def test_deep_nesting(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    check_total(raw, Limits(max_event_bytes=1 << 20))


def test_duplicate_members_take_the_last_one_as_every_json_reader_here_does() -> None:
    raw = b'{"event_id":"e","user_id":"first","user_id":"second","item_id":"i","kind":"view","value":1,"ts":1}'
    out = check_total(raw)
    assert isinstance(out, Event) and out.user_id == "second"


@settings(max_examples=200, deadline=None)
@given(hs.sampled_from(REASONS), hs.binary(max_size=300_000), hs.one_of(hs.none(), hs.binary(max_size=5000)),
       hs.text(max_size=3000))
def test_a_dead_letter_record_is_bounded_and_identifies_the_message(reason: str, raw: bytes, key: bytes | None,
                                                                     detail: str) -> None:
    value = deadletter.record(Invalid(reason, detail, raw), "t", 0, 1, key)
    assert len(value) <= 6 * deadletter.RAW_LIMIT + 8192
    msg = json.loads(value)
    assert msg["raw_size"] == len(raw) and msg["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(msg["raw_b64"]) == raw[:deadletter.RAW_LIMIT]
    assert msg["raw_truncated"] == (len(raw) > deadletter.RAW_LIMIT)
    small = deadletter.minimal(value)
    assert len(small) < 8192 and json.loads(small)["raw_sha256"] == msg["raw_sha256"]
    rkey = deadletter.record_key(key)
    assert rkey is None or len(rkey) <= deadletter.KEY_LIMIT


def test_worst_case_record_fits_the_producer_limit_at_the_largest_setting() -> None:
    raw = b"\x00" * (2 * deadletter.MAX_RAW_LIMIT)  # valid UTF-8 that JSON escapes 6:1
    value = deadletter.record(Invalid("oversized", "x" * 10_000, raw), "t", 0, 1, b"k" * 100_000,
                              raw_limit=deadletter.MAX_RAW_LIMIT)
    assert len(value) < 1_000_000  # the producer's default max request size is 1 MiB


def test_ms_timestamps_are_refused_or_converted_as_configured() -> None:
    ms = NOW * 1000
    raw = json.dumps({**GOOD, "ts": ms}).encode()
    out = decode(raw, now=NOW)
    assert isinstance(out, Invalid) and out.reason == "bad_timestamp" and "milliseconds" in out.detail
    conv = decode(raw, Limits(ms_timestamps="convert"), now=NOW)
    assert isinstance(conv, Event) and conv.ts == NOW
    assert MS_THRESHOLD > NOW * 10  # the threshold cannot be hit by a seconds timestamp for millennia


def test_the_judgement_calls() -> None:
    def reason(**over: object) -> str | None:
        d = {k: v for k, v in {**GOOD, **over}.items() if v is not ...}
        out = decode(json.dumps(d).encode(), now=NOW)
        return out.reason if isinstance(out, Invalid) else None

    assert decode(b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), now=NOW) == decode(json.dumps(GOOD).encode(), now=NOW)
    assert reason(ts=32_503_680_000.0) == "bad_timestamp"  # the year 3000
    assert reason(ts=NOW + 3600) is None  # an hour of clock skew is fine
    assert reason(ts=0) is None  # MovieLens-1M's timestamps are all 0
    for bad in ("", "   ", "a\x00b", "a\nb", "\x1b[31mred", "a\u202eb", "a\u200bb"):
        assert reason(user_id=bad) == "bad_value", repr(bad)
    assert reason(item_id="Ünïcödé 電影 🎬") is None
    assert reason(context=None) is None and reason(context=...) is None
    assert reason(context={"q": "a\nb"}) == "bad_value"
    assert reason(value=-1) == "bad_value" and reason(kind="rate", value=-0.5) == "bad_value"
    assert reason(kind="rate", value=4.5) is None


@FAST
@given(hs.one_of(hs.none(), hs.binary(max_size=64)), hs.one_of(hs.binary(max_size=2000), hs.just(encode(
    Event(event_id="e", user_id="u1", item_id="i", kind="view", value=1.0, ts=NOW)))))
def test_the_per_message_transition_is_total_too(key: bytes | None, raw: bytes) -> None:
    from metarec.pipeline import Applied, Rekey, apply

    out = apply(raw, key, None, buffer_size=8, consumed_size=8, now=NOW)
    assert isinstance(out, Applied | Rekey | Invalid)
    if isinstance(out, Applied):
        assert key == out.event.user_id.encode() and out.state.events_seen == 1
    if isinstance(out, Rekey):
        assert not key and out.key == out.event.user_id.encode() and out.raw == raw
    if isinstance(out, Invalid):
        assert out.reason in REASONS and out.reason != "internal_error"
