"""User events: the typed message, its JSON wire form, and validation as data.

:func:`decode` is total: any input (any bytes, any size, any JSON) gives an :class:`Event`
or an :class:`Invalid` carrying a short machine-readable ``reason`` (a Prometheus label,
one of :data:`REASONS`), a human ``detail`` naming the field and value, and the raw bytes
(for the dead-letter topic). It never raises. What is accepted is set by :class:`Limits`;
the judgement calls are documented in the README's *Messages* section.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from typing import Final, Literal

import msgspec

KINDS: Final = ("view", "click", "rate", "purchase", "add_to_cart", "skip")
"""Event kinds metarec understands. ``rate`` carries a rating in ``value``; the others a 0/1 label."""

REASONS: Final = ("bad_json", "bad_encoding", "bad_type", "missing_field", "bad_value", "bad_timestamp",
                  "unknown_kind", "oversized", "key_mismatch", "internal_error")
"""Every ``Invalid.reason``: a closed set, so it can label a metric."""

MS_THRESHOLD: Final = 1e11  # a ts this large in seconds is the year 5138: it is milliseconds
_BOM: Final = b"\xef\xbb\xbf"
# C0/C1 controls and lone surrogates are refused in every string (log injection, undecodable
# ids); ids also refuse invisible format characters: zero-width, bidi overrides, line separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ID_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ud800-\udfff]")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What an event may be. The worker builds it from its settings (``METAREC_*``)."""

    max_event_bytes: int = 8192  # the whole message
    max_id_chars: int = 128  # event_id, user_id, item_id
    max_context_fields: int = 16
    max_context_chars: int = 128  # each context key and value
    max_rating: float = 10.0  # a rate event's value is within 0..max_rating
    max_future_s: float = 86_400.0  # ts may be at most this far ahead of the worker's clock
    ms_timestamps: Literal["reject", "convert"] = "reject"  # ts >= 1e11 is in milliseconds


LIMITS: Final = Limits()


DOMAIN_KEY: Final = "domain"
"""How an event's domain reaches the model: one more context field, ``domain=<name>`` (the
domain embedding). Reserved: an event's ``context`` may not use it."""


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One user interaction. ``value`` is the label (0/1) or, for ``rate``, the rating.

    ``domain`` names the catalog it happened in (books, music, …); absent or ``""`` is the default
    domain. The wire form omits what is at its default (an empty context, the default domain).
    """

    event_id: str
    user_id: str
    item_id: str
    kind: str
    value: float
    ts: float  # seconds since the epoch
    context: dict[str, str] = msgspec.field(default_factory=dict)  # e.g. {"device": "mobile", "hour": "18"}
    domain: str = ""


class Invalid(msgspec.Struct, frozen=True):
    """An event that failed validation: why, and the bytes as received."""

    reason: str  # one of REASONS
    detail: str
    raw: bytes


_ENCODER = msgspec.json.Encoder()


def encode(event: Event) -> bytes:
    """The JSON wire form of ``event``."""
    return _ENCODER.encode(event)


def new_event(user_id: str, item_id: str, kind: str, value: float, ts: float,
              context: dict[str, str] | None = None, event_id: str | None = None, domain: str = "") -> Event:
    return Event(event_id=event_id or uuid.uuid4().hex, user_id=str(user_id), item_id=str(item_id),
                 kind=kind, value=float(value), ts=float(ts), context=dict(context or {}), domain=domain)


def model_context(context: dict[str, str], domain: str) -> dict[str, str]:
    """The context the model sees for an event of ``domain``: its own fields plus the domain's."""
    return {**context, DOMAIN_KEY: domain} if domain else context


_STR_FIELDS: Final = ("event_id", "user_id", "item_id", "kind")
_NUM_FIELDS: Final = ("value", "ts")


def decode(raw: object, limits: Limits = LIMITS, now: float | None = None) -> Event | Invalid:
    """Validate one wire message: an :class:`Event` or an :class:`Invalid`, whatever ``raw`` is.

    ``now`` (default: the clock) bounds how far in the future ``ts`` may be.
    """
    if raw is None:
        return Invalid("missing_field", "message has no value", b"")
    try:
        data = as_bytes(raw)
    except Exception as exc:  # noqa: BLE001 - not bytes-like: refuse, never raise
        return Invalid("bad_type", f"message must be bytes, got {type(raw).__name__}: {type(exc).__name__}", b"")
    try:
        return _decode(data, limits, time.time() if now is None else now)
    except Exception as exc:  # noqa: BLE001 - the last line of totality: a bug here must not lose the message
        return Invalid("internal_error", f"{type(exc).__name__} while decoding", data)


def as_bytes(raw: object) -> bytes:
    """A message value as bytes (a ``str`` as UTF-8); raises ``TypeError`` for anything else."""
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    raise TypeError(f"not bytes: {type(raw).__name__}")


