"""Every Prometheus metric metarec exports, defined in one place.

The registry is injected so tests use a fresh ``CollectorRegistry()``. Base units
(seconds), ``_total`` counters, and no per-user labels: label values come from small,
closed sets (event kind, invalid-event reason, partition, model = init | adapted).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from metarec.events import REASONS

# Latency buckets from 0.5 ms to 10 s.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Metrics:
    """Handles to the worker's metrics; build with :meth:`create`."""

    registry: CollectorRegistry
    events_consumed: Counter
    events_invalid: Counter
    dead_lettered: Counter
    adapt_seconds: Histogram
    adapt_batch_users: Histogram
    score_seconds: Histogram
    export_seconds: Histogram
    event_to_recommendation_seconds: Histogram
    recommendations_emitted: Counter
    active_users: Gauge
    consumer_lag: Gauge
    model_info: Info
    live_auc: Gauge
    live_logloss: Gauge
    live_predictions: Counter
    events_rekeyed: Counter
    events_redelivered: Counter
    delivery_retries: Counter
    agent_restarts: Counter
    batch_errors: Counter
    broker_connected: Gauge
    log_lines_held: Counter
    recovery_remaining: Gauge
    model_swaps: Counter
    model_rollbacks: Counter
    model_age: Gauge
    model_live_logloss: Gauge
    model_live_auc: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None, namespace: str = "metarec") -> Metrics:
        r = registry if registry is not None else CollectorRegistry()
        ns = namespace
        m = cls(
            registry=r,
            events_consumed=Counter(
                "events_consumed", "Valid events consumed, by kind.", ["kind"], namespace=ns, registry=r
            ),
            events_invalid=Counter(
                "events_invalid", "Invalid events, by reason.", ["reason"], namespace=ns, registry=r
            ),
            dead_lettered=Counter(
                "events_dead_lettered", "Events sent to the dead-letter topic.", namespace=ns, registry=r
            ),
            adapt_seconds=Histogram(
                "adapt_seconds", "Time to adapt one batch of users.", namespace=ns, registry=r,
                buckets=_LATENCY,
            ),
            adapt_batch_users=Histogram(
                "adapt_batch_users", "Users adapted together in one batch.", namespace=ns, registry=r,
                buckets=_BATCH,
            ),
            score_seconds=Histogram(
                "score_seconds", "Time to score the catalog for one batch of users (onnxruntime).",
                namespace=ns, registry=r, buckets=_LATENCY,
            ),
            export_seconds=Histogram(
                "export_seconds", "Time to export one user's adapted model to ONNX.",
                namespace=ns, registry=r, buckets=_LATENCY,
            ),
            event_to_recommendation_seconds=Histogram(
                "event_to_recommendation_seconds",
                "From an event's Kafka timestamp to its user's recommendation being sent.",
                namespace=ns, registry=r, buckets=_LATENCY,
            ),
            recommendations_emitted=Counter(
                "recommendations_emitted", "Recommendation messages sent.", namespace=ns, registry=r
            ),
            active_users=Gauge(
                "active_users", "Users with state on this worker.", namespace=ns, registry=r
            ),
            consumer_lag=Gauge(
                "consumer_lag", "Messages behind the end of each assigned events partition.",
                ["topic", "partition"], namespace=ns, registry=r,
            ),
            model_info=Info("model", "The meta-learned model being served.", namespace=ns, registry=r),
            live_auc=Gauge(
                "live_auc", "Rolling AUC of predictions made before learning from each labelled event.",
                ["model"], namespace=ns, registry=r,
            ),
            live_logloss=Gauge(
                "live_logloss", "Rolling logloss of predictions made before learning from each event.",
                ["model"], namespace=ns, registry=r,
            ),
            live_predictions=Counter(
                "live_predictions", "Labelled events predicted before learning from them.",
                ["model"], namespace=ns, registry=r,
            ),
            events_rekeyed=Counter(
                "events_rekeyed", "Valid events that came with no key, re-sent keyed by their user_id.",
                namespace=ns, registry=r,
            ),
            events_redelivered=Counter(
                "events_redelivered", "Valid events seen again (already in the user's state): replays after a crash.",
                namespace=ns, registry=r,
            ),
            delivery_retries=Counter(
                "delivery_retries", "Failed attempts to send a dead letter or a re-keyed event (each retried).",
                ["what"], namespace=ns, registry=r,
            ),
            agent_restarts=Counter(
                "agent_restarts", "Times the consuming agent crashed and its supervisor restarted it.",
                namespace=ns, registry=r,
            ),
            batch_errors=Counter(
                "batch_errors", "Users whose adaptation or scoring failed (their state is kept; no recommendation).",
                namespace=ns, registry=r,
            ),
            broker_connected=Gauge(
                "broker_connected", "1 while the worker reaches the Kafka cluster, 0 while it cannot.",
                namespace=ns, registry=r,
            ),
            log_lines_held=Counter(
                "log_lines_held", "Repeated library log lines held back (see services/adapter/quiet.py).",
                namespace=ns, registry=r,
            ),
            recovery_remaining=Gauge(
                "recovery_remaining", "Changelog records the table recovery has left to read (0: not recovering).",
                namespace=ns, registry=r,
            ),
            model_swaps=Counter(
                "model_swaps", "Switches to an announced model version (hot swap), by result (ok | failed).",
                ["result"], namespace=ns, registry=r,
            ),
            model_rollbacks=Counter(
                "model_rollbacks", "Automatic rollbacks: a new version's live adapted quality fell below the "
                "previous version's.", namespace=ns, registry=r,
            ),
            model_age=Gauge(
                "model_age_seconds", "Seconds since the served model version was created.", namespace=ns, registry=r,
            ),
            model_live_logloss=Gauge(
                "model_live_logloss", "Rolling live logloss of the served and the previous model version, of its "
                "initialization and of the adapted model.", ["version", "role", "model"], namespace=ns, registry=r,
            ),
            model_live_auc=Gauge(
                "model_live_auc", "Rolling live AUC of the served and the previous model version, of its "
                "initialization and of the adapted model.", ["version", "role", "model"], namespace=ns, registry=r,
            ),
        )
        for reason in REASONS:  # every series exists from the start, so rates and ratios are defined
            m.events_invalid.labels(reason)
        for what in ("dead_letter", "rekey"):
            m.delivery_retries.labels(what)
        for result in ("ok", "failed"):
            m.model_swaps.labels(result)
        return m


