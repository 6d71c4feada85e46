"""A model directory, checked without loading it: resolve ``latest``, verify every file's hash.

Torch-free, so that a process that only serves (the worker's event loop) can check a model
directory and describe it in a fraction of a second; :func:`metarec.artifact.load` builds on it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarec.errors import ArtifactError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelDir:
    """A checked version directory: where it is, its manifest and its model configuration (JSON)."""

    path: Path
    version: str
    manifest: dict[str, Any]
    config: dict[str, Any]

    def info(self, inner_steps: int | None = None, inner_lr: float | None = None) -> dict[str, str]:
        """The labels of ``metarec_model_info``: what is served, with the worker's overrides."""
        cfg = self.config
        steps = cfg.get("inner_steps") if inner_steps is None else inner_steps
        if inner_lr is not None:
            lr = str(float(inner_lr))
        else:
            lr = "learned (Meta-SGD)" if cfg.get("meta_sgd") else str(float(cfg.get("inner_lr", 0.0)))
        return {"version": self.version, "mode": str(cfg.get("mode")), "inner_steps": str(steps), "inner_lr": lr,
                "items": str(int(cfg.get("n_items", 1)) - 1),
                "algorithm": str(self.manifest.get("train", {}).get("algorithm", ""))}


def check(path: Path) -> ModelDir:
    """The version directory ``path`` names (or its ``latest``), every file matching its hash."""
    d = path / "latest" if (path / "latest").exists() else path
    d = d.resolve()
    manifest_file = d / "manifest.json"
    if not manifest_file.exists():
        raise ArtifactError(f"{path}: not a model directory (no manifest.json); run `metarec train` first")
    manifest = json.loads(manifest_file.read_text())
    for name, digest in manifest.get("files", {}).items():
        f = d / name
        if not f.exists():
            raise ArtifactError(f"{d}: {name} is missing")
        if sha256_file(f) != digest:
            raise ArtifactError(f"{d}: {name} does not match its hash in manifest.json")
    return ModelDir(d, manifest["version"], manifest, json.loads((d / "config.json").read_text()))


def point_latest(models_root: Path, version: str) -> None:
    """``models_root/latest`` → ``version``, atomically (what a worker that starts loads)."""
    if not (models_root / version / "manifest.json").exists():
        raise ArtifactError(f"{models_root}: there is no version {version}")
    tmp = models_root / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(version)
    os.replace(tmp, models_root / "latest")
