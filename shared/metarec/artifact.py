"""The versioned model directory `metarec train` writes and the worker serves.

Layout of ``<out>/<version>/``::

    weights.safetensors  state dict (safetensors; no pickle)
    config.json          ModelConfig
    vocab.json           user and item ids ↔ indices
    model.onnx           the catalog-scoring graph (see :func:`export_onnx`)
    manifest.json        version, data and config hashes, training summary, file hashes

``<out>/latest`` is a symlink to the newest version.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from metarec import modeldir
from metarec.errors import ArtifactError
from metarec.model import ModelConfig, RecModel, Vocab, score_matrix
from metarec.modeldir import sha256_file

__all__ = ["ArtifactError", "Bundle", "CatalogGraph", "export_onnx", "load", "save"]

ONNX_OPSET = 17


class CatalogGraph(nn.Module):
    """``(users (B,), ctx (B, F), *fast (B, ...)) -> scores (B, N)`` over the whole catalog."""

    def __init__(self, model: RecModel) -> None:
        super().__init__()
        self.model = model
        self.names = model.adapted_names()
        self.items: Tensor
        self.register_buffer("items", torch.arange(1, model.cfg.n_items, dtype=torch.long))

    def forward(self, users: Tensor, ctx: Tensor, *fast: Tensor) -> Tensor:
        return score_matrix(self.model, dict(zip(self.names, fast)), users, ctx, self.items)


def onnx_input_names(model: RecModel) -> list[str]:
    return ["users", "ctx", *(f"fast.{n}" for n in model.adapted_names())]


def export_onnx(model: RecModel, path: Path) -> None:
    """Export the catalog-scoring graph: one session serves every user, whose adapted
    weights are graph inputs (batch axis ``B`` dynamic); global weights are initializers."""
    graph = CatalogGraph(model).eval()
    b = 2
    fast = [p.detach().unsqueeze(0).repeat(b, *([1] * p.dim())) for p in model.fast_init().values()]
    users = torch.zeros(b, dtype=torch.long)
    ctx = torch.zeros(b, model.cfg.max_context, dtype=torch.long)
    names = onnx_input_names(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns it is legacy; it is fast and exact here
        torch.onnx.export(
            graph, (users, ctx, *fast), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=names, output_names=["scores"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "scores"]},
        )


def save(model: RecModel, vocab: Vocab, out: Path, manifest: dict[str, Any], point_latest: bool = True) -> Path:
    """Write a new version under ``out`` and (unless ``point_latest`` is false) point ``out/latest``
    at it; returns its path."""
    cfg_json = model.cfg.to_json()
    cfg_hash = hashlib.sha256(cfg_json.encode()).hexdigest()
    seed = f"{manifest.get('data', {}).get('sha256', '')}{cfg_hash}{time.time_ns()}"
    version = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + hashlib.sha256(seed.encode()).hexdigest()[:8]
    d = out / version
    d.mkdir(parents=True, exist_ok=False)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(d / "weights.safetensors"))
    (d / "config.json").write_text(cfg_json)
    (d / "vocab.json").write_text(vocab.to_json())
    export_onnx(model, d / "model.onnx")
    files = {p.name: sha256_file(p) for p in sorted(d.iterdir())}
    full = {"version": version, "created_at": time.time(), "config_sha256": cfg_hash, **manifest, "files": files}
    (d / "manifest.json").write_text(json.dumps(full, indent=2, sort_keys=True))
    if point_latest:
        modeldir.point_latest(out, version)
    return d


@dataclass(frozen=True)
class Bundle:
    """A loaded model directory."""

    path: Path
    version: str
    model: RecModel
    vocab: Vocab
    manifest: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"


def load(path: Path) -> Bundle:
    """Load a version directory (or a parent holding ``latest``), checking file hashes."""
    md = modeldir.check(path)
    cfg = ModelConfig.from_json((md.path / "config.json").read_text())
    model = RecModel(cfg)
    model.load_state_dict(load_file(str(md.path / "weights.safetensors")))
    model.eval()
    vocab = Vocab.from_json((md.path / "vocab.json").read_text())
    return Bundle(path=md.path, version=md.version, model=model, vocab=vocab, manifest=md.manifest)
