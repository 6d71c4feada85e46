"""The ``metarec`` command (also ``python -m metarec``).

Every failure a user can cause (a missing file, a bad argument, no broker) is reported as one
readable line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Streaming, real-time personalization with a meta-learned initialization.")
err = Console(stderr=True)
out = Console()


class UserError(Exception):
    """A problem the user can fix; shown as one line."""


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=False)


def _train_from_config(config: Path, events: Path, fmt: str, out_dir: Path) -> None:
    """`metarec train --config best.json`: the evaluation's chosen model, trained and saved."""
    from metarec.evaluate.best import read_config
    from metarec.evaluate.command import check_arguments

    cfg = read_config(config)
    fmt = cfg.get("format", fmt) if fmt == "auto" else fmt
    check_arguments("melu", events, fmt, 1.0)
    import torch

    from metarec.evaluate.best import train_from_config
    from metarec.train import save_evaluated

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))  # as `metarec evaluate` runs
    with _progress() as prog:
        task = prog.add_task(f"training {cfg['method']} as chosen in {config}", total=None)
        model, vocab, figures = train_from_config(cfg, events, fmt,
                                                  lambda msg: prog.update(task, description=msg))
    d = save_evaluated(model, vocab, out_dir, cfg, figures, str(events))
    ref = figures["evaluated_new_users_mae"]
    out.print(f"model {d.name} written to {d} ({cfg['method']}; validation MAE {figures['val_mae_init']:.4f} "
              f"un-adapted, {figures['val_mae_adapted']:.4f} adapted; new users MAE {figures['new_users_mae']:.4f}"
              + (f", the evaluation measured {ref:.4f})" if ref is not None else ")"))


@app.command()
def simulate(
    out_path: Annotated[Path, typer.Option("--out", help="Event log to write (.jsonl or .jsonl.gz).")] = Path(
        "data/sim.jsonl"),
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 600,
    items: Annotated[int, typer.Option(min=2, help="Catalog size.")] = 500,
    mean_events: Annotated[float, typer.Option(min=1.0, help="Mean events per user.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    drift_at: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Shift tastes and popularity at this fraction of the time span.")] = None,
    new_items: Annotated[int, typer.Option(min=0, help="Items that arrive at the shift (with --drift-at).")] = 0,
    after_out: Annotated[Path | None, typer.Option(
        help="With --drift-at: write the events from the shift on here, and only those before it to --out.")] = None,
    domains: Annotated[str, typer.Option(
        help="Comma-separated catalog domains (e.g. books,music): items split among them, one taste per user.")] = "",
) -> None:
    """Write a synthetic event log from the seeded simulator (optionally with a drift, and domains)."""
    from metarec.data import write_jsonl
    from metarec.data.simulate import SimConfig
    from metarec.data.simulate import simulate as run

    if (new_items or after_out is not None) and drift_at is None:
        raise UserError("--new-items and --after-out need --drift-at")
    names = tuple(d.strip() for d in domains.split(",") if d.strip())
    try:
        cfg = SimConfig(users=users, items=items, mean_events=mean_events, seed=seed, drift_at=drift_at,
                        new_items=new_items, domains=names)
        events = run(cfg)
    except ValueError as exc:
        raise UserError(f"simulate: {exc}") from None
    if after_out is not None:
        cut = cfg.drift_ts()
        n_after = write_jsonl([e for e in events if e.ts >= cut], after_out)
        events = [e for e in events if e.ts < cut]
        out.print(f"wrote {n_after} events from the shift on to {after_out}")
    n = write_jsonl(events, out_path)
    out.print(f"wrote {n} events for {users} users and {items} items to {out_path}")


