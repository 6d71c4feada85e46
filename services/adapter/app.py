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
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import BrokenExecutor
from typing import Any

import faust
import msgspec
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metarec import deadletter, kafka_security
from metarec import state as st
from metarec.events import KINDS, Invalid
from metarec.pipeline import Applied, Pending, Rekey, Touched, apply
from metarec.quality import Rolling
from metarec.recommendation import Recommendation
from metarec.settings import WorkerSettings
from services.adapter.bootstrap import Services, bootstrap
from services.adapter.compute import BatchOut, Compute
from services.adapter.delivery import deliver
from services.adapter.faust_fixes import keep_queues_on_repeated_resume
from services.adapter.faust_tuning import (
    LeanMonitor,
    batch_fetches,
    broker_reachable,
    eager_drain,
    on_agent_crash,
    room_for_changelog,
    tables_start_at_once,
)

RecSink = Callable[[Recommendation], Awaitable[None]]
Sink = Callable[[bytes | None, bytes], Awaitable[None]]  # returns once the broker acknowledged the record

TABLE = "users"
log = logging.getLogger("metarec.worker")


class Adapter:
    """One worker: the faust app plus the pending users and the live-quality windows."""

    def __init__(self, settings: WorkerSettings, services: Services | None = None,
                 compute: Compute | None = None) -> None:
        self.settings = s = settings
        self.services = services or bootstrap(settings, with_recommender=s.compute == "thread" and compute is None)
        self.metrics = self.services.metrics
        rec = self.services.recommender
        if compute is None:  # a child is started here unless the caller started one earlier
            compute = Compute.in_thread(rec) if rec is not None else Compute.start_process(s)
        self.compute = compute
        self.pending = Pending()
        self.latest: OrderedDict[str, Recommendation] = OrderedDict()  # last recommendation per user (a cache)
        self.offsets: dict[int, int] = {}  # last processed offset per events partition
        self.quality = {"init": Rolling(s.quality_window), "adapted": Rolling(s.quality_window)}
        self._flushing = asyncio.Lock()
        self._lag_labels: set[tuple[str, str]] = set()  # consumer_lag series this worker reports
        self._task: asyncio.Future[None] | None = None  # the flush the linger timer started
        self._watch: asyncio.Future[bool] | None = None  # waits for the compute child's start
        self._decoded: OrderedDict[bytes, tuple[bytes, st.UserState]] = OrderedDict()  # a decode cache
        self._dirty: dict[bytes, tuple[int, st.UserState]] = {}  # changed since the last write_changelog()
        self.app = faust.App(
            s.app_id, broker=[f"kafka://{h}" for h in s.kafka_bootstrap.split(",")],
            broker_credentials=_credentials(s), store=s.store, datadir=str(s.data_dir),
            web_port=s.web_port, web_bind=s.web_host, web_enabled=True,
            topic_partitions=s.partitions, topic_replication_factor=s.replication_factor,
            consumer_auto_offset_reset="earliest", consumer_group_instance_id=s.group_instance_id,
            broker_session_timeout=s.session_timeout_s,
            table_standby_replicas=0, logging_config=None,
            producer_linger=s.producer_linger_ms / 1000.0, producer_max_batch_size=1 << 18,
            monitor=LeanMonitor(before_commit=self.write_changelog),  # see faust_tuning
        )
        keep_queues_on_repeated_resume(self.app.flow_control)  # faust drops an event otherwise; see faust_fixes
        batch_fetches(self.app, s.fetch_min_bytes, s.fetch_max_wait_ms)
        tables_start_at_once(self.app)  # its one table is declared below, before the app starts
        self.events = self.app.topic(s.topic_events, key_serializer="raw", value_serializer="raw",
                                     partitions=s.partitions)
        self.recs_topic = self.app.topic(s.topic_recommendations, key_serializer="raw", value_serializer="raw",
                                         partitions=s.partitions)
        self.dlq_topic = self.app.topic(s.topic_dead_letter, key_serializer="raw", value_serializer="raw")
        self.table = self.app.Table(TABLE, default=None, partitions=s.partitions, key_type=bytes,
                                    value_type=bytes,
                                    schema=faust.Schema(key_serializer="raw", value_serializer="raw"))
        self.limits = s.limits()
        self.send_rec: RecSink = self._send_rec
        self.send_dead: Sink = self._send_dead
        self.send_event: Sink = self._send_event
        self.agent = self.app.agent(self.events, name="adapt")(self._consume)
        on_agent_crash(self.agent, self._agent_crashed)
        self.app.timer(interval=max(s.linger_ms, 1.0) / 1000.0)(self._tick)
        self.app.timer(interval=5.0)(self.update_gauges)
        self.app.on_before_shutdown.connect(self.shutdown)  # type: ignore[arg-type]
        self._routes()

    async def _consume(self, stream: Any) -> None:
        eager_drain(self.app.consumer)  # see faust_tuning
        room_for_changelog(self.app, 4 * self.settings.batch_max_users + 100)  # the most users pending at once
        self._watch = asyncio.ensure_future(self._compute_ready())
        async for event in stream.events():
            msg = event.message
            await self.on_message(event.key, event.value, msg.topic, msg.partition, msg.offset, msg.timestamp)

    async def on_message(self, key: bytes | None, raw: bytes | None, topic: str, partition: int, offset: int,
                         kafka_ts: float) -> None:
        """Decode → step → mark pending, or dead-letter, or re-key. Must run inside the agent's stream.

        No message can crash the agent: an exception while applying one is that message's dead
        letter (reason ``internal_error``), and the worker goes on with the next.
        """
        s, m = self.settings, self.metrics
        self.offsets[partition] = offset
        try:
            out = apply(raw, key, self._state(key), s.buffer_size, s.consumed_size, self.limits,
                        position=(partition, offset))
        except Exception as exc:  # noqa: BLE001 - a bug or a hostile input: this message only
            out = _internal_error(exc, raw, topic, partition, offset)
        if isinstance(out, Invalid):
            m.events_invalid.labels(out.reason).inc()
            await self.dead_letter(out, key, topic, partition, offset)
            return
        if isinstance(out, Rekey):  # no key: send it again to its user's partition
            await deliver(self.send_event, out.key, out.raw, what="rekey", retries=m.delivery_retries)
            m.events_rekeyed.inc()
            return
        assert isinstance(out, Applied) and key is not None  # apply() returns Rekey for a keyless event
        m.events_consumed.labels(out.event.kind).inc()
        if not out.new:
            m.events_redelivered.inc()
            return  # a redelivered event: already applied
        self._dirty[key] = (partition, out.state)  # write_changelog() stores it and makes it durable
        self.pending.touch(out.state, out.new, kafka_ts or time.time())
        if len(self.pending) >= 4 * s.batch_max_users:
            await self.flush(wait=True)  # backpressure: consumption runs ahead of compute by a few batches only
        elif len(self.pending) >= s.batch_max_users:
            await self._tick()

    async def dead_letter(self, invalid: Invalid, key: bytes | None, topic: str, partition: int,
                          offset: int) -> None:
        """Send ``invalid``'s bounded record and wait until the broker has it (retried; see delivery)."""
        value = deadletter.record(invalid, topic, partition, offset, key, raw_limit=self.settings.dead_letter_raw_bytes)
        await deliver(self.send_dead, deadletter.record_key(key), value, what="dead_letter",
                      retries=self.metrics.delivery_retries, fallback=deadletter.minimal(value))
        self.metrics.dead_lettered.inc()

    async def _agent_crashed(self, agent: Any, exc: BaseException) -> None:
        """faust's supervisor restarts a crashed agent; count it (an alert fires on any)."""
        self.metrics.agent_restarts.inc()
        log.error("agent %s crashed (%s); its supervisor restarts it", getattr(agent, "name", "?"), type(exc).__name__)

    async def shutdown(self, sender: Any = None, **_: Any) -> None:
        """At a graceful stop, once faust has stopped consuming and committed (its stop commits, and the
        changelog is written before every commit): recommend for the users still pending, then stop
        the compute child. So a SIGTERM loses no recommendation, and the next owner of the partitions
        starts exactly at the committed offsets (nothing reprocessed)."""
        if self._task is not None:
            await asyncio.wait([self._task])  # the timer's flush, if one is running
        while len(self.pending) and await self._compute_ready():
            await self.flush(wait=True)
        self.write_changelog()  # a no-op unless an event arrived after the last commit
        self.compute.close()
        m = self.metrics.registry.get_sample_value
        log.info("stopped: %d events consumed, %d redelivered, %d recommendations sent",
                 sum(m("metarec_events_consumed_total", {"kind": k}) or 0 for k in KINDS),
                 m("metarec_events_redelivered_total") or 0, m("metarec_recommendations_emitted_total") or 0)

    async def _compute_ready(self) -> bool:
        """Wait for the compute child, which loads the model while the worker starts; stop if it cannot."""
        try:
            await self.compute.ready()
            return True
        except Exception as exc:  # noqa: BLE001 - a model the child cannot load: nothing to serve
            log.critical("the compute child could not load the model (%s: %s); stopping", type(exc).__name__, exc)
            await self.app.crash(exc)
            return False

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
                if not await self._compute_ready():
                    return
                batch = self.pending.take(self.settings.batch_max_users)
                try:
                    done = await self._compute(batch)
                except BrokenExecutor as exc:  # the compute child died: this worker can recommend no more
                    log.critical("the compute child is gone (%s); stopping the worker so that it is restarted", exc)
                    await self.app.crash(exc)
                    return
                for t, rec in done:
                    self._remember(rec)
                    await self.send_rec(rec)
                    self.metrics.recommendations_emitted.inc()
                    self.metrics.event_to_recommendation_seconds.observe(max(0.0, time.time() - t.first_seen))

    async def _compute(self, batch: list[Touched]) -> list[tuple[Touched, Recommendation]]:
        """Adapt and score ``batch``. If that fails, each user is tried alone, so one user's failure
        costs only that user's recommendation (its state is stored; its next event tries again)."""
        async def run(part: list[Touched]) -> list[tuple[Touched, Recommendation]]:
            out = await self.compute.batch([t.state for t in part], [self._raw(t.state) for t in part],
                                           [t.new for t in part])
            self._observe(out, len(part))
            return list(zip(part, out.recs))

        try:
            return await run(batch)
        except BrokenExecutor:
            raise  # the compute child is gone: nothing more can be recommended here
        except Exception as exc:  # noqa: BLE001 - isolate the user that fails
            log.warning("a batch of %d users failed (%s); adapting them one by one", len(batch), type(exc).__name__)
        done: list[tuple[Touched, Recommendation]] = []
        for t in batch:
            try:
                done += await run([t])
            except BrokenExecutor:
                raise
            except Exception as exc:  # noqa: BLE001
                self.metrics.batch_errors.inc()
                log.error("user %r: adaptation failed (%s)", t.state.user_id[:40], type(exc).__name__)
        return done

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
        m.broker_connected.set(1.0 if await broker_reachable(self.app) else 0.0)
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
        await (await self.dlq_topic.send(key=key, value=value, force=True))  # sent, then acknowledged

    async def _send_event(self, key: bytes | None, value: bytes) -> None:
        await (await self.events.send(key=key, value=value, force=True))

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


def _internal_error(exc: Exception, raw: object, topic: str, partition: int, offset: int) -> Invalid:
    """The dead letter of a message whose handling raised: the type and a digest, no stack.

    The full traceback goes to the log under the same digest, for whoever reads the record.
    """
    digest = hashlib.sha256(f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")).hexdigest()[:12]
    log.error("internal error on %s[%d]@%d, digest %s", topic, partition, offset, digest, exc_info=exc)
    data = raw if isinstance(raw, bytes) else b""
    return Invalid("internal_error", f"{type(exc).__name__} while handling the event (digest {digest})", data)


def _json(rec: Recommendation) -> bytes:
    return _ENCODE.encode(rec)


def _credentials(s: WorkerSettings) -> Any:
    return kafka_security.faust_credentials(s)  # TLS and SASL, the same as the command line's


def create_app(settings: WorkerSettings | None = None, services: Services | None = None,
               compute: Compute | None = None) -> Adapter:
    return Adapter(settings or WorkerSettings(), services, compute)
