"""6. The evaluated model against today's served one: adaptation and catalog scoring, side by side.

``today``: the model `metarec train` serves by default (binary, no bias terms or attributes,
MAML, 5 SGD steps on a 64-event buffer, MovieLens-100K-sized). ``evaluated``: the family the
MovieLens-1M evaluation chose (``docs/results/ml1m-best.json``: rating mode, user and item bias
terms, item attributes, hashed user attributes in the context, Meta-SGD's learned rates, its
tested number of adaptation steps on a 100-event buffer, ML-1M-sized), and that family on today's
catalog, users and buffer (what the family itself costs). All adapt with the
serving path (:func:`metarec.fastadapt.adapt_explicit`) and score the whole catalog through
onnxruntime (:class:`metarec.score.OnnxScorer`), in interleaved rounds; the ratios are the
figures (issue 12: no worse than 0.7x).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import common
from bench.adapt_bench import _support
from metarec.artifact import export_onnx
from metarec.fastadapt import adapt_explicit, fast_path_ok
from metarec.model import ModelConfig, RecModel
from metarec.score import OnnxScorer

BEST = common.ROOT / "docs" / "results" / "ml1m-best.json"
ML1M_USERS, ML1M_ITEMS = 4347, 3706  # training users of the seed-0 split, items


def configs() -> dict[str, ModelConfig]:
    best = json.loads(BEST.read_text())
    p = best["params"]
    steps = int(p["inner_steps"]) * int(p.get("adapt_mult", 1))
    evaluated = ModelConfig(
        n_users=ML1M_USERS + 1, n_items=ML1M_ITEMS + 1, n_context_buckets=4096, max_context=8,
        dim=best["net"]["dim"], hidden=tuple(best["net"]["hidden"]), mode="rating", adapt=("layers", "out"),
        inner_steps=steps, inner_lr=float(p["inner_lr"]), buffer_size=best["net"]["buffer"], bias=True,
        item_attrs=8, meta_sgd=best["algorithm"] == "metasgd", rating_loss=p.get("loss", "mse"))
    today = ModelConfig(n_users=common.ML_USERS + 1, n_items=common.ML_ITEMS + 1)
    # the evaluated family on today's shape (catalog, users, buffer): what the family itself costs
    same = dataclasses.replace(evaluated, n_users=today.n_users, n_items=today.n_items, buffer_size=today.buffer_size)
    return {"today": today, "evaluated": evaluated, "evaluated, today's shape": same}


def evaluated_kwargs(mode: str) -> tuple[dict[str, Any], str]:
    """``ModelConfig`` keywords and algorithm of the evaluated family, for `metarec train` on
    another log (the e2e bench: same architecture, steps, buffer and features, in ``mode``)."""
    c = configs()["evaluated"]
    kw = {"mode": mode, "dim": c.dim, "hidden": c.hidden, "adapt": c.adapt, "inner_steps": c.inner_steps,
          "inner_lr": c.inner_lr, "buffer_size": c.buffer_size, "bias": c.bias, "item_attrs": c.item_attrs,
          "n_context_buckets": c.n_context_buckets, "max_context": c.max_context, "rating_loss": c.rating_loss}
    return kw, json.loads(BEST.read_text())["algorithm"]


def _model(cfg: ModelConfig) -> RecModel:
    torch.manual_seed(0)
    m = RecModel(cfg).eval()
    if cfg.item_attrs:
        with torch.no_grad():
            m.item_attr.copy_(torch.randint(1, cfg.n_context_buckets, m.item_attr.shape))
    return m


def run(quick: bool) -> dict[str, Any]:
    cfgs = configs()
    models = {k: _model(c) for k, c in cfgs.items()}
    b = 64
    rounds = 2 if quick else 5
    min_s = 0.1 if quick else 0.4
    sups = {k: _support(c, b, c.buffer_size, 7) for k, c in cfgs.items()}
    rates: dict[str, dict[str, list[float]]] = {k: {"adapt": [], "score": []} for k in cfgs}
    with tempfile.TemporaryDirectory() as tmp:
        scorers = {}
        for k, m in models.items():
            export_onnx(m, Path(tmp) / f"{k}.onnx")
            scorers[k] = OnnxScorer(Path(tmp) / f"{k}.onnx")
        with torch.no_grad():
            fasts = {k: adapt_explicit(m, sups[k], m.cfg.inner_steps, m.inner_lr_map()) for k, m in models.items()}
            feeds = {k: {n: v.numpy() for n, v in f.items()} for k, f in fasts.items()}
            ctx = {k: np.zeros((b, c.max_context), np.int64) for k, c in cfgs.items()}
            users = np.zeros(b, np.int64)
            for _ in range(rounds):  # interleaved: both models once per round
                for k, m in models.items():
                    lr = m.inner_lr_map()
                    rates[k]["adapt"].append(b / common.time_call(
                        lambda: adapt_explicit(m, sups[k], m.cfg.inner_steps, lr), min_s))
                    rates[k]["score"].append(b / common.time_call(
                        lambda: scorers[k].score(users, ctx[k], feeds[k]), min_s))
    med = {k: {w: common.median_rate(v) for w, v in r.items()} for k, r in rates.items()}
    out = {
        "models": {k: {"mode": c.mode, "bias": c.bias, "item_attrs": c.item_attrs, "meta_sgd": c.meta_sgd,
                       "steps": c.inner_steps, "buffer": c.buffer_size, "items": c.n_items - 1,
                       "fast_path": fast_path_ok(models[k])} for k, c in cfgs.items()},
        "batch": b, "users_per_s": med, "rounds": rates,
        "ratio": {w: med["evaluated"][w] / med["today"][w] for w in ("adapt", "score")},
        "ratio_same_shape": {w: med["evaluated, today's shape"][w] / med["today"][w] for w in ("adapt", "score")},
    }
    rows = [[k, f"{c.inner_steps} x {c.buffer_size}", c.n_items - 1, med[k]["adapt"], med[k]["score"]]
            for k, c in cfgs.items()]
    md = ("# The evaluated model against today's\n\n"
          + common.table(["model", "steps x buffer", "items", "adapt users/s", "score users/s"], rows)
          + f"\nRatio evaluated / today: adaptation {out['ratio']['adapt']:.2f}x, "
            f"catalog scoring {out['ratio']['score']:.2f}x (batch {b}, 1 thread); the evaluated family on "
            f"today's catalog and buffer: {out['ratio_same_shape']['adapt']:.2f}x and "
            f"{out['ratio_same_shape']['score']:.2f}x. The ML-1M model adapts on up to 100 events (today 64) "
            f"and scores 3,706 items (today 1,682).\n")
    common.write("models", out, md)
    return out
