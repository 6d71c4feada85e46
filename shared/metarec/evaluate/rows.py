"""The rows of ``metrics.json``: each seed's results, aggregated into mean, spread and per-seed values.

One seed's results are ``{(split, method): {"kind": ..., metric: value, ...}}``; :func:`aggregate`
turns a list of them (one per seed, same keys) into rows
``{split, method, kind, metric: mean, std: {metric: sd}, per_seed: {metric: [...]}}``, the shape
:func:`metarec.evaluate.report.margin` reads its verdicts from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRICS = ("mae", "rmse", "ndcg@1", "ndcg@3", "ndcg_lin@3", "auc", "logloss", "hr@10", "ndcg@10",
           "mrr", "ndcg@5", "hr@1", "hr@5")  # the last four: the cross-domain protocol
COUNTS = ("n_users", "events")

Result = dict[tuple[str, str], dict[str, Any]]


def aggregate(per_seed: list[Result]) -> list[dict[str, Any]]:
    """Rows (mean over seeds; NaN seeds left out of the mean and kept as None in ``per_seed``)."""
    rows = []
    for key in per_seed[0]:
        runs = [p[key] for p in per_seed]
        row: dict[str, Any] = {"split": key[0], "method": key[1], "kind": runs[0]["kind"]}
        std, each = {}, {}
        for m in (*METRICS, *COUNTS):
            vals = [float(x[m]) for x in runs if m in x]
            if not vals:
                continue
            if m in COUNTS:
                row[m] = int(np.mean(vals))
                continue
            finite = [v for v in vals if v == v]
            row[m] = float(np.mean(finite)) if finite else None
            std[m] = float(np.std(finite)) if len(finite) > 1 else 0.0
            each[m] = [v if v == v else None for v in vals]
        row["std"], row["per_seed"] = std, each
        rows.append(row)
    return rows


def curve(rows: list[dict[str, Any]], metric: str = "mae") -> dict[str, dict[int, float]]:
    """``{method: {k: mean}}`` of rows whose split is a support size ``k`` (the MAE-by-support plot)."""
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        v = row.get(metric)
        out.setdefault(row["method"], {})[int(row["split"])] = float("nan") if v is None else float(v)
    return out
