"""The worker's per-event logic, free of faust: decode → step → coalesce → recommend.

:class:`Pending` coalesces the users touched since the last flush (several events of one
user become one adaptation and one recommendation). :func:`apply` is the whole per-event
transition, returning data the service acts on; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metarec.events import LIMITS, Event, Invalid, Limits, as_bytes, decode
from metarec.state import Buffered, UserState, replayed, step


@dataclass
class Touched:
    """One user's pending work: newest state, events not yet learned from, oldest event time, and
    the messages to acknowledge once the recommendation is out (opaque here: the service's)."""

    state: UserState
    new: list[Buffered] = field(default_factory=list)
    first_seen: float = 0.0  # Kafka timestamp (s) of the oldest event waiting for a recommendation
    acks: list[object] = field(default_factory=list)


class Pending:
    """Users waiting for a recommendation, in first-touched order."""

    def __init__(self) -> None:
        self.users: dict[str, Touched] = {}

    def __len__(self) -> int:
        return len(self.users)

    def touch(self, state: UserState, new: tuple[Buffered, ...], kafka_ts: float, ack: object = None) -> None:
        """``state`` is the user's newest; ``ack`` (if given) waits for the user's next recommendation."""
        t = self.users.get(state.user_id)
        if t is None:
            t = self.users[state.user_id] = Touched(state, list(new), kafka_ts)
        else:
            t.state = state
            t.new.extend(new)
            t.first_seen = min(t.first_seen, kafka_ts)
        if ack is not None:
            t.acks.append(ack)

    def take(self, n: int) -> list[Touched]:
        """Remove and return up to ``n`` users, oldest first."""
        keys = list(self.users)[:n]
        return [self.users.pop(k) for k in keys]


@dataclass(frozen=True)
class Applied:
    """A valid event applied: the new state and what it added (empty if a duplicate).

    ``replay``: the message was read before (its offset is at or before the state's; a restart
    after a crash). Its recommendation may not have gone out before the crash, so it is due again.
    """

    state: UserState
    new: tuple[Buffered, ...]
    event: Event
    replay: bool = False


@dataclass(frozen=True)
class Rekey:
    """A valid event that came with no key: send ``raw`` again keyed by ``key`` (its ``user_id``)."""

    key: bytes
    raw: bytes
    event: Event


def apply(raw: object, key: bytes | None, prior: UserState | None, buffer_size: int,
          consumed_size: int, limits: Limits = LIMITS, now: float | None = None,
          position: tuple[int, int] | None = None) -> Applied | Rekey | Invalid:
    """Validate one message and, if valid, step the user's state.

    The message key must be the event's ``user_id``: the user's state lives in the partition
    the key chooses. An event keyed otherwise is dead-lettered (reason ``key_mismatch``); one with
    no key at all is handed back as :class:`Rekey`, for the service to re-send to its user's partition.
    With ``position`` (partition, offset), a message already applied is a replay: ``Applied`` with
    nothing new (see :func:`metarec.state.replayed`).
    """
    ev = decode(raw, limits, now)
    if isinstance(ev, Invalid):
        return ev
    if not key:  # null (or empty): no partition was chosen for the user
        return Rekey(ev.user_id.encode(), as_bytes(raw), ev)
    if key != ev.user_id.encode():
        return Invalid("key_mismatch", f"message key {key[:40]!r} is not the event's user_id {ev.user_id!r:.60}",
                       as_bytes(raw))
    if prior is not None and prior.user_id != ev.user_id:
        raise ValueError(f"state of {prior.user_id!r} given for an event of {ev.user_id!r}")
    if position is not None and prior is not None and replayed(prior, *position):
        return Applied(prior, (), ev, replay=True)
    state, new = step(prior, [ev], buffer_size, consumed_size, position)
    return Applied(state, new, ev)
