"""Model announcements: which version is served, on the compacted models topic.

The trainer announces each version it publishes; a worker that rolls back, and ``metarec models
rollback``, announce the version to go back to. Every message has the same key, so compaction keeps
the newest one: a worker that starts reads it and serves what it names; a running worker switches
to each new one between batches (:mod:`services.adapter.follow`). The model files themselves are a
versioned directory on a volume every service mounts at the same path (:mod:`metarec.artifact`).

Torch-free: the worker's event loop, the CLI and the trainer all read and write these.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import msgspec

from metarec.errors import ArtifactError

KEY = b"serving"  # the one key of the models topic
Action = Literal["publish", "rollback"]


class Announcement(msgspec.Struct, frozen=True, kw_only=True):
    """``version`` is to be served from ``location`` (its files' hashes in ``files``)."""

    version: str
    location: str  # the version directory (absolute, as the announcing service mounts the models volume)
    action: Action = "publish"
    files: dict[str, str] = {}  # file name → sha256, as in the manifest
    previous: str | None = None  # the version served before
    reason: str = ""  # why (a rollback's cause, a publication's gate figures in words)
    validation: dict[str, float] = {}  # the gate's figures (publish), or the live figures (rollback)
    rejected: tuple[str, ...] = ()  # versions that must not be served again (rolled back)
    by: str = ""  # trainer | worker:<id> | cli
    at: float = 0.0  # unix time of the announcement


def encode(ann: Announcement) -> bytes:
    return msgspec.json.encode(ann)


def decode(raw: bytes | None) -> Announcement | None:
    """An announcement, or ``None`` for anything else (a tombstone, a foreign record)."""
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=Announcement)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def make(version_dir: Path, manifest: dict[str, Any], *, action: Action = "publish", previous: str | None = None,
         reason: str = "", validation: dict[str, float] | None = None, rejected: tuple[str, ...] = (),
         by: str = "") -> Announcement:
    return Announcement(version=str(manifest["version"]), location=str(version_dir.resolve()), action=action,
                        files=dict(manifest.get("files", {})), previous=previous, reason=reason,
                        validation={k: float(v) for k, v in (validation or {}).items()}, rejected=rejected,
                        by=by, at=time.time())


def locate(ann: Announcement, models_root: Path | None) -> Path:
    """The announced version's directory here: its location, else ``models_root/<version>``
    (a service that mounts the models volume elsewhere)."""
    where = Path(ann.location)
    if (where / "manifest.json").exists():
        return where
    if models_root is not None and (models_root / ann.version / "manifest.json").exists():
        return models_root / ann.version
    raise ArtifactError(f"model {ann.version} was announced at {ann.location}, which is not here"
                        + (f" (nor under {models_root})" if models_root is not None else ""))


def models_root_of(model_dir: Path) -> Path:
    """The folder holding the versions, from a worker's ``model_dir`` (``models/latest`` or a version)."""
    return model_dir.parent if model_dir.name == "latest" or (model_dir / "manifest.json").exists() else model_dir


def list_versions(models_root: Path) -> list[dict[str, Any]]:
    """Every version directory under ``models_root``, oldest first, with its manifest's summary."""
    out = []
    for d in sorted(p for p in models_root.iterdir()
                    if p.is_dir() and not p.is_symlink() and (p / "manifest.json").exists()):
        try:
            man = json.loads((d / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        out.append({"version": man.get("version", d.name), "path": d, "created_at": float(man.get("created_at", 0)),
                    "algorithm": man.get("train", {}).get("algorithm", ""), "parent": man.get("parent"),
                    "validation": man.get("gate") or man.get("validation") or {}, "manifest": man})
    return sorted(out, key=lambda v: v["created_at"])


def send(settings: Any, ann: Announcement) -> None:
    """Announce ``ann`` on ``settings.topic_models`` and wait for the broker's acknowledgement."""
    from metarec.kafka_io import producer, refused_as_broker_error

    with refused_as_broker_error(settings):
        p = producer(settings, acks="all")
        try:
            p.send(settings.topic_models, key=KEY, value=encode(ann)).get(timeout=30)
        finally:
            p.close()


def history(settings: Any, timeout_s: float = 10.0, last: int | None = None) -> list[Announcement]:
    """The valid announcements on ``settings.topic_models``, oldest first (only among the ``last``
    records when given); empty if there is none or no topic yet."""
    from kafka import KafkaConsumer, TopicPartition

    from metarec.kafka_io import _connect, refused_as_broker_error

    with refused_as_broker_error(settings):
        c = _connect(KafkaConsumer, settings, enable_auto_commit=False, consumer_timeout_ms=int(timeout_s * 1000))
        try:
            tp = TopicPartition(settings.topic_models, 0)
            if not c.partitions_for_topic(settings.topic_models):
                return []
            c.assign([tp])
            end = c.end_offsets([tp])[tp]
            if end == 0:
                return []
            c.seek(tp, 0 if last is None else max(0, end - last))
            out: list[Announcement] = []
            deadline = time.monotonic() + timeout_s
            while c.position(tp) < end and time.monotonic() < deadline:
                for records in c.poll(timeout_ms=500).values():
                    out += [a for r in records if (a := decode(r.value)) is not None]
            return out
        finally:
            c.close()


def newest(settings: Any, timeout_s: float = 10.0) -> Announcement | None:
    """The newest announcement on ``settings.topic_models`` (``None`` if there is none yet)."""
    found = history(settings, timeout_s, last=50)  # compaction keeps few; the newest valid one among the last
    return found[-1] if found else None
