"""The faust app: topics, the changelog-backed user table, the agent, timers and web views.

The agent body does two things per message: :func:`metarec.pipeline.apply` (decode and
step the user's state) and mark the user changed and pending. A changed user's state is
encoded once per batch, not once per event: :meth:`Adapter.write_changelog` writes it to the
table's local store and its changelog before each batch and before every commit. Batched
adaptation and scoring run in :meth:`Adapter.flush`, from a short timer (``linger_ms``) or
when ``batch_max_users`` users are pending — not through ``stream.take()``, whose batching
breaks table writes (faust issue #497). The model side lives in :mod:`services.adapter.compute`:
a child process by default, so that it does not share this process's interpreter lock.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import msgspec
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metarec import kafka_security
from metarec import state as st
from metarec.events import Invalid, dead_letter
from metarec.pipeline import Applied, Pending, apply
from metarec.quality import Rolling
from metarec.recommend import Recommendation
from metarec.settings import WorkerSettings
from services.adapter.bootstrap import Services, bootstrap
from services.adapter.compute import BatchOut, Compute
from services.adapter.faust_fixes import keep_queues_on_repeated_resume
from services.adapter.faust_tuning import LeanMonitor, batch_fetches, eager_drain, room_for_changelog

RecSink = Callable[[Recommendation], Awaitable[None]]
DeadSink = Callable[[bytes | None, bytes], Awaitable[None]]

TABLE = "users"


class Adapter:
    """One worker: the faust app plus the pending users and the live-quality windows."""

    def __init__(self, settings: WorkerSettings, services: Services | None = None) -> None:
        self.settings = s = settings
        self.services = services or bootstrap(settings, with_recommender=s.compute == "thread")
        self.metrics = self.services.metrics
        rec = self.services.recommender
        self.compute = Compute.in_thread(rec) if rec is not None else Compute.in_process(s)
        self.pending = Pending()
        self.latest: OrderedDict[str, Recommendation] = OrderedDict()  # last recommendation per user (a cache)
        self.offsets: dict[int, int] = {}  # last processed offset per events partition
        self.quality = {"init": Rolling(s.quality_window), "adapted": Rolling(s.quality_window)}
        self._flushing = asyncio.Lock()
        self._lag_labels: set[tuple[str, str]] = set()  # consumer_lag series this worker reports
        self._task: asyncio.Future[None] | None = None  # the flush the linger timer started
        self._decoded: OrderedDict[bytes, tuple[bytes, st.UserState]] = OrderedDict()  # a decode cache
        self._dirty: dict[bytes, tuple[int, st.UserState]] = {}  # changed since the last write_changelog()
        self.app = faust.App(
            s.app_id, broker=[f"kafka://{h}" for h in s.kafka_bootstrap.split(",")],
            broker_credentials=_credentials(s), store=s.store, datadir=str(s.data_dir),
            web_port=s.web_port, web_bind=s.web_host, web_enabled=True,
            topic_partitions=s.partitions, topic_replication_factor=s.replication_factor,
            consumer_auto_offset_reset="earliest", consumer_group_instance_id=s.group_instance_id,
            table_standby_replicas=0, logging_config=None,
            producer_linger=s.producer_linger_ms / 1000.0, producer_max_batch_size=1 << 18,
            monitor=LeanMonitor(before_commit=self.write_changelog),  # see faust_tuning
        )
        keep_queues_on_repeated_resume(self.app.flow_control)  # faust drops an event otherwise; see faust_fixes
        batch_fetches(self.app, s.fetch_min_bytes, s.fetch_max_wait_ms)
        self.events = self.app.topic(s.topic_events, key_serializer="raw", value_serializer="raw",
                                     partitions=s.partitions)
        self.recs_topic = self.app.topic(s.topic_recommendations, key_serializer="raw", value_serializer="raw",
                                         partitions=s.partitions)
        self.dlq_topic = self.app.topic(s.topic_dead_letter, key_serializer="raw", value_serializer="raw")
        self.table = self.app.Table(TABLE, default=None, partitions=s.partitions, key_type=bytes,
                                    value_type=bytes,
                                    schema=faust.Schema(key_serializer="raw", value_serializer="raw"))
        self.send_rec: RecSink = self._send_rec
        self.send_dead: DeadSink = self._send_dead
        self.agent = self.app.agent(self.events, name="adapt")(self._consume)
        self.app.timer(interval=max(s.linger_ms, 1.0) / 1000.0)(self._tick)
        self.app.timer(interval=5.0)(self.update_gauges)
        self._routes()

    async def _consume(self, stream: Any) -> None:
        eager_drain(self.app.consumer)  # see faust_tuning
        room_for_changelog(self.app, 4 * self.settings.batch_max_users + 100)  # the most users pending at once
        async for event in stream.events():
            msg = event.message
            await self.on_message(event.key, event.value, msg.topic, msg.partition, msg.offset, msg.timestamp)

    async def on_message(self, key: bytes | None, raw: bytes | None, topic: str, partition: int, offset: int,
                         kafka_ts: float) -> None:
        """Decode → step → mark pending (or dead-letter). Must run inside the agent's stream."""
        s, m = self.settings, self.metrics
        self.offsets[partition] = offset
        out = apply(raw, key, self._state(key), s.buffer_size, s.consumed_size, s.max_event_bytes)
        if isinstance(out, Invalid):
            m.events_invalid.labels(out.reason).inc()
            await self.send_dead(key, dead_letter(out, topic, partition, offset, key))
            m.dead_lettered.inc()
            return
        assert isinstance(out, Applied)
        m.events_consumed.labels(out.event.kind).inc()
        if not out.new:
            return  # a redelivered event: already applied
        assert key is not None  # apply() dead-letters a message whose key is not the user id
        self._dirty[key] = (partition, out.state)  # write_changelog() stores it and makes it durable
        self.pending.touch(out.state, out.new, kafka_ts or time.time())
        if len(self.pending) >= 4 * s.batch_max_users:
            await self.flush(wait=True)  # backpressure: consumption runs ahead of compute by a few batches only
        elif len(self.pending) >= s.batch_max_users:
            await self._tick()

    async def _tick(self) -> None:
        """The linger timer: start a flush in the background unless one is running."""
        if len(self.pending) and not self._flushing.locked() and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self.flush())

    def _state(self, key: bytes | None) -> st.UserState | None:
        """The user's newest state: changed and not yet stored, else the table's (decoded once)."""
        if key is None:
            return None
        dirty = self._dirty.get(key)
        if dirty is not None:
            return dirty[1]
        raw = self.table.get(key)
        if raw is None:
            return None
        hit = self._decoded.get(key)
        return hit[1] if hit is not None and hit[0] is raw else st.loads(raw)

    def stored(self, key: bytes) -> bytes | None:
        """The user's newest state as stored bytes (written first if it changed since the last write)."""
        if key in self._dirty:
            self.write_changelog()
        return self.table.get(key)  # type: ignore[no-any-return]

    def _cache(self, key: bytes, raw: bytes, state: st.UserState) -> None:
        self._decoded[key] = (raw, state)
        self._decoded.move_to_end(key)
        if len(self._decoded) > self.settings.latest_cache:
            self._decoded.popitem(last=False)

    async def flush(self, wait: bool = False) -> None:
        """Adapt, score and publish for the pending users, ``batch_max_users`` at a time.

        The compute runs in a child process (or a thread: ``compute="thread"``), so the agent
        keeps consuming meanwhile and the next batch grows. The timer skips while a flush
        runs; the agent (``wait=True``) waits for it, which is the backpressure.
        """
        if self._flushing.locked() and not wait:
            return
        async with self._flushing:
            rounds = 0
            while len(self.pending) and rounds < 4:  # bounded, so commits and fetches keep their turn
                rounds += 1
                self.write_changelog()  # also stores every pending user's newest state
                batch = self.pending.take(self.settings.batch_max_users)
                out = await self.compute.batch([t.state for t in batch], [self._raw(t.state) for t in batch],
                                               [t.new for t in batch])
                self._observe(out, len(batch))
                for t, rec in zip(batch, out.recs):
                    self._remember(rec)
                    await self.send_rec(rec)
                    self.metrics.recommendations_emitted.inc()
                    self.metrics.event_to_recommendation_seconds.observe(max(0.0, time.time() - t.first_seen))

    def _observe(self, out: BatchOut, users: int) -> None:
        """Live quality (predictions made before learning) and compute timings of one batch."""
        m = self.metrics
        for name, preds in (("init", out.init), ("adapted", out.adapted)):
            for y, p in zip(out.y, preds):
                self.quality[name].add(y, p)
            m.live_predictions.labels(name).inc(len(preds))
        m.adapt_seconds.observe(out.adapt_s)
        m.adapt_batch_users.observe(users)
        m.score_seconds.observe(out.score_s)

    def _raw(self, state: st.UserState) -> bytes:
        """``state`` as stored (its encoding is cached by :meth:`write_changelog`)."""
        hit = self._decoded.get(state.user_id.encode())
        return hit[0] if hit is not None and hit[1] is state else st.dumps(state)

    def write_changelog(self) -> None:
        """Encode each user changed since the last call once, store it, and send one changelog record.

        So a user's state is encoded and logged once per batch, not once per event. Runs before
        each batch is computed and, through the monitor's ``before_commit`` hook, before every offset
        commit (periodic, on rebalance, at shutdown); faust flushes the producer before it
        commits, so no offset is committed ahead of the state it produced.
        """
        dirty, self._dirty = self._dirty, {}
        for key, (partition, state) in dirty.items():
            value = st.dumps(state)
            self.table.data[key] = value  # the local store
            self._cache(key, value, state)
            self.table.send_changelog(partition, key, value)

    def _remember(self, rec: Recommendation) -> None:
        self.latest[rec.user_id] = rec
        self.latest.move_to_end(rec.user_id)
        while len(self.latest) > self.settings.latest_cache:
            self.latest.popitem(last=False)

    async def update_gauges(self) -> None:
        m = self.metrics
        self._quality_gauges()
        m.active_users.set(len(self.table))
        consumer = self.app.consumer
        assigned = {tp for tp in consumer.assignment() if tp.topic == self.settings.topic_events}
        for topic, partition in self._lag_labels - {(tp.topic, str(tp.partition)) for tp in assigned}:
            m.consumer_lag.remove(topic, partition)  # lost in a rebalance: another worker reports it now
        self._lag_labels = {(tp.topic, str(tp.partition)) for tp in assigned}
        for tp in assigned:
            try:
                hw = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - highwater is unknown until the first fetch
                continue
            done = self.offsets.get(tp.partition)
            committed = getattr(consumer, "_committed_offset", {})  # faust keeps no public accessor
            pos = done + 1 if done is not None else (committed.get(tp) or 0)
            m.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, (hw or 0) - pos))

    async def export_user(self, raw: bytes) -> bytes:
        """The user's adapted model (state bytes as stored) as a self-contained ONNX file."""
        data, seconds = await self.compute.export(raw)
        self.metrics.export_seconds.observe(seconds)
        return data

    def _quality_gauges(self) -> None:
        for name, window in self.quality.items():
            if len(window) >= 10:
                self.metrics.live_auc.labels(name).set(window.auc())
                self.metrics.live_logloss.labels(name).set(window.logloss())

    async def _send_rec(self, rec: Recommendation) -> None:
        await self.recs_topic.send(key=rec.user_id.encode(), value=_json(rec))

    async def _send_dead(self, key: bytes | None, value: bytes) -> None:
        await self.dlq_topic.send(key=key, value=value)

    def _routes(self) -> None:
        app, adapter = self.app, self

        @app.page("/metrics")
        async def metrics(web: Any, request: Request) -> Response:
            # aiohttp takes the charset separately from the content type
            ctype = CONTENT_TYPE_LATEST.split("; charset")[0]
            return web.bytes(generate_latest(adapter.metrics.registry), content_type=ctype)

        @app.page("/users/{user_id}/recommendations")
        class UserRecs(View):
            @app.table_route(table=adapter.table, match_info="user_id")  # type: ignore[arg-type]
            async def get(self, request: Request, user_id: str) -> Response:
                rec = adapter.latest.get(user_id)
                if rec is None:
                    raw = adapter.stored(user_id.encode())
                    if raw is None:
                        return self.json({"error": f"no events seen for user {user_id!r}"}, status=404)
                    rec = await adapter.compute.one(raw)
                    adapter._remember(rec)
                return self.bytes(_json(rec), content_type="application/json")

        @app.page("/users/{user_id}/model.onnx")
        class UserModel(View):
            @app.table_route(table=adapter.table, match_info="user_id")  # type: ignore[arg-type]
            async def get(self, request: Request, user_id: str) -> Response:
                raw = adapter.stored(user_id.encode())
                if raw is None:
                    return self.json({"error": f"no events seen for user {user_id!r}"}, status=404)
                data = await adapter.export_user(raw)
                return self.bytes(data, content_type="application/octet-stream")


_ENCODE = msgspec.json.Encoder()


def _json(rec: Recommendation) -> bytes:
    return _ENCODE.encode(rec)


def _credentials(s: WorkerSettings) -> Any:
    return kafka_security.faust_credentials(s)  # TLS and SASL, the same as the command line's


def create_app(settings: WorkerSettings | None = None, services: Services | None = None) -> Adapter:
    return Adapter(settings or WorkerSettings(), services)
