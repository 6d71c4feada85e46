"""The continual trainer: events in, gated versions out, announced on the models topic.

It reads every partition of the events topic (its own consumer group, so its lag is visible; it
starts ``window_horizon_s`` back, capped by the window's size, and re-reading is harmless: the
window ignores events it holds) and the models topic, whose announcements it follows: a rollback
by a worker or by hand makes the version rolled back to the one it warm-starts from, and the
version rolled back is never warm-started from again. When a round is due
(:meth:`metarec.continual.learner.Learner.due`) it trains a candidate and judges it
(:mod:`metarec.continual.gate`); an accepted candidate is written as a new version directory
under ``models_root`` (``latest`` pointing at it) and announced; a rejected one is discarded with
its reason logged and counted.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from metarec import __version__, announce, artifact, modeldir
from metarec.continual.learner import Learner, Serving
from metarec.continual.rounds import Candidate, RoundConfig
from metarec.continual.window import TaskWindow
from metarec.errors import ArtifactError
from metarec.events import Event, decode
from metarec.metrics import TrainerMetrics
from metarec.settings import TrainerSettings

log = logging.getLogger("metarec.trainer")


def starting_version(settings: TrainerSettings) -> Path:
    """The version to start from: the newest announcement's, else ``models_root/latest``."""
    try:
        ann = announce.newest(settings)
    except Exception as exc:  # noqa: BLE001 - no broker yet: the volume still says what is served
        log.warning("could not read %s (%s); starting from %s/latest", settings.topic_models, exc,
                    settings.models_root)
        ann = None
    if ann is not None:
        try:
            return announce.locate(ann, settings.models_root)
        except ArtifactError as exc:
            log.warning("%s; starting from %s/latest", exc, settings.models_root)
    latest = settings.models_root / "latest"
    if not (latest / "manifest.json").exists():
        raise ArtifactError(f"{settings.models_root}: no model to start from (no latest, nothing announced); "
                            "train one first: metarec train --out " + str(settings.models_root))
    return latest.resolve()


