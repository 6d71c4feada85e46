"""Load and measurement plumbing for the e2e bench: a paced producer process, a reader of the
recommendations topic, and per-event latency from send to the first covering recommendation."""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from metarec.events import Event, encode
from metarec.kafka_io import producer
from metarec.settings import KafkaSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefixed(evs: Sequence[Event], prefix: str, n: int) -> list[Event]:
    out = []
    for k in range(n):
        e = evs[k % len(evs)]
        out.append(msgspec.structs.replace(e, event_id=f"{prefix}{k}", user_id=f"{prefix}{e.user_id}"))
    return out


def produce(settings: KafkaSettings, evs: list[Event], rate: float, out: Any) -> None:
    """Child process: send ``evs`` at ``rate``/s (0: as fast as possible); report send times.

    Events are encoded before the clock starts, so the load generator spends its CPU on
    sending only (it shares the machine with the worker). Latency is measured from ``sent``.
    """
    prod = producer(settings)
    msgs = [(e.user_id.encode(), encode(e)) for e in evs]
    sent = np.zeros(len(evs))
    start = time.monotonic()
    for k, (key, value) in enumerate(msgs):
        if rate > 0:
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sent[k] = time.time()
        prod.send(settings.topic_events, key=key, value=value)
    prod.flush()
    prod.close()
    out.put((sent.tolist(), len(evs) / (time.monotonic() - start)))


class Recs(threading.Thread):
    """Reads the recommendations topic from the beginning: ``(arrival, user_id, events_seen)``."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(daemon=True)
        import json

        from kafka import KafkaConsumer

        self.got: list[tuple[float, str, int]] = []
        self.emitted: dict[tuple[str, int], float] = {}  # (user, events_seen) -> the worker's emitted_at
        self.seen: dict[str, int] = {}
        self.stop = threading.Event()
        self.consumer = KafkaConsumer(
            settings.topic_recommendations, bootstrap_servers=settings.kafka_bootstrap.split(","),
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=5,
            value_deserializer=json.loads)
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.is_set():
            batch = self.consumer.poll(timeout_ms=50)
            now = time.time()
            with self.lock:
                for msgs in batch.values():
                    for m in msgs:
                        u, n = m.value["user_id"], int(m.value["events_seen"])
                        self.got.append((now, u, n))
                        self.emitted[(u, n)] = float(m.value["emitted_at"])
                        self.seen[u] = max(self.seen.get(u, 0), n)
        self.consumer.close()

    def covered(self, want: dict[str, int]) -> int:
        with self.lock:
            return sum(min(self.seen.get(u, 0), n) for u, n in want.items())


def counts(evs: Sequence[Event]) -> dict[str, int]:
    c: dict[str, int] = defaultdict(int)
    for e in evs:
        c[e.user_id] += 1
    return dict(c)


def wait(recs: Recs, want: dict[str, int], timeout: float) -> bool:
    total, end = sum(want.values()), time.monotonic() + timeout
    while time.monotonic() < end:
        if recs.covered(want) >= total:
            return True
        time.sleep(0.05)
    return False


def latencies(evs: Sequence[Event], sent: Sequence[float], recs: Recs, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Per event, in send order: arrival of the first recommendation covering it − its send time,
    and the part of that spent before the worker emitted it (s; NaN where never covered)."""
    seq: dict[str, list[int]] = defaultdict(list)
    for k, e in enumerate(evs):
        seq[e.user_id].append(k)
    with recs.lock:
        mine = sorted((a, u, n) for a, u, n in recs.got if u.startswith(prefix))
    done: dict[str, int] = defaultdict(int)
    lat = np.full(len(evs), np.nan)
    before_emit = np.full(len(evs), np.nan)
    for a, u, n in mine:
        idx = seq.get(u, [])
        while done[u] < min(n, len(idx)):
            k = idx[done[u]]
            lat[k] = a - sent[k]
            before_emit[k] = recs.emitted.get((u, n), a) - sent[k]
            done[u] += 1
    return lat, before_emit
