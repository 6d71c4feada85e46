"""The cross-domain report: ``metrics.json``, ``report.md`` and ``ndcg_by_k.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metarec.crossdomain.protocol import K_SIZES
from metarec.crossdomain.ranking import METRICS
from metarec.evaluate.report import _clean, table, verdict, write_metrics
from metarec.evaluate.rows import curve


def plot(out: Path, rows: list[dict[str, Any]]) -> str:
    from metarec.evaluate.plots import by_size

    return by_size(out, curve(rows, "ndcg@10"), "ndcg_by_k.png", "target-domain events given (k)",
                   "NDCG@10 (cold-start users)")


def write(out: Path, data: str, result: dict[str, Any], notes: list[str]) -> None:
    rows = result["rows"]
    name = result["pair"]
    extra = {k: result[k] for k in ("seeds", "chosen", "margins", "seconds")}
    write_metrics(out, "cross-domain", name, result["seeds"][0], rows, {**extra, "data": data, "notes": notes})
    png = plot(out, rows)
    lines = [f"# metarec evaluate — cross-domain cold start, {name}", "",
             f"Seeds: {', '.join(map(str, result['seeds']))} (± is the standard deviation across seeds). "
             f"Wall time: {result['seconds']['total']:.0f} s.", "",
             "Each held-out target-domain line of a cold-start user is ranked against 999 sampled target "
             "items the user has no held-out line with (CDRIB, ICDE 2022); metrics average over lines, ties "
             "count in expectation. k: target events given first (from the user's valid lines).", "",
             "## Verdicts (NDCG@10)", ""]
    lines += [verdict(m, f"k = {m['split']}") for m in result["margins"] if m is not None]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    for k in K_SIZES:
        lines += [f"## k = {k}", ""] + table(rows, str(k), METRICS) + [""]
    lines += ["## Chosen on validation, and training lengths", "", "```json",
              json.dumps(_clean(result["chosen"]), indent=2), "```", "", f"![{png}]({png})", ""]
    (out / "report.md").write_text("\n".join(lines))


def write_explicit(out: Path, data: str, result: dict[str, Any], notes: list[str]) -> None:
    """The explicit-ratings report (:mod:`.explicit`): MAE and RMSE per k, verdicts on MAE."""
    from metarec.evaluate.plots import by_size

    rows, name = result["rows"], result["pair"]
    extra = {k: result[k] for k in ("seeds", "chosen", "margins", "seconds")}
    write_metrics(out, "cross-domain-ratings", name, result["seeds"][0], rows, {**extra, "data": data, "notes": notes})
    png = by_size(out, curve(rows, "mae"), "mae_by_k.png", "target-domain ratings given (k)",
                  "MAE (cold-start users)")
    lines = [f"# metarec evaluate — cross-domain cold start on ratings, {name}", "",
             f"Seeds: {', '.join(map(str, result['seeds']))} (± is the standard deviation across seeds). "
             f"Wall time: {result['seconds']['total']:.0f} s.", "",
             "Each held-out target-domain rating of a cold-start user is predicted after the user's source "
             "ratings and k target ratings (from their valid lines); MAE and RMSE average over ratings.", "",
             "## Verdicts (MAE)", ""]
    lines += [verdict(m, f"k = {m['split']}") for m in result["margins"] if m is not None]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    for k in K_SIZES:
        lines += [f"## k = {k}", ""] + table(rows, str(k), ("mae", "rmse")) + [""]
    lines += ["## Chosen on validation, and training lengths", "", "```json",
              json.dumps(_clean(result["chosen"]), indent=2), "```", "", f"![{png}]({png})", ""]
    (out / "report.md").write_text("\n".join(lines))
