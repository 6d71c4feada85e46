"""Online item offsets (evaluate/online.py): strict test-then-train, a hand-computed step,
no-op at eta = 0, a gain on a drifting stream; and the prequential verdicts' row lookups."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metarec.evaluate.metrics import logloss
from metarec.evaluate.online import GRID, MAX_DECAY, OnlineItems, add_online, choose, logit, online_items, with_online
from metarec.evaluate.report import margin, prequential_margins

CFG = OnlineItems(eta=0.3, lam=0.1, eta_global=0.01)


def _stream(n: int = 400, items: int = 12, negs: int = 5, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random base probabilities ``(n, 1 + negs)``, item codes (column 0 the event's item), labels."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, (n, 1 + negs))
    it = rng.integers(0, items, (n, 1 + negs))
    y = (rng.random(n) < 0.5).astype(np.float64)
    return p, it, y


def test_first_occurrence_of_an_item_gets_exactly_the_base_prediction() -> None:
    p, it, y = _stream()
    out = online_items(p, it, y, OnlineItems(eta=0.3, lam=0.1))
    seen: set[int] = set()
    firsts = []
    for e, i in enumerate(it[:, 0]):
        if int(i) not in seen:
            firsts.append(e)
            seen.add(int(i))
    assert len(firsts) > 3
    assert (out[firsts, 0] == p[firsts, 0]).all()  # bit for bit
    assert not np.allclose(out[:, 0], p[:, 0])  # later occurrences are corrected


def test_a_label_never_reaches_its_own_or_an_earlier_prediction() -> None:
    p, it, y = _stream()
    base = online_items(p, it, y, CFG)
    for k in (0, 7, 150, len(y) - 1):
        flipped = y.copy()
        flipped[k] = 1.0 - flipped[k]
        out = online_items(p, it, flipped, CFG)
        np.testing.assert_array_equal(out[:k + 1], base[:k + 1])  # event k itself included, negatives too
        if k + 1 < len(y):
            assert not np.array_equal(out[k + 1:], base[k + 1:])  # the label does reach later events


def test_eta_zero_returns_the_base_scores() -> None:
    p, it, y = _stream()
    np.testing.assert_array_equal(online_items(p, it, y, OnlineItems()), p)
    np.testing.assert_array_equal(online_items(p, it, y, OnlineItems(eta=0.0, lam=0.1)), p)


def test_one_hand_computed_sgd_step() -> None:
    eta, lam, eg = 0.5, 0.2, 0.1
    p = np.array([[0.3, 0.6], [0.7, 0.4], [0.2, 0.9]])
    it = np.array([[4, 1], [2, 4], [4, 2]])  # item 4 is learned at event 0, scored as a negative at 1
    y = np.array([1.0, 0.0, 0.0])
    out = online_items(p, it, y, OnlineItems(eta, lam, eg))

    def sig(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    def lg(q: float) -> float:
        return math.log(q / (1.0 - q))

    err0 = 1.0 - 0.3  # event 0: o = g = 0, so the prediction is the base 0.3
    o4, g = eta * err0, eg * err0  # the L2 term is zero on a zero offset
    assert out[0, 0] == 0.3 and out[0, 1] == 0.6
    assert out[1, 0] == pytest.approx(sig(lg(0.7) + g))  # item 2: no offset yet, only the global one
    assert out[1, 1] == pytest.approx(sig(lg(0.4) + g + o4))  # item 4 as a negative
    err1 = 0.0 - out[1, 0]
    o2, g = eta * err1, g + eg * err1
    o4_at_2 = o4  # item 4 was not learned at event 1 (a negative is never learned from)
    assert out[2, 0] == pytest.approx(sig(lg(0.2) + g + o4_at_2))
    assert out[2, 1] == pytest.approx(sig(lg(0.9) + g + o2))
    # and the L2 decay of a non-zero offset: o += eta (y - p) - eta lam o
    out2 = online_items(np.array([[0.5], [0.5], [0.5]]), np.array([[0], [0], [0]]), np.array([1.0, 1.0, 0.0]),
                        OnlineItems(eta, lam))
    o = eta * 0.5
    assert out2[1, 0] == pytest.approx(sig(o))
    o = o + eta * (1.0 - sig(o)) - eta * lam * o
    assert out2[2, 0] == pytest.approx(sig(o))


def test_offsets_lower_logloss_when_item_rates_drift() -> None:
    """The base scorer knows each item's rate at the cut; afterwards the rates drift."""
    rng = np.random.default_rng(1)
    n, items = 6000, 20
    start = rng.uniform(0.2, 0.8, items)
    end = np.clip(start + rng.choice([-0.35, 0.35], items), 0.05, 0.95)
    it = rng.integers(0, items, n)
    t = np.arange(n) / n
    rate = start[it] + (end[it] - start[it]) * t
    y = (rng.random(n) < rate).astype(np.float64)
    p = start[it][:, None]
    out = online_items(p, it[:, None], y, OnlineItems(eta=0.05, lam=0.0))
    assert logloss(y, out[:, 0]) < logloss(y, p[:, 0]) - 0.02
    chosen = choose(p, it[:, None], y)
    assert chosen["eta"] > 0 and chosen["val_auc"] > chosen["val_auc_base"]


