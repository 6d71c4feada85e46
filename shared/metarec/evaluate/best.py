"""The configuration an evaluation chose, as the file the product is trained from (``best.json``).

``metarec evaluate --protocol melu`` writes ``best.json`` next to ``metrics.json``: the meta
algorithm with the best *validation* MAE at the tested length (never a test figure) with its
parameters, the plan (early-stopping caps), the network and the seed, plus what the evaluation
measured for it on the new users. ``metarec train --config best.json`` (:func:`train_from_config`)
trains exactly that model on the same data and split and reports the same figures, so the model
the worker serves is the one the evaluation measured.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metarec.data.eventlog import DataError
from metarec.evaluate.models import META_ALGORITHMS, Net
from metarec.model import RecModel, Vocab

FORMAT_VERSION = 1


def best_config(metrics: dict[str, Any], data: str, fmt: str) -> dict[str, Any]:
    """``best.json`` from a melu run's ``metrics.json`` contents."""
    from metarec.evaluate.methods import label

    chosen = metrics["chosen"]
    val = chosen["val_mae_final_length"]
    scored = {a: float(val[label(a)]) for a in META_ALGORITHMS if label(a) in val}
    if not scored:
        raise ValueError("the evaluation validated no meta algorithm")
    a = min(scored, key=lambda k: scored[k])
    row = next((r for r in metrics["rows"] if r["split"] == "new_users" and r["method"] == label(a)), None)
    return {
        "format_version": FORMAT_VERSION, "protocol": metrics["protocol"], "dataset": metrics["dataset"],
        "data": data, "format": fmt, "seed": int(metrics["seed"]), "algorithm": a, "method": label(a),
        "params": chosen["meta"][a], "plan": metrics["plan"], "net": metrics.get("net") or dataclasses.asdict(Net()),
        "validation_mae": scored[a], "validation_mae_by_method": val,
        "evaluation": {"new_users_mae": row["mae"] if row else None,
                       "new_users_mae_per_seed": row["per_seed"]["mae"] if row else None,
                       "seeds": metrics["seeds"]},
    }


def write_best(out: Path, metrics: dict[str, Any], data: str, fmt: str) -> Path:
    path = out / "best.json"
    path.write_text(json.dumps(best_config(metrics, data, fmt), indent=2, sort_keys=True))
    return path


def read_config(path: Path) -> dict[str, Any]:
    """A ``best.json``; errors are one readable :class:`DataError` line."""
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a best.json ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format_version") != FORMAT_VERSION or cfg.get("protocol") != "melu":
        raise DataError(f"{path}: not a best.json written by `metarec evaluate --protocol melu` "
                        f"(format_version {FORMAT_VERSION})")
    missing = [k for k in ("dataset", "seed", "algorithm", "params", "plan", "net") if k not in cfg]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}")
    return cfg


def train_from_config(cfg: dict[str, Any], data: Path, fmt: str,
                      tick: Callable[[str], None] = lambda m: None) -> tuple[RecModel, Vocab, dict[str, Any]]:
    """Train the model ``cfg`` describes on ``data``: the same split, seed, plan and parameters as
    the evaluation. Returns the model (``cfg.inner_steps`` set to the tested adaptation steps), its
    vocabulary, and the manifest's figures: validation MAE before and after adaptation and the new
    users' MAE next to what the evaluation measured for this seed."""
    from metarec.evaluate.data import load_ratings
    from metarec.evaluate.melu import Melu
    from metarec.evaluate.melu_tasks import neural, score
    from metarec.evaluate.methods import Plan

    r = load_ratings(data, fmt)
    if r.name != cfg["dataset"]:
        raise DataError(f"{data}: this is {r.name}, but the configuration was chosen on {cfg['dataset']}")
    seed = int(cfg["seed"])
    ev = Melu(r, seed, Plan(**cfg["plan"]), Net(**{**cfg["net"], "hidden": tuple(cfg["net"]["hidden"])}), tick)
    split = ev.split(seed)
    params = cfg["params"]
    model = ev.train_meta(split, params, ev.plan.meta_steps, seed)
    steps = int(params["inner_steps"]) * int(params.get("adapt_mult", 1))
    model.cfg.inner_steps = steps  # serving adapts as the evaluation tested
    lr = model.inner_lr_map()

    def mae(tasks: Any, n: int) -> float:
        return float(score(r, split, tasks, neural(model, n, lr)).get("mae", np.nan))

    per_seed = (cfg.get("evaluation") or {}).get("new_users_mae_per_seed") or [None]
    figures = {"algorithm": cfg["algorithm"], "adapt_steps": steps,
               "val_mae_init": mae(split.val, 0), "val_mae_adapted": mae(split.val, steps),
               "new_users_mae": mae(split.states["new_users"], steps),
               "evaluated_new_users_mae": per_seed[0], "early_stopping": ev.training[-1] if ev.training else None}
    vocab = Vocab(users=[r.users[u] for u in sorted(split.train)], items=list(r.items))
    return model, vocab, figures
