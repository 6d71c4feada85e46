"""Where adaptation and scoring run: a child process (the default) or a thread of the worker.

The worker's event loop (Kafka I/O, decoding, the state step, the table, publishing) holds the
GIL for most of what it does. Adaptation and scoring in a thread of the same process spend
part of their time in Python too (building support sets, ranking), so the two took turns on
one interpreter lock and a 2-core machine ran like 1.2 cores (issue 4's profile). In a child
process they get an interpreter of their own.

What crosses the process boundary is small: each user's state as the bytes already written to
the table, the number of new events at the tail of its buffer, and back the recommendations
plus the live-quality samples. The per-user caches (adapted weights, encoded events) live
where the compute runs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from metarec import state as st
from metarec.export import UserTemplate
from metarec.recommend import Recommendation, Recommender, Timings
from metarec.settings import WorkerSettings
from metarec.state import Buffered, UserState

#: the settings the compute side needs (the child builds its own model bundle from these)
COMPUTE_FIELDS = ("model_dir", "torch_threads", "top_k", "inner_steps", "inner_lr")


@dataclass
class BatchOut:
    """One batch's recommendations (input order), live-quality samples and timings."""

    recs: list[Recommendation]
    y: list[float] = field(default_factory=list)
    init: list[float] = field(default_factory=list)
    adapted: list[float] = field(default_factory=list)
    adapt_s: float = 0.0
    score_s: float = 0.0


class Engine:
    """The model side: a recommender plus the per-user ONNX template, on one thread."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self._template: UserTemplate | None = None

    def batch(self, states: Sequence[UserState], news: Sequence[Sequence[Buffered]]) -> BatchOut:
        """Live quality first (predictions made before learning), then adapt + score."""
        live = self.recommender.live_predictions(states, news)
        timings = Timings()
        recs = self.recommender.recommend(states, timings=timings)
        return BatchOut(recs, live.y, live.init, live.adapted, timings.adapt_s, timings.score_s)

    def batch_raw(self, raws: Sequence[bytes], n_new: Sequence[int]) -> BatchOut:
        """:meth:`batch` from table bytes; a user's new events are the last ``n`` of its buffer."""
        states = [st.loads(r) for r in raws]
        news = [s.buffer[len(s.buffer) - min(n, len(s.buffer)):] for s, n in zip(states, n_new)]
        return self.batch(states, news)

    def one(self, raw: bytes) -> Recommendation:
        return self.recommender.recommend([st.loads(raw)])[0]

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


def _child_start(fields: dict[str, Any], parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="metarec-parent-watch").start()
    from services.adapter.bootstrap import load_recommender

    global _ENGINE
    _ENGINE = Engine(load_recommender(WorkerSettings(**fields)))


def _child_call(method: str, *args: Any) -> Any:
    assert _ENGINE is not None, "compute child not initialized"
    return getattr(_ENGINE, method)(*args)


class Compute:
    """Runs the :class:`Engine` off the event loop: in a child process, or in-process on a thread."""

    def __init__(self, executor: Executor, engine: Engine | None) -> None:
        self._executor, self._engine = executor, engine

    @classmethod
    def in_thread(cls, recommender: Recommender) -> Compute:
        return cls(ThreadPoolExecutor(max_workers=1, thread_name_prefix="metarec-compute"), Engine(recommender))

    @classmethod
    def in_process(cls, settings: WorkerSettings) -> Compute:
        """Start the child and wait until its model is loaded and warm (a bad model fails here)."""
        fields = {k: getattr(settings, k) for k in COMPUTE_FIELDS}
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        try:
            pool.submit(_child_start, fields, os.getpid()).result()  # a bad model raises its own error here
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return cls(pool, None)

    async def _run(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._engine is not None:
            return await loop.run_in_executor(self._executor, getattr(self._engine, method), *args)
        return await loop.run_in_executor(self._executor, _child_call, method, *args)

    async def batch(self, states: Sequence[UserState], raws: Sequence[bytes],
                    news: Sequence[Sequence[Buffered]]) -> BatchOut:
        if self._engine is not None:  # same process: no need to re-decode
            return await self._run("batch", list(states), list(news))
        return await self._run("batch_raw", list(raws), [len(n) for n in news])

    async def one(self, raw: bytes) -> Recommendation:
        return await self._run("one", raw)  # type: ignore[no-any-return]

    async def export(self, raw: bytes) -> tuple[bytes, float]:
        return await self._run("export", raw)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
