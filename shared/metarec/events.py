"""User events: the typed message, its JSON wire form, and validation as data.

:func:`decode` never raises on bad input: it returns an :class:`Event` or an
:class:`Invalid` carrying a short machine-readable ``reason`` (a Prometheus label),
a human ``detail`` naming the field and value, and the raw bytes (for the dead-letter topic).
"""

from __future__ import annotations

import base64
import math
import time
import uuid
from typing import Final

import msgspec

KINDS: Final = ("view", "click", "rate", "purchase", "add_to_cart", "skip")
"""Event kinds metarec understands. ``rate`` carries a rating in ``value``; the others a 0/1 label."""

MAX_CONTEXT_FIELDS: Final = 16
MAX_STR: Final = 128
MAX_EVENT_BYTES: Final = 8192


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One user interaction. ``value`` is the label (0/1) or, for ``rate``, the rating."""

    event_id: str
    user_id: str
    item_id: str
    kind: str
    value: float
    ts: float  # seconds since the epoch
    context: dict[str, str] = msgspec.field(default_factory=dict)  # e.g. {"device": "mobile", "hour": "18"}


class Invalid(msgspec.Struct, frozen=True):
    """An event that failed validation: why, and the bytes as received."""

    reason: str  # bad_json | missing_field | bad_type | bad_value | oversized | unknown_kind
    detail: str
    raw: bytes


_ENCODER = msgspec.json.Encoder()


def encode(event: Event) -> bytes:
    """The JSON wire form of ``event``."""
    return _ENCODER.encode(event)


def new_event(user_id: str, item_id: str, kind: str, value: float, ts: float,
              context: dict[str, str] | None = None, event_id: str | None = None) -> Event:
    return Event(event_id=event_id or uuid.uuid4().hex, user_id=str(user_id), item_id=str(item_id),
                 kind=kind, value=float(value), ts=float(ts), context=dict(context or {}))


_STR_FIELDS: Final = ("event_id", "user_id", "item_id", "kind")
_NUM_FIELDS: Final = ("value", "ts")


def decode(raw: bytes | str | None, max_bytes: int = MAX_EVENT_BYTES) -> Event | Invalid:
    """Validate one wire message. Returns an :class:`Event` or an :class:`Invalid`."""
    if raw is None:
        return Invalid("missing_field", "message has no value", b"")
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if len(data) > max_bytes:
        return Invalid("oversized", f"event is {len(data)} bytes, limit {max_bytes}", data)
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        return Invalid("bad_json", f"not JSON: {exc}", data)
    if not isinstance(obj, dict):
        return Invalid("bad_type", f"event must be a JSON object, got {type(obj).__name__}", data)
    problem = _check(obj)
    if problem is not None:
        return Invalid(problem[0], problem[1], data)
    return Event(
        event_id=obj["event_id"], user_id=obj["user_id"], item_id=obj["item_id"], kind=obj["kind"],
        value=float(obj["value"]), ts=float(obj["ts"]), context=dict(obj.get("context") or {}),
    )


def _check(obj: dict[str, object]) -> tuple[str, str] | None:
    for name in (*_STR_FIELDS, *_NUM_FIELDS):
        if name not in obj or obj[name] is None:
            return "missing_field", f"field '{name}' is missing"
    for name in _STR_FIELDS:
        v = obj[name]
        if not isinstance(v, str):
            return "bad_type", f"field '{name}' must be a string, got {type(v).__name__} {v!r:.40}"
        if not v or len(v) > MAX_STR:
            return "bad_value", f"field '{name}' must be 1..{MAX_STR} characters, got {len(v)}"
    for name in _NUM_FIELDS:
        v = obj[name]
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "bad_type", f"field '{name}' must be a number, got {type(v).__name__} {v!r:.40}"
        if not math.isfinite(v):
            return "bad_value", f"field '{name}' must be finite, got {v}"
    if obj["kind"] not in KINDS:
        return "unknown_kind", f"kind {obj['kind']!r:.40} is not one of {', '.join(KINDS)}"
    value = float(obj["value"])  # type: ignore[arg-type]
    if obj["kind"] == "rate" and not 0.0 <= value <= 10.0:
        return "bad_value", f"rating must be within 0..10, got {value}"
    if obj["kind"] != "rate" and value not in (0.0, 1.0):
        return "bad_value", f"value of a {obj['kind']} event must be 0 or 1, got {value}"
    if float(obj["ts"]) < 0:  # type: ignore[arg-type]
        return "bad_value", f"field 'ts' must be seconds since the epoch, got {obj['ts']}"
    ctx = obj.get("context", {})
    if ctx is None:
        return None
    if not isinstance(ctx, dict):
        return "bad_type", f"field 'context' must be an object of strings, got {type(ctx).__name__}"
    if len(ctx) > MAX_CONTEXT_FIELDS:
        return "bad_value", f"context has {len(ctx)} fields, limit {MAX_CONTEXT_FIELDS}"
    for k, v in ctx.items():
        if not isinstance(v, str) or len(v) > MAX_STR or len(k) > MAX_STR:
            return "bad_type", f"context field {k!r:.40} must be a short string, got {v!r:.40}"
    return None


def label(kind: str, value: float, mode: str, threshold: float = 4.0) -> float | None:
    """The training target of an event: 0/1 in ``binary`` mode, the rating in ``rating`` mode.

    In rating mode only ``rate`` events carry a target (others give ``None``).
    """
    if mode == "binary":
        if kind == "rate":
            return 1.0 if value >= threshold else 0.0
        return 1.0 if value > 0 else 0.0
    if kind == "rate":
        return value
    return None


_JSON = msgspec.json.Encoder()


def dead_letter(invalid: Invalid, topic: str, partition: int, offset: int, key: bytes | None = None,
                now: float | None = None) -> bytes:
    """The dead-letter message for ``invalid``: the reason, the detail, the raw bytes and their origin."""
    try:
        text: str | None = invalid.raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return _JSON.encode({
        "reason": invalid.reason, "detail": invalid.detail,
        "raw_b64": base64.b64encode(invalid.raw).decode(), "raw_text": text,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "dead_lettered_at": time.time() if now is None else now,
    })
