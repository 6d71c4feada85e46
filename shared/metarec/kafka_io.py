"""Kafka plumbing with kafka-python: topics, the replay producer, the recommendations reader.

The worker itself uses faust (aiokafka); these are the command-line side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from metarec.errors import BrokerError
from metarec.events import Event, encode
from metarec.settings import KafkaSettings


def _connect(factory: Callable[..., Any], settings: KafkaSettings, **kw: Any) -> Any:
    try:
        return factory(**settings.kafka_python_config(), bootstrap_timeout_ms=10_000, **kw)
    except KafkaTimeoutError:
        raise BrokerError(
            f"no Kafka broker at {settings.kafka_bootstrap} (set METAREC_KAFKA_BOOTSTRAP, or run `make kafka-up`)"
        ) from None


def ensure_topics(settings: KafkaSettings, partitions: int | None = None) -> list[str]:
    """Create the events, recommendations and dead-letter topics if missing; returns those created."""
    n = partitions or settings.partitions
    admin = _connect(KafkaAdminClient, settings, client_id="metarec-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [settings.topic_events, settings.topic_recommendations, settings.topic_dead_letter]
        new = [NewTopic(t, n, settings.replication_factor) for t in wanted if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()


def producer(settings: KafkaSettings, **kw: Any) -> KafkaProducer:
    return _connect(KafkaProducer, settings, linger_ms=5, acks=1, **kw)


def replay(events: Iterable[Event], settings: KafkaSettings, rate: float = 0.0,
           on_sent: Callable[[int], None] | None = None, rewrite_ts: bool = False) -> int:
    """Send ``events`` to the events topic keyed by user_id, at ``rate`` events/s (0: as fast as
    possible). With ``rewrite_ts`` each event's ``ts`` becomes the send time. Returns the count."""
    prod = producer(settings)
    start = time.monotonic()
    n = 0
    try:
        for ev in events:
            if rate > 0:
                due = start + n / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if rewrite_ts:
                ev = Event(event_id=ev.event_id, user_id=ev.user_id, item_id=ev.item_id, kind=ev.kind,
                           value=ev.value, ts=time.time(), context=ev.context)
            prod.send(settings.topic_events, key=ev.user_id.encode(), value=encode(ev))
            n += 1
            if on_sent and n % 100 == 0:
                on_sent(n)
        prod.flush()
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
        for msg in consumer:
            yield msg.value
    finally:
        consumer.close()
