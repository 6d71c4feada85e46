"""Chaos runs on a real broker with real workers, checked from outside.

:class:`Load` sends events at a steady rate and remembers, for every user, how many it sent and
when; :class:`Watch` reads every recommendation; :class:`Fleet` starts, SIGKILLs, SIGTERMs and
pauses workers of one consumer group. :func:`verdict` checks the invariants (each user's newest
``events_seen`` equals the events sent, no recommendation counts more events than were sent by
then, every changelog state equals a fault-free fold of the user's events) and measures latency
and outages.
"""

from __future__ import annotations

import bisect
import os
import random
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer

from metarec import state as st
from metarec.events import Event, encode, new_event
from tests.broker.conftest import WorkerProcess, free_port


class Load(threading.Thread):
    """``rate`` events/s for ``users`` users, each user's events in order, until stopped."""

    def __init__(self, bootstrap: str, topic: str, items: list[str], users: int, rate: float, seed: int = 0) -> None:
        super().__init__(daemon=True, name="chaos-load")
        self.bootstrap, self.topic, self.items, self.rate = bootstrap, topic, items, rate
        self.users = [f"chaos-u{i:04d}" for i in range(users)]
        self.rng = random.Random(seed)
        self.sent: dict[str, list[Event]] = defaultdict(list)
        self.sent_at: dict[str, list[float]] = defaultdict(list)  # monotonic send times, per user
        self._halt = threading.Event()
        self._paused = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # idempotent (kafka-python's default) and patient: a broker outage delays events, never loses them
            p = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=2, acks="all", enable_idempotence=True,
                              delivery_timeout_ms=600_000, request_timeout_ms=30_000, reconnect_backoff_max_ms=1000)
            start, n = time.monotonic(), 0
            while not self._halt.is_set():
                if self._paused.is_set():
                    time.sleep(0.05)
                    continue
                user = self.rng.choice(self.users)
                k = len(self.sent[user])
                ev = new_event(user, self.rng.choice(self.items), "click", float(self.rng.random() < 0.3),
                               ts=time.time(), event_id=f"{user}-{k}")
                self.sent[user].append(ev)
                self.sent_at[user].append(time.monotonic())
                p.send(self.topic, key=user.encode(), value=encode(ev))
                n += 1
                lag = start + n / self.rate - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            p.flush(timeout=600)
            p.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=620)

    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())


@dataclass
class Rec:
    user: str
    seen: int
    at: float  # monotonic receive time


