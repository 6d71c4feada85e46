"""The users table with a write-behind: a changed state is encoded and logged once per batch.

:meth:`UserStore.put` only remembers the newest state of a user; :meth:`UserStore.write` encodes
each changed user once, stores it in the table's local store and sends one changelog record. The
worker calls it before each batch is computed and, through :func:`services.adapter.patches.before_every_commit`,
before every offset commit (periodic, on rebalance, at shutdown): faust flushes the producer before
it commits, so no offset is committed ahead of the state it produced.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from metarec import state as st
from services.adapter import patches


class UserStore:
    """Newest state per user: changed-and-unwritten first, then the table (decoded once, cached)."""

    def __init__(self, table: Any, cache_size: int) -> None:
        self.table, self.cache_size = table, cache_size
        self._dirty: dict[bytes, tuple[int, st.UserState]] = {}  # changed since the last write()
        self._decoded: OrderedDict[bytes, tuple[bytes, st.UserState]] = OrderedDict()  # stored bytes -> state

    def __len__(self) -> int:
        return patches.store_size(self.table)

    def get(self, key: bytes | None) -> st.UserState | None:
        if key is None:
            return None
        dirty = self._dirty.get(key)
        if dirty is not None:
            return dirty[1]
        raw = self.table.get(key)
        if raw is None:
            return None
        hit = self._decoded.get(key)
        return hit[1] if hit is not None and (hit[0] is raw or hit[0] == raw) else st.loads(raw)  # RocksDB: a copy

    def put(self, key: bytes, partition: int, state: st.UserState) -> None:
        """Remember ``state`` as the user's newest; :meth:`write` makes it durable."""
        self._dirty[key] = (partition, state)

    def stored(self, key: bytes) -> bytes | None:
        """The user's newest state as stored bytes (written first if it changed since the last write)."""
        if key in self._dirty:
            self.write()
        return self.table.get(key)  # type: ignore[no-any-return]

    def raw(self, state: st.UserState) -> bytes:
        """``state`` as stored (its encoding is cached by :meth:`write`)."""
        hit = self._decoded.get(state.user_id.encode())
        return hit[0] if hit is not None and hit[1] is state else st.dumps(state)

    def write(self) -> None:
        """Encode each user changed since the last call once, store it, and send one changelog record."""
        dirty, self._dirty = self._dirty, {}
        for key, (partition, state) in dirty.items():
            value = st.dumps(state)
            patches.store_put(self.table.data, partition, key, value)  # the local store
            self._cache(key, value, state)
            self.table.send_changelog(partition, key, value)

    def _cache(self, key: bytes, raw: bytes, state: st.UserState) -> None:
        self._decoded[key] = (raw, state)
        self._decoded.move_to_end(key)
        if len(self._decoded) > self.cache_size:
            self._decoded.popitem(last=False)
