"""The model follower's hand-over to the event loop: one announcement at a time, in order; a
handler cancelled because the worker is stopping ends the follower quietly (no traceback)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from metarec.settings import WorkerSettings
from services.adapter.follow import Follower


class _Ann:
    def __init__(self, version: str) -> None:
        self.version = version


def _loop_in_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    return loop, t


def test_a_cancelled_handler_stops_the_follower_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(ann: object) -> None:
        raise asyncio.CancelledError  # what the worker's shutdown does to a swap in progress

    loop, t = _loop_in_thread()
    f = Follower(WorkerSettings(), handler)
    try:
        with caplog.at_level(logging.INFO, logger="metarec.worker"):
            f._hand(loop, _Ann("v2"))  # type: ignore[arg-type]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
    assert f._stop.is_set()
    assert "the worker is stopping" in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


def test_a_failing_handler_is_logged_and_the_follower_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def handler(ann: _Ann) -> None:
        seen.append(ann.version)
        if ann.version == "bad":
            raise RuntimeError("broken version")

    loop, t = _loop_in_thread()
    f = Follower(WorkerSettings(), handler)  # type: ignore[arg-type]
    try:
        for v in ("bad", "v3"):
            f._hand(loop, _Ann(v))  # type: ignore[arg-type]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
    assert seen == ["bad", "v3"]  # in order, and the failure did not stop the next one
    assert not f._stop.is_set()
    assert "applying the announcement of bad failed" in caplog.text