def _decode(data: bytes, limits: Limits, now: float) -> Event | Invalid:
    if len(data) > limits.max_event_bytes:
        return Invalid("oversized", f"event is {len(data)} bytes, limit {limits.max_event_bytes}", data)
    body = data[3:] if data.startswith(_BOM) else data  # a UTF-8 BOM is allowed (RFC 8259 §8.1)
    try:
        obj = msgspec.json.decode(body)
    except UnicodeDecodeError as exc:
        return Invalid("bad_encoding", f"not UTF-8: {exc.reason} at byte {exc.start}", data)
    except RecursionError:
        return Invalid("bad_json", "JSON nested too deeply", data)
    except msgspec.DecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            return Invalid("bad_encoding", f"not UTF-8: {bad.reason} at byte {bad.start}", data)
        return Invalid("bad_json", f"not JSON: {str(exc)[:120]}", data)
    if not isinstance(obj, dict):
        return Invalid("bad_type", f"event must be a JSON object, got {type(obj).__name__}", data)
    problem = _check(obj, limits)
    if problem is not None:
        return Invalid(problem[0], problem[1], data)
    value, ts = float(obj["value"]), float(obj["ts"])
    if ts >= MS_THRESHOLD:
        if limits.ms_timestamps == "reject":
            return Invalid("bad_timestamp", f"ts {ts:.0f} looks like milliseconds; send seconds since the "
                           "epoch (or set METAREC_MS_TIMESTAMPS=convert)", data)
        ts /= 1000.0
    if ts > now + limits.max_future_s:
        return Invalid("bad_timestamp", f"ts {ts:.0f} is more than {limits.max_future_s:.0f} s in the future", data)
    ctx = obj.get("context")
    return Event(event_id=obj["event_id"], user_id=obj["user_id"], item_id=obj["item_id"], kind=obj["kind"],
                 value=value, ts=ts, context=dict(ctx) if ctx else {}, domain=obj.get("domain") or "")


def _show(v: object) -> str:
    """A value for a detail line: escaped (repr) and short, whatever it is."""
    return repr(v)[:40] if not isinstance(v, dict | list) else f"{type(v).__name__} of {len(v)}"


def _check(obj: dict[str, object], lim: Limits) -> tuple[str, str] | None:
    for name in (*_STR_FIELDS, *_NUM_FIELDS):
        if obj.get(name) is None:
            return "missing_field", f"field '{name}' is missing"
    for name in _STR_FIELDS:
        v = obj[name]
        if not isinstance(v, str):
            return "bad_type", f"field '{name}' must be a string, got {type(v).__name__} {_show(v)}"
        if not v.strip() or len(v) > lim.max_id_chars:
            return "bad_value", f"field '{name}' must be 1..{lim.max_id_chars} characters, not blank; got {_show(v)}"
        if _ID_BAD.search(v):
            return "bad_value", f"field '{name}' has control or invisible characters: {_show(v)}"
    for name in _NUM_FIELDS:
        v = obj[name]
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "bad_type", f"field '{name}' must be a number, got {type(v).__name__} {_show(v)}"
        if isinstance(v, int) and abs(v) > 1 << 62:
            return "bad_value", f"field '{name}' is out of range: an integer of {len(str(abs(v)))} digits"
        if not math.isfinite(v):
            return "bad_value", f"field '{name}' must be finite, got {v}"
    kind, value = obj["kind"], float(obj["value"])  # type: ignore[arg-type]
    if kind not in KINDS:
        return "unknown_kind", f"kind {_show(kind)} is not one of {', '.join(KINDS)}"
    if kind == "rate" and not 0.0 <= value <= lim.max_rating:
        return "bad_value", f"rating must be within 0..{lim.max_rating:g}, got {value}"
    if kind != "rate" and value not in (0.0, 1.0):
        return "bad_value", f"value of a {kind} event must be 0 or 1, got {value}"
    if float(obj["ts"]) < 0:  # type: ignore[arg-type]
        return "bad_timestamp", f"field 'ts' must be seconds since the epoch, got {obj['ts']}"
    return _check_domain(obj.get("domain"), lim) or _check_context(obj.get("context"), lim)


def _check_domain(v: object, lim: Limits) -> tuple[str, str] | None:
    if v is None or v == "":
        return None  # the default domain
    if not isinstance(v, str):
        return "bad_type", f"field 'domain' must be a string, got {type(v).__name__} {_show(v)}"
    if not v.strip() or len(v) > lim.max_id_chars or _ID_BAD.search(v):
        return "bad_value", (f"field 'domain' must be 1..{lim.max_id_chars} visible characters, not blank; "
                             f"got {_show(v)}")
    return None


def _check_context(ctx: object, lim: Limits) -> tuple[str, str] | None:
    if ctx is None:
        return None  # null or missing: no context
    if not isinstance(ctx, dict):
        return "bad_type", f"field 'context' must be an object of strings, got {type(ctx).__name__}"
    if len(ctx) > lim.max_context_fields:
        return "bad_value", f"context has {len(ctx)} fields, limit {lim.max_context_fields}"
    for k, v in ctx.items():
        if not isinstance(v, str):
            return "bad_type", f"context field {_show(k)} must be a string, got {type(v).__name__} {_show(v)}"
        if len(v) > lim.max_context_chars or len(k) > lim.max_context_chars or not k:
            return "bad_value", f"context field {_show(k)} or its value is empty or over {lim.max_context_chars} chars"
        if _CONTROL.search(k) or _CONTROL.search(v):
            return "bad_value", f"context field {_show(k)} has control characters: {_show(v)}"
        if k == DOMAIN_KEY:
            return "bad_value", f"context field {DOMAIN_KEY!r} is reserved: send it as the event's field 'domain'"
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
