"""Wiring: settings → model bundle, scorer, recommender, metrics. No Kafka here."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from prometheus_client import CollectorRegistry

from metarec import artifact
from metarec.metrics import Metrics
from metarec.recommend import Recommender
from metarec.score import OnnxScorer
from metarec.settings import WorkerSettings


@dataclass
class Services:
    settings: WorkerSettings
    bundle: artifact.Bundle
    recommender: Recommender | None  # None when compute runs in a child process (it loads its own)
    metrics: Metrics


def load_recommender(settings: WorkerSettings, bundle: artifact.Bundle | None = None) -> Recommender:
    """The model directory → a warmed-up recommender (where adaptation and scoring run)."""
    torch.set_num_threads(settings.torch_threads)
    bundle = bundle or artifact.load(settings.model_dir)
    rec = Recommender(bundle, OnnxScorer(bundle.onnx_path), top_k=settings.top_k, inner_steps=settings.inner_steps,
                      inner_lr=settings.inner_lr)
    rec.warm_up()
    return rec


def bootstrap(settings: WorkerSettings, registry: CollectorRegistry | None = None,
              with_recommender: bool = True) -> Services:
    """Load the model directory and build what the worker needs.

    ``with_recommender=False`` is for ``compute="process"``: the child process builds the
    recommender; this process only needs the bundle's description for ``metarec_model_info``.
    """
    bundle = artifact.load(settings.model_dir)
    rec = load_recommender(settings, bundle) if with_recommender else None
    metrics = Metrics.create(registry)
    cfg = bundle.model.cfg
    steps = cfg.inner_steps if settings.inner_steps is None else settings.inner_steps
    lr: object = settings.inner_lr if settings.inner_lr is not None else bundle.model.inner_lr_map()
    metrics.model_info.info({
        "version": bundle.version, "mode": cfg.mode, "inner_steps": str(steps),
        "inner_lr": "learned (Meta-SGD)" if isinstance(lr, dict) else str(float(lr)),  # type: ignore[arg-type]
        "items": str(cfg.n_items - 1), "algorithm": str(bundle.manifest.get("train", {}).get("algorithm", "")),
    })
    return Services(settings, bundle, rec, metrics)
