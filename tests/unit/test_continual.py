"""The continual trainer's core: the window's bounds, catalog growth, the gate, a round, the learner."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from metarec.continual.catalog import grow
from metarec.continual.gate import cut_time, evaluate, judge
from metarec.continual.learner import Learner, Serving
from metarec.continual.rounds import RoundConfig, run_round, sabotage
from metarec.continual.window import TaskWindow
from metarec.data.simulate import SimConfig, simulate
from metarec.events import Event, new_event
from metarec.features import EventTable
from metarec.meta import TrainConfig, meta_train
from metarec.model import ModelConfig, RecModel, Vocab, score_matrix


def ev(user: str, i: int, ts: float, item: str = "a") -> Event:
    return Event(event_id=f"{user}-{i}", user_id=user, item_id=item, kind="click", value=1.0, ts=ts)


def test_window_bounds_users_events_and_horizon() -> None:
    w = TaskWindow(max_users=3, user_events=4, horizon_s=100.0)
    for i in range(10):
        assert w.add(ev("a", i, float(i)))
    assert w.n_events == 4 and [e.event_id for e in w.events()] == [f"a-{i}" for i in range(6, 10)]
    assert not w.add(ev("a", 9, 9.0)), "an event held already is not added twice"
    for u in ("b", "c", "d"):
        w.add(ev(u, 0, 10.0))
    assert len(w) == 3 and "a" not in {e.user_id for e in w.events()}, "the least recently active user left"
    w.add(ev("e", 0, 200.0))  # b, c, d are silent for more than the horizon
    assert {e.user_id for e in w.events()} == {"e"} and w.n_events == 1


def tiny_model(n_items: int, **kw: object) -> RecModel:
    torch.manual_seed(0)
    return RecModel(ModelConfig(n_users=5, n_items=n_items, dim=4, hidden=(8,), **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("bias,attrs,msgd", list(itertools.product([False, True], [0, 2], [False, True])))
def test_grow_keeps_known_scores_and_starts_new_items_at_the_mean(bias: bool, attrs: int, msgd: bool) -> None:
    model = tiny_model(4, bias=bias, item_attrs=attrs, meta_sgd=msgd)
    with torch.no_grad():
        if bias:
            model.item_bias.weight.normal_()
        if attrs:
            model.item_attr.random_(1, 50)
    vocab = Vocab(users=["u1"], items=["a", "b", "c"])
    grown, gv, new = grow(model, vocab, [new_event("u1", i, "click", 1, 0) for i in ["c", "x", "a", "y"]])
    assert new == ["x", "y"] and gv.items == ["a", "b", "c", "x", "y"] and gv.item("y") == 5
    assert grown.cfg.n_items == 6 and model.cfg.n_items == 4, "the serving model is not changed"
    users, ctx = torch.tensor([1, 0]), torch.zeros(2, model.cfg.max_context, dtype=torch.long)
    fast = {k: v.detach().unsqueeze(0).repeat(2, *[1] * v.dim()) for k, v in model.fast_init().items()}
    with torch.no_grad():
        before = score_matrix(model, fast, users, ctx, torch.arange(1, 4))
        after = score_matrix(grown, fast, users, ctx, torch.arange(1, 6))
    assert torch.allclose(before, after[:, :3], atol=1e-6), "known items score as before"
    mean = model.item_emb.weight[1:].mean(0)
    assert torch.allclose(grown.item_emb.weight[4], mean) and torch.allclose(grown.item_emb.weight[5], mean)
    if bias:
        assert torch.allclose(grown.item_bias.weight[4], model.item_bias.weight[1:].mean(0))


def test_grown_items_join_the_domain_they_were_seen_in() -> None:
    model = tiny_model(3)
    _, gv, _ = grow(model, Vocab(users=["u1"], items=["a", "b"]), [new_event("u1", "x", "click", 1, 0)])
    assert gv.item_domains == [] and gv.domains() == [""], "no domains: the catalog stays without"
    vocab = Vocab(users=["u1"], items=["a", "b"], item_domains=["books", "music"])
    evs = [new_event("u1", "y", "click", 1, 0, domain="music"), new_event("u1", "x", "click", 1, 0),
           new_event("u1", "y", "click", 1, 0, domain="books")]
    _, gv, new = grow(model, vocab, evs)
    assert new == ["x", "y"] and gv.item_domains == ["books", "music", "", "music"]  # y: its first domain
    assert gv.domains() == ["", "books", "music"] and gv.in_domain("music").tolist() == [False, True, False, True]
    assert Vocab.from_json(gv.to_json()) == gv


def test_judge_rules() -> None:
    cur = {"users": 50.0, "logloss": 0.60, "auc": 0.7}
    assert judge(cur, {**cur, "logloss": 0.59}).accepted
    assert judge(cur, {**cur, "logloss": 0.60}).reason == "not_better"
    assert judge(cur, {**cur, "logloss": 0.595}, min_gain=0.01).reason == "not_better"
    assert judge(cur, {**cur, "users": 3.0, "logloss": 0.1}).reason == "too_few_users"
    assert judge(cur, {**cur, "logloss": float("nan")}).reason == "not_finite"
    assert judge({"users": 50.0, "mae": 0.8}, {"users": 50.0, "mae": 0.7}).accepted


@pytest.fixture(scope="module")
def served() -> tuple[RecModel, Vocab, list[Event]]:
    """A model meta-trained on the first half of a simulated log; the second half is the stream."""
    evs = simulate(SimConfig(users=160, items=60, mean_events=40, seed=3))
    half = len(evs) // 2
    vocab = Vocab(users=[], items=sorted({e.item_id for e in evs[:half]}))
    torch.manual_seed(0)
    model = RecModel(ModelConfig(n_users=1, n_items=len(vocab.items) + 1, dim=8, hidden=(16,)))
    table = EventTable.build(evs[:half], vocab, model.cfg)
    ks = np.array([k for k in range(len(table.users)) if table.count(k) >= 4])
    meta_train(model, table, ks, TrainConfig(steps=60, meta_batch=16, time_budget_s=60))
    return model.eval(), vocab, evs[half:]


def test_the_gate_rejects_a_sabotaged_candidate(served: tuple[RecModel, Vocab, list[Event]]) -> None:
    model, vocab, stream = served
    cut = cut_time(stream, 0.2)
    current = evaluate(model, vocab, stream, cut)
    bad = evaluate(sabotage(model), vocab, stream, cut)
    assert current["users"] >= 50 and current["logloss"] < 0.75
    verdict = judge(current, bad)
    assert not verdict.accepted and verdict.reason == "not_better" and bad["logloss"] > current["logloss"]


def test_a_round_trains_on_the_past_and_is_judged_on_the_newest_slice(
        served: tuple[RecModel, Vocab, list[Event]]) -> None:
    model, vocab, stream = served
    stream = [*stream, ev("u-new", 0, stream[-1].ts - 1.0, item="brand-new")]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    c = run_round(model, vocab, stream, RoundConfig(steps=40, budget_s=60, outer_lr=3e-3, min_users=10))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the serving model is not touched"
    assert c.steps == 40 and c.train_users > 50 and "brand-new" in c.new_items and c.vocab.item("brand-new") > 0
    assert c.cut_ts == cut_time(stream, 0.2)
    v = c.verdict
    assert v.current["users"] == v.candidate["users"] >= 50, "both are judged on the same held-out users"
    assert np.isfinite(v.candidate["logloss"]) and v.reason in ("better", "not_better")


def test_the_learner_runs_rounds_when_due(served: tuple[RecModel, Vocab, list[Event]]) -> None:
    model, vocab, stream = served
    lr = Learner(Serving(model, vocab, "v1"), TaskWindow(), RoundConfig(steps=5, budget_s=30),
                 every_events=500, every_s=1e9, min_users=20)
    for e in stream[:499]:
        lr.add(e)
    assert not lr.due()
    lr.add(stream[499])
    assert lr.due()
    c = lr.round()
    assert lr.since == 0 and not lr.due() and c.steps == 5
    lr.adopt(c.model, c.vocab, "v2")
    assert lr.serving.version == "v2"
