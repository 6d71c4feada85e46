"""The faust work-around: a repeated resume keeps what the fetcher already delivered; a resume
after a suspend still drops what was fetched before the rebalance."""

from __future__ import annotations

import asyncio

from mode.utils.queues import FlowControlEvent, FlowControlQueue

from services.adapter.faust_fixes import keep_queues_on_repeated_resume


def _flow() -> tuple[FlowControlEvent, FlowControlQueue]:
    flow = FlowControlEvent()
    queue: FlowControlQueue = FlowControlQueue(maxsize=10, flow_control=flow, clear_on_resume=True)
    return flow, queue


def test_plain_faust_flow_control_drops_delivered_events_on_a_repeated_resume() -> None:
    # the behaviour the work-around exists for: if this stops failing, faust fixed it
    flow, queue = _flow()
    flow.resume()
    queue.put_nowait("event at the committed offset")
    flow.resume()
    assert queue.qsize() == 0


def test_a_repeated_resume_keeps_delivered_events() -> None:
    flow, queue = _flow()
    keep_queues_on_repeated_resume(flow)
    flow.resume()
    queue.put_nowait("event at the committed offset")
    flow.resume()
    assert queue.qsize() == 1
    assert asyncio.run(queue.get()) == "event at the committed offset"


def test_a_resume_after_a_suspend_still_clears_stale_events() -> None:
    flow, queue = _flow()
    keep_queues_on_repeated_resume(flow)
    keep_queues_on_repeated_resume(flow)  # idempotent
    flow.resume()
    queue.put_nowait("fetched before the rebalance")
    flow.suspend()
    assert not flow.is_active()
    flow.resume()
    assert flow.is_active() and queue.qsize() == 0


def _fake_recovery(calls: list[str]):  # type: ignore[no-untyped-def]
    """Just what ``Recovery.on_recovery_completed`` touches, recording the consumer's calls."""
    from types import SimpleNamespace

    async def noop(*_: object, **__: object) -> None:
        return None

    async def wait(coro: object, timeout: float | None = None) -> object:
        return await coro  # type: ignore[misc]

    async def seek() -> None:
        calls.append("seek")

    consumer = SimpleNamespace(assignment=lambda: {"events-0", "changelog-0"}, perform_seek=seek,
                               resume_partitions=lambda tps: calls.append(f"resume {sorted(tps)}"),
                               resume_flow=lambda: calls.append("resume_flow"))
    app = SimpleNamespace(consumer=consumer, on_rebalance_complete=SimpleNamespace(send=noop),
                          consumer_generation_id=0, conf=SimpleNamespace(broker_request_timeout=1.0),
                          flow_control=SimpleNamespace(resume=lambda: None), _fetcher=SimpleNamespace(maybe_start=noop),
                          assignor=SimpleNamespace(assigned_standbys=lambda: set()), on_rebalance_end=lambda: None)
    log = SimpleNamespace(info=lambda *a: None, dev=lambda *a: None, warning=lambda *a: None)
    tables = SimpleNamespace(values=lambda: [], on_actives_ready=lambda: None, on_standbys_ready=lambda: None)
    return SimpleNamespace(app=app, log=log, tables=tables, _set_recovery_ended=lambda: None, _wait=wait,
                           _is_changelog_tp=lambda tp: tp.startswith("changelog"), completed=asyncio.Event(),
                           actives_for_table={}, standbys_for_table={})


def test_canary_faust_s_recovery_completion_is_the_one_replaced() -> None:
    import hashlib
    import inspect

    from faust.tables.recovery import Recovery

    from services.adapter.faust_fixes import ON_RECOVERY_COMPLETED_SHA256, seek_before_resuming_streams

    seek_before_resuming_streams()
    original = getattr(Recovery.on_recovery_completed, "_metarec_original", Recovery.on_recovery_completed)
    digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
    assert digest == ON_RECOVERY_COMPLETED_SHA256, "faust changed on_recovery_completed: review the copy"
    calls: list[str] = []
    asyncio.run(original(_fake_recovery(calls)))
    assert calls[:2] == ["resume ['events-0']", "seek"], "upstream resumes before it seeks (the race)"


def test_the_seek_comes_before_the_stream_partitions_resume() -> None:
    from faust.tables.recovery import Recovery

    from services.adapter.faust_fixes import seek_before_resuming_streams

    seek_before_resuming_streams()
    seek_before_resuming_streams()  # idempotent
    calls: list[str] = []
    fake = _fake_recovery(calls)
    asyncio.run(Recovery.on_recovery_completed(fake))
    assert calls == ["seek", "resume ['events-0']", "resume_flow"] and fake.completed.is_set()
