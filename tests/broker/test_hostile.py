"""A hostile producer against a real worker on the real broker.

The corpus, built here: valid events for 30 users, every class of malformed or edge-case payload
(non-UTF-8 inside JSON, ~1 MB payloads, a 400-digit timestamp, a BOM, no key, a wrong key, a
negative value, millisecond and year-3000 timestamps, control characters in ids, null and missing
context, deep nesting, duplicate members), a 5,000-event burst for one user, and sentinel users
last. Checked from outside: no agent crash, every invalid payload in the dead-letter topic with
its reason, every valid event counted exactly once (each user's newest ``events_seen``), the
sentinels get recommendations.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from typing import Any

import pytest
from kafka import KafkaProducer

from metarec.events import Event, encode, new_event
from tests.broker.conftest import WorkerProcess, consume_json

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HOT = 5000


def body(ev: Event, **over: Any) -> dict[str, Any]:
    d = {f: getattr(ev, f) for f in ev.__struct_fields__}
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


def dumps(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


class Corpus:
    """Payloads with what each must become: a valid event of a user, or a dead letter with a reason."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes | None, bytes]] = []
        self.expect_dead: dict[str, str] = {}  # sha256 of the payload -> reason
        self.expect_seen: Counter[str] = Counter()  # user -> valid events

    def valid(self, key: bytes | None, raw: bytes, user: str) -> None:
        self.messages.append((key, raw))
        self.expect_seen[user] += 1

    def invalid(self, key: bytes | None, raw: bytes, reason: str) -> None:
        digest = hashlib.sha256(raw).hexdigest()
        assert digest not in self.expect_dead, "each invalid payload must be distinct"
        self.messages.append((key, raw))
        self.expect_dead[digest] = reason


def build(sim_events: list[Event]) -> tuple[Corpus, list[str]]:
    c = Corpus()
    now = time.time()
    users = sorted({e.user_id for e in sim_events})[:30]
    evs = [e for e in sim_events if e.user_id in users][:150]
    for e in evs[:60]:
        c.valid(e.user_id.encode(), encode(e), e.user_id)
    base = evs[0]
    k = base.user_id.encode()
    # not UTF-8 inside the JSON
    for i, bad in enumerate((b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"caf\xe9")):
        c.invalid(k, dumps(body(base, event_id=f"bad-utf8-{i}", item_id="@")).replace(b"@", bad), "bad_encoding")
    # about 1 MB
    c.invalid(k, os.urandom(1_000_000), "oversized")
    c.invalid(k, dumps(body(base, context={"blob": "x" * 900_000})), "oversized")
    c.invalid(k, dumps(body(base, item_id="i" * 999_700)), "oversized")
    c.invalid(k, dumps(body(base, event_id="huge-ts")).replace(str(base.ts).encode(), b"9" * 400), "bad_value")
    c.invalid(k, dumps(body(base, event_id="neg", value=-1)), "bad_value")
    c.invalid(k, dumps(body(base, event_id="ms", ts=now * 1000)), "bad_timestamp")
    c.invalid(k, dumps(body(base, event_id="y3000", ts=32_503_680_000.0)), "bad_timestamp")
    for i, bad_id in enumerate(("a\x00b", "a\nb", "\x1b[31mred\x1b[0m", "", "   ")):
        c.invalid(bad_id.encode(), dumps(body(base, event_id=f"ctl-{i}", user_id=bad_id)), "bad_value")
    c.invalid(b"someone-else", dumps(body(base, event_id="wrong-key")), "key_mismatch")
    c.invalid(k, b"[" * 3000 + b"]" * 3000, "bad_json")
    c.invalid(k, b"\x00\x01\x02 not json", "bad_json")
    # valid edge cases: each counts once for its user
    e = evs[60]
    c.valid(e.user_id.encode(), b"\xef\xbb\xbf" + encode(e), e.user_id)  # a UTF-8 BOM
    e = evs[61]
    c.valid(None, encode(e), e.user_id)  # no key: re-keyed to the user's partition
    e = evs[62]
    c.valid(e.user_id.encode(), dumps(body(e, context=None)), e.user_id)
    e = evs[63]
    c.valid(e.user_id.encode(), dumps(body(e, context=...)), e.user_id)
    e = evs[64]
    dup = dumps(body(e)).replace(b'"user_id": ', b'"user_id": "decoy", "user_id": ', 1)
    c.valid(e.user_id.encode(), dup, e.user_id)  # duplicate members: the last one counts
    for e in evs[65:]:
        c.valid(e.user_id.encode(), encode(e), e.user_id)
    items = sorted({x.item_id for x in sim_events})
    for i in range(HOT):  # one hot key
        hot = new_event("hot-user", items[i % len(items)], "click", i % 2, ts=now - HOT + i, event_id=f"hot-{i}")
        c.valid(b"hot-user", encode(hot), "hot-user")
    sentinels = [f"sentinel-{i}" for i in range(3)]
    for s in sentinels:
        c.valid(s.encode(), encode(new_event(s, items[0], "view", 1, ts=now)), s)
    return c, sentinels


def produce_all(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=1_048_000, linger_ms=5)
    for key, value in messages:
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()


def test_a_hostile_corpus_on_the_real_broker(worker: WorkerProcess, kafka_bootstrap: str, worker_env: dict,
                                             sim_events: list) -> None:
    corpus, sentinels = build(sim_events)
    produce_all(kafka_bootstrap, worker_env["METAREC_TOPIC_EVENTS"], corpus.messages)

    def recs_done(msgs: list[dict[str, Any]]) -> bool:
        seen = {m["user_id"]: m["events_seen"] for m in msgs}
        return all(seen.get(s) == 1 for s in sentinels) and seen.get("hot-user") == HOT

    recs = consume_json(kafka_bootstrap, worker_env["METAREC_TOPIC_RECOMMENDATIONS"], recs_done, timeout=180)
    dead = consume_json(kafka_bootstrap, worker_env["METAREC_TOPIC_DEAD_LETTER"],
                        lambda m: len(m) >= len(corpus.expect_dead), timeout=60)
    newest: dict[str, int] = {}
    for m in recs:
        newest[m["user_id"]] = max(newest.get(m["user_id"], 0), m["events_seen"])
    wrong = {u: (newest.get(u), n) for u, n in corpus.expect_seen.items() if newest.get(u) != n}
    assert not wrong, f"users whose events_seen is not the valid events sent (seen, sent): {wrong}"
    got = {d["raw_sha256"]: d["reason"] for d in dead}
    assert len(dead) == len(corpus.expect_dead), "one dead letter per invalid payload"
    assert got == corpus.expect_dead
    assert all(len(json.dumps(d)) < 1_000_000 and d["raw_size"] >= 0 for d in dead)
    assert any(d["raw_truncated"] for d in dead), "the ~1 MB payloads are cut, with size and hash kept"
    log = worker.log_path.read_text(errors="replace")
    assert "Crashed" not in log and "crashed" not in log, worker.tail()
    metrics = worker.metrics()
    assert "metarec_agent_restarts_total 0.0" in metrics
    assert "metarec_events_rekeyed_total 1.0" in metrics
    assert worker.proc is not None and worker.proc.poll() is None
