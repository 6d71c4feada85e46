"""The trainer's Kafka loop: read the events and the models topic, step the trainer, commit.

One consumer (kafka-python) holds every events partition and the models topic's one partition,
assigned rather than subscribed: the trainer is a singleton (one replica), so it needs no group
membership; its group id only carries its committed offsets, which show its lag. A round runs
in this loop (consumption waits meanwhile, bounded by ``round_budget_s``).
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from metarec import announce
from metarec.errors import BrokerError
from metarec.kafka_io import _connect, ensure_topics, refused_as_broker_error
from metarec.settings import TrainerSettings
from services.trainer.app import Trainer

log = logging.getLogger("metarec.trainer")


def _start_offsets(c: KafkaConsumer, tps: list[TopicPartition], settings: TrainerSettings) -> dict[TopicPartition, int]:
    """``window_horizon_s`` back by broker time, at most the window's capacity per partition back."""
    ends = c.end_offsets(tps)
    begins = c.beginning_offsets(tps)
    by_time = c.offsets_for_times({tp: int((time.time() - settings.window_horizon_s) * 1000) for tp in tps})
    cap = settings.window_users * settings.window_user_events // max(1, len(tps)) + 1
    out = {}
    for tp in tps:
        t = by_time.get(tp)
        start = t.offset if t is not None else ends[tp]
        out[tp] = max(start, ends[tp] - cap, begins[tp])
    return out


def _create_topics(settings: TrainerSettings) -> None:
    """Where this principal may (a dev cluster), create the missing topics; on a secured cluster an admin
    has made them (``metarec topics``) and the trainer's ACLs do not allow it: that is fine."""
    try:
        ensure_topics(settings)
    except BrokerError as exc:
        log.info("not creating topics (%s); waiting for them to exist", exc)


def _wait_for_topics(c: KafkaConsumer, settings: TrainerSettings, stop: threading.Event) -> set[int] | None:
    """The events topic's partitions, once both topics exist (``None`` if stopped first)."""
    said = False
    while not stop.is_set():
        c.topics()  # refreshes the metadata
        parts = c.partitions_for_topic(settings.topic_events)
        if parts and c.partitions_for_topic(settings.topic_models):
            return set(parts)
        if not said:
            log.warning("waiting for the topics %s and %s to exist", settings.topic_events, settings.topic_models)
            said = True
        stop.wait(2.0)
    return None


def run(settings: TrainerSettings, trainer: Trainer, stop: threading.Event, poll_ms: int = 500) -> None:
    """Consume until ``stop`` is set."""
    _create_topics(settings)
    with refused_as_broker_error(settings):
        c: KafkaConsumer = _connect(KafkaConsumer, settings, group_id=settings.trainer_group,
                                    enable_auto_commit=False, client_id="metarec-trainer",
                                    max_poll_records=2000)
    try:
        parts = _wait_for_topics(c, settings, stop)
        if parts is None:
            return
        events = [TopicPartition(settings.topic_events, p) for p in sorted(parts)]
        models = TopicPartition(settings.topic_models, 0)
        c.assign([*events, models])
        for tp, off in _start_offsets(c, events, settings).items():
            c.seek(tp, off)
        c.seek_to_beginning(models)
        log.info("trainer reading %d partitions of %s and %s", len(events), settings.topic_events,
                 settings.topic_models)
        last_commit = time.monotonic()
        while not stop.is_set():
            for tp, records in c.poll(timeout_ms=poll_ms).items():
                if tp.topic == settings.topic_models:  # only the newest counts (history at start: many)
                    anns = [a for r in records if (a := announce.decode(r.value)) is not None]
                    for a in anns[:-1]:
                        trainer.learner.rejected.update(a.rejected)
                    if anns:
                        trainer.on_announcement(anns[-1])
                    continue
                for r in records:
                    trainer.on_event(r.value)
            trainer.step()
            if time.monotonic() - last_commit > 5.0:
                c.commit_async({tp: OffsetAndMetadata(c.position(tp), "", -1) for tp in events})
                last_commit = time.monotonic()
    finally:
        c.close()

