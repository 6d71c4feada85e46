"""The served model's lifecycle in a running (in-memory) worker: hot swap between batches to an
announced version, a damaged version refused, an automatic rollback that is announced, and a
rolled-back version never served again."""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from metarec import announce, artifact, modeldir
from metarec.continual.rounds import sabotage
from metarec.events import encode
from tests.pipeline.conftest import make_adapter


@pytest.fixture
def versions(model_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """A models folder: the test model (``good``, latest), a copy of it as a newer version
    (``same``) and a sabotaged one (``bad``)."""
    root = tmp_path / "models"
    root.mkdir()
    good = root / model_dir.name
    shutil.copytree(model_dir, good)
    modeldir.point_latest(root, good.name)
    b = artifact.load(good)
    same = artifact.save(b.model, b.vocab, root, {"train": {"algorithm": "copy"}}, point_latest=False)
    bad = artifact.save(sabotage(b.model), b.vocab, root, {"train": {"algorithm": "sabotage"}}, point_latest=False)
    return {"root": root, "good": good, "same": same, "bad": bad}


def rounds(sim_events: list, n: int) -> list[list[Any]]:
    """``n`` rounds, each one event of every user (their i-th)."""
    by_user: dict[str, list[Any]] = defaultdict(list)
    for e in sim_events:
        by_user[e.user_id].append(e)
    return [[evs[i] for evs in by_user.values() if len(evs) > i] for i in range(n)]


async def feed(a: Any, agent: Any, batch: list[Any]) -> None:
    for e in batch:
        await agent.put(encode(e), key=e.user_id.encode())
    await a.flush()


def sample(a: Any, name: str, labels: dict[str, str] | None = None) -> float:
    return a.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_a_worker_swaps_to_an_announced_version_between_batches(versions, sim_events, tmp_path) -> None:
    a, out = make_adapter(versions["root"] / "latest", tmp_path)
    v1, v2 = versions["good"].name, versions["same"].name
    first, second = rounds(sim_events, 2)

    async def go() -> None:
        async with a.agent.test_context() as agent:
            await feed(a, agent, first)
            old = a.compute
            damaged = versions["same"].with_name("damaged")
            shutil.copytree(versions["same"], damaged)
            (damaged / "weights.safetensors").write_bytes(b"not the weights")
            await a.lifecycle.on_announcement(announce.make(damaged, {"version": v2}))
            assert a.lifecycle.version == v1 and a.compute is old, "a damaged version is refused"
            man = artifact.load(versions["same"]).manifest
            await a.lifecycle.on_announcement(announce.make(versions["same"], man))
            assert a.lifecycle.version == v2 and a.compute is not old
            await feed(a, agent, second)

    asyncio.run(go())
    n1 = len({e.user_id for e in first})
    assert {r.model_version for r in out.recs[:n1]} == {v1}
    assert {r.model_version for r in out.recs[n1:]} == {v2}, "every batch after the switch is the new version's"
    assert [r.events_seen for r in out.recs[n1:]] == [2] * len(second), "nothing lost or counted twice"
    assert sample(a, "metarec_model_swaps_total", {"result": "ok"}) == 1
    assert sample(a, "metarec_model_swaps_total", {"result": "failed"}) == 1
    assert a.metrics.registry.get_sample_value("metarec_model_info", {**_info(a), "version": v2}) == 1


def _info(a: Any) -> dict[str, str]:
    for metric in a.metrics.registry.collect():
        if metric.name == "metarec_model":
            return dict(metric.samples[0].labels)
    return {}


def test_a_worse_version_is_rolled_back_and_announced(versions, sim_events, tmp_path) -> None:
    a, out = make_adapter(versions["root"] / "latest", tmp_path, rollback_window=200, rollback_margin=0.02)
    told: list[announce.Announcement] = []

    async def tell(ann: announce.Announcement) -> None:
        told.append(ann)

    a.lifecycle.announcer = tell
    v1, bad = versions["good"].name, versions["bad"].name
    plan = rounds(sim_events, 16)

    async def go() -> None:
        async with a.agent.test_context() as agent:
            for batch in plan[:6]:
                await feed(a, agent, batch)
            assert a.lifecycle.rollback_due() is None, "nothing to compare with yet"
            await a.lifecycle.on_announcement(announce.make(versions["bad"], artifact.load(versions["bad"]).manifest))
            assert a.lifecycle.version == bad
            for batch in plan[6:]:
                await feed(a, agent, batch)
                if a.lifecycle.rollback_due():
                    break
            assert a.lifecycle.rollback_due(), "the sabotaged version's live logloss is worse"
            a.lifecycle.gauges()
            live = {(role, model): sample(a, "metarec_model_live_logloss", {"version": v, "role": role, "model": model})
                    for role, v in (("serving", bad), ("previous", v1)) for model in ("init", "adapted")}
            assert live[("serving", "adapted")] > live[("previous", "adapted")] + 0.02
            assert all(x > 0 for x in live.values()), live
            assert sample(a, "metarec_model_live_auc", {"version": v1, "role": "previous", "model": "init"}) > 0.5
            await a.lifecycle.check()
            assert a.lifecycle.version == v1
            again = announce.make(versions["bad"], artifact.load(versions["bad"]).manifest)
            await a.lifecycle.on_announcement(again)
            assert a.lifecycle.version == v1, "a rolled-back version is not served again"

    asyncio.run(go())
    assert len(told) == 1 and told[0].action == "rollback" and told[0].version == v1
    assert told[0].previous == bad and bad in told[0].rejected and "worse" in told[0].reason
    assert sample(a, "metarec_model_rollbacks_total") == 1
    assert out.recs[-1].model_version in (v1, bad)
