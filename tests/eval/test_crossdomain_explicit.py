"""Cross-domain on explicit ratings (metarec.crossdomain.explicit) end to end on a synthetic table
whose users carry one taste (a rating bias) into both domains, through ``metarec evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.crossdomain import explicit
from metarec.crossdomain.protocol import K_SIZES
from metarec.crossdomain.table import load_table_pair

METHODS = {"mean", "item mean + user offset", "target-only", "shared", "fine-tuned", "Meta-SGD",
           "Meta-SGD (no adaptation)"}


def rated_table(path: Path, users: int = 150, seed: int = 0) -> Path:
    """Ratings 1–5 = 3.5 + user bias (the same in both domains) + item bias + noise."""
    rng = np.random.default_rng(seed)
    bias = rng.normal(0, 0.8, users)
    item = {d: rng.normal(0, 0.5, 30) for d in ("books", "music")}
    rows = []
    for u in range(users):
        for d, n in (("books", 10), ("music", 8)):
            for i in rng.choice(30, n, replace=False).tolist():
                r = float(np.clip(np.round(3.5 + bias[u] + item[d][i] + rng.normal(0, 0.3)), 1, 5))
                rows.append((f"u{u}", f"{d[0]}{i}", d, r))
    pd.DataFrame(rows, columns=["user_id", "item_id", "domain", "rating"]).to_csv(path, index=False)
    return path


def test_every_method_at_every_k_and_the_source_ratings_carry_over(tmp_path: Path, monkeypatch) -> None:
    from metarec.evaluate.command import CrossOptions, run_evaluation

    table = rated_table(tmp_path / "ratings.csv")
    pair = load_table_pair(table, "books", "music", 0.3, 0)
    assert pair.rated
    cases = explicit.rated_cases(pair)
    for k in K_SIZES:  # the given ratings are the user's first k valid lines, and are not predicted
        v, t = cases[("validation", k)], cases[("test", k)]
        assert len(t.users) and all(len(s[0]) >= k for s in t.support)
        assert sum(map(len, v.items)) == sum(
            max(0, int((pair.valid[:, 0] == u).sum()) - k) for u in v.users.tolist())
    monkeypatch.setattr(explicit, "STEPS", 300)
    out = tmp_path / "out"
    res = run_evaluation("cross-domain", table, "csv", out, 1.0, 0, repeats=2,
                         cross=CrossOptions("books", "music", 0.3))
    at = {(r["split"], r["method"]): r for r in res["rows"]}
    assert {m for (_, m) in at} == METHODS and {s for (s, _) in at} == {str(k) for k in K_SIZES}
    assert all(np.isfinite(r["mae"]) and r["rmse"] >= r["mae"] for r in at.values())
    # the planted taste: a user's source ratings tell their target ratings' level
    assert at[("0", "item mean + user offset")]["mae"] < at[("0", "mean")]["mae"] - 0.2
    assert at[("0", "shared")]["mae"] < at[("0", "target-only")]["mae"]
    report = (out / "report.md").read_text()
    assert "Verdicts (MAE)" in report and "| Meta-SGD |" in report and (out / "mae_by_k.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "cross-domain-ratings" and len(metrics["chosen"]) == 2
