"""``metarec evaluate``: one protocol end to end on the user's data, with progress bars.

Register with ``app.command()(evaluate)`` in :mod:`metarec.cli`. Bad arguments and bad files
raise :class:`~metarec.data.eventlog.DataError` or :class:`ValueError` (one readable line).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

PROTOCOLS = ("melu", "prequential", "cross-domain")
# the cross-domain protocol's formats: a folder of an Amazon pair's target domain, or a user's own table
CROSS_FORMATS = ("amazon-cdr", "csv", "parquet")


@dataclasses.dataclass(frozen=True)
class CrossOptions:
    """Cross-domain options for a table (csv/parquet): the two domains, the share of shared users held out."""

    source: str | None = None
    target: str | None = None
    held_out: float = 0.2


def check_arguments(protocol: str, data: Path, fmt: str, budget_minutes: float,
                    cross: CrossOptions = CrossOptions(), buffer: int = 1, max_steps: int = 1,
                    max_adapt: str = "layers+out") -> None:
    """One readable error (ValueError; DataError for a missing path) for a bad argument, before
    anything heavy is imported or read."""
    from metarec.data.eventlog import DataError
    from metarec.evaluate.data import FORMATS

    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "cross-domain" and fmt not in CROSS_FORMATS:
        raise ValueError(f"--protocol cross-domain reads --format {' | '.join(CROSS_FORMATS)}, got {fmt!r}")
    if protocol == "cross-domain" and fmt != "amazon-cdr" and not (cross.source and cross.target):
        raise ValueError(f"--protocol cross-domain on a {fmt} table needs --source and --target (domain names)")
    if not 0.0 < cross.held_out < 1.0:
        raise ValueError(f"--held-out must be a fraction in (0, 1), got {cross.held_out}")
    if protocol != "cross-domain" and fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if buffer < 1 or max_steps < 1:
        raise ValueError(f"--buffer and --max-adapt-steps must be at least 1, got {buffer} and {max_steps}")
    if budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be positive, got {budget_minutes}")
    if not data.exists():
        raise DataError(f"{data}: no such file or folder")
    if max_adapt != "layers+out":  # the default needs no check (and no torch import)
        from metarec.evaluate.models import ADAPT

        if max_adapt not in ADAPT:
            raise ValueError(f"--max-adapt-layers must be one of {', '.join(ADAPT)}, got {max_adapt!r}")


def run_evaluation(protocol: str, data: Path, fmt: str, out: Path, budget_minutes: float, seed: int,
                   repeats: int | None = None, on_progress: Any = None, pretrain: bool = False,
                   cross: CrossOptions = CrossOptions(), net: Any = None) -> dict[str, Any]:
    """Load, evaluate, write ``metrics.json``, ``report.md``, plots (and on melu ``best.json``) under ``out``;
    returns the result. ``net`` (:class:`metarec.evaluate.models.Net`): the melu network and serving
    budget (buffer, test-time steps), the defaults when None."""
    check_arguments(protocol, data, fmt, budget_minutes, cross,
                    *((net.buffer, net.max_steps, net.max_adapt) if net is not None else ()))
    if protocol == "cross-domain":
        return _cross_domain(data, fmt, cross, out, seed, repeats or 3, on_progress)
    import torch

    from metarec.evaluate import melu, plots, report
    from metarec.evaluate.data import load_ratings
    from metarec.evaluate.methods import Plan

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    t0 = time.monotonic()
    r = load_ratings(data, fmt)
    scale = min(1.0, 100_000 / max(len(r), 1)) ** 0.5  # bigger data: fewer, costlier steps
    tick = on_progress or (lambda msg: None)
    out.mkdir(parents=True, exist_ok=True)
    notes = [f"data: {data} ({fmt}), {len(r)} ratings, {len(r.users)} users, {len(r.items)} items",
             f"budget: {budget_minutes} min → step and trial counts (reproducible for a seed)"]
    if protocol == "melu":
        plan = dataclasses.replace(Plan.for_budget(budget_minutes, repeats or 3, scale),
                                   pretrain=pretrain).early_stopped()
        result = melu.run(r, seed, plan, tick, net)
        notes.append(f"serving budget: {result['net']['buffer']}-event buffer, "
                     f"at most {result['net']['max_steps']} adaptation steps, "
                     f"adapting at most {result['net'].get('max_adapt', 'layers+out')}")
        result["margins"] = [report.margin(result["rows"], s, "mae") for s in ("new_users", "warm")]
        result["support_margins"] = [report.margin(result["support_rows"], str(k), "mae")
                                     for k in melu.SUPPORT_SIZES]
        pngs = [plots.support_curve(out, result["support_curve"])]
    else:
        plan = dataclasses.replace(Plan.for_budget(budget_minutes, repeats or 1, scale), pretrain=pretrain)
        from metarec.evaluate import prequential

        result = prequential.run(r, seed, plan, tick)
        result["margins"] = report.prequential_margins(result["rows"])
        pngs = [plots.auc_over_time(out, result["auc_over_time"]),
                plots.auc_by_history(out, result["rows"], tuple(report.SPLITS["prequential"][1:]))]
    notes.append(f"plan: {result.get('plan', plan)}")
    notes += result.get("notes", [])
    result["seconds"]["total"] = time.monotonic() - t0
    extra = {"seeds": result["seeds"], "chosen": result["chosen"], "margins": result["margins"],
             "seconds": result["seconds"], "plan": plan.__dict__}
    if "plan" in result:  # melu: the plan with the early-stopping caps for this data
        extra["plan"] = result["plan"].__dict__
    for key in ("net", "support_rows", "support_margins", "support_curve", "auc_over_time", "training"):
        if key in result:
            extra[key] = result[key]
    metrics_path = report.write_metrics(out, protocol, r.name, seed, result["rows"], extra)
    if protocol == "melu":  # the chosen configuration, for `metarec train --config`
        from metarec.evaluate.best import write_best

        write_best(out, json.loads(metrics_path.read_text()), str(data), fmt)
    report.write_report(out, protocol, r.name, seed, result, notes, pngs)
    return result


def _cross_domain(data: Path, fmt: str, cross: CrossOptions, out: Path, seed: int, repeats: int,
                  on_progress: Any) -> dict[str, Any]:
    import torch

    from metarec.crossdomain import protocol, report
    from metarec.crossdomain.data import load_pair
    from metarec.crossdomain.table import load_table_pair

    torch.set_num_threads(1)
    if fmt == "amazon-cdr":
        pair = load_pair(data)
    else:  # the held-out users are drawn with --seed; the test repeats vary training and negatives
        assert cross.source and cross.target
        pair = load_table_pair(data, cross.source, cross.target, cross.held_out, seed)
    out.mkdir(parents=True, exist_ok=True)
    seeds, tick = list(range(seed, seed + repeats)), on_progress or (lambda m: None)
    if pair.rated:  # a table with ratings: MAE and RMSE (metarec.crossdomain.explicit)
        from metarec.crossdomain import explicit

        result = explicit.run(pair, seeds, tick)
    else:
        result = protocol.run(pair, seeds, protocol.Budget(), tick)
    result["pair"] = pair.name
    notes = [f"data: {data} ({pair.name}): {len(pair.train)} training lines of both domains, "
             f"{len(pair.cold_users())} cold-start users, {len(pair.valid)} valid and {len(pair.test)} test lines",
             *result["notes"], "--budget-minutes does not apply: early stopping on validation sets each length"]
    report.write(out, str(data), result, notes, rated=pair.rated)
    return result


def evaluate(
    protocol: Annotated[str, typer.Option(
        help="melu (MeLU KDD 2019) | prequential (test-then-train) | cross-domain (CDRIB ICDE 2022)")],
    data: Annotated[Path, typer.Option(
        help="Folder (MovieLens, amazon-cdr/<target>_<source>) or file (csv, parquet, simulated .jsonl).")],
    fmt: Annotated[str, typer.Option("--format", help="ml-100k | ml-1m | csv | parquet | simulated | amazon-cdr")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, report.md and the plots.")],
    budget_minutes: Annotated[float, typer.Option(help="Work budget; sets step and trial counts.")] = 20.0,
    seed: Annotated[int, typer.Option(help="Random seed (splits, initializations, search).")] = 0,
    repeats: Annotated[int | None, typer.Option(
        min=1, help="Test repetitions (seeds seed..): melu and cross-domain 3, prequential 1.")] = None,
    pretrain: Annotated[bool, typer.Option(help="Meta-train from a supervised global model instead of scratch.")]
    = False,
    source: Annotated[str | None, typer.Option(help="cross-domain on a csv/parquet table: the source domain.")] = None,
    target: Annotated[str | None, typer.Option(help="cross-domain on a csv/parquet table: the target domain.")] = None,
    held_out: Annotated[float, typer.Option(
        help="cross-domain on a table: share of the shared users held out as cold-start users.")] = 0.2,
    buffer: Annotated[int, typer.Option(
        help="melu: a user's events any method sees at most (the worker's buffer).")] = 100,
    max_adapt_steps: Annotated[int, typer.Option(
        help="melu: a meta-learner's test-time adaptation steps at most (the serving cost).")] = 20,
    max_adapt_layers: Annotated[str, typer.Option(
        help="melu: the most a meta-learner adapts: out | last+out | layers+out (fewer layers: "
             "cheaper steps).")] = "layers+out",
) -> None:
    """Compare meta-learned adaptation with the baselines on one protocol; write a report."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    cross = CrossOptions(source, target, held_out)
    check_arguments(protocol, data, fmt, budget_minutes, cross, buffer, max_adapt_steps, max_adapt_layers)
    from metarec.evaluate.models import Net

    net = Net(buffer=buffer, max_steps=max_adapt_steps, max_adapt=max_adapt_layers)
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task(f"{protocol}: loading {data}", total=None)
        result = run_evaluation(protocol, data, fmt, out, budget_minutes, seed, repeats, pretrain=pretrain, cross=cross,
                                net=net,
                                on_progress=lambda msg: prog.update(task, description=f"{protocol}: {msg}"))
    best = " and best.json" if protocol == "melu" else ""
    Console().print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}{best} "
                    f"({result['seconds']['total']:.0f} s)")
