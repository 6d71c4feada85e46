"""Evaluation metrics against hand-computed examples, ties included."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from metarec.evaluate.metrics import mean_ndcg, ndcg_at_k, sampled_rank_metrics, user_errors


def test_ndcg_hand_computed_exp_and_linear_gain() -> None:
    rel = np.array([3.0, 1.0, 2.0])
    score = np.array([0.1, 0.9, 0.5])  # predicted order: rel 1, 2, 3
    d = [1 / math.log2(2), 1 / math.log2(3), 1 / math.log2(4)]
    dcg = (2**1 - 1) * d[0] + (2**2 - 1) * d[1] + (2**3 - 1) * d[2]
    idcg = (2**3 - 1) * d[0] + (2**2 - 1) * d[1] + (2**1 - 1) * d[2]
    assert ndcg_at_k(rel, score, 3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(rel, score, 1) == pytest.approx(1 / 7)
    lin = (1 * d[0] + 2 * d[1] + 3 * d[2]) / (3 * d[0] + 2 * d[1] + 1 * d[2])
    assert ndcg_at_k(rel, score, 3, "lin") == pytest.approx(lin)
    assert ndcg_at_k(rel, rel, 3) == pytest.approx(1.0)


def test_ndcg_ties_average_over_orderings() -> None:
    rel = np.array([5.0, 1.0, 3.0, 4.0])
    const = np.zeros(4)
    for k in (1, 3):
        perms = [ndcg_at_k(rel, -np.argsort(np.array(p)).astype(float), k) for p in itertools.permutations(range(4))]
        assert ndcg_at_k(rel, const, k) == pytest.approx(np.mean(perms))
    # a partial tie: item 0 is surely first, items 1..3 tie
    score = np.array([1.0, 0.0, 0.0, 0.0])
    g = 2.0 ** rel - 1
    disc = 1 / np.log2(np.arange(2, 6))
    expect = g[0] * disc[0] + g[1:].mean() * disc[1:3].sum()
    ideal = np.sort(g)[::-1][:3] @ disc[:3]
    assert ndcg_at_k(rel, score, 3) == pytest.approx(expect / ideal)


def test_user_errors_average_per_user() -> None:
    y = np.array([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    p = np.array([[2.0, 2.0, 9.0], [1.0, 9.0, 9.0]])
    mask = np.array([[1, 1, 0], [1, 0, 0]], float)
    mae, rmse = user_errors(y, p, mask)
    assert mae == pytest.approx((0.5 + 3.0) / 2)
    assert rmse == pytest.approx(math.sqrt((0.5 + 9.0) / 2))
    assert mean_ndcg(y, p, mask, 1) == pytest.approx((2 / 3 + 1.0) / 2)  # user 0: a tie of gains 1 and 3


def test_sampled_rank_metrics_with_ties() -> None:
    pos = np.array([0.9, 0.5, 0.2])
    neg = np.array([[0.1] * 99, [0.5] * 99, [0.3] * 99])
    hr, nd = sampled_rank_metrics(pos, neg, 10)
    # 1st: rank 1; 2nd: rank uniform on 1..100 → P(≤10) = 0.1; 3rd: rank 100
    assert hr == pytest.approx((1.0 + 0.1 + 0.0) / 3)
    tie = np.mean(1 / np.log2(1 + np.arange(1, 11))) * 10 / 100
    assert nd == pytest.approx((1.0 + tie + 0.0) / 3)
