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

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # the next start must see "Ready" anew
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
