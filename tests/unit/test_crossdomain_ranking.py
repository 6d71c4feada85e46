"""Sampled ranking metrics (metarec.crossdomain.ranking) against a brute-force reference: every
tie break of the held-out item enumerated, each metric computed from its rank by definition."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from metarec.crossdomain.ranking import METRICS, line_metrics, rank_metrics


def reference(row: np.ndarray) -> dict[str, float]:
    """Mean over the ranks the held-out item can take when ties break uniformly at random."""
    above = int((row[1:] > row[0]).sum())
    tied = int((row[1:] == row[0]).sum())
    ranks = range(above + 1, above + tied + 2)
    out: dict[str, float] = {"mrr": float(np.mean([1.0 / r for r in ranks]))}
    for k in (1, 5, 10):
        out[f"ndcg@{k}"] = float(np.mean([1.0 / math.log2(r + 1) if r <= k else 0.0 for r in ranks]))
        out[f"hr@{k}"] = float(np.mean([1.0 if r <= k else 0.0 for r in ranks]))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), min_size=12, max_size=12), min_size=1, max_size=6))
def test_every_metric_is_the_tie_break_expectation(rows: list[list[int]]) -> None:
    scores = np.array(rows, float)  # few distinct values: many ties
    got = line_metrics(scores)
    for i, row in enumerate(scores):
        want = reference(row)
        for m in METRICS:
            assert math.isclose(got[m][i], want[m], abs_tol=1e-12), (m, row)


def test_known_ranks() -> None:
    s = np.array([[3.0, 1, 2, 0], [0.0, 1, 2, 3]])  # rank 1, rank 4
    m = rank_metrics(s)
    assert math.isclose(m["mrr"], (1 + 0.25) / 2)
    assert m["hr@1"] == 0.5 and m["hr@5"] == 1.0
    assert math.isclose(m["ndcg@5"], (1 + 1 / math.log2(5)) / 2)


def test_a_constant_scorer_gets_the_random_expectation() -> None:
    m = rank_metrics(np.zeros((3, 1000)))
    assert math.isclose(m["hr@10"], 10 / 1000)
    assert math.isclose(m["mrr"], sum(1 / r for r in range(1, 1001)) / 1000)
