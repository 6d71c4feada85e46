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


def test_canary_the_rocksdb_store_keeps_one_database_per_partition_chosen_by_the_event() -> None:
    """store_put writes where faust's RocksDB store would have, without an event; store_size reads
    RocksDB's estimate instead of counting keys."""
    from faust.stores.rocksdb import USE_ROCKSDICT, Store

    src = inspect.getsource(Store._set)
    assert "current_event()" in src and "self._db_for_partition(partition)" in src
    assert "self._key_index[key] = partition" in src and "db.put(key, value)" in src
    assert "_size1" in inspect.getsource(Store._size)  # counting keys one by one
    assert "self.rocksdb_options = " in inspect.getsource(Store.__init__)
    import rocksdict

    assert USE_ROCKSDICT is True, "faust uses rocksdict (pinned) as its RocksDB driver"
    assert hasattr(rocksdict.Rdict, "property_int_value")


def test_store_put_and_size_with_per_partition_databases(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import rocksdict

    class Options:
        use_rocksdict = True

    class Data:
        rocksdb_options = Options()

        def __init__(self) -> None:
            self._dbs: dict[int, rocksdict.Rdict] = {}
            self._key_index: dict[bytes, int] = {}

        def _db_for_partition(self, p: int) -> rocksdict.Rdict:
            if p not in self._dbs:
                self._dbs[p] = rocksdict.Rdict(str(tmp_path / f"p{p}"))
            return self._dbs[p]

    class Table:
        data = Data()

    t = Table()
    for i in range(10):
        patches.store_put(t.data, i % 3, f"u{i}".encode(), b"state")
    assert t.data._key_index[b"u4"] == 1 and t.data._dbs[1][b"u4"] == b"state"
    assert patches.store_size(t) == 10
    for db in t.data._dbs.values():
        db.close()
    plain: dict[bytes, bytes] = {}
    patches.store_put(plain, 0, b"k", b"v")
    assert plain == {b"k": b"v"}


def test_canary_recovery_progress_reads_faust_s_recovery() -> None:
    from faust.tables.recovery import Recovery

    app = faust.App("t-recovery", broker="kafka://127.0.0.1:1", web_enabled=False)
    rec = app.tables.recovery
    assert isinstance(rec, Recovery) and rec.in_recovery is False
    assert patches.recovery_progress(app) == (False, 0)
    assert "self.active_highwaters" in inspect.getsource(Recovery.active_remaining)
    rec.in_recovery = True
    assert patches.recovery_progress(app) == (True, 0)  # nothing assigned: nothing left to read
    rec.in_recovery = False


def test_the_recovery_watch_fires_only_without_progress() -> None:
    from services.adapter.gauges import RecoveryWatch

    w = RecoveryWatch(60.0)
    assert w.observe(0.0, True, 1000) is None  # started
    assert w.observe(50.0, True, 1000) is None
    assert w.observe(59.0, True, 400) is None, "progress restarts the clock"
    assert w.observe(110.0, True, 400) is None
    assert w.observe(119.0, True, 400) == 60.0, "60 s on the same record count: stalled"
    assert w.observe(120.0, False, 0) is None, "recovery done"
    assert w.observe(500.0, True, 10) is None, "a new recovery starts a new clock"
    assert w.observe(700.0, True, 0) is None, "nothing left: not a stall"
    unknown = RecoveryWatch(60.0)
    assert unknown.observe(0.0, True, -1) is None and unknown.observe(61.0, True, -1) == 61.0
    assert unknown.observe(62.0, True, 5) is None, "highwaters known at last: progress"
    assert RecoveryWatch(0.0).observe(1e9, True, 5) is None, "0 turns it off"
