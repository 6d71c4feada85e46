"""The melu evaluation measures what serving can afford: at most ``buffer`` of a user's events and at
most ``max_steps`` test-time adaptation steps (``Net``; ``--buffer``, ``--max-adapt-steps``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.conftest import sim_ratings


@pytest.fixture(scope="module")
def ratings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return sim_ratings(tmp_path_factory, users=80, items=60, mean_events=40, seed=4)


def test_supports_are_cut_to_the_buffer_and_nothing_else_changes(ratings) -> None:  # type: ignore[no-untyped-def]
    from metarec.evaluate.splits import STATES, melu_split

    full, cut = melu_split(ratings, 0), melu_split(ratings, 0, buffer=12)
    assert max(len(s) for s in full.states["warm"].support) > 12, "the fixture must have long supports"
    for name in STATES:
        a, b = full.states[name], cut.states[name]
        assert np.array_equal(a.users, b.users)
        assert all(np.array_equal(x, y) for x, y in zip(a.query, b.query))
        assert all(len(y) == min(len(x), 12) and np.array_equal(x[:len(y)], y) for x, y in zip(a.support, b.support))
    assert all(len(s) <= 12 for s in cut.val.support)
    assert full.train.keys() == cut.train.keys()
    assert all(np.array_equal(full.train[u], cut.train[u]) for u in full.train)


def test_test_time_step_multiples_fit_the_budget() -> None:
    from types import SimpleNamespace

    from metarec.evaluate import methods as M
    from metarec.evaluate.melu import Melu
    from metarec.evaluate.melu_tasks import ADAPT_MULTS
    from metarec.evaluate.models import Net

    def mults(max_steps: int, inner: int) -> tuple[int, ...]:
        ev = Melu(SimpleNamespace(rating_range=(1.0, 5.0)), 0, M.Plan(10, 5, 2, 1, epochs=0.0), Net(max_steps=max_steps),  # type: ignore[arg-type]
                  lambda s: None)
        return ev.step_mults(inner)

    assert mults(5, 5) == (0, 1) and mults(5, 3) == (0, 1) and mults(5, 1) == (0, 1, 2, 4)
    assert mults(6, 3) == (0, 1, 2) and mults(20, 5) == ADAPT_MULTS
    assert mults(2, 3) == (0,)  # over budget even once: only the un-adapted init is allowed


@pytest.mark.parametrize("max_steps", [1, 2, 3, 4, 5, 9])
def test_the_search_never_proposes_more_inner_steps_than_the_budget(max_steps: int) -> None:
    from metarec.evaluate.methods import Plan
    from metarec.evaluate.search import INNER_STEPS, first_meta_trials, inner_steps_upto, meta_space

    allowed = inner_steps_upto(max_steps)
    assert allowed == [s for s in INNER_STEPS if s <= max_steps]
    for plan in (Plan(10, 5, 2, 1), Plan(10, 5, 2, 1).early_stopped()):
        first = first_meta_trials(plan, max_steps)
        assert first and all(t["inner_steps"] in allowed for t in first)
    metasgd = [t for t in first_meta_trials(Plan(10, 5, 2, 1).early_stopped(), max_steps) if t["algorithm"] == "metasgd"]
    assert {t["inner_steps"] for t in metasgd} == {max(allowed)}  # 5 steps, or the most that fit
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        seen.add(meta_space(trial, max_steps)["inner_steps"])
        study.tell(trial, 0.0)
    assert seen <= set(allowed)


def test_bad_budgets_are_one_line_errors(tmp_path: Path) -> None:
    from metarec.evaluate.command import run_evaluation
    from metarec.evaluate.models import Net

    log = tmp_path / "sim.jsonl"
    log.write_text("")
    for net in (Net(buffer=0), Net(max_steps=0)):
        with pytest.raises(ValueError, match="--buffer and --max-adapt-steps"):
            run_evaluation("melu", log, "simulated", tmp_path / "out", 1.0, 0, net=net)
    assert not (tmp_path / "out").exists()


def test_best_json_records_the_budget_the_evaluation_ran_with() -> None:
    from metarec.evaluate.best import best_config

    net = {"dim": 8, "hidden": [16, 8], "buffer": 32, "max_steps": 3}
    metrics = {"chosen": {"val_mae_final_length": {"MAML": 0.7}, "meta": {"maml": {"inner_steps": 3}}},
               "rows": [], "protocol": "melu", "dataset": "x", "seed": 0, "seeds": [0], "plan": {}, "net": net}
    assert best_config(metrics, "d", "simulated")["net"] == net


@pytest.mark.parametrize("cap", ["out", "last+out", "layers+out"])
def test_the_search_adapts_no_more_layers_than_the_cap(cap: str) -> None:
    from metarec.evaluate.methods import Plan
    from metarec.evaluate.models import ADAPT, Net
    from metarec.evaluate.search import first_meta_trials, meta_space

    allowed = Net(max_adapt=cap).adapts()
    assert allowed[-1] == cap and allowed == list(ADAPT)[:len(allowed)]
    first = first_meta_trials(Plan(10, 5, 2, 1).early_stopped(), 20, cap)
    assert first and {t["adapt"] for t in first} == {cap}  # the enqueued trials adapt the most allowed
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        seen.add(meta_space(trial, 20, tuple(allowed))["adapt"])
        study.tell(trial, 0.0)
    assert seen == set(allowed)


def test_a_bad_layer_cap_is_a_one_line_error(tmp_path: Path) -> None:
    from metarec.evaluate.command import run_evaluation
    from metarec.evaluate.models import Net

    log = tmp_path / "sim.jsonl"
    log.write_text("")
    with pytest.raises(ValueError, match="--max-adapt-layers must be one of out, last\\+out, layers\\+out"):
        run_evaluation("melu", log, "simulated", tmp_path / "out", 1.0, 0, net=Net(max_adapt="layers"))
    assert not (tmp_path / "out").exists()