def test_choose_keeps_the_plain_scorer_on_a_tie_and_logit_inverts_sigmoid() -> None:
    assert GRID[0] == OnlineItems()  # no correction first
    q = np.array([1e-3, 0.2, 0.5, 0.9])
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-logit(q))), q)
    p, y = np.array([[0.2], [0.6], [0.4], [0.7]]), np.array([0.0, 1.0, 0.0, 1.0])
    c = choose(p, np.arange(4)[:, None], y, grid=(OnlineItems(), OnlineItems(eta=0.3)))
    assert (c["eta"], c["val_auc"], c["val_auc_base"]) == (0.0, 1.0, 1.0)  # every item new: a tie
    assert c["profile"]["eta"] == "0: 1.0000 0.3: 1.0000"


def test_grid_is_stable_and_its_profile_peaks_at_the_choice() -> None:
    assert len(set(GRID)) == len(GRID)
    assert all(c.eta * c.lam <= MAX_DECAY for c in GRID)  # the L2 decay never overshoots zero
    assert all(c.lam == 0.0 for c in GRID if c.eta == 0.0)  # lam is inert without an item offset
    p, it, y = _stream(300, items=6, negs=0, seed=3)
    c = choose(p, it, y)
    for field in ("eta", "lam", "eta_global"):
        tokens = c["profile"][field].split()  # "value: auc value: auc ..."
        pairs = list(zip(tokens[::2], tokens[1::2]))
        best = max(float(a) for _, a in pairs)
        assert best == pytest.approx(c["val_auc"], abs=5e-5)  # the profile's peak is the chosen AUC
        assert f"{c[field]:g}:" in [v for v, _ in pairs]


def test_add_online_puts_each_variant_after_its_row_with_the_same_kind() -> None:
    p, it, y = _stream(20)
    cfg = {"eta": 0.1, "lam": 0.0, "eta_global": 0.0}
    scores = {"mean": ("baseline", p), "global": ("baseline", p), "MAML": ("meta", p)}
    out = add_online(scores, {"global": cfg, "MAML": cfg}, it, y)
    assert list(out) == ["mean", "global", "global + online items", "MAML", "MAML + online items"]
    assert out["global + online items"][0] == "baseline" and out["MAML + online items"][0] == "meta"
    assert out["global"][1] is p


def _row(split: str, method: str, kind: str, aucs: list[float]) -> dict:
    return {"split": split, "method": method, "kind": kind, "auc": float(np.mean(aucs)), "per_seed": {"auc": aucs}}


def test_verdicts_find_river_and_the_non_adapting_global_row_by_exact_name() -> None:
    rows = []
    for split in ("hist_0", "hist_1_5", "all"):
        rows += [_row(split, "global", "baseline", [0.60, 0.61, 0.62]),
                 _row(split, with_online("global"), "baseline", [0.70, 0.70, 0.70]),
                 _row(split, "river BiasedMF", "baseline", [0.63, 0.63, 0.63]),
                 _row(split, "MAML", "meta", [0.62, 0.62, 0.62]),
                 _row(split, with_online("MAML"), "meta", [0.66, 0.67, 0.68])]
    ms = prequential_margins(rows)
    assert len(ms) == 9 and all(m is not None for m in ms)
    river, glob, best, both = ms[:4]
    assert river["baseline"] == "river BiasedMF" and river["meta"] == "MAML + online items"
    assert glob["baseline"] == "global" and glob["verdict"] == "win"  # not "global + online items"
    assert glob["margin"] == pytest.approx(0.06)
    assert best["baseline"] == "global + online items" and best["verdict"] == "loss"
    assert both["meta"] == "MAML + online items" and both["baseline"] == "global + online items"
    plain = margin(rows, "hist_0", "auc", meta=lambda r: "+" not in r["method"])
    assert plain is not None and plain["meta"] == "MAML"
    assert ms[-1]["split"] == "all"
