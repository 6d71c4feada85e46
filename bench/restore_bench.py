"""Restore: from a worker's start to "Ready" when the changelog holds N users' states, per table store.

``memory://`` replays the whole changelog at every start. ``rocksdb://`` (faust's RocksDB store,
through rocksdict) replays it once into the data directory; a restart on the same directory reads
its state there and replays only the records it has not got. Measured in one run on one broker:
memory (a start), rocksdb on an empty directory (a first start), rocksdb restarted after a SIGTERM.
Full: 1,000,000 users; quick: 20,000.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from bench import common
from metarec import state as st
from metarec.events import new_event
from tests.broker.conftest import free_port

PARTITIONS = 4


def fill(bootstrap: str, topic: str, users: int, seed: int = 0) -> tuple[float, int]:
    """``users`` states of 8 buffered events each into a compacted changelog topic; (seconds, bytes)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    rng = random.Random(seed)
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20, acks=1,
                      max_in_flight_requests_per_connection=8, enable_idempotence=False)
    t0, size = time.monotonic(), 0
    for u in range(users):
        uid = f"r{u:07d}"
        evs = [new_event(uid, f"i{rng.randrange(5000)}", "click", 1, ts=1.7e9 + k, event_id=f"{uid}-{k}",
                         context={"device": "mobile"}) for k in range(8)]
        value = st.dumps(st.step(None, evs)[0])
        size += len(value)
        p.send(topic, key=uid.encode(), value=value)
    p.flush()
    p.close()
    return time.monotonic() - t0, size


def start_to_ready(env: dict[str, str], model_dir: Path, log: Path, timeout: float) -> tuple[float, subprocess.Popen]:
    t0 = time.monotonic()
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "metarec", "worker", "--model-dir", str(model_dir),
                                 "--web-port", str(free_port()), "--loglevel", "info"], env=env, stdout=f,
                                stderr=subprocess.STDOUT)
    mark = log.stat().st_size if log.exists() else 0
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"restore bench: the worker exited with {proc.returncode}; see {log}")
        with open(log, "rb") as f:
            f.seek(max(0, mark - 1))
            if b"Worker]: Ready" in f.read():
                return time.monotonic() - t0, proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"restore bench: no Ready within {timeout:.0f} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run(quick: bool, model_dir: Path, bootstrap: str, tmp: Path) -> dict[str, Any]:
    users = 20_000 if quick else 1_000_000
    tag = uuid.uuid4().hex[:8]
    app_id = f"restore-{tag}"
    fill_s, size = fill(bootstrap, f"{app_id}-users-changelog", users)
    base = {**os.environ, "METAREC_KAFKA_BOOTSTRAP": bootstrap, "METAREC_APP_ID": app_id,
            "METAREC_TOPIC_EVENTS": f"{app_id}-events", "METAREC_TOPIC_RECOMMENDATIONS": f"{app_id}-recs",
            "METAREC_TOPIC_DEAD_LETTER": f"{app_id}-dlq", "METAREC_TOPIC_MODELS": f"{app_id}-models", "METAREC_PARTITIONS": str(PARTITIONS),
            "METAREC_WEB_HOST": "127.0.0.1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(common.ROOT / "shared"), str(common.ROOT)])}
    timeout = 120 + users / 500
    out: dict[str, Any] = {"users": users, "changelog_bytes": size, "fill_s": round(fill_s, 1), "runs": {}}
    for name, store, fresh in (("memory", "memory://", True), ("rocksdb_first_start", "rocksdb://", True),
                               ("rocksdb_restart", "rocksdb://", False)):
        data = tmp / f"restore-{tag}-{store.split(':')[0]}"
        if fresh:
            shutil.rmtree(data, ignore_errors=True)
        env = {**base, "METAREC_STORE": store, "METAREC_DATA_DIR": str(data)}
        seconds, proc = start_to_ready(env, model_dir, tmp / f"restore-{tag}-{name}.log", timeout)
        stop(proc)
        out["runs"][name] = {"store": store, "start_to_ready_s": round(seconds, 1)}
        print(f"bench restore: {name}: {seconds:.1f} s for {users:,} users", flush=True)
    return out


def markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(f"| {name} | `{v['store']}` | {v['start_to_ready_s']:.1f} |" for name, v in r["runs"].items())
    return (f"# Restore\n\nA worker's start to faust's \"Ready\" with {r['users']:,} users' states in the changelog "
            f"({r['changelog_bytes'] / 1e6:.0f} MB, 8 buffered events each; filled in {r['fill_s']:.0f} s). "
            "`python bench/run.py --only restore`.\n\n| run | store | start → Ready (s) |\n|---|---|---|\n"
            f"{rows}\n\nThe memory store replays the whole changelog at every start; RocksDB replays it once, into the "
            "data directory, and a restart reads it there.\n")
