"""A crash between a user's state and its recommendation: the state (with the event) is in the
changelog, the recommendation never went out. The replacement must still recommend for that event.

The worker acknowledges a message only once its user's recommendation is sent, so no offset is
committed past it; the replacement reads it again, finds it in the state (a replay, not counted
twice) and recommends. The window is held open by stopping the compute child (SIGSTOP) after the
state is written, for longer than the commit interval, before the worker is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from metarec.events import new_event
from tests.broker.conftest import WorkerProcess, consume_json, events_of, produce
from tests.chaos.harness import read_changelog

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def compute_child(parent: int) -> int:
    """The pid of ``parent``'s compute child (multiprocessing's spawned process, not its tracker)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmd:
            return int(d.name)
    raise AssertionError(f"no compute child of {parent}")


def newest(recs: list[dict], user: str) -> int:
    return max((r["events_seen"] for r in recs if r["user_id"] == user), default=0)


def test_sigkill_after_the_state_and_before_the_recommendation(worker_env: dict, kafka_bootstrap: str,
                                                               sim_events: list, tmp_path: Path) -> None:
    env = {**worker_env, "METAREC_GROUP_INSTANCE_ID": "crash-0", "METAREC_COMMIT_INTERVAL_S": "0.5"}
    topic_events, topic_recs = env["METAREC_TOPIC_EVENTS"], env["METAREC_TOPIC_RECOMMENDATIONS"]
    user = "crash-u1"
    evs = [new_event(user, e.item_id, "click", 1.0, ts=time.time(), event_id=f"{user}-{k}")
           for k, e in enumerate(sim_events[:2])]
    w = WorkerProcess(env, tmp_path / "worker.log")
    w.start()
    child = None
    try:
        produce(kafka_bootstrap, topic_events, events_of(evs[:1]))
        recs = consume_json(kafka_bootstrap, topic_recs, lambda m: newest(m, user) == 1, timeout=60)
        assert newest(recs, user) == 1, w.tail()
        assert w.proc is not None
        child = compute_child(w.proc.pid)
        os.kill(child, signal.SIGSTOP)  # the next batch hangs after its states are written
        produce(kafka_bootstrap, topic_events, events_of(evs[1:]))
        changelog = f"{env['METAREC_APP_ID']}-users-changelog"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = read_changelog(kafka_bootstrap, changelog).get(user)
            if state is not None and state.events_seen == 2:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the second event's state never reached the changelog\n{w.tail()}")
        time.sleep(3.0)  # six commit intervals: long enough for an offset to pass the event
        w.kill()
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
    w.start()  # the replacement, same instance id: it takes the partitions at once
    try:
        recs = consume_json(kafka_bootstrap, topic_recs, lambda m: newest(m, user) == 2, timeout=60)
        assert newest(recs, user) == 2, f"no recommendation reflects the event in flight at the crash\n{w.tail()}"
        assert max(r["events_seen"] for r in recs if r["user_id"] == user) == 2, "nothing counted twice"
    finally:
        w.stop()
