"""The RocksDB table store (``METAREC_STORE=rocksdb://``, faust's RocksDB store through rocksdict; the production setting): a restarted
worker reads its users' state from its local data directory and replays only the changelog records
it has not got, instead of the whole changelog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.broker.conftest import WorkerProcess, consume_json, events_of, produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def recovery_starts(log: str) -> list[list[int]]:
    """Per start, the changelog offsets faust's active recovery began at (-1: from the beginning)."""
    runs = []
    for block in log.split("Reading Starts At - Active")[1:]:
        table = block.split("Resuming flow")[0]
        runs.append([int(m) for m in re.findall(r"\|\s+\d+\s+\|\s+(-?\d+)\s+\|", table)])
    return runs


def test_a_restart_reads_local_state_instead_of_the_whole_changelog(worker_env: dict, kafka_bootstrap: str,
                                                                   tmp_path: Path, sim_events: list) -> None:
    env = {**worker_env, "METAREC_STORE": "rocksdb://"}
    users = sorted({e.user_id for e in sim_events})[:12]
    evs = [e for e in sim_events if e.user_id in users]
    first, second = evs[:120], evs[120:180]
    counts = {u: 0 for u in users}
    topic_recs = env["METAREC_TOPIC_RECOMMENDATIONS"]

    def caught_up(m: list) -> bool:
        return all(max((r["events_seen"] for r in m if r["user_id"] == u), default=0) == n
                   for u, n in counts.items() if n)

    w = WorkerProcess(env, tmp_path / "worker.log")
    w.start()
    produce(kafka_bootstrap, env["METAREC_TOPIC_EVENTS"], events_of(first))
    for e in first:
        counts[e.user_id] += 1
    consume_json(kafka_bootstrap, topic_recs, caught_up, timeout=60)
    w.stop()
    assert any(Path(env["METAREC_DATA_DIR"]).rglob("*.sst")) or any(Path(env["METAREC_DATA_DIR"]).rglob("CURRENT")), \
        "RocksDB files in the data directory"
    w.start()
    produce(kafka_bootstrap, env["METAREC_TOPIC_EVENTS"], events_of(second))
    for e in second:
        counts[e.user_id] += 1
    msgs = consume_json(kafka_bootstrap, topic_recs, caught_up, timeout=60)
    w.stop()
    newest = {u: max((r["events_seen"] for r in msgs if r["user_id"] == u), default=0) for u in users}
    assert newest == counts, "the state read back from RocksDB continues where it was"
    starts = recovery_starts(w.log_path.read_text())
    assert len(starts) == 2 and starts[0] and all(o == -1 for o in starts[0]), starts
    assert any(o >= 0 for o in starts[1]), f"the second start resumed from RocksDB's offsets: {starts}"
