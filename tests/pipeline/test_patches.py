"""services.adapter.patches: the tested versions are the installed ones, an untested one is refused
with one clear line, and the pre-commit hook sits on the one path every faust commit takes."""

from __future__ import annotations

import asyncio
import inspect

import faust
import pytest
from faust.transport.consumer import Consumer

from metarec.errors import DependencyError
from services.adapter import patches


def test_the_installed_versions_are_the_tested_ones() -> None:
    patches.check_versions()  # requirements.lock pins exactly these


def test_an_untested_version_is_refused_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METAREC_ALLOW_UNTESTED", raising=False)
    fake = {**patches.TESTED, "faust-streaming": "0.99.0"}
    with pytest.raises(DependencyError, match=r"faust-streaming 0.99.0 \(tested: 0.15.3\)") as err:
        patches.check_versions(fake.__getitem__)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("METAREC_ALLOW_UNTESTED", "1")
    patches.check_versions(fake.__getitem__)


def test_canary_every_commit_goes_through_force_commit() -> None:
    """before_every_commit wraps Consumer.force_commit; faust's commit paths must all reach it."""
    assert "await self.force_commit(" in inspect.getsource(Consumer.commit)
    assert "await self.commit(" in inspect.getsource(Consumer.commit_and_end_transactions)
    src = inspect.getsource(Consumer)
    assert src.count("self._commit_tps(") == 1 and "self._commit_tps(" in inspect.getsource(Consumer.force_commit)


def test_before_every_commit_runs_first_and_once() -> None:
    calls: list[str] = []

    class Fake:
        async def force_commit(self, topics: object = None, start_new_transaction: bool = True) -> bool:
            calls.append("commit")
            return True

    def hook() -> None:
        calls.append("write")

    c = Fake()
    patches.before_every_commit(c, hook)
    patches.before_every_commit(c, hook)  # an agent restart installs it again: still once
    assert asyncio.run(c.force_commit()) is True
    assert calls == ["write", "commit"]


def test_committed_offsets_reads_faust_s_private_map() -> None:
    app = faust.App("t-patches", broker="kafka://127.0.0.1:1", web_enabled=False)
    assert hasattr(app.consumer, "_committed_offset")  # the canary for committed_offsets
    assert patches.committed_offsets(app.consumer) is app.consumer._committed_offset
