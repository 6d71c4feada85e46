"""The faust app: topics, the changelog-backed user table, the agent and its timers.

The agent body does two things per message: :func:`metarec.pipeline.apply` (decode and step the
user's state) and mark the user changed and pending; a refused message is dead-lettered, a keyless
one re-keyed (:mod:`services.adapter.delivery`). A changed user's state is encoded once per batch,
not once per event (:class:`services.adapter.store.UserStore`). Batched adaptation and scoring run
in :meth:`Adapter.flush`, from a short timer (``linger_ms``) or when ``batch_max_users`` users are
pending — not through ``stream.take()``, whose batching breaks table writes (faust issue #497). The
model side lives in :mod:`services.adapter.compute`: a child process by default, so that it does not
share this process's interpreter lock. HTTP views are in :mod:`services.adapter.views`, gauges in
:mod:`services.adapter.gauges`, every faust patch in :mod:`services.adapter.patches`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import BrokenExecutor
from typing import Any

import faust

from metarec import deadletter, kafka_security
from metarec.events import KINDS, Invalid
from metarec.pipeline import Applied, Pending, Rekey, Touched, apply
from metarec.recommendation import Recommendation
from metarec.settings import WorkerSettings
from services.adapter import patches
from services.adapter.bootstrap import Services, bootstrap
from services.adapter.compute import Compute
from services.adapter.delivery import deliver, internal_error
from services.adapter.follow import Follower
from services.adapter.gauges import Gauges, RecoveryWatch
from services.adapter.lifecycle import Lifecycle
from services.adapter.store import UserStore
from services.adapter.views import Latest, add_routes, as_json

RecSink = Callable[[Recommendation], Awaitable[None]]
Sink = Callable[[bytes | None, bytes], Awaitable[None]]  # returns once the broker acknowledged the record

TABLE = "users"
log = logging.getLogger("metarec.worker")


class Adapter:
    """One worker: the faust app, its agent, the pending users and where their work goes."""

    def __init__(self, settings: WorkerSettings, services: Services | None = None,
                 compute: Compute | None = None) -> None:
        patches.check_versions()
        self.settings = s = settings
        self.services = services or bootstrap(settings, with_recommender=s.compute == "thread" and compute is None)
        self.metrics = self.services.metrics
        rec = self.services.recommender
        if compute is None:  # a child is started here unless the caller started one earlier
            compute = Compute.in_thread(rec) if rec is not None else Compute.start_process(s)
        self.compute = compute
        self.pending = Pending()
        self.latest = Latest(s.latest_cache)
        self.gauges = Gauges(self.metrics, s.quality_window, s.topic_events)
        self.limits = s.limits()
        self.recovery = RecoveryWatch(s.recovery_stall_s)
        self._flushing = asyncio.Lock()
        self._task: asyncio.Future[None] | None = None  # the flush the linger timer started
        self._watch: asyncio.Future[bool] | None = None  # waits for the compute child's start
        self._stream: Any = None  # the agent's stream, which acknowledges its events
        self.app = faust.App(
            s.app_id, broker=[f"kafka://{h}" for h in s.kafka_bootstrap.split(",")],
            broker_credentials=kafka_security.faust_credentials(s), store=s.store, datadir=str(s.data_dir),
            web_port=s.web_port, web_bind=s.web_host, web_enabled=True,
            topic_partitions=s.partitions, topic_replication_factor=s.replication_factor,
            consumer_auto_offset_reset="earliest", consumer_group_instance_id=s.group_instance_id,
            broker_session_timeout=s.session_timeout_s, broker_commit_interval=s.commit_interval_s,
            table_standby_replicas=0, logging_config=None,  # standbys stalled a partition (see docs/operating.md)
            producer_linger=s.producer_linger_ms / 1000.0, producer_max_batch_size=1 << 18,
            monitor=patches.LeanMonitor(),
        )
        patches.keep_queues_on_repeated_resume(self.app.flow_control)  # faust drops an event otherwise
        patches.batch_fetches(self.app, s.fetch_min_bytes, s.fetch_max_wait_ms)
        patches.tables_start_at_once(self.app)  # its one table is declared below, before the app starts
        self.events = self.app.topic(s.topic_events, partitions=s.partitions, key_serializer="raw",
                                     value_serializer="raw")
        self.recs_topic = self.app.topic(s.topic_recommendations, partitions=s.partitions, key_serializer="raw",
                                         value_serializer="raw")
        self.dlq_topic = self.app.topic(s.topic_dead_letter, key_serializer="raw", value_serializer="raw")
        self.table = self.app.Table(TABLE, default=None, partitions=s.partitions, key_type=bytes, value_type=bytes,
                                    schema=faust.Schema(key_serializer="raw", value_serializer="raw"))
        self.store = UserStore(self.table, s.state_cache)
        self.send_rec: RecSink = self._send_rec
        self.send_dead: Sink = self._send_dead
        self.send_event: Sink = self._send_event
        self.lifecycle = Lifecycle(self, self.services.model)  # hot swap and rollback of the served model
        self.follower = Follower(s, self.lifecycle.on_announcement)
        self._checking: asyncio.Future[None] | None = None
        if s.follow_models:
            self.app.task(self._follow)
        self.agent = self.app.agent(self.events, name="adapt")(self._consume)
        patches.on_agent_crash(self.agent, self._agent_crashed)
        self.app.timer(interval=max(s.linger_ms, 1.0) / 1000.0)(self._tick)
        self.app.timer(interval=5.0)(self.update_gauges)
        self.app.on_before_shutdown.connect(self.shutdown)  # type: ignore[arg-type]
        add_routes(self)

    async def _consume(self, stream: Any) -> None:
        consumer = self.app.consumer
        patches.eager_drain(consumer)
        patches.room_for_changelog(self.app, 4 * self.settings.batch_max_users + 100)  # the most users pending
        patches.before_every_commit(consumer, self._before_commit)
        self._watch = asyncio.ensure_future(self._compute_ready())
        self._stream = stream
        async for event in stream.noack().events():  # acknowledged in on_message or after the flush
            msg = event.message
            await self.on_message(event.key, event.value, msg.topic, msg.partition, msg.offset, msg.timestamp, event)

    async def on_message(self, key: bytes | None, raw: bytes | None, topic: str, partition: int, offset: int,
                         kafka_ts: float, event: Any = None) -> None:
        """Decode → step → mark pending, or dead-letter, or re-key. Must run inside the agent's stream.

        No message can crash the agent: an exception while applying one is that message's dead
        letter (reason ``internal_error``), and the worker goes on with the next.

        ``event`` (faust's, from the agent) is acknowledged once handled: at once if it asks for no
        recommendation, else once its user's recommendation is sent (:meth:`flush`). An offset is
        committed only past acknowledged messages, so a crash before a recommendation went out
        replays its event, and the replay (already in the state) is recommended for again.
        """
        s, m = self.settings, self.metrics
        self.gauges.offsets[partition] = offset
        try:
            out = apply(raw, key, self.store.get(key), s.buffer_size, s.consumed_size, self.limits,
                        position=(partition, offset))
        except Exception as exc:  # noqa: BLE001 - a bug or a hostile input: this message only
            out = internal_error(exc, raw, topic, partition, offset)
        if isinstance(out, Invalid):
            m.events_invalid.labels(out.reason).inc()
            await self.dead_letter(out, key, topic, partition, offset)
            await self._acknowledge(event)
            return
        if isinstance(out, Rekey):  # no key: send it again to its user's partition
            await deliver(self.send_event, out.key, out.raw, what="rekey", retries=m.delivery_retries)
            m.events_rekeyed.inc()
            await self._acknowledge(event)
            return
        assert isinstance(out, Applied) and key is not None  # apply() returns Rekey for a keyless event
        m.events_consumed.labels(out.event.kind).inc()
        if not out.new:
            m.events_redelivered.inc()
            if not out.replay:  # a duplicate event id: already applied, already recommended for
                await self._acknowledge(event)
                return
        else:
            self.store.put(key, partition, out.state)
        self.pending.touch(out.state, out.new, kafka_ts or time.time(), event)
        if len(self.pending) >= 4 * s.batch_max_users:
            await self.flush(wait=True)  # backpressure: consumption runs ahead of compute by a few batches only
        elif len(self.pending) >= s.batch_max_users:
            await self._tick()

    async def dead_letter(self, invalid: Invalid, key: bytes | None, topic: str, partition: int,
                          offset: int) -> None:
        """Send ``invalid``'s bounded record and wait until the broker has it (retried; see delivery)."""
        value = deadletter.record(invalid, topic, partition, offset, key, raw_limit=self.settings.dead_letter_raw_bytes)
        await deliver(self.send_dead, deadletter.record_key(key), value, what="dead_letter",
                      retries=self.metrics.delivery_retries, fallback=lambda: deadletter.minimal(value))
        self.metrics.dead_lettered.inc()

    async def _agent_crashed(self, agent: Any, exc: BaseException) -> None:
        """faust's supervisor restarts a crashed agent; count it (an alert fires on any)."""
        self.metrics.agent_restarts.inc()
        log.error("agent %s crashed (%s); its supervisor restarts it", getattr(agent, "name", "?"), type(exc).__name__)

    async def _tick(self) -> None:
        """The linger timer: start a flush in the background unless one is running."""
        if len(self.pending) and not self._flushing.locked() and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self.flush())
            self._task.add_done_callback(_log_failure)

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
                self.store.write()  # also stores every pending user's newest state
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
                    self.latest.remember(rec)
                    await self.send_rec(rec)
                    self.metrics.recommendations_emitted.inc()
                    self.metrics.event_to_recommendation_seconds.observe(max(0.0, time.time() - t.first_seen))
                for t in batch:  # a user whose adaptation failed too: its state is stored, its next event retries
                    for event in t.acks:
                        await self._acknowledge(event)

    async def _acknowledge(self, event: Any) -> None:
        if event is not None and self._stream is not None:
            await self._stream.ack(event)

    async def _before_commit(self) -> None:
        """Before every offset commit (periodic, at a rebalance, at a stop): send the pending users'
        recommendations, so that the commit can include their messages (a rebalance and a stop wait
        until every message is acknowledged), then write the changed states, so that no offset is
        committed ahead of its state."""
        if len(self.pending):
            await self.flush(wait=True)
        self.store.write()

    async def _compute(self, batch: list[Touched]) -> list[tuple[Touched, Recommendation]]:
        """Adapt and score ``batch``. If that fails, each user is tried alone, so one user's failure
        costs only that user's recommendation (its state is stored; its next event tries again)."""
        async def run(part: list[Touched]) -> list[tuple[Touched, Recommendation]]:
            out = await self.compute.batch([t.state for t in part], [self.store.raw(t.state) for t in part],
                                           [t.new for t in part])
            self.gauges.observe(out, len(part))
            self.lifecycle.observe(out)
            recs: dict[str, list[Recommendation]] = {}
            for rec in out.recs:  # one per served domain
                recs.setdefault(rec.user_id, []).append(rec)
            return [(t, rec) for t in part for rec in recs.get(t.state.user_id, [])]

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

    async def _compute_ready(self) -> bool:
        """Wait for the compute child, which loads the model while the worker starts; stop if it cannot."""
        try:
            await self.compute.ready()
            return True
        except Exception as exc:  # noqa: BLE001 - a model the child cannot load: nothing to serve
            log.critical("the compute child could not load the model (%s: %s); stopping", type(exc).__name__, exc)
            await self.app.crash(exc)
            return False

    async def shutdown(self, sender: Any = None, **_: Any) -> None:
        """At a graceful stop, once faust has stopped consuming and committed: the commit has already
        sent the pending users' recommendations (:meth:`_before_commit`; faust waits for every
        message to be acknowledged), so this loop only catches what is left, then the compute child
        stops. So a SIGTERM loses no recommendation, and the next owner of the partitions starts
        exactly at the committed offsets (nothing reprocessed)."""
        if self._task is not None:
            await asyncio.wait([self._task])  # the timer's flush, if one is running
        while len(self.pending) and await self._compute_ready():
            await self.flush(wait=True)
        self.store.write()  # a no-op unless an event arrived after the last commit
        self.follower.stop()
        self.compute.close()
        m = self.metrics.registry.get_sample_value
        log.info("stopped: %d events consumed, %d redelivered, %d recommendations sent",
                 sum(m("metarec_events_consumed_total", {"kind": k}) or 0 for k in KINDS),
                 m("metarec_events_redelivered_total") or 0, m("metarec_recommendations_emitted_total") or 0)

    async def update_gauges(self) -> None:
        await self.gauges.update(self.app, len(self.store))
        recovering, left = patches.recovery_progress(self.app)
        self.metrics.recovery_remaining.set(max(left, 0))
        idle = self.recovery.observe(time.monotonic(), recovering, left)
        if idle is not None:  # faust issue 74: a restart recovers where this one hangs
            log.critical("the table recovery made no progress for %.0f s (%d changelog records left); stopping "
                         "the worker so that it is restarted (METAREC_RECOVERY_STALL_S)", idle, left)
            await self.app.crash(RuntimeError("table recovery stalled"))
            return
        self.lifecycle.gauges()
        if self._checking is None or self._checking.done():  # a rollback swaps in the background
            self._checking = asyncio.ensure_future(self.lifecycle.check())
            self._checking.add_done_callback(_log_failure)

    async def _follow(self) -> None:
        self.follower.start(asyncio.get_running_loop())

    async def replace_compute(self, new: Compute) -> None:
        """Serve from ``new`` from the next batch on (between batches: under the flush lock)."""
        async with self._flushing:
            old, self.compute = self.compute, new
            self.latest = Latest(self.settings.latest_cache)  # answers of the old version
        old.close()

    async def _send_rec(self, rec: Recommendation) -> None:
        await self.recs_topic.send(key=rec.user_id.encode(), value=as_json(rec))

    async def _send_dead(self, key: bytes | None, value: bytes) -> None:
        await (await self.dlq_topic.send(key=key, value=value, force=True))  # sent, then acknowledged

    async def _send_event(self, key: bytes | None, value: bytes) -> None:
        await (await self.events.send(key=key, value=value, force=True))


def _log_failure(task: asyncio.Future[None]) -> None:
    """A flush the timer started has no one awaiting it: its failure must reach the log."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a background task (flush, rollback check) failed", exc_info=task.exception())


def create_app(settings: WorkerSettings | None = None, services: Services | None = None,
               compute: Compute | None = None) -> Adapter:
    return Adapter(settings or WorkerSettings(), services, compute)
