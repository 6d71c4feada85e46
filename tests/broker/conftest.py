"""A real worker process against the real broker, and a plain kafka-python client to talk to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from metarec.events import Event, encode
from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """`python -m metarec worker` as a subprocess, with its own topics and consumer group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log_path = env, log
        self.port = int(env["METAREC_WEB_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "metarec", "worker", "--loglevel", "info"],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            if "Worker]: Ready" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.3)
        raise AssertionError(f"worker not ready within {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown at all (a node lost, the OOM killer)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._forget_ready()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._forget_ready()

    def _forget_ready(self) -> None:
        """The next start must see "Ready" anew."""
        text = self.log_path.read_text(errors="replace")
        self.log_path.write_text(text.replace("Worker]: Ready", "Worker]: was ready"))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"


class Broker:
    """A Kafka of one test's own (deploy/kafka/kafka.sh on free ports), to kill and restart."""

    def __init__(self, state: Path) -> None:
        port = free_port()
        while free_port_pair_taken(port):
            port = free_port()
        self.env = {**os.environ, "METAREC_KAFKA_PORT": str(port), "METAREC_KAFKA_STATE": str(state)}
        self.bootstrap = f"127.0.0.1:{port}"
        self.state = state

    def up(self) -> None:
        r = subprocess.run(["bash", str(SCRIPT), "up"], env=self.env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr or r.stdout

    def kill(self) -> None:
        pid = int((self.state / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def down(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "down"], env=self.env, capture_output=True, timeout=120)


def free_port_pair_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port + 1))  # the controller listens on PORT+1
        except OSError:
            return True
    return False


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker for this test only: it may be killed without disturbing the others."""
    b = Broker(tmp_path / "kafka")
    b.up()
    try:
        yield b
    finally:
        b.down()


@pytest.fixture
def worker_env(kafka_bootstrap: str, topic_names: dict[str, str], model_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **topic_names, "METAREC_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "METAREC_MODEL_DIR": str(model_dir), "METAREC_DATA_DIR": str(tmp_path / "faust"),
            "METAREC_WEB_PORT": str(free_port()), "METAREC_WEB_HOST": "127.0.0.1", "METAREC_LINGER_MS": "10"}


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(worker_env, tmp_path / "worker.log")
    w.start()
    try:
        yield w
    finally:
        w.stop()


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap)
    for key, value in messages:
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()


def events_of(evs: list[Event]) -> list[tuple[bytes | None, bytes]]:
    return [(e.user_id.encode(), encode(e)) for e in evs]


def consume_json(bootstrap: str, topic: str, until: Any, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Read ``topic`` from the beginning with a plain kafka-python consumer (JSON values)
    until ``until(messages)`` is true or ``timeout`` passes."""
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                      value_deserializer=lambda b: json.loads(b))
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(out):
            for records in c.poll(timeout_ms=500).values():
                out.extend(r.value for r in records)
    finally:
        c.close()
    return out
