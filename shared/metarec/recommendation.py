"""The recommendation message, on its own: the worker's event loop sends it without loading a model."""

from __future__ import annotations

import msgspec


class Recommendation(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """The message published to the recommendations topic (JSON). Not tracked by the GC (see state.py).

    ``domain``: the catalog domain the items come from (omitted for the default domain ``""``).
    """

    user_id: str
    items: list[str]
    scores: list[float]
    model_version: str
    events_seen: int
    last_event_ts: float
    emitted_at: float
    domain: str = ""
