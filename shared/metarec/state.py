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
    """A compact buffered event: ``[event_id, item_id, kind, value, ts, context, domain]`` (a state
    written before domains existed has no ``domain``: the default one)."""

    event_id: str
    item_id: str
    kind: str
    value: float
    ts: float
    context: dict[str, str]
    domain: str = ""


class UserState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the worker remembers about one user."""

    user_id: str
    version: int = STATE_VERSION
    events_seen: int = 0  # valid events ever applied
    last_event_ts: float = 0.0  # event time of the newest event
    buffer: tuple[Buffered, ...] = ()  # most recent events, oldest first
    consumed: tuple[str, ...] = ()  # most recently consumed items, oldest first
    # where the newest applied event was read: a message at or before it in the same partition is a
    # replay (after a crash or a rebalance) and is dropped, however many events it spans
    partition: int = -1
    offset: int = -1


def replayed(state: UserState | None, partition: int, offset: int) -> bool:
    """Whether the message at ``partition``/``offset`` was already applied to ``state``.

    A user's events arrive through one partition in offset order, so a message at or before the
    newest applied one is a replay, exactly: this does not depend on how many events it spans.
    """
    return state is not None and state.partition == partition and offset <= state.offset


def step(state: UserState | None, events: Sequence[Event], buffer_size: int = 64,
         consumed_size: int = 512, position: tuple[int, int] | None = None) -> tuple[UserState, tuple[Buffered, ...]]:
    """Apply ``events`` (one user's, in arrival order) to ``state``.

    Returns the new state and the newly buffered events. Events whose ``event_id`` is
    already in the buffer are dropped too (a producer's retry, a re-sent message), so a
    duplicate is not counted twice. ``position`` (partition, offset) records where the events
    were read (see :func:`replayed`). All events must belong to one user.
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
            new.append(Buffered(e.event_id, e.item_id, e.kind, e.value, e.ts, dict(e.context), e.domain))
    part, off = position if position is not None else (state.partition, state.offset)
    if not new:
        return (state if position is None else msgspec.structs.replace(state, partition=part, offset=off)), ()
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
        partition=part, offset=off,
    ), tuple(new)


_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(UserState)


def dumps(state: UserState) -> bytes:
    return _ENC.encode(state)


def loads(raw: bytes) -> UserState:
    return _DEC.decode(raw)
