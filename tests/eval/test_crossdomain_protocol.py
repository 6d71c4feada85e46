"""The cross-domain protocol end to end on a tiny synthetic pair with planted tastes, through
``metarec evaluate --protocol cross-domain`` (report, metrics, plot) and its argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from metarec.cli import app
from metarec.crossdomain import protocol
from metarec.crossdomain.data import load_pair
from metarec.crossdomain.ranking import METRICS
from tests.unit.crossdomain_data import write_pair

SMALL = protocol.Budget(rec_steps=150, rec_every=25, enc_steps=300, enc_every=25, patience=2, enc_patience=2)
METHODS = {"popularity", "item-kNN (cross-domain)", "target-only", "shared", "EMCDR", "fine-tuned",
           "meta: learned memory", "meta: learned memory (no adaptation)",
           "meta: memory + encoder", "meta: memory + encoder (no adaptation)"}


def test_every_method_at_every_k_on_a_planted_pair(tmp_path: Path) -> None:
    pair = load_pair(write_pair(tmp_path, items=80))
    ticks: list[str] = []
    res = protocol.run(pair, [0, 1], SMALL, ticks.append)
    rows = res["rows"]
    assert {r["method"] for r in rows} == METHODS
    assert {r["split"] for r in rows} == {str(k) for k in protocol.K_SIZES}
    for r in rows:
        assert all(0.0 <= r[m] <= 1.0 for m in METRICS), r
        assert len(r["per_seed"]["ndcg@10"]) == 2 and r["events"] > 0
        assert r["hr@1"] <= r["hr@5"] <= r["hr@10"]
    at = {(r["split"], r["method"]): r for r in rows}
    # the tastes are planted across domains: the source history must beat popularity
    assert at[("0", "item-kNN (cross-domain)")]["ndcg@10"] > at[("0", "popularity")]["ndcg@10"] + 0.1
    # a verdict per k, from the report's rule
    assert [m["split"] for m in res["margins"] if m] == [str(k) for k in protocol.K_SIZES]
    assert all(m["verdict"] in ("win", "tie", "loss") for m in res["margins"])
    # every trained model's length came from early stopping on validation
    assert {t["method"] for t in res["chosen"][0]["training"]} == {
        "target-only", "shared", "source-only (EMCDR)", "meta: learned memory", "meta: memory + encoder"}
    assert any("learned memory trained" in t for t in ticks)


def test_given_events_come_from_valid_lines_and_test_ranks_test_lines(tmp_path: Path) -> None:
    pair = load_pair(write_pair(tmp_path))
    src, _ = protocol.histories(pair, 0)
    cs = protocol.cases(pair, 0, src)
    valid = {}
    for u, i in pair.valid.tolist():
        valid.setdefault(u, set()).add(i)
    test_lines = {tuple(x) for x in pair.test.tolist()}
    for k in protocol.K_SIZES:
        t, v = cs[("test", k)], cs[("validation", k)]
        assert all(len(g) == k and set(g.tolist()) <= valid[u] for u, g in zip(t.users.tolist(), t.given))
        assert {(u, int(i)) for u, i in zip(t.users.tolist(), t.cands[:, 0])} <= test_lines
        for u, g, i in zip(v.users.tolist(), v.given, v.cands[:, 0]):  # validation: the rest of the valid lines
            assert int(i) in valid[u] and int(i) not in set(g.tolist())
        assert all(len(s) > 0 for s in t.source)
    assert len(cs[("test", 0)].users) == len(pair.test)


def test_cli_writes_the_report_and_refuses_bad_arguments(tmp_path: Path, monkeypatch) -> None:
    folder = write_pair(tmp_path / "data")
    monkeypatch.setattr(protocol, "Budget", lambda: SMALL)
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--protocol", "cross-domain", "--data", str(folder), "--format", "amazon-cdr",
                              "--out", str(out), "--repeats", "2"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"] == "cross-domain" and m["dataset"] == "books→music" and m["seeds"] == [0, 1]
    text = (out / "report.md").read_text()
    assert "## k = 0" in text and "## Verdicts (NDCG@10)" in text and (out / "ndcg_by_k.png").stat().st_size > 0
    assert np.isfinite([r["ndcg@10"] for r in m["rows"]]).all()
    for args, msg in ((["--data", str(folder), "--format", "ml-100k"], "reads --format amazon-cdr"),
                      (["--data", str(tmp_path / "missing"), "--format", "amazon-cdr"], "no such file or folder")):
        r = subprocess.run([sys.executable, "-m", "metarec", "evaluate", "--protocol", "cross-domain", "--out",
                            str(tmp_path / "never"), *args], capture_output=True, text=True, timeout=120)
        err = r.stderr.strip()
        assert r.returncode != 0 and msg in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "never").exists()


def test_a_users_own_table_runs_the_same_protocol(tmp_path: Path, monkeypatch) -> None:
    from metarec.evaluate.command import CrossOptions, run_evaluation

    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,domain,label"]
    for u in range(60):
        for dom in ("books", "music"):
            t = u % 4
            lines += [f"u{u},{dom[0]}{t * 15 + j},{dom},1" for j in sorted(set(rng.integers(0, 15, 8).tolist()))]
    table = tmp_path / "events.csv"
    table.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(protocol, "Budget", lambda: SMALL)
    out = tmp_path / "out"
    res = run_evaluation("cross-domain", table, "csv", out, 1.0, 0, repeats=2, cross=CrossOptions("books", "music", 0.5))
    assert res["pair"] == "books→music" and (out / "report.md").exists()
    assert any("held out" in n for n in json.loads((out / "metrics.json").read_text())["notes"])
    at = {(r["split"], r["method"]): r for r in res["rows"]}
    assert at[("0", "item-kNN (cross-domain)")]["ndcg@10"] > at[("0", "popularity")]["ndcg@10"]
    with pytest.raises(ValueError, match="needs --source and --target"):
        run_evaluation("cross-domain", table, "csv", out, 1.0, 0, cross=CrossOptions("books", None))
    with pytest.raises(ValueError, match="--held-out"):
        run_evaluation("cross-domain", table, "csv", out, 1.0, 0, cross=CrossOptions("books", "music", 1.5))
