"""Event sources, the model directory, and the command line's manners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metarec import artifact
from metarec.data import load_events, write_jsonl
from metarec.data.eventlog import DataError
from metarec.data.simulate import SimConfig, simulate

ROOT = Path(__file__).resolve().parents[2]


def test_simulator_is_seeded_and_time_ordered() -> None:
    a = simulate(SimConfig(users=20, items=15, mean_events=10, seed=3))
    b = simulate(SimConfig(users=20, items=15, mean_events=10, seed=3))
    c = simulate(SimConfig(users=20, items=15, mean_events=10, seed=4))
    assert a == b and a != c
    assert [e.ts for e in a] == sorted(e.ts for e in a)
    assert {e.kind for e in a} <= {"view", "click", "purchase"}
    assert 0.05 < sum(e.value for e in a) / len(a) < 0.95  # both classes present


def test_event_log_round_trips_gzip(tmp_path: Path) -> None:
    evs = simulate(SimConfig(users=5, items=5, mean_events=5))
    write_jsonl(evs, tmp_path / "log.jsonl.gz")
    assert load_events(tmp_path / "log.jsonl.gz") == sorted(evs, key=lambda e: e.ts)


def test_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"event_id":"a","user_id":"u","item_id":"i","kind":"click","value":1,"ts":1}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: bad_json"):
        load_events(p)


@pytest.mark.parametrize("name, body", [
    ("u.data", "1\t10\t4\t881250949\n2\t20\t2\t881250950\n"),
    ("ratings.dat", "1::10::4::978300760\n2::20::2::978300761\n"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,1112486027\n2,20,2.5,1112486028\n"),
])
def test_movielens_formats(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / name).write_text(body)
    for path in (tmp_path, tmp_path / name):  # the folder or the ratings file
        evs = load_events(path)
        assert [(e.user_id, e.item_id, e.kind) for e in evs] == [("1", "10", "rate"), ("2", "20", "rate")]
        assert evs[0].value == 4.0 and set(evs[0].context) == {"hour", "weekday"}


def test_unknown_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not an event log"):
        load_events(tmp_path)


@pytest.mark.movielens
def test_movielens_100k_loads(ml100k: Path) -> None:
    evs = load_events(ml100k)
    assert len(evs) == 100_000
    assert len({e.user_id for e in evs}) == 943 and len({e.item_id for e in evs}) == 1682
    assert evs[0].ts <= evs[-1].ts


def test_model_directory_is_complete_and_tamper_evident(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    import torch

    b = artifact.load(model_dir.parent)  # the parent holds `latest`
    assert b.path == model_dir.resolve()
    m = b.manifest
    assert m["version"] == model_dir.name and len(m["data"]["sha256"]) == 64 and len(m["config_sha256"]) == 64
    assert {"init_loss", "adapted_loss"} <= set(m["validation"])
    assert set(m["files"]) == {"weights.safetensors", "config.json", "vocab.json", "model.onnx"}
    # weights load without pickle, and the torch.save form loads with weights_only=True
    torch.save(b.model.state_dict(), tmp_path / "w.pt")
    assert set(torch.load(tmp_path / "w.pt", weights_only=True)) == set(b.model.state_dict())
    bad = tmp_path / "copy"
    shutil.copytree(model_dir, bad)
    (bad / "vocab.json").write_text('{"users": [], "items": []}')
    with pytest.raises(artifact.ArtifactError, match="does not match its hash"):
        artifact.load(bad)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metarec", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def test_help_lists_the_commands() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for cmd in ("simulate", "train", "worker", "replay", "tail"):
        assert cmd in out.stdout
        assert cli(cmd, "--help").returncode == 0


@pytest.mark.parametrize("args, message", [
    (("train", "--events", "/no/such/file"), "no such file"),
    (("train", "--mode", "sideways"), "--mode must be binary or rating"),
    (("replay", "--events", "/no/such/file"), "no such file"),
    (("worker", "--model-dir", "/no/such/model"), "not a model directory"),
    (("evaluate", "--protocol", "bogus", "--data", ".", "--format", "csv", "--out", "/tmp/x"), "--protocol must be"),
    (("evaluate", "--protocol", "melu", "--data", "/no/such/file", "--format", "csv", "--out", "/tmp/x"),
     "no such file"),
    (("evaluate", "--protocol", "melu", "--data", ".", "--format", "csv", "--out", "/tmp/x", "--buffer", "0"),
     "--buffer and --max-adapt-steps"),
    (("simulate", "--out", "/tmp/x.jsonl", "--domains", "books,books"), "domains must be distinct"),
])
def test_bad_input_is_one_readable_line(args: tuple[str, ...], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2  # rich may wrap one long line


def test_bad_setting_names_the_variable() -> None:
    out = cli("worker", env={"METAREC_WEB_PORT": "not-a-port"})
    assert out.returncode == 2 and "METAREC_WEB_PORT" in out.stderr and "Traceback" not in out.stderr


def test_simulate_then_train_writes_a_model(tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    assert cli("simulate", "--out", str(log), "--users", "30", "--items", "20", "--mean-events", "12").returncode == 0
    out = cli("train", "--events", str(log), "--out", str(tmp_path / "models"), "--steps", "3")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "models" / "latest" / "manifest.json").read_text())
    assert manifest["train"]["outer_steps_done"] == 3 and manifest["data"]["users"] == 30


def test_simulate_in_domains_then_train_writes_a_catalog_of_domains(tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    out = cli("simulate", "--out", str(log), "--users", "30", "--items", "20", "--mean-events", "12",
              "--domains", "books, music")
    assert out.returncode == 0, out.stderr
    assert {json.loads(line).get("domain") for line in log.read_text().splitlines()} == {"books", "music"}
    assert cli("train", "--events", str(log), "--out", str(tmp_path / "models"), "--steps", "2").returncode == 0
    vocab = json.loads((tmp_path / "models" / "latest" / "vocab.json").read_text())
    assert set(vocab["item_domains"]) == {"books", "music"} and len(vocab["item_domains"]) == len(vocab["items"])
