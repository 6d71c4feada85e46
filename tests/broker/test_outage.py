"""A broker outage, on a broker of this test's own: the worker survives it quietly and resumes.

The broker is SIGKILLed for 20 s under a live worker. Checked: the worker keeps running, its
log stays short (the libraries' repeated lines are held back to one per kind and 30 s),
``metarec_broker_connected`` goes to 0 and back to 1, and events sent after the restart get
their recommendations with every event counted once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.broker.conftest import Broker, WorkerProcess, consume_json, events_of, produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE_S = 20.0


def gauge(worker: WorkerProcess, name: str) -> float | None:
    for line in worker.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return False


def test_a_broker_outage_is_survived_quietly(own_broker: Broker, worker_env: dict, tmp_path: Path,
                                             sim_events: list) -> None:
    env = {**worker_env, "METAREC_KAFKA_BOOTSTRAP": own_broker.bootstrap}
    users = sorted({e.user_id for e in sim_events})[:10]
    before = [e for e in sim_events if e.user_id in users][:40]
    after = [e for e in sim_events if e.user_id in users][40:80]
    w = WorkerProcess(env, tmp_path / "worker.log")
    w.start()
    try:
        produce(own_broker.bootstrap, env["METAREC_TOPIC_EVENTS"], events_of(before))
        counts = {u: sum(1 for e in before if e.user_id == u) for u in users}
        consume_json(own_broker.bootstrap, env["METAREC_TOPIC_RECOMMENDATIONS"],
                     lambda m: {r["user_id"]: r["events_seen"] for r in m} == {u: n for u, n in counts.items() if n})
        assert wait_for(lambda: gauge(w, "metarec_broker_connected") == 1.0, 30)
        lines_before = len(w.log_path.read_text(errors="replace").splitlines())
        own_broker.kill()
        assert wait_for(lambda: gauge(w, "metarec_broker_connected") == 0.0, OUTAGE_S), "the gauge shows the outage"
        time.sleep(max(0.0, OUTAGE_S - 10))
        assert w.proc is not None and w.proc.poll() is None, "the worker survives the outage"
        own_broker.up()
        assert wait_for(lambda: gauge(w, "metarec_broker_connected") == 1.0, 60), "the gauge shows the recovery"
        outage_lines = len(w.log_path.read_text(errors="replace").splitlines()) - lines_before
        produce(own_broker.bootstrap, env["METAREC_TOPIC_EVENTS"], events_of(after))
        for e in after:
            counts[e.user_id] = counts.get(e.user_id, 0) + 1
        msgs = consume_json(own_broker.bootstrap, env["METAREC_TOPIC_RECOMMENDATIONS"],
                            lambda m: all(max((r["events_seen"] for r in m if r["user_id"] == u), default=0) == n
                                          for u, n in counts.items() if n), timeout=180)
        newest = {u: max((r["events_seen"] for r in msgs if r["user_id"] == u), default=0) for u in counts}
        assert newest == counts, "every event counted once across the outage"
        held = gauge(w, "metarec_log_lines_held_total")
        print(f"\noutage of ~{OUTAGE_S:.0f} s: {outage_lines} log lines written, {held:.0f} held back")
        assert outage_lines < 150, f"{outage_lines} log lines during a {OUTAGE_S:.0f} s outage:\n{w.tail(60)}"
    finally:
        w.stop()
