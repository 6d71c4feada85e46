"""Per-seed results aggregated into metrics.json rows, and the support-size verdicts read from them."""

from __future__ import annotations

import math

import pytest

from metarec.evaluate.report import margin, support_section, verdict
from metarec.evaluate.rows import aggregate, curve


def _seed(meta: float, base: float) -> dict[tuple[str, str], dict[str, object]]:
    return {("3", "MAML"): {"kind": "meta", "mae": meta}, ("3", "fine-tuned"): {"kind": "baseline", "mae": base}}


def test_aggregate_is_mean_sd_and_per_seed_values_with_nan_seeds_left_out() -> None:
    rows = aggregate([_seed(0.80, 0.90), _seed(0.82, float("nan")), _seed(0.84, 0.88)])
    maml = next(r for r in rows if r["method"] == "MAML")
    assert maml["split"] == "3" and maml["kind"] == "meta"
    assert maml["mae"] == pytest.approx(0.82) and maml["std"]["mae"] == pytest.approx(math.sqrt(0.0008 / 3))
    ft = next(r for r in rows if r["method"] == "fine-tuned")
    assert ft["mae"] == pytest.approx(0.89) and ft["per_seed"]["mae"] == [0.90, None, 0.88]


def test_curve_maps_support_rows_to_method_size_means() -> None:
    rows = aggregate([{("1", "a"): {"kind": "meta", "mae": 0.9}, ("5", "a"): {"kind": "meta", "mae": 0.7}}])
    assert curve(rows) == {"a": {1: 0.9, 5: 0.7}}


def test_support_verdicts_follow_the_states_rule() -> None:
    win = aggregate([_seed(0.80, 0.85), _seed(0.81, 0.86), _seed(0.79, 0.85)])
    m = margin(win, "3", "mae")
    assert m is not None and m["verdict"] == "win" and m["margin"] == pytest.approx(0.0533, abs=1e-4)
    tie = aggregate([_seed(0.80, 0.85), _seed(0.86, 0.85), _seed(0.79, 0.80)])
    t = margin(tie, "3", "mae")
    assert t is not None and t["verdict"] == "tie"
    lines = "\n".join(support_section(win, [m]))
    assert "k = 3" in lines and "**0.8000 ± 0.0082**" in lines and "→ **win**" in lines


def test_one_seed_is_a_tie_that_says_it_has_no_spread() -> None:
    one = aggregate([_seed(0.70, 0.85)])  # a large margin, but a single seed
    m = margin(one, "3", "mae")
    assert m is not None and m["verdict"] == "tie" and math.isnan(m["spread"])
    line = verdict(m)
    assert "no spread from one seed" in line and "nan" not in line
