"""The model side of a worker: where adaptation and scoring run (the compute child, or a thread).

This module imports torch and onnxruntime; the worker's event-loop process does not import it
when compute runs in a child (``METAREC_COMPUTE=process``), so that process starts in a second
while the child loads the model in parallel.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from metarec import artifact
from metarec import state as st
from metarec.export import UserTemplate
from metarec.recommend import Recommendation, Recommender, Timings
from metarec.score import OnnxCandidateScorer, OnnxScorer
from metarec.settings import WorkerSettings
from metarec.state import Buffered, UserState
from services.adapter.compute import BatchOut


def load_recommender(settings: WorkerSettings, bundle: artifact.Bundle | None = None) -> Recommender:
    """The model directory → a warmed-up recommender. A catalog of several domains also gets a
    candidate scorer (traced from the loaded model), so each domain's rows score only its items."""
    torch.set_num_threads(settings.torch_threads)
    bundle = bundle or artifact.load(settings.model_dir)
    candidates = OnnxCandidateScorer(bundle.model) if len(bundle.vocab.domains()) > 1 else None
    rec = Recommender(bundle, OnnxScorer(bundle.onnx_path), top_k=settings.top_k, inner_steps=settings.inner_steps,
                      inner_lr=settings.inner_lr, domains=settings.served_domains(), candidates=candidates)
    rec.warm_up()
    return rec


class Engine:
    """A recommender plus the per-user ONNX template, on one thread."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self._template: UserTemplate | None = None

    def batch(self, states: Sequence[UserState], news: Sequence[Sequence[Buffered]]) -> BatchOut:
        """Live quality first (predictions made before learning), then adapt + score."""
        live = self.recommender.live_predictions(states, news)
        timings = Timings()
        recs = self.recommender.recommend(states, timings=timings)
        return BatchOut(recs, live.y, live.init, live.adapted, timings.adapt_s, timings.score_s,
                        self.recommender.bundle.version)

    def batch_raw(self, raws: Sequence[bytes], n_new: Sequence[int]) -> BatchOut:
        """:meth:`batch` from table bytes; a user's new events are the last ``n`` of its buffer."""
        states = [st.loads(r) for r in raws]
        news = [s.buffer[len(s.buffer) - min(n, len(s.buffer)):] for s, n in zip(states, n_new)]
        return self.batch(states, news)

    def one(self, raw: bytes, domain: str | None = None) -> Recommendation:
        """One user's recommendation in ``domain`` (default: the first served); ValueError if not served."""
        rec = self.recommender
        return rec.recommend([st.loads(raw)], domains=[rec.domains[0] if domain is None else domain])[0]

    def export(self, raw: bytes) -> tuple[bytes, float]:
        """The user's adapted model as a self-contained ONNX file, and the seconds it took."""
        t0 = time.perf_counter()
        state = st.loads(raw)
        bundle = self.recommender.bundle
        if self._template is None:
            self._template = UserTemplate.from_file(bundle.onnx_path)
        fast = {k: v[0].numpy() for k, v in self.recommender.adapt([state]).items()}
        data = self._template.patch(bundle.vocab.user(state.user_id), fast, state.user_id)
        return data, time.perf_counter() - t0


_ENGINE: Engine | None = None  # the child process's engine


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """A killed worker (SIGKILL, OOM) cannot shut the pool down: leave when re-parented."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(0)


def child_start(fields: dict[str, Any], parent: int) -> None:
    """The child's initializer: load and warm the model (a bad model raises here, in the parent's future)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="metarec-parent-watch").start()
    global _ENGINE
    _ENGINE = Engine(load_recommender(WorkerSettings(**fields)))


def child_call(method: str, *args: Any) -> Any:
    assert _ENGINE is not None, "compute child not initialized"
    return getattr(_ENGINE, method)(*args)
