"""The worker's per-event logic, free of faust: decode → step → coalesce → recommend.

:class:`Pending` coalesces the users touched since the last flush (several events of one
user become one adaptation and one recommendation). :func:`apply` is the whole per-event
transition, returning data the service acts on; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metarec.events import Event, Invalid, decode
from metarec.state import Buffered, UserState, step


@dataclass
class Touched:
    """One user's pending work: newest state, events not yet learned from, oldest event time."""

    state: UserState
    new: list[Buffered] = field(default_factory=list)
    first_seen: float = 0.0  # Kafka timestamp (s) of the oldest event waiting for a recommendation


class Pending:
    """Users waiting for a recommendation, in first-touched order."""

    def __init__(self) -> None:
        self.users: dict[str, Touched] = {}

    def __len__(self) -> int:
        return len(self.users)

    def touch(self, state: UserState, new: tuple[Buffered, ...], kafka_ts: float) -> None:
        t = self.users.get(state.user_id)
        if t is None:
            self.users[state.user_id] = Touched(state, list(new), kafka_ts)
        else:
            t.state = state
            t.new.extend(new)
            t.first_seen = min(t.first_seen, kafka_ts)

    def take(self, n: int) -> list[Touched]:
        """Remove and return up to ``n`` users, oldest first."""
        keys = list(self.users)[:n]
        return [self.users.pop(k) for k in keys]


@dataclass(frozen=True)
class Applied:
    """A valid event applied: the new state and what it added (empty if a duplicate)."""

    state: UserState
    new: tuple[Buffered, ...]
    event: Event


def apply(raw: bytes | None, key: bytes | None, prior: UserState | None, buffer_size: int,
          consumed_size: int, max_bytes: int) -> Applied | Invalid:
    """Validate one message and, if valid, step the user's state.

    The message key must be the event's ``user_id``: the user's state lives in the partition
    the key chooses, so an event keyed otherwise is dead-lettered (reason ``key_mismatch``).
    """
    ev = decode(raw, max_bytes)
    if isinstance(ev, Invalid):
        return ev
    if key is None or key != ev.user_id.encode():
        shown = None if key is None else key[:40].decode("utf-8", "replace")
        return Invalid("key_mismatch", f"message key {shown!r} is not the event's user_id {ev.user_id!r}",
                       raw if isinstance(raw, bytes) else b"")
    if prior is not None and prior.user_id != ev.user_id:
        raise ValueError(f"state of {prior.user_id!r} given for an event of {ev.user_id!r}")
    state, new = step(prior, [ev], buffer_size, consumed_size)
    return Applied(state, new, ev)
