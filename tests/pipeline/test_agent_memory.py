"""The faust agent in memory: ``agent.test_context()`` with ``store='memory://'``.

The sinks the worker sends to are replaced by lists (injection, not mocks; see conftest.py):
every other part is the real one — decoding, the table, the coalescing, adaptation and
onnxruntime scoring.
"""

from __future__ import annotations

import asyncio

from metarec.events import encode
from services.adapter.faust_tuning import LeanMonitor


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_events_update_state_and_coalesce_into_one_recommendation(adapter, sim_events) -> None:
    a, recs, dead = adapter
    user = sim_events[0].user_id
    mine = [e for e in sim_events if e.user_id == user][:5]

    async def go() -> None:
        async with a.agent.test_context() as agent:
            for e in mine:
                await agent.put(encode(e), key=user.encode())
            await a.flush()

    run(go())
    assert dead == []
    assert len(recs) == 1, "five events of one user before a flush coalesce into one recommendation"
    rec = recs[0]
    assert rec.user_id == user and rec.events_seen == 5
    assert len(rec.items) == a.settings.top_k
    assert not set(rec.items) & {e.item_id for e in mine}, "consumed items are excluded"
    assert rec.scores == sorted(rec.scores, reverse=True)
    assert rec.model_version == a.services.version


def test_malformed_events_are_dead_lettered_and_the_agent_keeps_going(adapter, sim_events) -> None:
    a, recs, dead = adapter
    good = sim_events[1]

    async def go() -> None:
        async with a.agent.test_context() as agent:
            await agent.put(b"{oops", key=b"u1")
            await agent.put(encode(good), key=b"someone-else")  # keyed by another user
            await agent.put(encode(good), key=good.user_id.encode())
            await a.flush()

    run(go())
    assert [d[1]["reason"] for d in dead] == ["bad_json", "key_mismatch"]
    assert dead[0][1]["raw_text"] == "{oops"
    assert [r.user_id for r in recs] == [good.user_id]
    text = a.metrics.registry.get_sample_value
    assert text("metarec_events_invalid_total", {"reason": "bad_json"}) == 1
    assert text("metarec_events_dead_lettered_total") == 2
    assert text("metarec_recommendations_emitted_total") == 1


def test_state_accumulates_across_flushes_and_live_quality_is_recorded(adapter, sim_events) -> None:
    a, recs, _ = adapter
    user = sim_events[0].user_id
    mine = [e for e in sim_events if e.user_id == user][:6]

    async def go() -> None:
        async with a.agent.test_context() as agent:
            for e in mine[:3]:
                await agent.put(encode(e), key=user.encode())
            await a.flush()
            for e in mine[3:]:
                await agent.put(encode(e), key=user.encode())
            await a.flush()

    run(go())
    assert [r.events_seen for r in recs] == [3, 6]
    get = a.metrics.registry.get_sample_value
    # every labelled event was predicted by both models before it was learned from
    assert get("metarec_live_predictions_total", {"model": "init"}) == 6
    assert get("metarec_live_predictions_total", {"model": "adapted"}) == 6


def test_the_changelog_gets_one_record_per_changed_user_per_batch(adapter, sim_events) -> None:
    from metarec import state as st

    a, _, _ = adapter
    users = sorted({e.user_id for e in sim_events})[:3]
    mine = [e for e in sim_events if e.user_id in users]
    sent: list[tuple[int | None, bytes, bytes]] = []
    a.table.send_changelog = lambda partition, key, value, *rest: sent.append((partition, key, value))
    commits: list[int] = []

    async def commit(topics: object = None, start_new_transaction: bool = True) -> bool:
        commits.append(len(sent))  # what was written when the offsets would go to the broker
        return True

    a.app.consumer.force_commit = commit  # faust's own, which every commit goes through, needs a broker

    async def go() -> None:
        async with a.agent.test_context() as agent:
            for e in mine[:30]:
                await agent.put(encode(e), key=e.user_id.encode())
            assert sent == [], "nothing is written per event"
            list(a.app.on_init_dependencies())  # what a starting worker does: the monitor becomes a sensor
            assert isinstance(a.app.monitor, LeanMonitor) and a.app.monitor in a.app.sensors
            await a.app.consumer.force_commit()  # a periodic, rebalance or shutdown commit
            assert sent and commits == [len(sent)], "a commit writes the changed users' states first"
            await a.flush()

    run(go())
    by_key = {key: value for _, key, value in sent}
    assert len(sent) == len(by_key) == len({e.user_id for e in mine[:30]}), "one record per changed user"
    for key, value in by_key.items():
        assert value == a.table.get(key), "the record is the user's newest state"
        assert st.loads(value).events_seen == sum(1 for e in mine[:30] if e.user_id.encode() == key)
    a.store.write()
    assert len(sent) == len(by_key), "nothing changed since: nothing written"


async def _settle() -> None:
    for _ in range(20):  # let the agent take what was put
        await asyncio.sleep(0)


def test_a_message_is_acknowledged_only_once_its_recommendation_is_out(adapter, sim_events) -> None:
    """No offset is committed ahead of a recommendation: a crash before it went out replays the event."""
    a, recs, dead = adapter
    e = sim_events[0]
    seen: dict[str, bool] = {}

    async def go() -> None:
        async with a.agent.test_context() as agent:
            ev = await agent.put(encode(e), key=e.user_id.encode())
            bad = await agent.put(b"{oops", key=b"u1")
            await _settle()
            seen["pending"], seen["dead-lettered"] = ev.message.acked, bad.message.acked
            await a.flush()
            seen["recommended"] = ev.message.acked

    run(go())
    assert len(recs) == 1 and len(dead) == 1
    assert seen == {"pending": False, "dead-lettered": True, "recommended": True}


def test_a_replayed_message_is_recommended_for_again_a_duplicate_event_is_not(adapter, sim_events) -> None:
    """A message read again at its offset (a restart after a crash) is in the state already, but its
    recommendation may not have gone out: it is sent (again). A duplicate event id at a new offset
    (a producer's retry) was recommended for: nothing is sent."""
    a, recs, dead = adapter
    e = sim_events[0]
    acked: list[bool] = []

    async def go() -> None:
        async with a.agent.test_context() as agent:
            await agent.put(encode(e), key=e.user_id.encode())
            await a.flush()
            agent.sent_offset = 0  # the same message at the same offset
            replay = await agent.put(encode(e), key=e.user_id.encode())
            await a.flush()
            duplicate = await agent.put(encode(e), key=e.user_id.encode())  # offset 1: a new message
            await _settle()
            await a.flush()
            acked.extend([replay.message.acked, duplicate.message.acked])

    run(go())
    assert [r.events_seen for r in recs] == [1, 1], "the replay is recommended for, with nothing counted twice"
    assert acked == [True, True]
    assert a.metrics.registry.get_sample_value("metarec_events_redelivered_total") == 2
