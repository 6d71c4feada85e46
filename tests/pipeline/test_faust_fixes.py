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