@dataclass(frozen=True)
class TrainerMetrics:
    """The continual trainer's metrics (``metarec trainer``)."""

    registry: CollectorRegistry
    events_consumed: Counter
    rounds: Counter
    published: Counter
    rejected: Counter
    training_seconds: Histogram
    window_users: Gauge
    window_events: Gauge
    last_published: Gauge
    gate_loss: Gauge
    rollbacks_seen: Counter
    new_items: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None, namespace: str = "metarec") -> TrainerMetrics:
        from metarec.continual_reasons import REJECT_REASONS

        r = registry if registry is not None else CollectorRegistry()
        ns = namespace
        m = cls(
            registry=r,
            events_consumed=Counter("trainer_events_consumed", "Valid events the trainer added to its window.",
                                    namespace=ns, registry=r),
            rounds=Counter("trainer_rounds", "Rounds of continual meta-training run.", namespace=ns, registry=r),
            published=Counter("trainer_versions_published", "Candidates that passed the gate and were announced.",
                              namespace=ns, registry=r),
            rejected=Counter("trainer_candidates_rejected", "Candidates the gate discarded, by reason.",
                             ["reason"], namespace=ns, registry=r),
            training_seconds=Histogram("trainer_training_seconds", "Seconds per round (training and the gate).",
                                       namespace=ns, registry=r,
                                       buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)),
            window_users=Gauge("trainer_window_users", "Users in the window of recent tasks.", namespace=ns,
                               registry=r),
            window_events=Gauge("trainer_window_events", "Events in the window of recent tasks.", namespace=ns,
                                registry=r),
            last_published=Gauge("trainer_last_published_timestamp_seconds",
                                 "When the trainer last announced a version (unix time; 0: not yet).",
                                 namespace=ns, registry=r),
            gate_loss=Gauge("trainer_gate_loss", "The last gate's adapted loss on held-out users (logloss, or MAE).",
                            ["model"], namespace=ns, registry=r),
            rollbacks_seen=Counter("trainer_rollbacks_seen", "Rollbacks announced by workers or by hand.",
                                   namespace=ns, registry=r),
            new_items=Counter("trainer_new_items", "Item ids added to the catalog by published versions.",
                              namespace=ns, registry=r),
        )
        for reason in REJECT_REASONS:
            m.rejected.labels(reason)
        for who in ("current", "candidate"):
            m.gate_loss.labels(who)
        return m