@app.command()
def train(
    events: Annotated[Path, typer.Option(help="Event log (.jsonl) or MovieLens folder/ratings file.")] = Path(
        "data/sim.jsonl"),
    fmt: Annotated[str, typer.Option("--format", help="auto | jsonl | ml-100k | ml-1m | ml-csv")] = "auto",
    out_dir: Annotated[Path, typer.Option("--out", help="Models folder; writes OUT/<version> and OUT/latest.")] = Path(
        "models"),
    mode: Annotated[str, typer.Option(help="binary (BCE on 0/1 labels) or rating (MSE).")] = "binary",
    algorithm: Annotated[str, typer.Option(help="maml | fomaml | metasgd | reptile")] = "maml",
    steps: Annotated[int, typer.Option(min=1, help="Outer steps at most.")] = 2000,
    budget_seconds: Annotated[float, typer.Option(min=1.0, help="Stop meta-training after this long.")] = 150.0,
    inner_steps: Annotated[int, typer.Option(min=0, help="Adaptation steps per user.")] = 5,
    inner_lr: Annotated[float, typer.Option(min=0.0, help="Adaptation learning rate.")] = 0.5,
    init_loss_weight: Annotated[float, typer.Option(
        min=0.0, help="Weight of the un-adapted initialization's query loss in the outer objective (0: plain MAML).",
    )] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    config: Annotated[Path | None, typer.Option(
        help="best.json from `metarec evaluate --protocol melu`: train exactly the model it chose, on the "
             "same data (--events, --format ml-100k|ml-1m|csv|parquet); the other training options are ignored.",
    )] = None,
) -> None:
    """Meta-train the initialization on an event log and write a versioned model directory."""
    import torch

    from metarec.data import load_events
    from metarec.meta import TrainConfig
    from metarec.train import train as run

    if config is not None:
        _train_from_config(config, events, fmt, out_dir)
        return
    if mode not in ("binary", "rating"):
        raise UserError(f"--mode must be binary or rating, got {mode!r}")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    evs = load_events(events, fmt)
    tcfg = TrainConfig(algorithm=algorithm, steps=steps, time_budget_s=budget_seconds, seed=seed,
                       init_loss_weight=init_loss_weight)
    kw = {"mode": mode, "inner_steps": inner_steps, "inner_lr": inner_lr}
    with _progress() as prog:
        task = prog.add_task("meta-training", total=steps)
        d = run(evs, out_dir, kw, tcfg, source=str(events),
                on_step=lambda i, loss: prog.update(task, completed=i + 1,
                                                    description=f"meta-training  loss {loss:.4f}"))
    manifest = json.loads((d / "manifest.json").read_text())
    v = manifest.get("validation", {})
    line = ", ".join(f"{k} {v[k]:.4f}" for k in ("init_loss", "adapted_loss", "init_auc", "adapted_auc") if k in v)
    out.print(f"model {manifest['version']} written to {d}" + (f" (held-out users: {line})" if line else ""))


@app.command()
def worker(
    model_dir: Annotated[Path | None, typer.Option(help="Model directory (default METAREC_MODEL_DIR).")] = None,
    web_port: Annotated[int | None, typer.Option(help="Port of /metrics and /users/{id}/recommendations.")] = None,
    loglevel: Annotated[str | None, typer.Option(help="Log level (default METAREC_LOG_LEVEL).")] = None,
) -> None:
    """Run the adapter worker (faust): consume events, adapt per user, publish top-K."""
    from metarec.modeldir import check
    from metarec.settings import WorkerSettings
    from services.adapter.compute import Compute
    from services.adapter.quiet import Aggregate, on_root_logger

    over: dict[str, Any] = {k: v for k, v in {"model_dir": model_dir, "web_port": web_port}.items() if v is not None}
    settings = WorkerSettings(**over)
    check(settings.model_dir)  # a wrong or damaged model directory: one line, before anything starts
    # the compute child loads the model (torch, onnxruntime: seconds) while this process starts
    compute = Compute.start_process(settings) if settings.compute == "process" else None
    from faust.worker import Worker

    from metarec.kafka_io import ensure_topics
    from services.adapter import create_app

    adapter = create_app(settings, compute=compute)
    ensure_topics(settings)
    sys.argv = [sys.argv[0]]  # faust's worker reads argv; ours are already parsed
    worker = Worker(adapter.app, loglevel=loglevel or settings.log_level)
    # a broker outage makes the Kafka libraries repeat themselves: one line per kind and 30 s
    on_root_logger(worker, Aggregate(30.0, on_held=adapter.metrics.log_lines_held.inc))
    # faust's terminal spinner, at WARN and above, turns the root logger to DEBUG so that every
    # library's debug records get built (measured: ~5% of the event loop); not wanted in a service
    worker.spinner = None
    # what was loaded so far (libraries, the model) lives as long as the process: keep it out of
    # the garbage collector's full passes, which otherwise pause the event loop for ~25-140 ms
    gc.freeze()
    # a new member joins only once it can serve what a rebalance hands it; a replacement (its static
    # membership still listed) takes its own partitions back without a rebalance, so it joins at once
    if compute is not None and not _replacing(settings):
        try:
            compute.wait_ready()
        except Exception as exc:  # noqa: BLE001 - whatever the child raised: one line, status 2
            from metarec.errors import ArtifactError

            raise ArtifactError(f"{settings.model_dir}: the compute child could not load the model: "
                                f"{type(exc).__name__}: {exc}") from None
    try:
        worker.execute_from_commandline()
    finally:
        if settings.group_instance_id and settings.leave_group_on_shutdown:
            _leave_group(settings)


