"""Wiring: settings → model directory, metrics and (for ``compute="thread"``) the recommender. No Kafka here.

With ``compute="process"`` (the default) nothing here loads torch: the model directory is only
checked and described (:mod:`metarec.modeldir`); the compute child loads the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from metarec import modeldir
from metarec.metrics import Metrics
from metarec.settings import WorkerSettings

if TYPE_CHECKING:
    from metarec import artifact
    from metarec.recommend import Recommender


@dataclass
class Services:
    settings: WorkerSettings
    model: modeldir.ModelDir
    recommender: Recommender | None  # None when compute runs in a child process (it loads its own)
    metrics: Metrics

    @property
    def version(self) -> str:
        return self.model.version


def load_recommender(settings: WorkerSettings, bundle: artifact.Bundle | None = None) -> Recommender:
    """The model directory → a warmed-up recommender (see :mod:`services.adapter.engine`)."""
    from services.adapter.engine import load_recommender as load

    return load(settings, bundle)


def bootstrap(settings: WorkerSettings, registry: CollectorRegistry | None = None,
              with_recommender: bool = True) -> Services:
    """Check the model directory and build what the worker needs.

    ``with_recommender=False`` is for ``compute="process"``: the child process builds the
    recommender; this process only checks the directory and describes it in ``metarec_model_info``.
    """
    md = modeldir.check(settings.model_dir)
    rec = load_recommender(settings) if with_recommender else None
    metrics = Metrics.create(registry)
    metrics.model_info.info(md.info(settings.inner_steps, settings.inner_lr))
    return Services(settings, md, rec, metrics)
