"""The compute child process against the in-process thread: the same states give the same
recommendations and the same live-quality samples; the child rebuilds each user's new events
from the tail of the stored buffer."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from metarec import state as st
from metarec.settings import WorkerSettings
from services.adapter.bootstrap import load_recommender
from services.adapter.compute import Compute


@pytest.fixture(scope="module")
def both(model_dir: Path) -> tuple[Compute, Compute]:
    settings = WorkerSettings(model_dir=model_dir)
    child, local = Compute.in_process(settings), Compute.in_thread(load_recommender(settings))
    yield child, local
    child.close()
    local.close()


def _rounds(sim_events: list, users: int = 12, per_round: int = 3) -> list[tuple[list, list, list]]:
    """Two rounds of updates for a few users: (states, stored bytes, new events) per round."""
    by_user: dict[str, list] = defaultdict(list)
    for e in sim_events:
        by_user[e.user_id].append(e)
    chosen = sorted(by_user)[:users]
    states: dict[str, st.UserState | None] = dict.fromkeys(chosen)
    out = []
    for r in range(2):
        batch = ([], [], [])
        for u in chosen:
            s, new = st.step(states[u], by_user[u][r * per_round:(r + 1) * per_round])
            states[u] = s
            batch[0].append(s)
            batch[1].append(st.dumps(s))
            batch[2].append(list(new))
        out.append(batch)
    return out


def test_the_child_process_recommends_exactly_as_the_thread(both, sim_events) -> None:
    child, local = both

    async def go() -> None:
        for states, raws, news in _rounds(sim_events):
            a = await child.batch(states, raws, news)
            b = await local.batch(states, raws, news)
            assert [r.user_id for r in a.recs] == [s.user_id for s in states]
            assert [r.items for r in a.recs] == [r.items for r in b.recs]
            np.testing.assert_allclose([r.scores for r in a.recs], [r.scores for r in b.recs], rtol=1e-5, atol=1e-6)
            assert a.y == b.y and len(a.y) > 0
            np.testing.assert_allclose(a.init, b.init, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(a.adapted, b.adapted, rtol=1e-5, atol=1e-6)
        one = await child.one(raws[0])
        assert one.user_id == states[0].user_id and one.items == (await local.one(raws[0])).items
        onnx_bytes, seconds = await child.export(raws[0])
        assert onnx_bytes[:2] and len(onnx_bytes) > 1000 and seconds >= 0

    asyncio.run(go())


def test_a_model_directory_the_child_cannot_load_fails_at_start(tmp_path: Path) -> None:
    from metarec.errors import ArtifactError

    with pytest.raises(ArtifactError):
        Compute.in_process(WorkerSettings(model_dir=tmp_path / "missing"))


def test_the_child_exits_when_the_worker_is_killed(model_dir: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys, time\n"
              "from metarec.settings import WorkerSettings\n"
              "from services.adapter.compute import Compute\n"
              f"c = Compute.in_process(WorkerSettings(model_dir={str(model_dir)!r}))\n"
              "print(*c._executor._processes, flush=True)\n"
              "time.sleep(120)\n")
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        child = int(worker.stdout.readline())  # type: ignore[union-attr]
        os.kill(child, 0)  # alive
        worker.send_signal(signal.SIGKILL)  # no shutdown code runs in the worker
        worker.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the compute child outlived its killed worker")
    finally:
        worker.kill()


def test_the_child_loads_meanwhile_and_a_model_it_cannot_load_fails_every_call(model_dir: Path,
                                                                              tmp_path: Path) -> None:
    """The worker's process only checks the directory (hashes); the child loads it. Weights that
    match their manifest hash but are not a model must surface as the child's error, not a hang."""
    import json
    import shutil

    from metarec.modeldir import check, sha256_file

    bad = tmp_path / "bad"
    shutil.copytree(check(model_dir).path, bad)
    (bad / "weights.safetensors").write_bytes(b"not a safetensors file")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["weights.safetensors"] = sha256_file(bad / "weights.safetensors")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    assert check(bad).version == manifest["version"], "the parent's check passes"
    c = Compute.start_process(WorkerSettings(model_dir=bad))
    try:
        with pytest.raises(Exception, match="(?i)safetensor|header|deserializ"):
            asyncio.run(c.ready())
        with pytest.raises(Exception, match="(?i)safetensor|header|deserializ"):
            asyncio.run(c.one(b""))
    finally:
        c.close()