class Trainer:
    """The learner plus what it takes to publish: the models folder, the announcements, metrics."""

    def __init__(self, settings: TrainerSettings, metrics: TrainerMetrics | None = None) -> None:
        self.settings = s = settings
        self.metrics = metrics or TrainerMetrics.create()
        torch.set_num_threads(s.torch_threads)
        bundle = artifact.load(starting_version(s))
        self.learner = Learner(
            Serving(bundle.model, bundle.vocab, bundle.version),
            TaskWindow(s.window_users, s.window_user_events, s.window_horizon_s),
            RoundConfig(steps=s.round_steps, budget_s=s.round_budget_s, outer_lr=s.outer_lr,
                        holdout_fraction=s.holdout_fraction, min_gain=s.gate_min_gain, seed=s.seed),
            every_events=s.round_every_events, every_s=s.round_every_s, min_users=s.min_window_users,
        )
        self.manifest = bundle.manifest
        log.info("trainer starts from version %s (%s)", bundle.version, bundle.path)

    # -- events and announcements ------------------------------------------------------------
    def on_event(self, raw: bytes | None) -> None:
        ev = decode(raw)
        if not isinstance(ev, Event):
            return  # the workers dead-letter it; the trainer only skips it
        if self.learner.add(ev):
            self.metrics.events_consumed.inc()

    def on_announcement(self, ann: announce.Announcement) -> None:
        """Follow what is served: a rollback (or a version announced by someone else) becomes the base."""
        self.learner.rejected.update(ann.rejected)
        if ann.version == self.learner.serving.version:
            return
        if ann.action == "publish" and ann.version in self.learner.rejected:
            log.warning("ignoring the announcement of %s: it was rolled back", ann.version)
            return
        if ann.action == "rollback":
            self.metrics.rollbacks_seen.inc()
        try:
            bundle = artifact.load(announce.locate(ann, self.settings.models_root))
        except ArtifactError as exc:
            log.error("announced version %s cannot be loaded here (%s); keeping %s", ann.version, exc,
                      self.learner.serving.version)
            return
        self.learner.adopt(bundle.model, bundle.vocab, bundle.version)
        self.manifest = bundle.manifest
        if ann.action == "rollback":
            modeldir.point_latest(self.settings.models_root, bundle.version)  # what a restarted worker loads
        log.info("following %s of version %s (%s)", ann.action, ann.version, ann.reason or "no reason given")

    # -- rounds -------------------------------------------------------------------------------
    def step(self, now: float | None = None) -> Candidate | None:
        """Run a round if one is due; publish the candidate if the gate accepts it."""
        m = self.metrics
        m.window_users.set(len(self.learner.window))
        m.window_events.set(self.learner.window.n_events)
        if not self.learner.due(now):
            return None
        m.rounds.inc()
        t0, parent = time.monotonic(), self.learner.serving.version
        try:
            cand = self.learner.round()
        except Exception:  # noqa: BLE001 - a failed round is counted and logged; the service goes on
            m.rejected.labels("failed").inc()
            log.exception("a training round failed")
            return None
        finally:
            m.training_seconds.observe(time.monotonic() - t0)
        v = cand.verdict
        m.gate_loss.labels("current").set(v.current.get(v.metric, float("nan")))
        m.gate_loss.labels("candidate").set(v.candidate.get(v.metric, float("nan")))
        if not v.accepted:
            m.rejected.labels(v.reason).inc()
            log.warning("candidate rejected, %s (%d steps, %.1f s)", v.describe(), cand.steps, cand.seconds)
            return cand
        if not self._parent_still_served(parent):
            return cand
        self.publish(cand)
        return cand

    def _parent_still_served(self, parent: str) -> bool:
        """Whether the version the candidate was trained from is still the one announced: a rollback
        (or another publisher) during the round supersedes the candidate, which is then discarded."""
        try:
            ann = announce.newest(self.settings)
        except Exception as exc:  # noqa: BLE001 - unsure what is served: do not publish over it
            self.metrics.rejected.labels("failed").inc()
            log.error("could not read %s before publishing (%s); candidate discarded", self.settings.topic_models, exc)
            return False
        if ann is None or ann.version == parent:
            return True
        self.metrics.rejected.labels("superseded").inc()
        log.warning("candidate discarded: %s was announced (%s) while it trained from %s", ann.version, ann.action,
                    parent)
        self.on_announcement(ann)
        return False

    def publish(self, cand: Candidate) -> Path:
        s, serving = self.settings, self.learner.serving
        v = cand.verdict
        manifest = {
            "metarec_version": __version__, "torch_version": torch.__version__, "parent": serving.version,
            "data": {"source": f"kafka:{s.topic_events}", "users": len(self.learner.window),
                     "events": self.learner.window.n_events, "items": len(cand.vocab.items)},
            "train": {"algorithm": self.manifest.get("train", {}).get("algorithm", "maml"), "continual": True,
                      "steps": cand.steps, "seconds": round(cand.seconds, 1), "train_users": cand.train_users,
                      "new_items": len(cand.new_items), "cut_ts": cand.cut_ts},
            "gate": v.figures(),
        }
        d = artifact.save(cand.model, cand.vocab, s.models_root, manifest, point_latest=False)
        man = modeldir.check(d).manifest
        announce.send(s, announce.make(d, man, previous=serving.version, reason=v.describe(),
                                       validation=v.figures(), rejected=tuple(sorted(self.learner.rejected)),
                                       by="trainer"))
        modeldir.point_latest(s.models_root, d.name)  # announced: what a restarted worker loads
        self.learner.adopt(cand.model, cand.vocab, man["version"])
        self.manifest = man
        self.metrics.published.inc()
        self.metrics.new_items.inc(len(cand.new_items))
        self.metrics.last_published.set(time.time())
        log.info("published version %s, %s; %d new items", man["version"], v.describe(), len(cand.new_items))
        return d

