"""The in-memory worker: a real :class:`Adapter` whose Kafka sinks are lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from metarec.settings import WorkerSettings
from services.adapter.app import Adapter
from services.adapter.bootstrap import bootstrap


class Sinks:
    """What the worker sent: recommendations, dead letters (key, JSON) and re-keyed events."""

    def __init__(self) -> None:
        self.recs: list[Any] = []
        self.dead: list[tuple[bytes | None, dict[str, Any]]] = []
        self.rekeyed: list[tuple[bytes | None, bytes]] = []


def make_adapter(model_dir: Path, tmp_path: Path, **over: Any) -> tuple[Adapter, Sinks]:
    settings = WorkerSettings(model_dir=model_dir, store="memory://", data_dir=tmp_path / "faust",
                              app_id="memtest", **over)
    a = Adapter(settings, bootstrap(settings, CollectorRegistry()))
    out = Sinks()

    async def rec_sink(rec: object) -> None:
        out.recs.append(rec)

    async def dead_sink(key: bytes | None, value: bytes) -> None:
        out.dead.append((key, json.loads(value)))

    async def event_sink(key: bytes | None, value: bytes) -> None:
        out.rekeyed.append((key, value))

    a.send_rec, a.send_dead, a.send_event = rec_sink, dead_sink, event_sink
    a.app.finalize()
    a.app.flow_control.resume()
    return a, out


@pytest.fixture
def adapter(model_dir: Path, tmp_path: Path) -> tuple[Adapter, list, list]:
    a, out = make_adapter(model_dir, tmp_path)
    return a, out.recs, out.dead


@pytest.fixture
def worker_sinks(model_dir: Path, tmp_path: Path) -> tuple[Adapter, Sinks]:
    return make_adapter(model_dir, tmp_path)
