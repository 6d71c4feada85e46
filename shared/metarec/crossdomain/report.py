"""The cross-domain report: ``metrics.json``, ``report.md`` and ``ndcg_by_k.png`` (``mae_by_k.png`` on ratings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metarec.crossdomain.protocol import K_SIZES
from metarec.crossdomain.ranking import METRICS
from metarec.evaluate.report import _clean, table, verdict, write_metrics
from metarec.evaluate.rows import curve

RANKING_INTRO = ("Each held-out target-domain line of a cold-start user is ranked against 999 sampled target "
                 "items the user has no held-out line with (CDRIB, ICDE 2022); metrics average over lines, ties "
                 "count in expectation. k: target events given first (from the user's valid lines).")
RATING_INTRO = ("Each held-out target-domain rating of a cold-start user is predicted after the user's source "
                "ratings and k target ratings (from their valid lines); MAE and RMSE average over ratings.")


def write(out: Path, data: str, result: dict[str, Any], notes: list[str], rated: bool = False) -> None:
    """``metrics.json``, ``report.md`` and the plot: ranking metrics (verdicts on NDCG@10), or for
    explicit ratings (:mod:`.explicit`, ``rated``) MAE and RMSE (verdicts on MAE)."""
    from metarec.evaluate.plots import by_size

    rows, name = result["rows"], result["pair"]
    metric, cols = ("mae", ("mae", "rmse")) if rated else ("ndcg@10", METRICS)
    extra = {k: result[k] for k in ("seeds", "chosen", "margins", "seconds")}
    write_metrics(out, "cross-domain-ratings" if rated else "cross-domain", name, result["seeds"][0], rows,
                  {**extra, "data": data, "notes": notes})
    png = by_size(out, curve(rows, metric), "mae_by_k.png" if rated else "ndcg_by_k.png",
                  f"target-domain {'ratings' if rated else 'events'} given (k)",
                  f"{'MAE' if rated else 'NDCG@10'} (cold-start users)")
    lines = [f"# metarec evaluate — cross-domain cold start{' on ratings' if rated else ''}, {name}", "",
             f"Seeds: {', '.join(map(str, result['seeds']))} (± is the standard deviation across seeds). "
             f"Wall time: {result['seconds']['total']:.0f} s.", "",
             RATING_INTRO if rated else RANKING_INTRO, "", f"## Verdicts ({'MAE' if rated else 'NDCG@10'})", ""]
    lines += [verdict(m, f"k = {m['split']}") for m in result["margins"] if m is not None]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    for k in K_SIZES:
        lines += [f"## k = {k}", ""] + table(rows, str(k), cols) + [""]
    lines += ["## Chosen on validation, and training lengths", "", "```json",
              json.dumps(_clean(result["chosen"]), indent=2), "```", "", f"![{png}]({png})", ""]
    (out / "report.md").write_text("\n".join(lines))
