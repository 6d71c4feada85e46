"""The worker's gauges: live quality, consumer lag, the broker's reachability, users held.

:meth:`Gauges.observe` takes each batch's live-quality samples and timings; :meth:`Gauges.update`
runs on a 5 s timer.
"""

from __future__ import annotations

from typing import Any

from metarec.metrics import Metrics
from metarec.quality import Rolling
from services.adapter.compute import BatchOut
from services.adapter.patches import broker_reachable, committed_offsets


class RecoveryWatch:
    """A table recovery stalled: it has run for ``stall_s`` without reading one changelog record.

    Fed every few seconds with :func:`services.adapter.patches.recovery_progress`; ``observe``
    returns the seconds without progress once they pass ``stall_s`` (``0``: never)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._left: int | None = None
        self._since = 0.0

    def observe(self, now: float, in_recovery: bool, left: int) -> float | None:
        if not in_recovery or self.stall_s <= 0 or left == 0:
            self._left = None
            return None
        if self._left is None or (left >= 0 and (self._left < 0 or left < self._left)):
            self._left, self._since = left, now  # started, or made progress
            return None
        idle = now - self._since
        return idle if idle >= self.stall_s else None


class Gauges:
    def __init__(self, metrics: Metrics, quality_window: int, topic: str) -> None:
        self.metrics, self.topic = metrics, topic
        self.quality = {"init": Rolling(quality_window), "adapted": Rolling(quality_window)}
        self.offsets: dict[int, int] = {}  # last processed offset per events partition (set by the agent)
        self._lag_labels: set[tuple[str, str]] = set()  # consumer_lag series this worker reports

    def observe(self, out: BatchOut, users: int) -> None:
        """Live quality (predictions made before learning) and compute timings of one batch."""
        m = self.metrics
        for name, preds in (("init", out.init), ("adapted", out.adapted)):
            for y, p in zip(out.y, preds):
                self.quality[name].add(y, p)
            m.live_predictions.labels(name).inc(len(preds))
        m.adapt_seconds.observe(out.adapt_s)
        m.adapt_batch_users.observe(users)
        m.score_seconds.observe(out.score_s)

    async def update(self, app: Any, users: int) -> None:
        m = self.metrics
        m.broker_connected.set(1.0 if await broker_reachable(app) else 0.0)
        for name, window in self.quality.items():
            if len(window) >= 10:
                m.live_auc.labels(name).set(window.auc())
                m.live_logloss.labels(name).set(window.logloss())
        m.active_users.set(users)
        self._lag(app.consumer)

    def _lag(self, consumer: Any) -> None:
        m = self.metrics
        assigned = {tp for tp in consumer.assignment() if tp.topic == self.topic}
        for topic, partition in self._lag_labels - {(tp.topic, str(tp.partition)) for tp in assigned}:
            m.consumer_lag.remove(topic, partition)  # lost in a rebalance: another worker reports it now
        self._lag_labels = {(tp.topic, str(tp.partition)) for tp in assigned}
        committed = committed_offsets(consumer)
        for tp in assigned:
            try:
                hw = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - highwater is unknown until the first fetch
                continue
            done = self.offsets.get(tp.partition)
            pos = done + 1 if done is not None else (committed.get(tp) or 0)
            m.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, (hw or 0) - pos))
