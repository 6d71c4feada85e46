"""Per-message overhead that faust-streaming 0.15.3 adds and that the worker can do without.

**Fetch batching** (:func:`batch_fetches`), which faust does not expose. faust builds its
``AIOKafkaConsumer`` with ``fetch_max_wait_ms=1500`` and aiokafka's default
``fetch_min_bytes=1``, so the broker answers a fetch as soon as one record is there. Under a
steady stream that means a fetch round trip for every few events, and each round costs the
worker's event loop a ``getmany`` pass, a fetch request and faust's per-batch bookkeeping.
Asking the broker to wait until ``min_bytes`` have gathered, or at most ``max_wait_ms``, turns
those into fewer, larger batches for a bounded latency cost (a fetch never waits longer than
``max_wait_ms``; a backlog fills ``min_bytes`` at once).

**Eager delivery** (:func:`eager_drain`). For every message, faust's fetcher calls
``Consumer.wait_first(deliver(message), suspend_flow.wait())``: the delivery raced against a
rebalance. ``mode``'s ``wait_first`` makes four tasks and an ``asyncio.wait`` for that race,
about 50 µs per message here (a tenth of one core's budget per event at 2,000 events/s). The
delivery almost always completes without waiting (the stream queue has room), so here it is
first run directly; only if it has to wait does the original race take over, with the
delivery continued as a task. The outcome is the same: a delivery that completes; one that
waits on a suspended flow is cancelled by the rebalance, as before.

**Room for a batch of changelog records** (:func:`room_for_changelog`). Table changelog
records go through faust's ``ProducerBuffer``, and while it holds more than 100 records faust
stops delivering messages to the streams until it has drained (``wait_until_ebb``, with a
"producer buffer full" warning). The worker writes one record per changed user per batch, so
a batch of more than 100 users stalled consumption every time. The buffer limit is raised to
what the worker can have pending.

**A lean monitor** (:class:`LeanMonitor`). faust's ``Monitor`` sensor keeps per-message and
per-event statistics (counters by topic and stream, timestamps, runtimes) for faust's own
``/stats`` pages and its statsd/Datadog exporters; the worker exports its own Prometheus
metrics and reads none of them. The lean monitor skips that bookkeeping (the sensor calls
cost about 6% of the event loop at 1,200 events/s) and keeps everything else.

**No second of waiting for tables** (:func:`tables_start_at_once`): faust's table manager
sleeps 1 s at start for tables declared late; the worker declares its table before starting.

**Is the broker reachable?** (:func:`broker_reachable`), which faust does not say: a metadata
request through the producer's aiokafka client, for the ``metarec_broker_connected`` gauge.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from faust.sensors import Monitor
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode.services import WaitResults


def batch_fetches(app: Any, min_bytes: int, max_wait_ms: int) -> None:
    """Give ``app``'s worker consumer these fetch settings (applied when faust creates it)."""
    app._metarec_fetch = (min_bytes, max_wait_ms)
    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "_metarec_wrapped", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        fetch = getattr(self.app, "_metarec_fetch", None)
        if fetch is not None:  # read by AIOKafkaConsumer.start() when it builds its Fetcher
            consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = fetch
        return consumer

    create_worker_consumer._metarec_wrapped = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


@types.coroutine
def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Drive ``coro``, already stepped once by hand (it yielded ``yielded``), to its end."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # noqa: BLE001 - cancellation and the like go to the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _continue(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _finish(coro, yielded)


def eager_drain(consumer: Any) -> None:
    """Make ``consumer.wait_first`` (called only by faust's fetcher) run the delivery eagerly."""
    original = consumer.wait_first
    if getattr(original, "_metarec_wrapped", False):
        return

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        first = coros[0] if coros else None
        if not isinstance(first, Coroutine) or consumer._stopped.is_set() or consumer._crashed.is_set():
            return await original(*coros, timeout=timeout)
        try:
            yielded = first.send(None)
        except StopIteration as stop:  # delivered without waiting: nothing to race
            for other in coros[1:]:
                if isinstance(other, Coroutine):
                    other.close()
            return WaitResults([first], [stop.value], False)
        except BaseException:
            for other in coros[1:]:
                if isinstance(other, Coroutine):
                    other.close()
            raise
        return await original(_continue(first, yielded), *coros[1:], timeout=timeout)

    wait_first._metarec_wrapped = True  # type: ignore[attr-defined]
    consumer.wait_first = wait_first


def room_for_changelog(app: Any, records: int) -> None:
    """Let ``app``'s producer buffer hold ``records`` before faust pauses the streams to drain it."""
    buffer = app.producer.buffer
    buffer.max_messages = max(buffer.max_messages, records)


class LeanMonitor(Monitor):
    """faust's monitor without its per-message statistics."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict | None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: dict | None = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None


async def broker_reachable(app: Any, timeout_s: float = 3.0) -> bool:
    """Whether the cluster answers a metadata request, through the app's own producer connection.

    faust exposes no connection state; its aiokafka producer's client (``Producer._producer.client``,
    faust-streaming 0.15.3 / aiokafka 0.14) can ask. Before the producer has started: unknown, ``False``.
    """
    aio = getattr(app.producer, "_producer", None)
    client = getattr(aio, "client", None)
    if client is None:
        return False
    try:
        await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
    except Exception:  # noqa: BLE001 - any failure is "not reachable now"
        return False
    return True


def on_agent_crash(agent: Any, callback: Callable[[Any, BaseException], Coroutine[Any, Any, None]]) -> None:
    """Run ``callback(agent, exc)`` when the agent crashes, before faust's own handler.

    ``App.agent(on_error=...)`` is taken by faust's consumer hook, so the callback goes in front
    of ``Agent._on_error`` (faust-streaming 0.15.3), which ``_execute_actor`` awaits on a crash.
    """
    original = agent._on_error

    async def on_error(a: Any, exc: BaseException) -> None:
        await callback(a, exc)
        if original is not None:
            await original(a, exc)

    agent._on_error = on_error


def tables_start_at_once(app: Any) -> None:
    """Start the table manager without faust's one-second wait for late table declarations.

    ``TableManager.on_start`` (faust-streaming 0.15.3) sleeps 1.0 s so that tables declared after
    the app starts can still register; the worker declares its only table before. A second less
    between a replacement worker's start and its first recommendation.
    """
    tables = app.tables

    async def on_start() -> None:
        if not tables.should_stop:
            await tables._update_channels()
            await tables.recovery.start()

    tables.on_start = on_start