def _replacing(settings: Any) -> bool:
    if not settings.group_instance_id:
        return False
    from metarec.kafka_io import static_member_present

    try:
        return static_member_present(settings, settings.app_id, settings.group_instance_id)
    except Exception:  # noqa: BLE001 - unsure: behave as a new member (wait for the model)
        return False


def _leave_group(settings: Any) -> None:
    """A stopped static member leaves its group, so its partitions move now, not after the session timeout."""
    from metarec.kafka_io import leave_group

    try:
        leave_group(settings, settings.app_id, settings.group_instance_id)
        logging.getLogger("metarec.worker").info("left group %s as %s", settings.app_id, settings.group_instance_id)
    except Exception as exc:  # noqa: BLE001 - best effort: the session timeout removes it anyway
        logging.getLogger("metarec.worker").warning("could not leave group %s (%s); the session timeout (%s s) "
                                                    "will", settings.app_id, exc, settings.session_timeout_s)


@app.command()
def replay(
    events: Annotated[Path, typer.Option(help="Event log (.jsonl) or MovieLens folder/ratings file.")] = Path(
        "data/sim.jsonl"),
    fmt: Annotated[str, typer.Option("--format", help="auto | jsonl | ml-100k | ml-1m | ml-csv")] = "auto",
    rate: Annotated[float, typer.Option(min=0.0, help="Events per second (0: as fast as possible).")] = 500.0,
    limit: Annotated[int, typer.Option(min=0, help="Send at most this many events (0: all).")] = 0,
    now: Annotated[bool, typer.Option(help="Stamp events with the send time instead of their own.")] = False,
) -> None:
    """Stream an event log into the events topic in time order, at --rate events/s."""
    from metarec.data import load_events
    from metarec.kafka_io import ensure_topics
    from metarec.kafka_io import replay as run
    from metarec.settings import KafkaSettings

    settings = KafkaSettings()
    evs = load_events(events, fmt)
    if limit:
        evs = evs[:limit]
    ensure_topics(settings)
    with _progress() as prog:
        task = prog.add_task(f"replaying to {settings.topic_events}", total=len(evs))
        n = run(evs, settings, rate, on_sent=lambda k: prog.update(task, completed=k), rewrite_ts=now)
    out.print(f"sent {n} events to {settings.topic_events} at {settings.kafka_bootstrap}")


@app.command()
def tail(
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest recommendation.")] = False,
    timeout: Annotated[float, typer.Option(min=0.0, help="Stop after this many idle seconds (0: never).")] = 0.0,
    limit: Annotated[int, typer.Option(min=0, help="Stop after this many messages (0: never).")] = 0,
    raw: Annotated[bool, typer.Option(help="Print each message as one JSON line.")] = False,
) -> None:
    """Print live recommendations as they arrive."""
    from metarec.kafka_io import read_recommendations
    from metarec.settings import KafkaSettings

    n = 0
    for rec in read_recommendations(KafkaSettings(), from_beginning, timeout or None):
        n += 1
        if raw:
            print(json.dumps(rec), flush=True)
        else:
            at = time.strftime("%H:%M:%S", time.localtime(rec["emitted_at"]))
            out.print(f"[dim]{at}[/] [bold]{rec['user_id']}[/] after {rec['events_seen']} events → "
                      f"{', '.join(rec['items'][:10])}", highlight=False)
        if limit and n >= limit:
            break


@app.command()
def topics(partitions: Annotated[int | None, typer.Option(min=1, help="Partitions (default METAREC_PARTITIONS).")]
           = None) -> None:
    """Create the events, recommendations and dead-letter topics if they are missing."""
    from metarec.kafka_io import ensure_topics
    from metarec.settings import KafkaSettings

    created = ensure_topics(KafkaSettings(), partitions)
    out.print("created: " + (", ".join(created) if created else "nothing (all exist)"))


