"""Fixtures for the operations tests: the broker tests' real worker, a real Prometheus scraping it,
and a steady event feed. Each one stops what it started, whatever the outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.conftest import WorkerProcess, free_port, worker, worker_env  # noqa: F401 - fixtures
from tests.deploy.deploy_helpers import tool
from tests.ops.live import EventFeeder, PrometheusServer, labelled_round_robin, live_config

SCRAPE_S = 1.0  # scrape and rule-evaluation interval of the test's Prometheus
FEED_USERS = 60


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    """The prometheus server binary ($METAREC_PROMETHEUS, the ops cache, PATH); fails with a
    hint to run `make ops-tools` when missing — never skips."""
    return tool("prometheus", "METAREC_PROMETHEUS")


@pytest.fixture
def prometheus(prometheus_binary: Path, worker: WorkerProcess, tmp_path: Path) -> Iterator[PrometheusServer]:  # noqa: F811
    server = PrometheusServer(prometheus_binary, live_config(f"127.0.0.1:{worker.port}", SCRAPE_S),
                              tmp_path / "prometheus", free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def feeder(worker: WorkerProcess, kafka_bootstrap: str, worker_env: dict[str, str],  # noqa: F811
           sim_events: list) -> Iterator[EventFeeder]:
    f = EventFeeder(kafka_bootstrap, worker_env["METAREC_TOPIC_EVENTS"],
                    labelled_round_robin(sim_events, FEED_USERS))
    f.start()
    try:
        yield f
    finally:
        f.stop()
