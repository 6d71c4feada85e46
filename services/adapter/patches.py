"""Every patch of faust-streaming, aiokafka and mode internals, and every private field the worker
reads, behind one module that knows the versions they were tested against.

:func:`check_versions` runs at the worker's start and refuses an untested version with one clear
line (``METAREC_ALLOW_UNTESTED=1`` overrides it, at your own risk). Each patch has a canary test
that fails first when an upgrade changes what it relies on (``tests/pipeline/test_faust_fixes.py``,
``test_faust_tuning.py``, ``test_patches.py``).

=============================  ==========================================================  ==========
patch / private read           why                                                         upstream
=============================  ==========================================================  ==========
keep_queues_on_repeated_resume the first event after a table recovery was dropped           none found
batch_fetches                  faust's consumer asks for a fetch per record (min_bytes=1)  not exposed
eager_drain                    a 4-task race per message for a rare rebalance              —
room_for_changelog             a batch of > 100 changelog records stalled consumption      —
tables_start_at_once           a 1 s sleep at start for tables declared late               —
LeanMonitor                    per-message statistics nobody reads                         —
before_every_commit            the changelog write-behind runs before each offset commit   —
on_agent_crash                 ``App.agent(on_error=)`` is taken by faust itself           —
broker_reachable               no public connection state (``Producer._producer.client``)  —
committed_offsets              no public accessor (``Consumer._committed_offset``)         —
store_put                      RocksDB store takes the partition from the current event    —
store_size                     RocksDB store's ``len()`` reads every key                   —
recovery_progress              a recovery that stops making progress (faust issue 74)      #74 open
=============================  ==========================================================  ==========
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import version
from typing import Any

from metarec.errors import DependencyError
from services.adapter.faust_fixes import keep_queues_on_repeated_resume
from services.adapter.faust_tuning import (
    LeanMonitor,
    batch_fetches,
    broker_reachable,
    eager_drain,
    on_agent_crash,
    room_for_changelog,
    tables_start_at_once,
)

TESTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}

__all__ = ["TESTED", "LeanMonitor", "batch_fetches", "before_every_commit", "broker_reachable", "check_versions",
           "committed_offsets", "eager_drain", "keep_queues_on_repeated_resume", "on_agent_crash", "recovery_progress",
           "room_for_changelog", "store_put", "store_size", "tables_start_at_once"]


def check_versions(installed: Callable[[str], str] = version) -> None:
    """Refuse library versions the patches here were not tested against."""
    wrong = {name: installed(name) for name, want in TESTED.items() if installed(name) != want}
    if wrong and os.environ.get("METAREC_ALLOW_UNTESTED") != "1":
        got = ", ".join(f"{n} {v} (tested: {TESTED[n]})" for n, v in wrong.items())
        raise DependencyError(f"the worker patches faust internals and was tested with other versions: {got}; "
                              "install requirements.lock, or set METAREC_ALLOW_UNTESTED=1 to run anyway")


def before_every_commit(consumer: Any, fn: Callable[[], Awaitable[None] | None]) -> None:
    """Run (and await, if it is a coroutine function) ``fn`` before every offset commit of
    ``consumer``: periodic, at a rebalance, at shutdown.

    Every commit of faust's ``Consumer`` (``commit``, ``commit_and_end_transactions``, the one in
    ``wait_empty``) goes through ``force_commit``, which picks the offsets to commit (the
    acknowledged ones) after ``fn`` returns, and flushes the producer before it commits, so
    what ``fn`` sends is on the broker before the offset moves. An explicit hook, not a sensor:
    durability must not depend on a monitoring class being installed.
    """
    original = consumer.force_commit
    if getattr(original, "_metarec_before", None) == fn:
        return

    async def force_commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
        done = fn()
        if done is not None:
            await done
        return await original(topics, start_new_transaction=start_new_transaction)  # type: ignore[no-any-return]

    force_commit._metarec_before = fn  # type: ignore[attr-defined]
    consumer.force_commit = force_commit


def committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    """The offsets faust last committed per partition (``Consumer._committed_offset``)."""
    return getattr(consumer, "_committed_offset", {})  # type: ignore[no-any-return]


def store_put(data: Any, partition: int, key: bytes, value: bytes) -> None:
    """Write ``key`` to the table's local store, in ``partition``'s database.

    faust's RocksDB store (``rocksdb://``, through rocksdict) keeps one database per partition and
    takes the partition from the *current event*, asserting there is one; the worker's write-behind
    runs between events (before a batch, before a commit), and knows the partition itself. The
    in-memory store has no partitions.
    """
    by_partition = getattr(data, "_db_for_partition", None)
    if by_partition is None:
        data[key] = value
        return
    data._key_index[key] = partition
    by_partition(partition).put(key, value)


def store_size(table: Any) -> int:
    """How many users the table holds: RocksDB's own estimate per partition database (counting its
    keys, as ``len()`` does there, reads every key: seconds for a million users), else ``len()``."""
    dbs = getattr(table.data, "_dbs", None)
    if dbs is None or not getattr(getattr(table.data, "rocksdb_options", None), "use_rocksdict", False):
        return len(table)
    return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0) for db in dbs.values())


def recovery_progress(app: Any) -> tuple[bool, int]:
    """Whether the table recovery runs, and how many changelog records it has left to read for the
    active tables (``Recovery.in_recovery``, ``active_remaining_total()``; faust reads no progress out).

    faust-streaming issue 74 (and the soak here): a recovery after a rebalance can wait for minutes
    on one changelog partition ("No event received for active tp ... since recovery start") while
    its partitions' events wait; :class:`services.adapter.gauges.RecoveryWatch` turns this into a
    restart."""
    rec = getattr(getattr(app, "tables", None), "recovery", None)
    if rec is None or not getattr(rec, "in_recovery", False):
        return False, 0
    try:
        return True, int(rec.active_remaining_total())
    except Exception:  # noqa: BLE001 - highwaters unknown yet: no progress to measure
        return True, -1
