"""Per-user state and its transition ``step(state | None, events) -> (state, new)``.

The state is small and recomputable: a bounded buffer of the user's most recent events (the
support set adaptation learns from), a bounded list of consumed items (excluded from the
top-K), and counters. Adapted weights are a cache derived from it, never part of it. It is
serialized with msgspec to JSON bytes for the worker's changelog-backed table.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from metarec.events import Event

STATE_VERSION = 1
# The structs below are plain immutable data (never part of a reference cycle), so they are
# built with ``gc=False``: a worker holds many of them, and the garbage collector's full passes
# over them were pauses of its event loop that grew with the number of users.


class Buffered(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A compact buffered event: ``[event_id, item_id, kind, value, ts, context]``."""

    event_id: str
    item_id: str
    kind: str
    value: float
    ts: float
    context: dict[str, str]


class UserState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the worker remembers about one user."""

    user_id: str
    version: int = STATE_VERSION
    events_seen: int = 0  # valid events ever applied
    last_event_ts: float = 0.0  # event time of the newest event
    buffer: tuple[Buffered, ...] = ()  # most recent events, oldest first
    consumed: tuple[str, ...] = ()  # most recently consumed items, oldest first


def step(state: UserState | None, events: Sequence[Event], buffer_size: int = 64,
         consumed_size: int = 512) -> tuple[UserState, tuple[Buffered, ...]]:
    """Apply ``events`` (one user's, in arrival order) to ``state``.

    Returns the new state and the newly buffered events. Events whose ``event_id`` is
    already in the buffer are dropped, so a redelivered message is not counted twice.
    All events must belong to one user.
    """
    if not events:
        if state is None:
            raise ValueError("step needs a state or at least one event")
        return state, ()
    user_id = events[0].user_id
    if state is None:
        state = UserState(user_id=user_id)
    seen = {b.event_id for b in state.buffer}
    new: list[Buffered] = []
    for e in events:
        if e.user_id != user_id:
            raise ValueError(f"step got events of users {user_id!r} and {e.user_id!r}; one user per call")
        if e.event_id not in seen:
            seen.add(e.event_id)
            new.append(Buffered(e.event_id, e.item_id, e.kind, e.value, e.ts, dict(e.context)))
    if not new:
        return state, ()
    buffer = (state.buffer + tuple(new))[-buffer_size:]
    consumed = list(state.consumed)
    for b in new:
        if b.item_id in consumed:
            consumed.remove(b.item_id)
        consumed.append(b.item_id)
    return UserState(
        user_id=user_id,
        events_seen=state.events_seen + len(new),
        last_event_ts=max(state.last_event_ts, max(b.ts for b in new)),
        buffer=buffer,
        consumed=tuple(consumed[-consumed_size:] if consumed_size else ()),
    ), tuple(new)


_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(UserState)


def dumps(state: UserState) -> bytes:
    return _ENC.encode(state)


def loads(raw: bytes) -> UserState:
    return _DEC.decode(raw)
