"""Graceful shutdown: SIGTERM finishes the pending work, commits and leaves; the next worker starts at
the committed offsets, so it reprocesses nothing and every pending user got its recommendation."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from metarec.kafka_io import static_member_present
from metarec.settings import KafkaSettings
from tests.broker.conftest import WorkerProcess, consume_json, events_of, produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def counters(log: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"stopped: (\d+) events consumed, (\d+) redelivered", log)]


def consumed(w: WorkerProcess) -> int:
    return int(sum(float(line.split()[-1]) for line in w.metrics().splitlines()
                   if line.startswith("metarec_events_consumed_total{")))


def test_sigterm_hands_over_without_reprocessing(worker_env: dict, kafka_bootstrap: str, tmp_path: Path,
                                                 sim_events: list) -> None:
    env = {**worker_env, "METAREC_GROUP_INSTANCE_ID": "graceful-0", "METAREC_LINGER_MS": "2000"}
    users = sorted({e.user_id for e in sim_events})[:20]
    evs = [e for e in sim_events if e.user_id in users]
    first, second = evs[:200], evs[200:260]
    topic_recs = env["METAREC_TOPIC_RECOMMENDATIONS"]
    log = tmp_path / "worker.log"
    w = WorkerProcess(env, log)
    w.start()
    settings = KafkaSettings(kafka_bootstrap=kafka_bootstrap)
    assert static_member_present(settings, env["METAREC_APP_ID"], "graceful-0"), "the coordinator lists it"
    produce(kafka_bootstrap, env["METAREC_TOPIC_EVENTS"], events_of(first))
    deadline = time.monotonic() + 60
    while consumed(w) < len(first) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert consumed(w) == len(first)
    # a 2 s linger: at SIGTERM, users are still pending; they must get their recommendation anyway
    w.stop()
    counts = {u: sum(1 for e in first if e.user_id == u) for u in users}
    recs = consume_json(kafka_bootstrap, topic_recs,
                        lambda m: all(max((r["events_seen"] for r in m if r["user_id"] == u), default=0) == n
                                      for u, n in counts.items() if n), timeout=30)
    newest = {u: max((r["events_seen"] for r in recs if r["user_id"] == u), default=0) for u in counts}
    assert newest == counts, "every user pending at SIGTERM got its recommendation before the worker left"
    assert "left group" in log.read_text()
    assert not static_member_present(settings, env["METAREC_APP_ID"], "graceful-0"), "and no longer after it left"
    produce(kafka_bootstrap, env["METAREC_TOPIC_EVENTS"], events_of(second))
    w.start()
    for e in second:
        counts[e.user_id] += 1
    consume_json(kafka_bootstrap, topic_recs,
                 lambda m: all(max((r["events_seen"] for r in m if r["user_id"] == u), default=0) == n
                               for u, n in counts.items() if n), timeout=60)
    w.stop()
    runs = counters(log.read_text())
    assert runs == [(len(first), 0), (len(second), 0)], f"(consumed, redelivered) per run: {runs}"
