"""Quiet logs under a broker outage: repeated lines are held back and counted.

While the broker is down, aiokafka and faust log the same few lines (connection refused,
metadata update failed, heartbeat failed) many times a second: one worker wrote 2,270 lines in a
23 s outage. :class:`Aggregate`, on the root handlers, lets the first record of each kind through,
then holds back the same kind (logger, level, message template) for ``interval_s``; the next one
to pass says how many were held back. Records from metarec's own loggers below ERROR are treated
the same; the worker's ``metarec_broker_connected`` gauge shows the state either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: loggers whose repeated records are aggregated (prefixes)
NOISY = ("aiokafka", "kafka", "faust", "mode", "metarec.delivery")


@dataclass
class _Seen:
    since: float
    held: int = 0


class Aggregate(logging.Filter):
    """A filter: at most one record per kind and ``interval_s``, the next carrying the count held back."""

    def __init__(self, interval_s: float = 30.0, prefixes: tuple[str, ...] = NOISY,
                 clock: Callable[[], float] = time.monotonic, on_held: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.interval_s, self.prefixes, self.clock, self.on_held = interval_s, prefixes, clock, on_held
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self.prefixes):
            return True
        kind = (record.name, record.levelno, str(record.msg)[:120])
        now, seen = self.clock(), self._seen.get(kind)
        if seen is not None and now - seen.since < self.interval_s:
            seen.held += 1
            if self.on_held is not None:
                self.on_held()
            return False
        if seen is not None and seen.held:
            record.msg = f"{record.msg} [{seen.held} more like this in the last {now - seen.since:.0f} s]"
        if len(self._seen) > 1000:  # bounded: forget the kinds that went quiet
            self._seen = {k: v for k, v in self._seen.items() if now - v.since < self.interval_s}
        self._seen[kind] = _Seen(now)
        return True


def install(root: logging.Logger, filt: Aggregate) -> None:
    """Put ``filt`` on every handler of ``root`` (records of all loggers reach those)."""
    for handler in root.handlers:
        if filt not in handler.filters:
            handler.addFilter(filt)


def on_root_logger(worker: Any, filt: Aggregate) -> None:
    """Install ``filt`` when ``worker`` (a faust/mode ``Worker``) has set up the root logger."""
    original = worker.on_setup_root_logger

    def setup(logger: logging.Logger, level: int) -> None:
        original(logger, level)
        install(logger, filt)

    worker.on_setup_root_logger = setup
