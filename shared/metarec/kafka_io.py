"""Kafka plumbing with kafka-python: topics, the replay producer, the recommendations reader.

The worker itself uses faust (aiokafka); these are the command-line side.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import MemberToRemove, NewTopic
from kafka.errors import (
    AuthorizationError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
)

from metarec.errors import BrokerError
from metarec.events import Event, encode
from metarec.kafka_security import SASL_PROTOCOLS, principal
from metarec.settings import KafkaSettings


class _Seen(logging.Handler):
    """The exceptions kafka-python logs while it connects. Its bootstrap (3.0.12) retries a refused
    password or a failed TLS handshake until the timeout and then raises only ``KafkaTimeoutError``;
    the cause is an argument of its log records (``Connection failed: %s``). Even that is unsure:
    when the broker's "authentication failed" response and its hang-up arrive in one read, the
    transport (``kafka/net/transport.py``, ``_read_from_sock``) drops the bytes and reports only
    ``socket disconnected`` -- in most attempts here."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(a for a in args if isinstance(a, BaseException))


def _unreachable(settings: KafkaSettings, seen: list[BaseException]) -> BrokerError:
    """Why no connection came up, in one line: credentials refused, TLS failed, or nobody there."""
    where = f"Kafka at {settings.kafka_bootstrap}"
    check = "check METAREC_KAFKA_SASL_USERNAME and METAREC_KAFKA_SASL_PASSWORD"
    if any(isinstance(e, SaslAuthenticationFailedError) for e in seen):
        return BrokerError(f"{where} refused the credentials of {principal(settings)} "
                           f"({settings.kafka_sasl_mechanism}); {check}")
    tls = [str(e) for e in seen if "SSL" in str(e) or "certificate" in str(e)]
    if tls:
        why = tls[-1].split("Handshake failed: ")[-1].split(" (_ssl.c")[0]
        return BrokerError(f"TLS with {where} failed: {why} (METAREC_KAFKA_SSL_CAFILE must hold the CA that signed "
                           "the broker's certificate, which must name the host dialled)")
    # TCP and TLS came up and the broker hung up during SASL: on a busy machine some attempts time
    # out instead, so one such hang-up is enough
    hung_up = any(str(e).endswith("socket disconnected") for e in seen)
    if hung_up and settings.kafka_security_protocol in SASL_PROTOCOLS:
        return BrokerError(f"{where} hung up while authenticating {principal(settings)} "
                           f"({settings.kafka_sasl_mechanism}): most likely it refused the credentials; {check}")
    return BrokerError(f"no Kafka broker at {settings.kafka_bootstrap} (set METAREC_KAFKA_BOOTSTRAP, or run "
                       "`make kafka-up`)")


@contextmanager
def refused_as_broker_error(settings: KafkaSettings) -> Iterator[None]:
    """A request the broker's ACLs refuse, as one :class:`BrokerError` naming the principal."""
    try:
        yield
    except AuthorizationError as exc:
        what = exc.args[0] if exc.args else None  # the topics, when kafka-python names them
        on = f" ({', '.join(sorted(what))})" if isinstance(what, set | list | tuple) else ""
        raise BrokerError(f"Kafka at {settings.kafka_bootstrap} refused {principal(settings)}: {exc.message}{on}; "
                          "an admin grants rights with ACLs (`metarec acls`)") from None


def _connect(factory: Callable[..., Any], settings: KafkaSettings, **kw: Any) -> Any:
    seen, log = _Seen(), logging.getLogger("kafka")
    log.addHandler(seen)
    try:
        with refused_as_broker_error(settings):
            return factory(**settings.kafka_python_config(), bootstrap_timeout_ms=10_000, **kw)
    except KafkaTimeoutError:
        raise _unreachable(settings, seen.errors) from None
    finally:
        log.removeHandler(seen)


def admin_client(settings: KafkaSettings, client_id: str = "metarec-admin") -> KafkaAdminClient:
    return _connect(KafkaAdminClient, settings, client_id=client_id)


def ensure_topics(settings: KafkaSettings, partitions: int | None = None) -> list[str]:
    """Create the events, recommendations, dead-letter and (compacted, one partition) models topics
    if missing; returns those created."""
    n = partitions or settings.partitions
    admin = admin_client(settings)
    try:
        with refused_as_broker_error(settings):
            existing = set(admin.list_topics())  # those this principal may describe
            wanted = [settings.topic_events, settings.topic_recommendations, settings.topic_dead_letter]
            new = [NewTopic(t, n, settings.replication_factor) for t in wanted if t not in existing]
            if settings.topic_models not in existing:  # one key, compacted: the newest announcement stays
                new.append(NewTopic(settings.topic_models, 1, settings.replication_factor,
                                    topic_configs={"cleanup.policy": "compact"}))
            if new:
                try:
                    admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
                except AuthorizationError as exc:
                    raise BrokerError(
                        f"Kafka at {settings.kafka_bootstrap} refused {principal(settings)} creating "
                        f"{', '.join(t.name for t in new)} ({exc.message}): an admin makes them, `metarec topics` "
                        "with an admin's credentials (or they exist and this principal may not describe them)"
                    ) from None
        return [t.name for t in new]
    finally:
        admin.close()


