"""Shared fixtures: a real Kafka broker, a small trained model, MovieLens when present.

The broker: ``METAREC_KAFKA_BOOTSTRAP`` if set, else the project's own Apache Kafka started
on port 19092 with its own state folder (``deploy/kafka/kafka.sh``) and stopped at the end
if this session started it. In CI (``CI=true``) broker tests never skip: a broker that will
not start fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_KAFKA_PORT = os.environ.get("METAREC_TEST_KAFKA_PORT", "19092")


NEVER_SKIP_IN_CI = ("kafka", "security", "prometheus", "deploy")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """In CI, a broker, Prometheus or deploy test that skips is a failure."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and rep.skipped and any(item.get_closest_marker(m) for m in NEVER_SKIP_IN_CI):
        rep.outcome = "failed"
        rep.longrepr = f"{item.nodeid} must not skip in CI: {rep.longrepr}"


@contextmanager
def project_kafka(port: str, state: Path, fresh: bool = False, **env: str) -> Iterator[str]:
    """The project's own broker (``deploy/kafka/kafka.sh up``) on ``port`` with its own ``state``
    folder and any other ``METAREC_KAFKA_*`` in ``env``; stopped at the end if this started it.
    ``fresh``: a broker that is not running starts from an empty state folder."""
    env = {**os.environ, "METAREC_KAFKA_SECURE": "0", "METAREC_KAFKA_PORT": port, "METAREC_KAFKA_STATE": str(state),
           **env}
    script = ROOT / "deploy" / "kafka" / "kafka.sh"
    if fresh and subprocess.run(["bash", str(script), "status"], env=env, capture_output=True).returncode != 0:
        shutil.rmtree(state, ignore_errors=True)
    up = subprocess.run(["bash", str(script), "up"], env=env, capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"could not start the test Kafka broker: {up.stderr.strip() or up.stdout.strip()}")
    started = "already running" not in up.stdout
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if started:
            subprocess.run(["bash", str(script), "down"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("METAREC_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    with project_kafka(TEST_KAFKA_PORT, ROOT / ".state" / "kafka-test") as bootstrap:
        yield bootstrap


@pytest.fixture
def topic_names() -> dict[str, str]:
    """Fresh, uuid-named topics (and consumer group) for one test."""
    tag = uuid.uuid4().hex[:10]
    return {
        "METAREC_TOPIC_EVENTS": f"t-{tag}-events",
        "METAREC_TOPIC_RECOMMENDATIONS": f"t-{tag}-recs",
        "METAREC_TOPIC_DEAD_LETTER": f"t-{tag}-dlq",
        "METAREC_TOPIC_MODELS": f"t-{tag}-models",
        "METAREC_APP_ID": f"t-{tag}-adapter",
    }


@pytest.fixture(scope="session")
def sim_events() -> list:
    """A small seeded simulated log: 120 users, 80 items."""
    from metarec.data.simulate import SimConfig, simulate

    return simulate(SimConfig(users=120, items=80, mean_events=30, seed=7))


def sim_ratings(tmp_path_factory: pytest.TempPathFactory, **cfg: Any) -> Any:
    """A simulated log (``SimConfig(**cfg)``) read as the evaluation reads ratings."""
    from metarec.data import write_jsonl
    from metarec.data.simulate import SimConfig, simulate
    from metarec.evaluate.data import load_ratings

    path = tmp_path_factory.mktemp("sim") / "sim.jsonl"
    write_jsonl(simulate(SimConfig(**cfg)), path)
    return load_ratings(path, "simulated")


def trained(tmp_path_factory: pytest.TempPathFactory, events: list, name: str, steps: int, source: str) -> Path:
    """A small model (dim 8, hidden 32-16) meta-trained on ``events`` for ``steps`` outer steps."""
    import torch

    from metarec.meta import TrainConfig
    from metarec.train import train

    torch.set_num_threads(2)
    return train(events, tmp_path_factory.mktemp(name), {"hidden": (32, 16), "dim": 8},
                 TrainConfig(steps=steps, time_budget_s=120, meta_batch=16, seed=1), source=source)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, sim_events: list) -> Path:
    """A model meta-trained briefly on :func:`sim_events` (a real model directory)."""
    return trained(tmp_path_factory, sim_events, "models", 40, "sim")


DOMAINS = ("books", "music")


@pytest.fixture(scope="session")
def domain_events() -> list:
    """A seeded simulated log in two domains (:data:`DOMAINS`): 300 users, 60 items, a shared taste."""
    from metarec.data.simulate import SimConfig, simulate

    return simulate(SimConfig(users=300, items=60, mean_events=40, seed=7, domains=DOMAINS))


@pytest.fixture(scope="session")
def domain_model_dir(tmp_path_factory: pytest.TempPathFactory, domain_events: list) -> Path:
    """A model meta-trained on :func:`domain_events` long enough that one event moves a user's top-K."""
    return trained(tmp_path_factory, domain_events, "domain-models", 300, "sim, two domains")


@pytest.fixture(scope="session")
def amazon_cdr() -> Path:
    path = SHARED_DATA / "amazon-cdr"
    if not (path / "game_video" / "train.txt").exists():
        pytest.skip(f"Amazon cross-domain pairs not found at {path} (the data is not redistributed with metarec)")
    return path


@pytest.fixture(scope="session")
def ml100k() -> Path:
    path = SHARED_DATA / "ml-100k"
    if not (path / "u.data").exists():
        pytest.skip(f"MovieLens 100K not found at {path} (the data is not redistributed with metarec)")
    return path
