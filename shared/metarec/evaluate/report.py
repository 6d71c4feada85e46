"""``metrics.json`` and ``report.md``: methods × metrics per split, best in bold, the chosen
configuration, the meta-vs-baseline margin with its spread across seeds, seeds and wall time."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metarec.evaluate.online import is_online

LOWER_IS_BETTER = {"mae", "rmse", "logloss"}
COLUMNS = {"melu": ("mae", "rmse", "ndcg@1", "ndcg@3", "ndcg_lin@3"),
           "prequential": ("auc", "logloss", "rmse", "hr@10", "ndcg@10")}
SPLITS = {"melu": ("warm", "new_users", "new_items", "new_users_new_items"),
          "prequential": ("all", "hist_0", "hist_1_5", "hist_6_20", "hist_21_plus")}


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def write_metrics(out: Path, protocol: str, dataset: str, seed: int, rows: list[dict[str, Any]],
                  extra: dict[str, Any]) -> Path:
    path = out / "metrics.json"
    path.write_text(json.dumps(_clean({"protocol": protocol, "dataset": dataset, "seed": seed, "rows": rows,
                                       **extra}), indent=2))
    return path


Pick = Callable[[dict[str, Any]], bool]  # which rows of one kind may be compared
NON_ADAPTING = "global"  # the non-adapting global model's row (exact name, not a substring)


def _any(row: dict[str, Any]) -> bool:
    return True


def is_river(row: dict[str, Any]) -> bool:
    return "river" in row["method"].lower() and not is_online(row["method"])


def is_non_adapting(row: dict[str, Any]) -> bool:
    return bool(row["method"] == NON_ADAPTING)


def with_online_items(row: dict[str, Any]) -> bool:
    return is_online(row["method"])


def margin(rows: list[dict[str, Any]], split: str, metric: str, baseline: Pick = _any, meta: Pick = _any,
           against: str = "best baseline") -> dict[str, Any] | None:
    """Best meta method vs best baseline on ``split``/``metric``, per seed: mean, spread, verdict.

    ``baseline``/``meta`` narrow the rows of each kind (e.g. only River); ``against`` names the
    comparison in the report. The margin is positive when the meta method is better. It is a
    *win* when its mean exceeds twice its standard deviation across seeds (and every seed agrees
    in sign), else a *tie*.
    """
    sel = [r for r in rows if r["split"] == split and r.get(metric) is not None]
    metas = [r for r in sel if r["kind"] == "meta" and meta(r)]
    base = [r for r in sel if r["kind"] == "baseline" and baseline(r) and r.get("per_seed", {}).get(metric)]
    if not metas or not base:
        return None
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best_meta = max(metas, key=lambda r: sign * r[metric])
    best_base = max(base, key=lambda r: sign * r[metric])
    a = np.array(best_meta["per_seed"][metric], float)
    b = np.array(best_base["per_seed"][metric], float)
    n = min(len(a), len(b))
    d = sign * (a[:n] - b[:n])
    mean, sd = float(np.mean(d)), float(np.std(d)) if n > 1 else float("nan")
    if n > 1 and mean > 2 * sd and (d > 0).all():
        verdict = "win"
    elif n > 1 and mean < -2 * sd and (d < 0).all():
        verdict = "loss"
    else:
        verdict = "tie"
    return {"split": split, "metric": metric, "meta": best_meta["method"], "baseline": best_base["method"],
            "against": against, "margin": mean, "spread": sd, "per_seed": d.tolist(), "verdict": verdict}


def prequential_margins(rows: list[dict[str, Any]], metric: str = "auc") -> list[dict[str, Any] | None]:
    """The acceptance verdicts: on ``hist_0`` and ``hist_1_5`` the best meta row against River,
    against the non-adapting ``global`` row, against the best baseline (``+ online items`` ones
    included), and — with online item offsets on both sides — the best meta row against the best
    baseline row, which isolates what meta-learning adds; on ``all`` against the best baseline."""
    out: list[dict[str, Any] | None] = []
    for split in ("hist_0", "hist_1_5"):
        out += [margin(rows, split, metric, is_river, against="River"),
                margin(rows, split, metric, is_non_adapting, against="non-adapting global"),
                margin(rows, split, metric),
                margin(rows, split, metric, with_online_items, with_online_items,
                       against="best baseline, both with online items")]
    return out + [margin(rows, "all", metric)]


def _fmt(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def table(rows: list[dict[str, Any]], split: str, cols: tuple[str, ...]) -> list[str]:
    sel = [r for r in rows if r["split"] == split]
    if not sel:
        return ["(no rows)"]
    best = {}
    for c in cols:
        vals = [r[c] for r in sel if r.get(c) is not None]
        if vals:
            best[c] = min(vals) if c in LOWER_IS_BETTER else max(vals)
    n = sel[0].get("n_users", sel[0].get("events", ""))
    lines = [f"*{'users' if 'n_users' in sel[0] else 'events'}: {n}*", "",
             "| method | kind | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in sel:
        cells = []
        for c in cols:
            v = r.get(c)
            s = _fmt(v)
            sd = r.get("std", {}).get(c)
            if sd and v is not None:
                s += f" ± {sd:.4f}"
            cells.append(f"**{s}**" if v is not None and best.get(c) == v else s)
        lines.append(f"| {r['method']} | {r['kind']} | " + " | ".join(cells) + " |")
    return lines


def verdict(m: dict[str, Any], what: str | None = None) -> str:
    """One verdict line of a :func:`margin` result."""
    better = "lower" if m["metric"] in LOWER_IS_BETTER else "higher"
    against = m.get("against", "best baseline")
    return (f"- **{what or m['split'] + ' ' + m['metric']}**: best meta `{m['meta']}` vs `{m['baseline']}` "
            f"({against}): margin {m['margin']:+.4f} ({better} is better; positive = meta better), "
            + (f"spread (sd over seeds) {m['spread']:.4f}" if math.isfinite(m["spread"])
               else "no spread from one seed (a verdict needs --repeats 2 or more)")
            + f" → **{m['verdict']}**"
            + ("" if m["verdict"] == "win" else f" (not a win against {against})"))


def support_section(rows: list[dict[str, Any]], margins: list[dict[str, Any] | None]) -> list[str]:
    """MAE by support size: a methods × sizes table (mean ± sd over seeds, best in bold) and the
    verdict at each size, by the same rule as the states'."""
    ks = sorted({int(r["split"]) for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    at = {(r["split"], r["method"]): r for r in rows}
    best = {k: min((r["mae"] for r in rows if r["split"] == str(k) and r.get("mae") is not None), default=None)
            for k in ks}
    lines = ["## MAE by support size (new users with ≥ 20 support events, cut to k)", "",
             "| method | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for name in methods:
        cells = []
        for k in ks:
            r = at.get((str(k), name), {})
            v, sd = r.get("mae"), r.get("std", {}).get("mae")
            s = _fmt(v) + (f" ± {sd:.4f}" if sd and v is not None else "")
            cells.append(f"**{s}**" if v is not None and v == best[k] else s)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [""] + [verdict(m, f"k = {m['split']} events") for m in margins if m is not None] + [""]
    return lines


def write_report(out: Path, protocol: str, dataset: str, seed: int, result: dict[str, Any],
                 notes: list[str], plots: list[str]) -> Path:
    rows = result["rows"]
    lines = [f"# metarec evaluate — {protocol} on {dataset}", "",
             f"Seeds: {', '.join(map(str, result['seeds']))} (test repeated per seed; ± is the standard "
             f"deviation across seeds). Wall time: {result['seconds']['total']:.0f} s "
             f"(validation {result['seconds']['validation']:.0f} s).", ""]
    lines += ["## Verdicts", ""] + [verdict(m) for m in result.get("margins", []) if m is not None]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    for split in SPLITS[protocol]:
        lines += [f"## {split}", ""] + table(rows, split, COLUMNS[protocol]) + [""]
    if "support_rows" in result:
        lines += support_section(result["support_rows"], result.get("support_margins", []))
    if result.get("training"):
        lines += training_section(result["training"])
    lines += ["## Configuration chosen on validation", "", "```json",
              json.dumps(_clean(result["chosen"]), indent=2), "```", ""]
    search = result.get("search", {})
    for fam in ("meta", "global", "river"):
        s = search.get(fam)
        if s is not None:
            lines.append(f"- search `{fam}`: {len(s.trials)} trials in {s.seconds:.0f} s, best validation "
                         f"score {s.value:.4f}" + (" (cut short by the time limit)" if s.cut_short else ""))
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def training_section(training: list[dict[str, Any]]) -> list[str]:
    """How long each early-stopped model trained: steps run, the best check, why it stopped
    (``cap`` means the step cap was hit while validation still improved: raise ``epochs``)."""
    smooth = max((int(t.get("smooth", 1)) for t in training), default=1)
    judged = f"best val MAE (mean of {smooth} checks)" if smooth > 1 else "best val MAE"
    lines = ["## Training length (early stopping on validation users)", "",
             f"| model | seed | steps run | best step | stopped by | {judged} | val MAE at checks |",
             "|---|---|---|---|---|---|---|"]
    for t in training:
        name = t["params"].get("algorithm", t["kind"]) if t["kind"] == "meta" else "global"
        losses = "/".join(str(x) for x in (t["params"].get("loss", "mse"), t["params"].get("outer_loss")) if x)
        start = ", from global" if t["params"].get("init") == "global" else ""
        label = f"{name} ({losses}{start})"
        pts = t["curve"]
        shown = pts if len(pts) <= 8 else pts[:: max(1, len(pts) // 8)]
        curve = " ".join(f"{s}:{v:.3f}" for s, v in shown)
        lines.append(f"| {label} | {t['seed']} | {t['steps_run']} | {t['best_step']} | {t['stopped_by']} "
                     f"| {t['best_value']:.4f} | {curve} |")
    return lines + [""]
