"""A bounded window of recent user tasks: each user's newest events, the most recently active users.

Bounded three ways: at most ``max_users`` users (the least recently active leave first), at most
``user_events`` events per user (the oldest leave first), and users whose newest event is older
than ``horizon_s`` before the newest event seen (event time) leave. Events already held (same
``event_id``) are not added twice, so re-reading the topic after a restart is harmless.

Recency is arrival order (the stream's), the horizon is event time: with events far out of time
order a silent user behind a recently active one stays until the cap evicts it.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from metarec.events import Event


class TaskWindow:
    def __init__(self, max_users: int = 5000, user_events: int = 128, horizon_s: float = 7 * 86_400.0) -> None:
        self.max_users, self.user_events, self.horizon_s = max_users, user_events, horizon_s
        self.newest_ts = 0.0
        self._users: OrderedDict[str, deque[Event]] = OrderedDict()  # least recently active first
        self._events = 0

    def add(self, ev: Event) -> bool:
        """Hold ``ev``; ``False`` if it was already held."""
        q = self._users.get(ev.user_id)
        if q is None:
            q = self._users[ev.user_id] = deque()
        elif any(e.event_id == ev.event_id for e in q):
            return False
        self._users.move_to_end(ev.user_id)
        q.append(ev)
        self._events += 1
        if len(q) > self.user_events:
            q.popleft()
            self._events -= 1
        self.newest_ts = max(self.newest_ts, ev.ts)
        self._evict()
        return True

    def _evict(self) -> None:
        while len(self._users) > self.max_users:
            _, q = self._users.popitem(last=False)
            self._events -= len(q)
        oldest_ok = self.newest_ts - self.horizon_s
        while self._users:  # least recently active first: stop at the first recent one
            uid, q = next(iter(self._users.items()))
            if q and q[-1].ts >= oldest_ok:
                break
            self._events -= len(q)
            del self._users[uid]

    def __len__(self) -> int:
        return len(self._users)

    @property
    def n_events(self) -> int:
        return self._events

    def events(self) -> list[Event]:
        """Every held event, in event-time order."""
        return sorted((e for q in self._users.values() for e in q), key=lambda e: e.ts)

    def items(self) -> set[str]:
        return {e.item_id for q in self._users.values() for e in q}
