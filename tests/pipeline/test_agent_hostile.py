"""Nothing a producer sends can crash the in-memory agent or vanish.

Every payload is either applied (counted in ``events_consumed``), dead-lettered with a reason,
or re-keyed; a failing dead-letter send is retried until acknowledged; an exception while
handling one message dead-letters that message (``internal_error``) and the agent goes on.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from metarec import state as st
from metarec.events import REASONS, Event, encode

FUZZ_N = int(os.environ.get("METAREC_FUZZ_N", "100000"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def sample(a: Any, name: str, labels: dict[str, str] | None = None) -> float:
    return a.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def total(a: Any, name: str, label: str, values: tuple[str, ...]) -> float:
    return sum(sample(a, name, {label: v}) for v in values)


def corpus(events: list[Event], n: int, seed: int = 0) -> list[tuple[bytes | None, bytes]]:
    """``n`` payloads: valid events (keyed, unkeyed, mis-keyed), their mutations, and junk."""
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(n):
        ev = events[i % len(events)]
        raw, key = bytearray(encode(ev)), ev.user_id.encode()
        r = rng.random()
        if r < 0.15:
            pass  # valid, keyed
        elif r < 0.17:
            key = None  # valid, no key: re-keyed
        elif r < 0.19:
            key = b"someone-else"
        elif r < 0.60:
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(raw))
                op = rng.random()
                if op < 0.5:
                    raw[at] ^= 1 << rng.randrange(8)
                elif op < 0.7:
                    del raw[at:]
                    if not raw:
                        break
                else:
                    raw[at:at] = rng.randbytes(rng.randint(1, 6))
        elif r < 0.75:
            raw = bytearray(rng.randbytes(rng.randint(0, 300)))
        elif r < 0.80:
            raw = bytearray(rng.randbytes(rng.randint(9000, 40000)))  # oversized
        elif r < 0.90:
            d = json.loads(raw)
            field = rng.choice(sorted(d))
            d[field] = rng.choice([None, "", "\x00", "\u202e", 10**400, -1, 1e308, [], {"a": [1]}, "x" * 500,
                                   True, "a\nb", "\ud800"])
            raw = bytearray(json.dumps(d).encode())
        else:
            raw = bytearray(b"[" * rng.randint(1, 4000) + b"]" * rng.randint(0, 10))
        out.append((key, bytes(raw)))
    return out


@pytest.mark.slow
def test_a_fuzz_of_100k_payloads_through_the_agent(worker_sinks, sim_events) -> None:
    a, sinks = worker_sinks
    users = sorted({e.user_id for e in sim_events})[:25]
    events = [e for e in sim_events if e.user_id in users][:400]
    payloads = corpus(events, FUZZ_N)

    async def go() -> None:
        async with a.agent.test_context() as agent:
            for i, (key, raw) in enumerate(payloads):
                await agent.put(raw, key=key)
                if i % 5000 == 4999:
                    await a.flush()
            await a.flush()

    run(go())
    consumed = total(a, "metarec_events_consumed_total", "kind", ("view", "click", "rate", "purchase",
                                                                    "add_to_cart", "skip"))
    dead, rekeyed = sample(a, "metarec_events_dead_lettered_total"), sample(a, "metarec_events_rekeyed_total")
    assert consumed + dead + rekeyed == len(payloads), "every payload is applied, dead-lettered or re-keyed"
    assert dead == len(sinks.dead) and rekeyed == len(sinks.rekeyed)
    assert sample(a, "metarec_agent_restarts_total") == 0
    assert sample(a, "metarec_events_invalid_total", {"reason": "internal_error"}) == 0
    assert {d["reason"] for _, d in sinks.dead} <= set(REASONS) - {"internal_error"}
    assert all(d["detail"] and d["raw_size"] >= 0 for _, d in sinks.dead)
    # each user's state counts its distinct valid keyed events, at least the untouched ones
    untouched: dict[str, set[str]] = {}
    for (key, raw), i in zip(payloads, range(len(payloads))):
        ev = events[i % len(events)]
        if key == ev.user_id.encode() and raw == encode(ev):
            untouched.setdefault(ev.user_id, set()).add(ev.event_id)
    for user, ids in untouched.items():
        state = st.loads(a.store.stored(user.encode()))
        assert state.events_seen >= len(ids)
    assert sinks.recs, "the valid events still produce recommendations"


def test_an_exception_while_handling_one_message_dead_letters_it_and_the_agent_goes_on(worker_sinks,
                                                                                       sim_events) -> None:
    a, sinks = worker_sinks
    good = sim_events[0]
    original = a.store.get

    def state(key: bytes | None) -> Any:
        if key == b"poison":
            raise RuntimeError("a bug that only this message hits")
        return original(key)

    a.store.get = state  # type: ignore[method-assign]
    poison = encode(Event(**{**{f: getattr(good, f) for f in good.__struct_fields__}, "user_id": "poison"}))

    async def go() -> None:
        async with a.agent.test_context() as agent:
            await agent.put(poison, key=b"poison")
            await agent.put(encode(good), key=good.user_id.encode())
            await a.flush()

    run(go())
    assert [d["reason"] for _, d in sinks.dead] == ["internal_error"]
    detail = sinks.dead[0][1]["detail"]
    assert detail.startswith("RuntimeError") and "digest" in detail and "Traceback" not in detail
    assert [r.user_id for r in sinks.recs] == [good.user_id]
    assert sample(a, "metarec_events_invalid_total", {"reason": "internal_error"}) == 1
    assert sample(a, "metarec_agent_restarts_total") == 0


def test_a_failed_dead_letter_send_is_retried_until_acknowledged(worker_sinks) -> None:
    a, sinks = worker_sinks
    attempts: list[int] = []
    inner = a.send_dead

    async def flaky(key: bytes | None, value: bytes) -> None:
        attempts.append(len(value))
        if len(attempts) <= 2:
            raise KafkaConnectionError("broker away")
        await inner(key, value)

    a.send_dead = flaky  # type: ignore[method-assign]

    async def go() -> None:
        async with a.agent.test_context() as agent:
            await agent.put(b"{oops", key=b"u1")
            for _ in range(100):  # the agent retries after 0.1 s, then 0.2 s
                if sinks.dead:
                    break
                await asyncio.sleep(0.05)

    run(go())
    assert len(attempts) == 3 and len(sinks.dead) == 1
    assert sample(a, "metarec_delivery_retries_total", {"what": "dead_letter"}) == 2
    assert sample(a, "metarec_events_dead_lettered_total") == 1


def test_a_record_the_broker_refuses_is_replaced_by_its_minimal_form(worker_sinks) -> None:
    a, sinks = worker_sinks
    inner = a.send_dead

    async def picky(key: bytes | None, value: bytes) -> None:
        if len(value) > 4096:
            raise MessageSizeTooLargeError("too large")
        await inner(key, value)

    a.send_dead = picky  # type: ignore[method-assign]
    big = b"\xff" * 50_000

    async def go() -> None:
        async with a.agent.test_context() as agent:
            await agent.put(big, key=b"k" * 5000)

    run(go())
    [(key, rec)] = sinks.dead
    assert rec["reason"] == "oversized" and rec["raw_size"] == 50_000 and rec["raw_b64"] == ""
    assert key is not None and key.startswith(b"sha256:")


def test_a_keyless_event_is_re_keyed_to_its_user_and_counted_once(worker_sinks, sim_events) -> None:
    a, sinks = worker_sinks
    ev = sim_events[3]

    async def go() -> None:
        async with a.agent.test_context() as agent:
            await agent.put(encode(ev), key=None)
            assert sinks.rekeyed == [(ev.user_id.encode(), encode(ev))]
            for key, value in sinks.rekeyed:  # what the broker delivers back, to the user's partition
                await agent.put(value, key=key)
            await agent.put(encode(ev), key=ev.user_id.encode())  # and a redelivery
            await a.flush()

    run(go())
    assert sinks.dead == []
    assert [r.events_seen for r in sinks.recs] == [1]


def test_a_batch_that_fails_costs_only_the_failing_users_recommendation(worker_sinks, sim_events) -> None:
    a, sinks = worker_sinks
    users = sorted({e.user_id for e in sim_events})[:3]
    bad = users[1]
    original = a.compute.batch

    async def batch(states: Any, raws: Any, news: Any) -> Any:
        if any(s.user_id == bad for s in states):
            raise ValueError("this user's state breaks the model")
        return await original(states, raws, news)

    a.compute.batch = batch  # type: ignore[method-assign]

    async def go() -> None:
        async with a.agent.test_context() as agent:
            for e in sim_events:
                if e.user_id in users:
                    await agent.put(encode(e), key=e.user_id.encode())
            await a.flush()

    run(go())
    assert sorted(r.user_id for r in sinks.recs) == sorted(set(users) - {bad})
    assert sample(a, "metarec_batch_errors_total") == 1
    assert a.store.stored(bad.encode()) is not None, "the failing user's state is kept"
