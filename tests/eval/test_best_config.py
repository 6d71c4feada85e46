"""The product serves what the evaluation measured: ``best.json`` → ``metarec train --config`` →
the same model and figures; the worker's featurization and adaptation equal the evaluation's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metarec import artifact
from metarec.data import write_jsonl
from metarec.data.eventlog import DataError
from metarec.data.simulate import SimConfig, simulate
from metarec.evaluate.best import read_config, train_from_config
from metarec.evaluate.command import run_evaluation
from metarec.train import save_evaluated

ML100K = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("best")
    log = root / "sim.jsonl"
    write_jsonl(simulate(SimConfig(users=80, items=60, mean_events=30, seed=5)), log)
    run_evaluation("melu", log, "simulated", root / "run", budget_minutes=0.1, seed=2, repeats=1)
    return log, root / "run"


def test_evaluation_writes_the_configuration_chosen_on_validation(evaluated: tuple[Path, Path]) -> None:
    _, run = evaluated
    cfg = read_config(run / "best.json")
    metrics = json.loads((run / "metrics.json").read_text())
    val = metrics["chosen"]["val_mae_final_length"]
    metas = {k: v for k, v in val.items() if k != "fine-tuned"}
    assert cfg["method"] == min(metas, key=lambda k: metas[k])  # by validation, not by a test figure
    assert cfg["params"] == metrics["chosen"]["meta"][cfg["algorithm"]]
    assert cfg["net"] == metrics["net"] and cfg["net"]["buffer"] == 100  # the serving budget it ran with
    steps = int(cfg["params"]["inner_steps"]) * int(cfg["params"]["adapt_mult"])
    assert steps <= cfg["net"]["max_steps"]
    assert cfg["plan"]["epochs"] > 0 and cfg["plan"]["meta_steps"] == metrics["plan"]["meta_steps"]
    assert metrics["training"], "early-stopped models are reported"
    assert all(t["stopped_by"] in ("patience", "cap", "time") for t in metrics["training"])
    assert "Training length" in (run / "report.md").read_text()


def test_train_from_config_reproduces_the_evaluation(evaluated: tuple[Path, Path], tmp_path: Path) -> None:
    log, run = evaluated
    torch.set_num_threads(1)
    cfg = read_config(run / "best.json")
    model, vocab, fig = train_from_config(cfg, log, "simulated")
    assert fig["evaluated_new_users_mae"] is not None
    assert abs(fig["new_users_mae"] - fig["evaluated_new_users_mae"]) < 0.005
    assert model.cfg.inner_steps == int(cfg["params"]["inner_steps"]) * int(cfg["params"]["adapt_mult"])
    d = save_evaluated(model, vocab, tmp_path, cfg, fig, str(log))
    bundle = artifact.load(tmp_path)
    assert bundle.path == d.resolve()
    m = bundle.manifest
    assert m["train"]["algorithm"] == cfg["algorithm"]
    assert {"val_mae_init", "val_mae_adapted", "new_users_mae"} <= set(m["validation"])
    for k, v in model.state_dict().items():  # the served weights are the evaluated ones
        torch.testing.assert_close(bundle.model.state_dict()[k], v)


def test_a_bad_config_is_one_readable_error(tmp_path: Path) -> None:
    bad = tmp_path / "best.json"
    bad.write_text("{\"protocol\": \"prequential\"}")
    with pytest.raises(DataError, match="not a best.json"):
        read_config(bad)
    with pytest.raises(DataError, match="no such file"):
        read_config(tmp_path / "missing.json")


@pytest.mark.skipif(not ML100K.exists(), reason="needs ../shared/data/ml-100k (MovieLens is not redistributed)")
def test_live_events_carry_the_features_the_evaluation_trains_on() -> None:
    """A replayed MovieLens event's context hashes to the same feature ids as the evaluation's row."""
    from metarec.data import load_events
    from metarec.evaluate.data import load_ratings
    from metarec.evaluate.models import Net, make_model
    from metarec.features import context_ids

    r = load_ratings(ML100K, "ml-100k")
    model = make_model(r, 3, "rating", "layers+out", 1, 0.1, Net(), 0)
    events = load_events(ML100K, "ml-100k")
    by_key = {(r.users[u], r.items[i], float(t)): tuple(c) for u, i, t, c in
              zip(r.user[:5000], r.item[:5000], r.ts[:5000], r.ctx[:5000])}
    checked = 0
    for e in events[:5000]:
        key = (e.user_id, e.item_id, e.ts)
        if key in by_key:
            assert context_ids(e.context, model.cfg) == by_key[key], e
            checked += 1
    assert checked > 1000
    assert any(k.startswith("u.") for k in events[0].context)
    assert np.all(model.item_attr[1:].numpy() == r.item_attr)


@pytest.mark.skipif(not ML100K.exists(), reason="needs ../shared/data/ml-100k (MovieLens is not redistributed)")
def test_the_worker_serves_what_the_evaluation_predicts(tmp_path: Path) -> None:
    """An evaluation-family model (rating, bias terms, item attributes, Meta-SGD rates), saved as a
    model directory and served by the worker's Recommender through onnxruntime, scores a new user's
    top items exactly as the evaluation's predictor does after adapting on the same events."""
    from metarec.data import load_events
    from metarec.evaluate.data import load_ratings
    from metarec.evaluate.models import Net, batch, make_model, predict_adapted
    from metarec.model import Vocab
    from metarec.recommend import Recommender
    from metarec.score import OnnxScorer
    from metarec.state import step

    r = load_ratings(ML100K, "ml-100k")
    known = [str(u) for u in range(1, 51)]  # the model's known users; the tested user is new
    model = make_model(r, len(known), "rating", "layers+out", 4, 0.05, Net(buffer=40), 0, meta_sgd=True)
    torch.manual_seed(1)
    with torch.no_grad():  # non-trivial biases and rates, so a dropped term would show
        model.item_bias.weight.normal_(0, 0.3)
        model.user_bias.weight.normal_(0, 0.3)
        for p in model.inner_lrs.values():
            p.uniform_(0.02, 0.2)
    d = artifact.save(model, Vocab(users=known, items=list(r.items)), tmp_path, {"data": {}})
    bundle = artifact.load(d)
    rec = Recommender(bundle, OnnxScorer(d / "model.onnx"), top_k=8)
    user = "200"
    mine = [e for e in load_events(ML100K, "ml-100k") if e.user_id == user][:30]
    state, _ = step(None, mine, buffer_size=model.cfg.buffer_size)
    served = rec.recommend([state], now=0.0)[0]

    code = r.users.index(user)
    rows = np.flatnonzero(r.user == code)
    by_key = {(r.items[r.item[x]], float(r.ts[x])): x for x in rows}
    sup_rows = np.array([by_key[(e.item_id, e.ts)] for e in mine], np.int64)
    newest = sup_rows[int(np.argmax(r.ts[sup_rows]))]  # the worker recommends for the newest event's context
    sup = batch(r, [sup_rows], [0], r.value)
    qry = batch(r, [np.full(len(served.items), newest)], [0], r.value)
    qry.items[0] = torch.tensor([r.items.index(i) + 1 for i in served.items])
    want = predict_adapted(model, sup, qry, model.cfg.inner_steps, model.inner_lr_map())[0]
    np.testing.assert_allclose(served.scores, want, atol=1e-4)