@app.command()
def acls(
    principal: Annotated[str, typer.Option(help="The worker's principal, e.g. User:metarec (its SASL user name).")],
    dry_run: Annotated[bool, typer.Option(help="Print the ACLs, change nothing.")] = False,
    trainer: Annotated[str | None, typer.Option(
        help="Also the continual trainer's principal (User:<name>): its ACLs (METAREC_TRAINER_GROUP).")] = None,
) -> None:
    """Grant the worker's principal exactly the ACLs it needs (run with an admin's credentials).

    The topics and the consumer group are those of this environment (METAREC_TOPIC_*,
    METAREC_APP_ID): run it with the worker's settings and an admin's METAREC_KAFKA_SASL_*."""
    from metarec.kafka_acls import grant, trainer_grants, worker_grants
    from metarec.settings import TrainerSettings, WorkerSettings

    for who in (principal, trainer):
        if who is not None and not who.startswith("User:"):
            raise UserError(f"a principal must look like User:<name>, got {who!r}")
    settings = WorkerSettings()
    grants = worker_grants(settings, principal)
    if trainer is not None:
        grants += trainer_grants(settings, trainer, TrainerSettings().trainer_group)
    if not dry_run:
        grant(settings, grants)
    for g in grants:
        out.print(("would grant: " if dry_run else "granted: ") + str(g), highlight=False)


@app.command()
def export(
    user: Annotated[str, typer.Option("--user", help="External id of the user to export.")],
    model_dir: Annotated[Path, typer.Option(help="Model directory (a version, or a parent holding latest).")] = Path(
        "models/latest"),
    events: Annotated[Path | None, typer.Option(
        help="Event log (.jsonl) or MovieLens data holding the user's history; without it the user gets the "
             "meta-learned initialization.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto | jsonl | ml-100k | ml-1m | ml-csv")] = "auto",
    out_path: Annotated[Path | None, typer.Option("--out", help="File to write (default exports/<user>.onnx).")]
    = None,
) -> None:
    """Write one user's adapted model as a self-contained ONNX file: ctx (B, F) -> scores (B, N)."""
    from metarec import artifact
    from metarec.export import UserTemplate, user_fast
    from metarec.state import step

    bundle = artifact.load(model_dir)
    cfg = bundle.model.cfg
    buffer: tuple = ()
    if events is not None:
        from metarec.data import load_events

        mine = sorted((e for e in load_events(events, fmt) if e.user_id == user), key=lambda e: e.ts)
        if not mine:
            raise ValueError(f"export: user {user!r} has no events in {events}")
        buffer = step(None, mine, cfg.buffer_size, 0)[0].buffer
    fast = user_fast(bundle.model, buffer, user, bundle.vocab)
    meta = {"model_version": bundle.version, "columns": "column j is item index j+1 of vocab.json",
            "events_used": str(len(buffer))}
    template = UserTemplate.from_file(bundle.onnx_path, meta)
    path = out_path or Path("exports") / f"{user}.onnx"
    template.write(path, bundle.vocab.user(user), fast, user)
    known = "known" if bundle.vocab.user(user) else "new (unknown-user embedding)"
    out.print(f"wrote {path}: user {user} ({known}), adapted on {len(buffer)} events, "
               f"model {bundle.version}, {cfg.n_items - 1} items")


def _register_extensions() -> None:
    """Commands that live beside the modules they drive (their heavy imports stay lazy)."""
    from metarec.cli_continual import models, trainer
    from metarec.evaluate.command import evaluate

    app.command()(evaluate)
    app.command()(trainer)
    app.add_typer(models, name="models")


_register_extensions()


def main() -> None:
    from pydantic import ValidationError

    from metarec.errors import ArtifactError, BrokerError, DataError, DependencyError

    # kafka-python logs each failed connection; without a handler they would reach stderr beside
    # the one line below (the worker's logging still gets them: they propagate to the root logger)
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    try:
        app()
    except ValidationError as exc:  # a METAREC_* setting (checked before ValueError, its base)
        first = exc.errors()[0]
        if first["loc"]:
            name = "METAREC_" + "_".join(str(p) for p in first["loc"]).upper()
            err.print(f"[red]error:[/] setting {name}: {first['msg']}", highlight=False, soft_wrap=True)
        else:  # settings that do not fit together; the message names them
            why = first.get("ctx", {}).get("error", first["msg"])
            err.print(f"[red]error:[/] settings: {why}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except (UserError, DataError, ArtifactError, BrokerError, DependencyError, FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
