"""``metarec trainer`` and ``metarec models list | rollback``: the live model lifecycle (issue 15)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from metarec.settings import TrainerSettings

models = typer.Typer(no_args_is_help=True, help="The model versions: list them, roll back to one.")
out = Console()


def _settings(models_root: Path | None) -> TrainerSettings:
    from metarec.settings import TrainerSettings

    over: dict[str, Any] = {"models_root": models_root} if models_root is not None else {}
    return TrainerSettings(**over)


def trainer(
    models_root: Annotated[Path | None, typer.Option(help="Models folder (default METAREC_MODELS_ROOT).")] = None,
    loglevel: Annotated[str | None, typer.Option(help="Log level (default METAREC_LOG_LEVEL).")] = None,
) -> None:
    """Run the continual trainer: meta-train on recent users, gate, publish, announce (hot swap)."""
    settings = _settings(models_root)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO lines are every connection
    logging.basicConfig(level=(loglevel or settings.log_level).upper(),
                        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    from prometheus_client import start_http_server

    from services.trainer.app import Trainer
    from services.trainer.service import run

    t = Trainer(settings)
    if settings.trainer_web_port:
        start_http_server(settings.trainer_web_port, settings.trainer_web_host, registry=t.metrics.registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, t, stop)


@models.command("list")
def list_(
    models_root: Annotated[Path | None, typer.Option(help="Models folder (default METAREC_MODELS_ROOT).")] = None,
    announced: Annotated[bool, typer.Option(help="Also read the models topic for what is served.")] = True,
) -> None:
    """Every version under the models folder, oldest first; which one is announced (served)."""
    from metarec import announce
    settings = _settings(models_root)
    root = settings.models_root
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such models folder")
    served = announce.newest(settings) if announced else None
    latest = (root / "latest").resolve().name if (root / "latest").exists() else None
    table = Table("version", "created (UTC)", "parent", "algorithm", "adapted loss", "")
    table.columns[0].no_wrap = table.columns[2].no_wrap = True
    for v in announce.list_versions(root):
        marks = [m for m, on in (("served", served is not None and served.version == v["version"]),
                                 ("latest", latest == v["version"]),
                                 ("rolled back", served is not None and v["version"] in served.rejected)) if on]
        gate = _adapted_loss(v["validation"])
        table.add_row(v["version"], time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v["created_at"])),
                      v["parent"] or "", str(v["algorithm"]), gate, " ".join(marks))
    out.print(table)


def _adapted_loss(fig: dict[str, object]) -> str:
    """The gate's candidate figure, or the offline validation's adapted one."""
    for key in ("candidate_logloss", "candidate_mae", "adapted_logloss", "val_mae_adapted"):
        x = fig.get(key)
        if isinstance(x, int | float):
            return f"{x:.4f} ({key.split('_')[-1]})"
    return ""


@models.command()
def rollback(
    version: Annotated[str, typer.Argument(help="The version to serve again.")],
    models_root: Annotated[Path | None, typer.Option(help="Models folder (default METAREC_MODELS_ROOT).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the announcement).")] = "by hand",
) -> None:
    """Serve VERSION again: announce it (every worker switches between batches) and point latest at it."""
    from metarec import announce, modeldir
    settings = _settings(models_root)
    md = modeldir.check(settings.models_root / version)  # a missing or damaged version: one line
    current = announce.newest(settings)
    bad = current.version if current is not None and current.version != version else None
    rejected = set(current.rejected if current is not None else ()) - {version}
    if bad:
        rejected.add(bad)
    ann = announce.make(md.path, md.manifest, action="rollback", previous=bad, reason=reason,
                        rejected=tuple(sorted(rejected)), by="cli")
    announce.send(settings, ann)
    modeldir.point_latest(settings.models_root, version)
    out.print(f"announced a rollback to {version}" + (f" (from {bad})" if bad else "") +
              f" on {settings.topic_models}; {settings.models_root}/latest -> {version}")
