"""A worker and the continual trainer on a drifting stream, on the real broker.

The trainer learns from the stream and publishes a new version; the running worker switches to
it (no restart) and every user's newest recommendation counts exactly the events sent. Then a
rollback by hand (``metarec models rollback``) puts the first version back in the same worker.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from metarec import announce, modeldir
from metarec.data.simulate import SimConfig, simulate
from metarec.settings import KafkaSettings
from tests.broker.conftest import WorkerProcess, consume_json, events_of, free_port, produce

pytestmark = pytest.mark.kafka


def wait_for(what: str, cond: Any, timeout: float, every: float = 0.5, log: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s" + (f"\n{log()}" if log else ""))


def metric(w: WorkerProcess, name: str, labels: str = "") -> float:
    for line in w.metrics().splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def served(w: WorkerProcess) -> str:
    for line in w.metrics().splitlines():
        if line.startswith("metarec_model_info"):
            return line.split('version="', 1)[1].split('"', 1)[0]
    return ""


def lineage(root: Path, version: str) -> list[str]:
    """``version`` and its parents (manifest ``parent``), newest first."""
    out: list[str] = []
    while version and (root / version / "manifest.json").exists() and version not in out:
        out.append(version)
        version = json.loads((root / version / "manifest.json").read_text()).get("parent") or ""
    return out


def test_the_worker_serves_the_trainers_new_version_without_restarting(kafka_bootstrap, topic_names, model_dir,
                                                                        tmp_path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(model_dir, root / model_dir.name)
    modeldir.point_latest(root, model_dir.name)
    v1 = model_dir.name
    env = {**os.environ, **topic_names, "METAREC_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "METAREC_MODEL_DIR": str(root / "latest"), "METAREC_MODELS_ROOT": str(root),
           "METAREC_DATA_DIR": str(tmp_path / "faust"), "METAREC_WEB_PORT": str(free_port()),
           "METAREC_WEB_HOST": "127.0.0.1", "METAREC_LINGER_MS": "10",
           "METAREC_TRAINER_WEB_PORT": "0", "METAREC_TRAINER_GROUP": topic_names["METAREC_APP_ID"] + "-trainer",
           "METAREC_ROUND_EVERY_EVENTS": "600", "METAREC_ROUND_EVERY_S": "3600", "METAREC_MIN_WINDOW_USERS": "20",
           "METAREC_ROUND_STEPS": "60", "METAREC_ROUND_BUDGET_S": "8", "METAREC_OUTER_LR": "0.003"}
    # the test model was trained on this simulator's seed-7 log; from 30 % of its time span on, tastes
    # and popularity shift and 10 new items arrive
    evs = simulate(SimConfig(users=120, items=80, mean_events=30, seed=7, drift_at=0.3, new_items=10))
    stream = [e for e in evs if e.ts >= SimConfig(days=30.0, drift_at=0.3).drift_ts()]
    first, rest = stream[: len(stream) // 2], stream[len(stream) // 2:]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    tlog = open(tmp_path / "trainer.log", "wb")
    trainer = subprocess.Popen([sys.executable, "-m", "metarec", "trainer"], env=env, stdout=tlog,
                               stderr=subprocess.STDOUT)
    settings = KafkaSettings(kafka_bootstrap=kafka_bootstrap, topic_models=topic_names["METAREC_TOPIC_MODELS"])
    trainer_log = (tmp_path / "trainer.log").read_text
    try:
        pid = worker.proc.pid if worker.proc else None
        topic = topic_names["METAREC_TOPIC_EVENTS"]
        for i in range(0, len(first), 300):  # a steady stream: the trainer's rounds run meanwhile
            produce(kafka_bootstrap, topic, events_of(first[i:i + 300]))
            time.sleep(0.5)
        published = wait_for("a version published by the trainer",
                             lambda: (a := announce.newest(settings, 5.0)) is not None and a.version != v1 and a,
                             240, every=2.0, log=trainer_log)
        v2 = published.version
        assert published.action == "publish" and published.previous == v1 and (root / v2 / "model.onnx").exists()
        assert (root / "latest").resolve().name == v2
        wait_for("the worker's switch", lambda: metric(worker, "metarec_model_swaps_total", '{result="ok"}') >= 1,
                 120, log=worker.tail)
        produce(kafka_bootstrap, topic, events_of(rest))
        sent = collections.Counter(e.user_id for e in stream)

        def complete(msgs: list[dict[str, Any]]) -> bool:
            newest = {m["user_id"]: m for m in msgs}
            return all(newest.get(u, {}).get("events_seen") == n for u, n in sent.items())

        recs = consume_json(kafka_bootstrap, topic_names["METAREC_TOPIC_RECOMMENDATIONS"], complete, timeout=180)
        newest = {m["user_id"]: m for m in recs}
        wrong = {u: (newest.get(u, {}).get("events_seen"), n) for u, n in sent.items()
                 if newest.get(u, {}).get("events_seen") != n}
        assert not wrong, f"newest events_seen differs from the events sent for {len(wrong)} users: {list(wrong.items())[:5]}"
        versions = collections.Counter(m["model_version"] for m in recs)
        assert versions[v1] > 0 and sum(n for v, n in versions.items() if v != v1) > 0, versions
        assert worker.proc is not None and worker.proc.poll() is None and worker.proc.pid == pid, "no restart"
        assert metric(worker, "metarec_agent_restarts_total") == 0

        # a rollback by hand: the same worker serves the first version again
        served_now = next(reversed([m["model_version"] for m in recs]))
        r = subprocess.run([sys.executable, "-m", "metarec", "models", "rollback", v1, "--reason", "drill"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert (root / "latest").resolve().name == v1
        back = wait_for("the rollback", lambda: next((a for a in announce.history(settings) if a.action == "rollback"), None), 30)
        assert back.version == v1 and served_now in back.rejected
        # the trainer may publish again, but only versions trained from v1 from now on (one that was
        # training from the rolled-back version when the rollback came is discarded as superseded)
        def after_rollback(version: str) -> bool:
            line = lineage(root, version)
            return v1 in line and not set(back.rejected) & set(line)

        wait_for("the worker serving the first version again (or a version trained from it)",
                 lambda: after_rollback(served(worker)), 120, log=worker.tail)
        user = rest[-1].user_id
        again = [e for e in evs if e.user_id == user and e.ts < stream[0].ts][:1]
        produce(kafka_bootstrap, topic, events_of(again))
        msgs = consume_json(kafka_bootstrap, topic_names["METAREC_TOPIC_RECOMMENDATIONS"],
                            lambda m: any(x["user_id"] == user and x["events_seen"] == sent[user] + 1 for x in m))
        last = [x for x in msgs if x["user_id"] == user][-1]
        assert after_rollback(last["model_version"]) and last["events_seen"] == sent[user] + 1, lineage(
            root, last["model_version"])
        wait_for("the trainer following the rollback", lambda: f"following rollback of version {v1}" in trainer_log(),
                 60, log=lambda: trainer_log()[-3000:])
        listing = subprocess.run([sys.executable, "-m", "metarec", "models", "list"], env={**env, "COLUMNS": "200"},
                                 capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0 and v1 in listing.stdout and v2 in listing.stdout, listing.stderr
        assert worker.proc.poll() is None and worker.proc.pid == pid, "still the same worker process"
    finally:
        trainer.terminate()
        try:
            trainer.wait(30)
        except subprocess.TimeoutExpired:
            trainer.kill()
        worker.stop()
        tlog.close()
    assert trainer.returncode == 0 or trainer.returncode == -15, trainer_log()[-2000:]
