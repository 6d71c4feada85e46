"""Following the models topic: a thread reads announcements and hands them to the event loop.

A kafka-python consumer with no group (every worker reads the whole one-partition topic) starts
at the beginning; what was there at start is read up to its end and only the newest announcement
is applied (one switch, not one per past version); after that, each new one as it arrives. The
loop calls :meth:`services.adapter.lifecycle.Lifecycle.on_announcement`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from metarec import announce
from metarec.kafka_io import _connect
from metarec.settings import WorkerSettings

log = logging.getLogger("metarec.worker")
Handler = Callable[[announce.Announcement], Coroutine[Any, Any, None]]


class Follower:
    def __init__(self, settings: WorkerSettings, handler: Handler) -> None:
        self.settings, self.handler = settings, handler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(target=self._run, args=(loop,), daemon=True, name="metarec-models")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                self._follow(loop)
            except Exception as exc:  # noqa: BLE001 - the broker is away: try again; the model keeps serving
                log.warning("following %s failed (%s: %s); retrying in 5 s", self.settings.topic_models,
                            type(exc).__name__, exc)
                self._stop.wait(5.0)

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        s = self.settings
        c: KafkaConsumer = _connect(KafkaConsumer, s, enable_auto_commit=False, client_id="metarec-models")
        try:
            tp = TopicPartition(s.topic_models, 0)
            while not c.partitions_for_topic(s.topic_models):
                if self._stop.wait(2.0):
                    return
            c.assign([tp])
            c.seek_to_beginning(tp)
            end = c.end_offsets([tp])[tp]
            pending: announce.Announcement | None = None
            while not self._stop.is_set():
                for records in c.poll(timeout_ms=1000).values():
                    for r in records:
                        ann = announce.decode(r.value)
                        if ann is None:
                            continue
                        if r.offset + 1 < end:
                            pending = ann  # history: only the newest of it counts
                        else:
                            pending = None
                            self._hand(loop, ann)
                if pending is not None and c.position(tp) >= end:
                    self._hand(loop, pending)
                    pending = None
        finally:
            c.close()

    def _hand(self, loop: asyncio.AbstractEventLoop, ann: announce.Announcement) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.handler(ann), loop)
        try:
            fut.result()  # one at a time, in order
        except concurrent.futures.CancelledError:  # the loop cancelled it: the worker is stopping
            log.info("not applying the announcement of %s: the worker is stopping", ann.version)
            self._stop.set()
        except Exception:  # noqa: BLE001
            log.exception("applying the announcement of %s failed", ann.version)
