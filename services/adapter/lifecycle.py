"""The served model's life in a running worker: hot swap to announced versions, automatic rollback.

:class:`Lifecycle` knows which version is served (and the one before it), switches to a version
announced on the models topic (:mod:`metarec.announce`; read by :class:`services.adapter.follow.Follower`)
and rolls back when the new version's live adapted logloss is worse than the previous version's by
``rollback_margin`` over ``rollback_window`` predictions.

A swap: the version directory is checked (hashes, torch-free), a new compute is started on it (a
child process loads and warms the model while the old one keeps serving), then, between two
batches (the worker's flush lock), the new compute replaces the old one, which is closed. The new
compute holds no adapted weights: each user's are recomputed from their buffer under the new
initialization at their next batch. A version that fails to load is counted and skipped; the old
one goes on serving. No worker restarts, no event waits for more than the switch itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from metarec import announce, modeldir
from metarec.errors import ArtifactError
from metarec.quality import Rolling
from services.adapter.compute import BatchOut, Compute

if TYPE_CHECKING:
    from services.adapter.app import Adapter

log = logging.getLogger("metarec.worker")
Announcer = Callable[[announce.Announcement], Awaitable[None]]


@dataclass
class Served:
    model: modeldir.ModelDir
    adapted: Rolling  # the adapted predictions' rolling window while this version served
    init: Rolling  # and its initialization's (before adaptation)

    @property
    def version(self) -> str:
        return self.model.version

    @classmethod
    def fresh(cls, model: modeldir.ModelDir, window: int) -> Served:
        return cls(model, Rolling(window), Rolling(window))


class Lifecycle:
    def __init__(self, adapter: Adapter, model: modeldir.ModelDir) -> None:
        self.adapter = adapter
        s = adapter.settings
        self.window, self.margin = s.rollback_window, s.rollback_margin
        self.models_root = announce.models_root_of(s.model_dir)
        self.serving = Served.fresh(model, self.window)
        self.previous: Served | None = None
        self.rejected: set[str] = set()
        self._want: announce.Announcement | None = None
        self._lock = asyncio.Lock()
        self.announcer: Announcer = self._announce
        self.swaps = 0

    @property
    def version(self) -> str:
        return self.serving.version

    async def on_announcement(self, ann: announce.Announcement) -> None:
        """Serve what ``ann`` names (the newest wins if several arrive during a swap)."""
        self.rejected.update(ann.rejected)
        if ann.action == "publish" and ann.version in self.rejected:
            log.warning("ignoring version %s: it was rolled back", ann.version)
            return
        self._want = ann
        if self._lock.locked():
            return  # the running swap picks the newest wanted version up when it ends
        async with self._lock:
            while self._want is not None:
                want, self._want = self._want, None
                if want.version != self.version:
                    await self.swap_to(want)

    async def swap_to(self, ann: announce.Announcement) -> bool:
        m = self.adapter.metrics
        try:
            md = modeldir.check(announce.locate(ann, self.models_root))
            if md.version != ann.version:
                raise ArtifactError(f"{md.path} holds version {md.version}, not {ann.version}")
            new = await self._start(md)
        except Exception as exc:  # noqa: BLE001 - a version that cannot be served: keep the current one
            m.model_swaps.labels("failed").inc()
            log.error("cannot switch to model %s (%s: %s); still serving %s", ann.version, type(exc).__name__, exc,
                      self.version)
            return False
        await self.adapter.replace_compute(new)
        self.previous = self.serving if ann.action == "publish" else None  # after a rollback: nothing to compare
        self.serving = Served.fresh(md, self.window)
        self.swaps += 1
        m.model_swaps.labels("ok").inc()
        m.model_info.info(md.info(self.adapter.settings.inner_steps, self.adapter.settings.inner_lr))
        log.info("now serving model %s (%s%s)", md.version, ann.action, f": {ann.reason}" if ann.reason else "")
        return True

    async def _start(self, md: modeldir.ModelDir) -> Compute:
        s = self.adapter.settings.model_copy(update={"model_dir": md.path})
        if s.compute == "thread":
            from services.adapter.bootstrap import load_recommender

            return Compute.in_thread(await asyncio.to_thread(load_recommender, s))
        c = Compute.start_process(s)
        try:
            await c.ready()
        except BaseException:
            c.close()
            raise
        return c

    # -- live quality and rollback -------------------------------------------------------------
    def observe(self, out: BatchOut) -> None:
        if out.version and out.version != self.version:
            return  # computed by the compute just replaced
        for y, p in zip(out.y, out.adapted):
            self.serving.adapted.add(y, p)
        for y, p in zip(out.y, out.init):
            self.serving.init.add(y, p)

    def rollback_due(self) -> str | None:
        """Why the served version must be rolled back, or ``None``."""
        prev = self.previous
        if prev is None or len(self.serving.adapted) < self.window or len(prev.adapted) < min(self.window, 50):
            return None
        now, before = self.serving.adapted.logloss(), prev.adapted.logloss()
        if now > before + self.margin:
            return (f"live adapted logloss {now:.4f} over {len(self.serving.adapted)} predictions, "
                    f"{before:.4f} under {prev.version}: worse by more than {self.margin}")
        return None

    async def check(self) -> None:
        """Roll back (and tell the other workers and the trainer) if :meth:`rollback_due`."""
        why = self.rollback_due()
        if why is None or self._lock.locked() or self.previous is None:
            return
        bad, good = self.serving, self.previous
        log.warning("rolling back model %s to %s: %s", bad.version, good.version, why)
        self.adapter.metrics.model_rollbacks.inc()
        self.rejected.add(bad.version)
        ann = announce.make(good.model.path, good.model.manifest, action="rollback", previous=bad.version,
                            reason=why, validation={"serving_logloss": bad.adapted.logloss(),
                                                    "previous_logloss": good.adapted.logloss()},
                            rejected=tuple(sorted(self.rejected)), by=f"worker:{self._me()}")
        async with self._lock:
            ok = await self.swap_to(ann)
        if ok:
            try:
                await self.announcer(ann)
            except Exception as exc:  # noqa: BLE001 - this worker rolled back; the others will on their own
                log.error("could not announce the rollback to %s (%s)", good.version, exc)

    def gauges(self) -> None:
        m = self.adapter.metrics
        m.model_age.set(max(0.0, time.time() - float(self.serving.model.manifest.get("created_at", time.time()))))
        m.model_live_logloss.clear()
        m.model_live_auc.clear()
        for role, served in (("serving", self.serving), ("previous", self.previous)):
            if served is None:
                continue
            for name, window in (("adapted", served.adapted), ("init", served.init)):
                if len(window) >= 10:
                    m.model_live_logloss.labels(served.version, role, name).set(window.logloss())
                    m.model_live_auc.labels(served.version, role, name).set(window.auc())

    def _me(self) -> str:
        s = self.adapter.settings
        return s.group_instance_id or f"{s.app_id}@{s.web_port}"

    async def _announce(self, ann: announce.Announcement) -> None:
        await asyncio.to_thread(announce.send, self.adapter.settings, ann)

