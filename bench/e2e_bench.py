"""4. End to end on a real broker: one worker process's sustained events/s, then the
event→recommendation latency at 25%, 50% and 100% of that rate.

Sustained rate: a backlog of events is produced first, then the worker starts and drains it;
the rate is the events its recommendations account for (per user, the largest
``events_seen``) over the time between the first and the last recommendation needed.
Latency: a producer process sends at a fixed rate, stamping each event with its send time;
each event's latency is the arrival, at a consumer, of the first recommendation whose
``events_seen`` covers it, minus that send time. Each phase uses fresh user ids (prefixed),
so users start empty in every phase; items are MovieLens-100K's (or the simulated log's).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from metarec.events import Event, encode
from metarec.kafka_io import ensure_topics, producer
from metarec.settings import KafkaSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefixed(evs: Sequence[Event], prefix: str, n: int) -> list[Event]:
    out = []
    for k in range(n):
        e = evs[k % len(evs)]
        out.append(Event(event_id=f"{prefix}{k}", user_id=f"{prefix}{e.user_id}", item_id=e.item_id, kind=e.kind,
                         value=e.value, ts=e.ts, context=e.context))
    return out


def _produce(settings: KafkaSettings, evs: list[Event], rate: float, out: Any) -> None:
    """Child process: send ``evs`` at ``rate``/s (0: as fast as possible); report send times."""
    prod = producer(settings)
    sent = np.zeros(len(evs))
    start = time.monotonic()
    for k, e in enumerate(evs):
        if rate > 0:
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        now = time.time()
        e2 = Event(event_id=e.event_id, user_id=e.user_id, item_id=e.item_id, kind=e.kind, value=e.value, ts=now,
                   context=e.context)
        prod.send(settings.topic_events, key=e.user_id.encode(), value=encode(e2))
        sent[k] = now
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


def _counts(evs: Sequence[Event]) -> dict[str, int]:
    c: dict[str, int] = defaultdict(int)
    for e in evs:
        c[e.user_id] += 1
    return dict(c)


def _wait(recs: Recs, want: dict[str, int], timeout: float) -> bool:
    total, end = sum(want.values()), time.monotonic() + timeout
    while time.monotonic() < end:
        if recs.covered(want) >= total:
            return True
        time.sleep(0.05)
    return False


def _latencies(evs: Sequence[Event], sent: Sequence[float], recs: Recs,
               prefix: str) -> tuple[np.ndarray, int, np.ndarray]:
    """Per event: arrival of the first recommendation covering it − its send time (s); the
    number of events never covered; and the part spent before the worker emitted it."""
    seq: dict[str, list[float]] = defaultdict(list)
    for e, t in zip(evs, sent):
        seq[e.user_id].append(t)
    with recs.lock:
        mine = sorted((a, u, n) for a, u, n in recs.got if u.startswith(prefix))
    done: dict[str, int] = defaultdict(int)
    lat: list[float] = []
    before_emit: list[float] = []
    for a, u, n in mine:
        ts = seq.get(u, [])
        while done[u] < min(n, len(ts)):
            lat.append(a - ts[done[u]])
            before_emit.append(recs.emitted.get((u, n), a) - ts[done[u]])
            done[u] += 1
    return np.array(lat), len(sent) - len(lat), np.array(before_emit)


def run(quick: bool, model_dir: Path, bootstrap: str, variant: str = "process",
        tmp: Path | None = None) -> dict[str, Any]:
    evs, source = common.events()
    tag = uuid.uuid4().hex[:10]
    env_topics = {"METAREC_TOPIC_EVENTS": f"bench-{tag}-events", "METAREC_TOPIC_RECOMMENDATIONS": f"bench-{tag}-recs",
                  "METAREC_TOPIC_DEAD_LETTER": f"bench-{tag}-dlq", "METAREC_APP_ID": f"bench-{tag}-adapter"}
    settings = KafkaSettings(kafka_bootstrap=bootstrap, topic_events=env_topics["METAREC_TOPIC_EVENTS"],
                             topic_recommendations=env_topics["METAREC_TOPIC_RECOMMENDATIONS"],
                             topic_dead_letter=env_topics["METAREC_TOPIC_DEAD_LETTER"])
    ensure_topics(settings)
    n_sat = 1_500 if quick else 12_000
    phase_s = 5.0 if quick else 20.0
    ctx = mp.get_context("fork")

    backlog = _prefixed(evs, "s-", n_sat)
    q = ctx.Queue()
    p = ctx.Process(target=_produce, args=(settings, backlog, 0.0, q))
    p.start()
    _, produce_rate = q.get()
    p.join()

    recs = Recs(settings)
    recs.start()
    workdir = Path(tmp or "/tmp") / f"bench-worker-{tag}"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_topics, "METAREC_KAFKA_BOOTSTRAP": bootstrap, "METAREC_DATA_DIR": str(workdir),
           "METAREC_COMPUTE": variant, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(common.ROOT / "shared"), str(common.ROOT)])}
    log = open(workdir / "worker.log", "w")
    t_start = time.time()
    worker = subprocess.Popen([sys.executable, "-m", "metarec", "worker", "--model-dir", str(model_dir),
                               "--web-port", str(_free_port()), "--loglevel", "warning"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))
    out: dict[str, Any] = {"source": source, "variant": variant, "backlog_events": n_sat,
                           "backlog_produce_events_per_s": produce_rate, "phases": {}}
    try:
        want = _counts(backlog)
        ok = _wait(recs, want, 60 + n_sat / 50)
        if not ok:
            raise RuntimeError(f"e2e: the worker covered {recs.covered(want)} of {n_sat} backlog events; "
                               f"see {workdir / 'worker.log'}")
        with recs.lock:
            arr = sorted(a for a, u, _ in recs.got if u.startswith("s-"))
            first = min((a, n) for a, u, n in recs.got if u.startswith("s-"))
        t_first, t_done = arr[0], arr[-1]
        sustained = (n_sat - first[1]) / max(t_done - t_first, 1e-3)
        out.update(events_per_s=sustained, worker_start_to_first_rec_s=t_first - t_start,
                   recommendations_for_backlog=len(arr), events_per_recommendation=n_sat / len(arr))
        for frac in (0.25, 0.5, 1.0):
            prefix = f"p{int(frac * 100)}-"
            rate = frac * sustained
            phase = _prefixed(evs[n_sat % len(evs):] + evs[:n_sat % len(evs)], prefix, int(rate * phase_s))
            q = ctx.Queue()
            p = ctx.Process(target=_produce, args=(settings, phase, rate, q))
            p.start()
            sent, achieved = q.get()
            p.join()
            _wait(recs, _counts(phase), 30 + phase_s)
            lat, missing, pre = _latencies(phase, sent, recs, prefix)
            pct = {f"p{k}_ms": float(np.percentile(lat, k) * 1e3) if len(lat) else float("nan") for k in (50, 95, 99)}
            pct["p50_ms_send_to_emit"] = float(np.percentile(pre, 50) * 1e3) if len(pre) else float("nan")
            pct["p50_ms_emit_to_arrival"] = (float(np.percentile(lat - pre, 50) * 1e3) if len(lat)
                                             else float("nan"))
            out["phases"][f"{int(frac * 100)}%"] = {"target_events_per_s": rate, "produced_events_per_s": achieved,
                                                   "events": len(phase), "uncovered_events": missing, **pct,
                                                   "max_ms": float(lat.max() * 1e3) if len(lat) else float("nan")}
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        recs.stop.set()
        recs.join(5)
        log.close()
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        for name, ph in r["phases"].items():
            rows.append([r["variant"], f"{r['events_per_s']:,.0f}", name, f"{ph['target_events_per_s']:,.0f}",
                         f"{ph['produced_events_per_s']:,.0f}", ph["p50_ms"], ph["p95_ms"], ph["p99_ms"],
                         ph["p50_ms_send_to_emit"], ph["p50_ms_emit_to_arrival"], ph["uncovered_events"]])
    return ("# End to end (real Kafka broker, one worker: compute in a child process or a thread)\n\n"
            + common.table(["compute", "sustained events/s", "load", "target ev/s", "produced ev/s", "p50 ms",
                            "p95 ms", "p99 ms", "p50 send→emit", "p50 emit→arrival", "uncovered"], rows)
            + "\nLatency: event send time → arrival of the first recommendation covering it at a consumer. "
              "Sustained: a backlog drained by the worker (events per recommendation: "
            + ", ".join(f"{r['variant']} {r['events_per_recommendation']:.2f}" for r in results) + ").\n")
