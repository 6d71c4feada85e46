"""Aggregate: repeated library log lines are held back and counted, others pass untouched."""

from __future__ import annotations

import logging

from services.adapter.quiet import Aggregate, install


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def emitted(handler_records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in handler_records]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_outage_storm_becomes_one_line_per_kind_and_interval() -> None:
    clock, held = Clock(), []
    root = logging.getLogger("quiet-test-root")
    root.propagate = False
    root.setLevel(logging.DEBUG)
    handler = ListHandler()
    root.handlers = [handler]
    filt = Aggregate(30.0, prefixes=("quiet-test-root.aiokafka",), clock=clock, on_held=lambda: held.append(1))
    install(root, filt)
    install(root, filt)  # idempotent
    assert handler.filters == [filt]
    noisy = logging.getLogger("quiet-test-root.aiokafka.conn")
    ours = logging.getLogger("quiet-test-root.metarec")
    for i in range(1000):  # 1,000 connection errors in 20 s
        clock.t = i * 0.02
        noisy.error("Unable connect to node with id %s: %s", 1, "refused")
        if i % 100 == 0:
            ours.error("something else %d", i)
            noisy.info("info lines are never held")
    clock.t = 31.0
    noisy.error("Unable connect to node with id %s: %s", 1, "refused")
    lines = emitted(handler.records)
    storm = [ln for ln in lines if ln.startswith("Unable connect")]
    assert len(storm) == 2, storm
    assert "999 more like this" in storm[1]
    assert len(held) == 999
    assert sum(ln.startswith("something else") for ln in lines) == 10  # other loggers untouched
    assert sum(ln.startswith("info lines") for ln in lines) == 10


def test_different_templates_are_different_kinds() -> None:
    clock = Clock()
    filt = Aggregate(30.0, prefixes=("x",), clock=clock)

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("x.y", logging.WARNING, __file__, 1, msg, None, None)

    assert filt.filter(rec("a %s")) and filt.filter(rec("b %s"))
    assert not filt.filter(rec("a %s"))
