"""faust_tuning: fetch batching reaches the worker consumer only; eager delivery keeps the race's outcomes."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.sensors import Monitor
from faust.types import TP
from mode import Service

from services.adapter.faust_tuning import LeanMonitor, batch_fetches, eager_drain, room_for_changelog


def _worker_consumer(app: faust.App) -> Any:
    return app.consumer._thread._create_worker_consumer(app.transport)


def test_the_worker_consumer_waits_for_a_batch_and_other_apps_keep_faust_defaults() -> None:
    async def main() -> tuple[tuple[int, int], tuple[int, int]]:
        tuned = faust.App("t-tuned", broker="kafka://127.0.0.1:1", web_enabled=False)
        batch_fetches(tuned, 4321, 7)
        batch_fetches(tuned, 4321, 7)  # idempotent: the factory is wrapped once
        plain = faust.App("t-plain", broker="kafka://127.0.0.1:1", web_enabled=False)
        a, b = _worker_consumer(tuned), _worker_consumer(plain)
        out = (a._fetch_min_bytes, a._fetch_max_wait_ms), (b._fetch_min_bytes, b._fetch_max_wait_ms)
        for c in (a, b):
            await c._client.close()
            c._closed = True  # never started: nothing else to release
        return out

    tuned, plain = asyncio.run(main())
    assert tuned == (4321, 7)
    assert plain == (1, 1500)  # faust 0.15.3's own: a faust upgrade that changes it shows up here


class _Service(Service):
    """A bare mode service: its ``wait_first`` is the one faust's consumer inherits."""


def test_eager_delivery_returns_what_the_race_returns_without_waiting() -> None:
    async def main() -> tuple[Any, list[str], bool]:
        svc, suspend = _Service(), asyncio.Event()
        eager_drain(svc)
        eager_drain(svc)  # idempotent
        delivered: list[str] = []

        async def deliver(m: str) -> str:
            delivered.append(m)
            return m

        waiter = suspend.wait()
        res = await svc.wait_first(deliver("a"), waiter)
        return res, delivered, waiter.cr_frame is None  # the racer was closed, not left un-awaited

    res, delivered, closed = asyncio.run(main())
    assert delivered == ["a"] and res.results == ["a"] and not res.stopped and closed


def test_a_delivery_that_waits_is_continued_and_completes() -> None:
    async def main() -> tuple[list[Any], list[str]]:
        svc, suspend, room = _Service(), asyncio.Event(), asyncio.Event()
        eager_drain(svc)
        log: list[str] = []

        async def deliver() -> str:
            log.append("start")
            await room.wait()  # a full stream queue
            await asyncio.sleep(0)
            log.append("done")
            return "delivered"

        asyncio.get_running_loop().call_later(0.01, room.set)
        res = await svc.wait_first(deliver(), suspend.wait())
        return res.results, log

    results, log = asyncio.run(main())
    assert results == ["delivered"] and log == ["start", "done"]


def test_a_delivery_waiting_when_the_flow_is_suspended_is_cancelled_as_before() -> None:
    async def main() -> tuple[list[str], bool]:
        svc, suspend, room = _Service(), asyncio.Event(), asyncio.Event()
        eager_drain(svc)
        log: list[str] = []

        async def deliver() -> None:
            try:
                await room.wait()
                log.append("delivered")
            except asyncio.CancelledError:
                log.append("cancelled")
                raise

        asyncio.get_running_loop().call_later(0.01, suspend.set)  # a rebalance starts
        await svc.wait_first(deliver(), suspend.wait())
        room.set()
        await asyncio.sleep(0.01)
        return log, suspend.is_set()

    log, suspended = asyncio.run(main())
    assert suspended and log == ["cancelled"]


def test_an_error_in_the_delivery_propagates() -> None:
    async def main() -> None:
        svc = _Service()
        eager_drain(svc)

        async def deliver() -> None:
            raise ValueError("bad message")

        await svc.wait_first(deliver(), asyncio.Event().wait())

    with pytest.raises(ValueError, match="bad message"):
        asyncio.run(main())


def test_the_lean_monitor_skips_per_message_statistics() -> None:
    m = LeanMonitor()
    plain = Monitor()
    tp = TP("events", 0)
    for mon in (m, plain):
        mon.on_message_in(tp, 1, _Msg())
        mon.on_stream_event_in(tp, 1, _Stream(), None)
    assert m.messages_received_total == 0 and m.events_total == 0
    assert plain.messages_received_total == 1 and plain.events_total == 1  # what is skipped


class _Msg:
    time_in: float | None = None


class _Owner:
    pass


class _Stream:
    def __init__(self) -> None:
        self.task_owner = _Owner()


def test_the_producer_buffer_holds_a_batch_of_changelog_records_before_pausing_the_streams() -> None:
    app = faust.App("t-buffer", broker="kafka://127.0.0.1:1", web_enabled=False)
    assert app.producer.buffer.max_messages == 100  # faust 0.15.3's limit: a changed faust shows up here
    room_for_changelog(app, 1124)
    assert app.producer.buffer.max_messages == 1124
    room_for_changelog(app, 10)  # never lowered
    assert app.producer.buffer.max_messages == 1124


def test_canary_the_table_manager_start_that_tables_start_at_once_replaces() -> None:
    """tables_start_at_once rewrites TableManager.on_start without its sleep; a faust that changes
    that method must be looked at again (this fails first)."""
    import inspect

    from faust.tables.manager import TableManager

    from services.adapter.faust_tuning import tables_start_at_once

    src = inspect.getsource(TableManager.on_start)
    body = [ln.strip() for ln in src.splitlines()[2:] if ln.strip() and not ln.strip().startswith('"""')]
    assert body == ["await self.sleep(1.0)", "if not self.should_stop:", "await self._update_channels()",
                    "await self.recovery.start()"], body
    app = faust.App("t-tables", broker="kafka://127.0.0.1:1", web_enabled=False)
    tables_start_at_once(app)
    assert "sleep" not in inspect.getsource(app.tables.on_start)
