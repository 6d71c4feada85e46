"""``metarec evaluate`` end to end on a small simulated log (both protocols), and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarec.data import write_jsonl
from metarec.data.eventlog import DataError
from metarec.data.simulate import SimConfig, simulate
from metarec.evaluate.command import run_evaluation

MELU_SPLITS = {"warm", "new_users", "new_items", "new_users_new_items"}
PREQ_SPLITS = {"all", "hist_0", "hist_1_5", "hist_6_20", "hist_21_plus"}


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "sim.jsonl"
    write_jsonl(simulate(SimConfig(users=80, items=60, mean_events=30, seed=3)), path)
    return path


def test_melu_protocol_end_to_end(sim_log: Path, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    run_evaluation("melu", sim_log, "simulated", tmp_path, budget_minutes=0.1, seed=1, repeats=2)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["protocol"] == "melu" and m["seed"] == 1
    assert {r["split"] for r in m["rows"]} == MELU_SPLITS
    kinds = {r["method"]: r["kind"] for r in m["rows"]}
    assert {"MAML", "FOMAML", "Meta-SGD", "Reptile"} <= {k for k, v in kinds.items() if v == "meta"}
    assert kinds["global"] == "baseline" and kinds["fine-tuned"] == "baseline"
    from metarec.evaluate.melu import ADAPT_MULTS

    assert all(c["adapt_mult"] in ADAPT_MULTS for c in m["chosen"]["meta"].values())  # chosen on validation
    nu = [r for r in m["rows"] if r["split"] == "new_users"]
    for r in nu:
        assert set(r) >= {"mae", "rmse", "ndcg@1", "ndcg@3", "ndcg_lin@3"}
        assert r["mae"] is None or 0.0 <= r["mae"] <= 1.0
    from metarec.evaluate.melu import SUPPORT_SIZES

    sizes = [r for r in m["support_rows"] if r["method"] == "MAML"]
    assert [r["split"] for r in sizes] == [str(k) for k in SUPPORT_SIZES]
    assert all(len(r["per_seed"]["mae"]) == 2 for r in sizes)  # one value per test seed
    assert m["support_curve"]["MAML"][str(SUPPORT_SIZES[0])] == sizes[0]["mae"]
    assert len(m["support_margins"]) == len(SUPPORT_SIZES)
    assert set(m["chosen"]["by_size"]) == {str(k) for k in SUPPORT_SIZES}  # settings re-chosen per size
    report = (tmp_path / "report.md").read_text()
    assert "new_users" in report and "**" in report and "margin" in report
    assert "MAE by support size" in report
    assert (tmp_path / "mae_by_support.png").stat().st_size > 0


def test_prequential_protocol_end_to_end(sim_log: Path, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    run_evaluation("prequential", sim_log, "simulated", tmp_path, budget_minutes=0.1, seed=0)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {r["split"] for r in m["rows"]} == PREQ_SPLITS
    methods = {r["method"] for r in m["rows"]}
    assert any("river" in x for x in methods) and "global" in methods
    row = next(r for r in m["rows"] if r["split"] == "all" and r["method"] == "MAML")
    assert set(row) >= {"auc", "logloss", "rmse", "hr@10", "ndcg@10"}
    assert 0.0 <= row["auc"] <= 1.0 and 0.0 <= row["hr@10"] <= 1.0
    for png in ("auc_over_time.png", "auc_by_history.png"):
        assert (tmp_path / png).exists()


def test_bad_arguments_are_one_line_errors(sim_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="--protocol"):
        run_evaluation("bogus", sim_log, "simulated", out, 1.0, 0)
    with pytest.raises(ValueError, match="--format"):
        run_evaluation("melu", sim_log, "xml", out, 1.0, 0)
    with pytest.raises(ValueError, match="--budget-minutes"):
        run_evaluation("melu", sim_log, "simulated", out, 0.0, 0)
    with pytest.raises(DataError, match="no such file"):
        run_evaluation("melu", tmp_path / "missing", "ml-1m", out, 1.0, 0)
    assert not out.exists()  # checked before anything is written
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing column"):
        run_evaluation("melu", bad, "csv", tmp_path, 1.0, 0)


def test_tested_configuration_is_each_algorithms_final_length_winner() -> None:
    from metarec.evaluate.melu import chosen_meta

    final = {"maml": {"params": {"algorithm": "maml", "inner_lr": 0.2, "outer_loss": "huber"}, "adapt_mult": 2,
                      "value": 0.7}}
    got = chosen_meta(final)
    assert got["maml"]["inner_lr"] == 0.2 and got["maml"]["outer_loss"] == "huber" and got["maml"]["adapt_mult"] == 2
    assert set(got) == {"maml", "fomaml", "metasgd", "reptile"}
    assert got["reptile"]["adapt_mult"] == 1 and got["reptile"]["algorithm"] == "reptile"  # no trial: defaults


def test_ft_grid_is_the_old_nested_loops_without_repeated_zero_steps() -> None:
    """Both protocols' fine-tuning grids enumerate the configurations of their former nested loops,
    in the same order (ties keep the first), with "no fine-tuning" evaluated once."""
    from metarec.evaluate import methods as M
    from metarec.evaluate.search import LOSSES

    old = [{"ft_steps": s, "ft_lr": lr, "ft_adapt": layers, "ft_loss": loss}
           for loss in LOSSES for layers in M.FT_ADAPT for s in M.FT_STEPS for lr in (M.FT_LRS if s else (0.0,))
           if s or (loss == LOSSES[0] and layers == M.FT_ADAPT[0])]
    assert list(M.ft_grid(losses=LOSSES)) == old
    steps, lrs = (0, 1, 3), (0.03, 0.3)
    old = [{"ft_steps": s, "ft_lr": lr, "ft_adapt": layers} for layers in M.FT_ADAPT for s in steps
           for lr in (lrs if s else (0.0,))]
    assert list(M.ft_grid(steps, lrs)) == [c for k, c in enumerate(old) if c["ft_steps"] or k == 0]


def test_models_of_the_tested_length_are_trained_once() -> None:
    """A validation finalist at the run's seed is reused by the test stage (same parameters, steps
    and seed; the test-time step multiple does not matter); shorter search trials are not kept."""
    from types import SimpleNamespace

    from metarec.evaluate import methods as M
    from metarec.evaluate.melu import Melu

    plan = M.Plan(meta_steps=20, trial_steps=10, trials=2, repeats=1)
    ev = Melu(SimpleNamespace(rating_range=(1.0, 5.0)), 0, plan, None, lambda s: None)  # type: ignore[arg-type]
    calls: list[int] = []

    def train() -> object:
        calls.append(1)
        return object()

    a = ev._keep("meta", {"algorithm": "maml", "inner_lr": 0.1}, 20, 0, train)  # type: ignore[arg-type]
    b = ev._keep("meta", {"inner_lr": 0.1, "algorithm": "maml", "adapt_mult": 4}, 20, 0, train)  # type: ignore[arg-type]
    assert a is b and len(calls) == 1
    assert ev._keep("meta", {"algorithm": "maml", "inner_lr": 0.1}, 20, 1, train) is not a  # type: ignore[arg-type]
    assert ev._keep("global", {"algorithm": "maml", "inner_lr": 0.1}, 20, 0, train) is not a  # type: ignore[arg-type]
    ev._keep("meta", {"algorithm": "maml"}, 10, 0, train)  # type: ignore[arg-type]
    ev._keep("meta", {"algorithm": "maml"}, 10, 0, train)  # type: ignore[arg-type]
    assert len(calls) == 5  # trial-length models are trained every time
