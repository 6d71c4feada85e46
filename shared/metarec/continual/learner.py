"""The trainer's core, without Kafka: events in, rounds when due, the serving version kept.

:class:`Learner` is what ``metarec trainer`` runs (:mod:`services.trainer`) and what the drift
benchmark simulates (``bench/drift.py``), so the curve measures the service's own logic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from metarec.continual.rounds import Candidate, RoundConfig, run_round
from metarec.continual.window import TaskWindow
from metarec.events import Event
from metarec.model import RecModel, Vocab


@dataclass
class Serving:
    """The version candidates are judged against and warm-started from."""

    model: RecModel
    vocab: Vocab
    version: str


@dataclass
class Learner:
    serving: Serving
    window: TaskWindow
    cfg: RoundConfig = field(default_factory=RoundConfig)
    every_events: int = 20_000  # a round after this many new events ...
    every_s: float = 600.0  # ... or this many seconds, if the window has changed
    min_users: int = 50  # no round with fewer users in the window
    rejected: set[str] = field(default_factory=set)  # versions rolled back: never warm-started from again
    since: int = 0  # events added since the last round
    last_round: float = field(default_factory=time.monotonic)
    rounds: int = 0

    def add(self, ev: Event) -> bool:
        added = self.window.add(ev)
        self.since += added
        return added

    def due(self, now: float | None = None) -> bool:
        if len(self.window) < self.min_users or self.since == 0:
            return False
        now = time.monotonic() if now is None else now
        return self.since >= self.every_events or now - self.last_round >= self.every_s

    def round(self) -> Candidate:
        """Train and judge a candidate on the window (the caller publishes an accepted one and
        then :meth:`adopt`\\ s it)."""
        self.rounds += 1
        self.since, self.last_round = 0, time.monotonic()
        return run_round(self.serving.model, self.serving.vocab, self.window.events(), self.cfg,
                         seed=self.cfg.seed + self.rounds)

    def adopt(self, model: RecModel, vocab: Vocab, version: str) -> None:
        self.serving = Serving(model, vocab, version)