def leave_group(settings: KafkaSettings, group: str, instance_id: str) -> None:
    """Remove the static member ``instance_id`` from ``group`` now (KIP-345, LeaveGroup v3).

    A static member's consumer does not leave when it closes: its partitions would wait for the
    session timeout. After a worker's graceful stop this hands them to the others at once.
    """
    admin = admin_client(settings, client_id=f"{group}-leave")
    try:
        with refused_as_broker_error(settings):
            admin.remove_group_members(group, [MemberToRemove(group_instance_id=instance_id, reason="shutdown")])
    finally:
        admin.close()


def static_member_present(settings: KafkaSettings, group: str, instance_id: str) -> bool:
    """Whether ``group`` still lists a member with ``group.instance.id`` ``instance_id``: a worker
    coming back before its session expired, which takes its partitions back without a rebalance."""
    admin = admin_client(settings, client_id=f"{group}-probe")
    try:
        with refused_as_broker_error(settings):
            info = admin.describe_groups([group]).get(group, {})
    finally:
        admin.close()
    return any(m.get("group_instance_id") == instance_id for m in info.get("members", []))


def producer(settings: KafkaSettings, **kw: Any) -> KafkaProducer:
    return _connect(KafkaProducer, settings, **{"linger_ms": 5, "acks": 1, **kw})


def replay(events: Iterable[Event], settings: KafkaSettings, rate: float = 0.0,
           on_sent: Callable[[int], None] | None = None, rewrite_ts: bool = False) -> int:
    """Send ``events`` to the events topic keyed by user_id, at ``rate`` events/s (0: as fast as
    possible). With ``rewrite_ts`` each event's ``ts`` becomes the send time. Returns the count."""
    prod = producer(settings)
    start = time.monotonic()
    n = 0
    failed: list[BaseException] = []  # what the sends' futures report, e.g. an ACL refusal
    try:
        with refused_as_broker_error(settings):
            for ev in events:
                if failed:
                    break
                if rate > 0:
                    due = start + n / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if rewrite_ts:
                    ev = msgspec.structs.replace(ev, ts=time.time())
                fut = prod.send(settings.topic_events, key=ev.user_id.encode(), value=encode(ev))
                fut.add_errback(failed.append)
                n += 1
                if on_sent and n % 100 == 0:
                    on_sent(n)
            prod.flush()
            if failed:
                raise failed[0]
    except KafkaError as exc:
        raise BrokerError(f"sending to {settings.topic_events} at {settings.kafka_bootstrap} failed: {exc}") from None
    finally:
        prod.close()
    if on_sent:
        on_sent(n)
    return n


def recommendations_consumer(settings: KafkaSettings, from_beginning: bool = False, group: str | None = None,
                             **kw: Any) -> KafkaConsumer:
    """A consumer of the recommendations topic whose values are decoded JSON dicts."""
    consumer = _connect(
        KafkaConsumer, settings, group_id=group, auto_offset_reset="earliest" if from_beginning else "latest",
        value_deserializer=lambda b: json.loads(b), **kw,
    )
    consumer.subscribe([settings.topic_recommendations])
    return consumer


def read_recommendations(settings: KafkaSettings, from_beginning: bool = False, timeout_s: float | None = None,
                         group: str | None = None) -> Iterator[dict[str, Any]]:
    """Recommendation messages as dicts, until ``timeout_s`` passes with none (None: forever)."""
    consumer = recommendations_consumer(
        settings, from_beginning, group,
        consumer_timeout_ms=int(timeout_s * 1000) if timeout_s else float("inf"),
    )
    try:
        topic = settings.topic_recommendations
        # Kafka does not tell a topic that is missing from one the principal may not DESCRIBE, and
        # a consumer without a group waits on either in silence
        if not consumer.partitions_for_topic(topic):
            raise BrokerError(f"Kafka at {settings.kafka_bootstrap} shows {principal(settings)} no topic {topic}: "
                              "it does not exist yet (`metarec topics` makes it) or no ACL lets this principal "
                              "describe it")
        with refused_as_broker_error(settings):
            for msg in consumer:
                yield msg.value
    finally:
        consumer.close()
