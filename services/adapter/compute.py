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
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metarec.recommendation import Recommendation
from metarec.settings import WorkerSettings
from metarec.state import Buffered, UserState

if TYPE_CHECKING:  # the engine imports torch: only the side that computes loads it
    from metarec.recommend import Recommender
    from services.adapter.engine import Engine

#: the settings the compute side needs (the child builds its own model bundle from these)
COMPUTE_FIELDS = ("model_dir", "torch_threads", "top_k", "inner_steps", "inner_lr", "domains")


@dataclass
class BatchOut:
    """One batch's recommendations (input order), live-quality samples and timings."""

    recs: list[Recommendation]  # per user (input order), one per served domain
    y: list[float] = field(default_factory=list)
    init: list[float] = field(default_factory=list)
    adapted: list[float] = field(default_factory=list)
    adapt_s: float = 0.0
    score_s: float = 0.0
    version: str = ""  # the model version that computed them


def _child_start(fields: dict[str, Any], parent: int) -> None:
    """Runs in the child (pickled by reference to this light module, which imports the engine there)."""
    from services.adapter.engine import child_start

    child_start(fields, parent)


def _child_call(method: str, *args: Any) -> Any:
    from services.adapter.engine import child_call

    return child_call(method, *args)


class Compute:
    """Runs the engine off the event loop: in a child process, or in-process on a thread.

    A child starts loading the model at once and the worker goes on starting meanwhile; every
    call waits until the child is ready (:meth:`ready`), and a child that fails to start fails
    each call with its error.
    """

    def __init__(self, executor: Executor, engine: Engine | None, started: Future[None] | None = None) -> None:
        self._executor, self._engine, self._started = executor, engine, started

    @classmethod
    def in_thread(cls, recommender: Recommender) -> Compute:
        from services.adapter.engine import Engine

        return cls(ThreadPoolExecutor(max_workers=1, thread_name_prefix="metarec-compute"), Engine(recommender))

    @classmethod
    def start_process(cls, settings: WorkerSettings) -> Compute:
        """Spawn the child and let it load its model while the caller goes on (see :meth:`ready`)."""
        fields = {k: getattr(settings, k) for k in COMPUTE_FIELDS}
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return cls(pool, None, pool.submit(_child_start, fields, os.getpid()))

    @classmethod
    def in_process(cls, settings: WorkerSettings) -> Compute:
        """:meth:`start_process` and wait until the model is loaded and warm (a bad model fails here)."""
        c = cls.start_process(settings)
        try:
            c.wait_ready()
        except BaseException:
            c.close()
            raise
        return c

    def wait_ready(self) -> None:
        """:meth:`ready`, blocking (before an event loop runs); raises the child's start error."""
        if self._started is not None:
            self._started.result()

    async def ready(self) -> None:
        """Wait until the engine can take calls; raises the child's start error if it failed."""
        if self._started is not None and not (self._started.done() and self._started.exception() is None):
            await asyncio.wrap_future(self._started)

    async def _run(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._engine is not None:
            return await loop.run_in_executor(self._executor, getattr(self._engine, method), *args)
        await self.ready()
        return await loop.run_in_executor(self._executor, _child_call, method, *args)

    async def batch(self, states: Sequence[UserState], raws: Sequence[bytes],
                    news: Sequence[Sequence[Buffered]]) -> BatchOut:
        if self._engine is not None:  # same process: no need to re-decode
            return await self._run("batch", list(states), list(news))
        return await self._run("batch_raw", list(raws), [len(n) for n in news])

    async def one(self, raw: bytes, domain: str | None = None) -> Recommendation:
        return await self._run("one", raw, domain)  # type: ignore[no-any-return]

    async def export(self, raw: bytes) -> tuple[bytes, float]:
        return await self._run("export", raw)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
