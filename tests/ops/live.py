"""A real Prometheus server scraping a live worker, and a steady feed of events for it to see.

:class:`PrometheusServer` runs the prometheus binary with a config generated from the project's
own (``deploy/prometheus/prometheus.yml``: the adapter job and the rule files), pointed at one
worker and at a short scrape and evaluation interval. :class:`EventFeeder` keeps producing
labelled events (and a few malformed ones) on a thread so every rate() window has samples.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import yaml
from kafka import KafkaProducer

from metarec.events import encode
from tests.broker.conftest import events_of
from tests.ops.exprs import prom_duration

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
PROJECT_CONFIG = PROM_DIR / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "metarec.json"
ADAPTER_JOB = "metarec-adapter"  # the job the rules and the dashboard's $job select
TRAINER_JOB = "metarec-trainer"  # the continual trainer's job (deploy/prometheus/prometheus.yml, $trainer_job)


def _project_config() -> dict[str, Any]:
    return yaml.safe_load(PROJECT_CONFIG.read_text())


RULE_FILES = sorted(p for pattern in _project_config()["rule_files"] for p in PROM_DIR.glob(pattern))


def live_config(target: str, scrape_s: float) -> dict[str, Any]:
    """The project's adapter job and rule files, scraping ``target`` every ``scrape_s`` seconds."""
    project = _project_config()
    job = next(j for j in project["scrape_configs"] if j["job_name"] == ADAPTER_JOB)
    interval = prom_duration(scrape_s)
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(PROM_DIR / pattern) for pattern in project["rule_files"]],
        "scrape_configs": [{**job, "scrape_interval": interval, "scrape_timeout": interval,
                            "static_configs": [{"targets": [target]}]}],
    }


class QueryError(Exception):
    """Prometheus refused a query (bad PromQL, unknown function, …)."""


class PrometheusServer:
    """The prometheus binary on ``127.0.0.1:port``, its storage and log under ``workdir``."""

    def __init__(self, binary: Path, config: dict[str, Any], workdir: Path, port: int) -> None:
        self.binary, self.config, self.workdir, self.port = binary, config, workdir, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config, sort_keys=False))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"prometheus not ready within {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``: the ``data`` field, or :class:`QueryError` with Prometheus's reason."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=15) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400 / 422 / 503 carry a JSON error body
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query at now: ``(labels, value)`` per series (a scalar result is one series)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] == "vector":
            return [(r["metric"], float(r["value"][1])) for r in data["result"]]
        raise QueryError(f"unexpected result type {data['resultType']!r}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


# A few of each reason the worker dead-letters, so the reason-labelled series exist.
MALFORMED = (b"{not json", b'{"event_id": "e", "user_id": "u-bad"}',
             b'{"event_id":"e","user_id":"u-bad","item_id":"i","kind":"warp","value":1,"ts":1}', b"x" * 20_000)


def labelled_round_robin(sim_events: list, users: int, kinds: tuple[str, ...] = ("click", "view")) -> list:
    """Labelled events of the first ``users`` users, round-robin: everyone's 1st, then everyone's 2nd, …"""
    by_user: dict[str, list] = defaultdict(list)
    for e in sim_events:
        if e.kind in kinds:
            by_user[e.user_id].append(e)
    chosen = list(by_user.values())[:users]
    assert len(chosen) == users, f"the simulated log has only {len(chosen)} users with {kinds} events"
    return [e for rank in itertools.zip_longest(*chosen) for e in rank if e is not None]


class EventFeeder:
    """Produces ``per_tick`` events, one malformed message, one keyless event and one duplicate every
    ``tick_s`` until stopped.

    When the events run out they start again under fresh event ids (so they are new to the worker).
    """

    def __init__(self, bootstrap: str, topic: str, events: list, per_tick: int = 15, tick_s: float = 0.5) -> None:
        self.bootstrap, self.topic, self.events = bootstrap, topic, events
        self.per_tick, self.tick_s = per_tick, tick_s
        self.sent = self.malformed = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _next(self, n: int) -> list:
        out = []
        for _ in range(n):
            i = self.sent + len(out)
            e = self.events[i % len(self.events)]
            out.append(e if i < len(self.events) else msgspec.structs.replace(e, event_id=uuid.uuid4().hex))
        return out

    def _run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
            try:
                bad = itertools.cycle(MALFORMED)
                while not self._stop.is_set():
                    batch = self._next(self.per_tick)
                    # and one malformed message, one without a key (re-keyed) and one sent again (redelivered)
                    extra = [(b"u-bad", next(bad)), (None, encode(batch[0])), events_of(batch[:1])[0]]
                    for key, value in events_of(batch) + extra:
                        producer.send(self.topic, key=key, value=value)
                    producer.flush(timeout=30)
                    self.sent += len(batch)
                    self.malformed += 1
                    self._stop.wait(self.tick_s)
            finally:
                producer.close(timeout=10)
        except BaseException as e:  # noqa: BLE001 - surfaced by the test through .error
            self.error = e
