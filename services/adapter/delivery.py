"""Sends the consumer must not move past until the broker has them: dead letters and re-keyed events.

The worker commits an offset only after the message at it was handled, and a message that is
dead-lettered or re-keyed is handled only once its record is on the broker. So these sends are
awaited to their acknowledgement and retried with a capped backoff; meanwhile the partition
waits (visible as consumer lag), and nothing is committed past it. A record the broker can never
take (too large) is replaced, once, by its fallback, a smaller record that says the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from prometheus_client import Counter

from metarec.events import Invalid

Send = Callable[[bytes | None, bytes], Awaitable[None]]

#: errors a retry cannot cure: the record itself is refused
PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)

log = logging.getLogger("metarec.delivery")


async def deliver(send: Send, key: bytes | None, value: bytes, *, what: str, retries: Counter,
                  fallback: Callable[[], bytes] | None = None, backoff_s: tuple[float, float] = (0.1, 5.0)) -> int:
    """``await send(key, value)`` until it succeeds; returns the failed attempts.

    ``send`` must return only once the broker acknowledged the record. ``retries`` (labelled by
    ``what``) counts each failed attempt. With a permanent error, ``fallback()`` is sent instead (made
    only then: almost every record is sent as it is).
    """
    failed = 0
    while True:
        try:
            await send(key, value)
            return failed
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is retried: the offset must not pass
            failed += 1
            retries.labels(what).inc()
            if isinstance(exc, PERMANENT) and fallback is not None:
                value, fallback = fallback(), None
                log.warning("%s record refused (%s): sending the %d-byte fallback instead",
                            what, type(exc).__name__, len(value))
                continue
            delay = min(backoff_s[1], backoff_s[0] * 2 ** (failed - 1))
            log.warning("%s send failed (%s: %.120s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)


def internal_error(exc: Exception, raw: object, topic: str, partition: int, offset: int) -> Invalid:
    """The dead letter of a message whose handling raised: the type and a digest, no stack.

    The full traceback goes to the log under the same digest, for whoever reads the record.
    """
    digest = hashlib.sha256(f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")).hexdigest()[:12]
    logging.getLogger("metarec.worker").error("internal error on %s[%d]@%d, digest %s", topic, partition, offset,
                                              digest, exc_info=exc)
    data = raw if isinstance(raw, bytes) else b""
    return Invalid("internal_error", f"{type(exc).__name__} while handling the event (digest {digest})", data)
