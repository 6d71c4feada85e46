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
    recommender: Recommender
    metrics: Metrics


def bootstrap(settings: WorkerSettings, registry: CollectorRegistry | None = None) -> Services:
    """Load the model directory and build what the worker needs."""
    torch.set_num_threads(settings.torch_threads)
    bundle = artifact.load(settings.model_dir)
    scorer = OnnxScorer(bundle.onnx_path)
    rec = Recommender(bundle, scorer, top_k=settings.top_k, inner_steps=settings.inner_steps,
                      inner_lr=settings.inner_lr)
    metrics = Metrics.create(registry)
    cfg = bundle.model.cfg
    lr = "learned (Meta-SGD)" if isinstance(rec.lr, dict) else str(rec.lr)
    metrics.model_info.info({
        "version": bundle.version, "mode": cfg.mode, "inner_steps": str(rec.steps), "inner_lr": lr,
        "items": str(cfg.n_items - 1), "algorithm": str(bundle.manifest.get("train", {}).get("algorithm", "")),
    })
    rec.warm_up()
    return Services(settings, bundle, rec, metrics)
