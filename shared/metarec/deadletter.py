"""Dead-letter records: why an event was refused, its bytes and its origin, always bounded.

A record must fit the producer's request limit whatever arrived, so the raw bytes are cut to
``raw_limit`` (the original size and SHA-256 are kept to identify it), the detail and key
too. :func:`record` is pure; the worker sends what it returns.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Final

import msgspec

from metarec.events import Invalid

RAW_LIMIT: Final = 64 * 1024  # raw bytes kept in a record by default
MAX_RAW_LIMIT: Final = 96 * 1024  # worst case (base64 + escaped text, ~6x) stays under 1 MiB
KEY_LIMIT: Final = 1024  # the record's Kafka key and shown key, in bytes
DETAIL_LIMIT: Final = 512

_JSON = msgspec.json.Encoder()


def record(invalid: Invalid, topic: str, partition: int, offset: int, key: bytes | None = None,
           now: float | None = None, raw_limit: int = RAW_LIMIT) -> bytes:
    """The dead-letter message for ``invalid``.

    Fields: ``reason``, ``detail``, ``raw_b64`` (the first ``raw_limit`` bytes), ``raw_text``
    (the same bytes as text when they are UTF-8, else null), ``raw_size``, ``raw_sha256`` (of
    the whole message), ``raw_truncated``, ``key`` (as text), ``key_size``, ``source``
    (topic, partition, offset) and ``dead_lettered_at``. At most about 6 × ``raw_limit`` + 8 KiB.
    """
    raw = invalid.raw
    kept = raw[:raw_limit]
    try:
        text: str | None = kept.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return _JSON.encode({
        "reason": invalid.reason, "detail": invalid.detail[:DETAIL_LIMIT],
        "raw_b64": base64.b64encode(kept).decode(), "raw_text": text,
        "raw_size": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest(), "raw_truncated": len(kept) < len(raw),
        "key": key[:KEY_LIMIT].decode("utf-8", "replace") if key is not None else None,
        "key_size": len(key) if key is not None else None,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "dead_lettered_at": time.time() if now is None else now,
    })


def minimal(value: bytes) -> bytes:
    """A record stripped of the raw bytes: the fallback when even a bounded one cannot be sent."""
    full = msgspec.json.decode(value)
    full.update(raw_b64="", raw_text=None, raw_truncated=True)
    return _JSON.encode(full)


def record_key(key: bytes | None) -> bytes | None:
    """The record's Kafka key: the event's key, or its SHA-256 when that is too large to send."""
    if key is None or len(key) <= KEY_LIMIT:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()