class Watch(threading.Thread):
    """Every recommendation, with the time it was read."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="chaos-watch")
        self.bootstrap, self.topic = bootstrap, topic
        self.recs: list[Rec] = []
        self._halt = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        c = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", group_id=None,
                          fetch_max_wait_ms=50, reconnect_backoff_max_ms=1000)
        self.ready.set()
        try:
            while not self._halt.is_set():
                for records in c.poll(timeout_ms=200).values():
                    now = time.monotonic()
                    for r in records:
                        m = msgspec.json.decode(r.value)
                        self.recs.append(Rec(m["user_id"], m["events_seen"], now))
        finally:
            c.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


STALL_EXIT = "stopping the worker so that it is restarted (METAREC_RECOVERY_STALL_S)"


class Fleet:
    """Workers of one consumer group. A replacement gets the same index: port, data dir, instance id.

    Like the StatefulSet, the fleet restarts a worker that exits on its own, but only one that the
    recovery watchdog stopped (faust's recovery can hang after a rebalance; see docs/operating.md):
    those restarts are counted in ``restarts``. Any other exit is left for the checks to find.
    """

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env, self.tmp = env, tmp
        self.workers: dict[int, WorkerProcess] = {}
        self.ports: dict[int, int] = {}
        self.ready_s: list[float] = []  # process start -> faust "Ready", per start
        self.restarts: list[str] = []  # the watchdog's exits that were restarted, with their log line
        self._lock = threading.RLock()
        self._log_from: dict[int, int] = {}  # where each worker's current process began its log
        self._halt = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="chaos-supervisor")
        self._supervisor.start()

    def start(self, i: int) -> WorkerProcess:
        port = self.ports.setdefault(i, free_port())
        env = {**self.env, "METAREC_WEB_PORT": str(port), "METAREC_DATA_DIR": str(self.tmp / f"w{i}"),
               "METAREC_GROUP_INSTANCE_ID": f"{self.env.get('METAREC_APP_ID', 'metarec')}-{i}"}
        w = WorkerProcess(env, self.tmp / f"worker-{i}.log")
        with self._lock:
            self._log_from[i] = w.log_path.stat().st_size if w.log_path.exists() else 0
            t = time.monotonic()
            w.start()
            self.ready_s.append(round(time.monotonic() - t, 2))
            self.workers[i] = w
        return w

    def _supervise(self) -> None:
        while not self._halt.wait(0.5):
            with self._lock:
                for i, w in list(self.workers.items()):
                    if w.proc is None or w.proc.poll() is None:
                        continue
                    with open(w.log_path, "rb") as f:
                        f.seek(self._log_from.get(i, 0))
                        stalled = [line for line in f.read().decode(errors="replace").splitlines() if STALL_EXIT in line]
                    if not stalled:
                        continue  # any other exit: not restarted, the checks report it
                    self.restarts.append(stalled[-1])
                    del self.workers[i]
                    self.start(i)

    def kill(self, i: int) -> None:
        with self._lock:
            self.workers.pop(i).kill()

    def term(self, i: int) -> None:
        with self._lock:
            w = self.workers.pop(i)
        w.stop()

    def pause(self, i: int, seconds: float) -> None:
        w = self.workers[i]
        assert w.proc is not None
        os.kill(w.proc.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(w.proc.pid, signal.SIGCONT)

    def stop_all(self) -> None:
        self._halt.set()
        self._supervisor.join(timeout=150)
        for i in list(self.workers):
            self.term(i)

    def redelivered(self) -> list[int]:
        """Events each stopped worker saw again (its last log line says), per graceful stop."""
        import re

        return [int(n) for n in re.findall(r"stopped: \d+ events consumed, (\d+) redelivered", self.logs())]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("worker-*.log")))


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # send → first recommendation reflecting it
    outages: list[float] = field(default_factory=list)  # fault → first recommendation of an event sent after it
    figures: dict[str, Any] = field(default_factory=dict)


def first_serving_after(load: Load, watch: Watch, t: float) -> float | None:
    """When the first recommendation reflecting an event sent after ``t`` was read, minus ``t``."""
    best: float | None = None
    for r in watch.recs:
        if r.at < t:
            continue
        times = load.sent_at.get(r.user, [])
        if r.seen >= 1 and r.seen <= len(times) and times[r.seen - 1] >= t:
            best = r.at - t if best is None else min(best, r.at - t)
    return best


def verdict(load: Load, watch: Watch, changelog: dict[str, st.UserState], buffer_size: int = 64,
            consumed_size: int = 512) -> Verdict:
    v = Verdict()
    by_user: dict[str, list[Rec]] = defaultdict(list)
    for r in watch.recs:
        by_user[r.user].append(r)
    for user, evs in load.sent.items():
        recs = by_user.get(user, [])
        newest = max((r.seen for r in recs), default=0)
        if newest != len(evs):
            v.problems.append(f"{user}: newest events_seen {newest}, sent {len(evs)}")
        times = load.sent_at[user]
        for r in recs:
            sent_by_then = bisect.bisect_right(times, r.at)
            if r.seen > sent_by_then:
                v.problems.append(f"{user}: a recommendation counts {r.seen} events when {sent_by_then} were sent")
                break
        firsts: dict[int, float] = {}
        for r in sorted(recs, key=lambda r: r.at):
            for k in range(len(firsts) + 1, r.seen + 1):
                firsts.setdefault(k, r.at)
        v.latencies += [firsts[k] - times[k - 1] for k in firsts if k <= len(times)]
        want, _ = st.step(None, evs, buffer_size, consumed_size)
        got = changelog.get(user)
        if got is not None:  # where it was read is the only thing a fault-free fold cannot know
            got = msgspec.structs.replace(got, partition=-1, offset=-1)
        if got != want:
            v.problems.append(f"{user}: stored state differs from a fault-free run's "
                              f"(events_seen {getattr(got, 'events_seen', None)} vs {want.events_seen})")
    v.latencies.sort()
    if v.latencies:
        q = v.latencies
        v.figures["latency_s"] = {f"p{p}": round(q[min(len(q) - 1, int(len(q) * p / 100))], 3) for p in (50, 90, 99)}
        v.figures["latency_s"]["max"] = round(q[-1], 3)
    v.figures["events"] = load.total()
    v.figures["recommendations"] = len(watch.recs)
    return v


def read_changelog(bootstrap: str, topic: str, timeout_s: float = 60.0) -> dict[str, st.UserState]:
    """The newest state per user in the table's changelog topic (compaction's view), read to its end."""
    from kafka import TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    out: dict[str, st.UserState] = {}
    try:
        deadline = time.monotonic() + timeout_s
        parts = c.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.5)
            parts = c.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        while time.monotonic() < deadline and any(c.position(tp) < end[tp] for tp in tps):
            for records in c.poll(timeout_ms=500).values():
                for r in records:
                    if r.value is not None:
                        s = st.loads(r.value)
                        out[s.user_id] = s
        assert all(c.position(tp) >= end[tp] for tp in tps), f"{topic} not read to its end in {timeout_s} s"
    finally:
        c.close()
    return out
