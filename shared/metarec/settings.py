"""One frozen settings object per service, read from ``METAREC_*`` environment variables.

Every process that talks to Kafka takes the broker address from ``METAREC_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from metarec import kafka_security
from metarec.deadletter import MAX_RAW_LIMIT, RAW_LIMIT
from metarec.events import Limits


class KafkaSettings(BaseSettings):
    """Broker connection and topic names, shared by the worker, replay and tail."""

    model_config = SettingsConfigDict(env_prefix="METAREC_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"  # host:port[,host:port...]
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None  # SASL_*: the principal is User:<username>
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = None  # SSL, SASL_SSL: CA bundle (PEM) to verify brokers; None: system CAs
    kafka_ssl_certfile: FilePath | None = None  # client certificate (PEM), for brokers that ask for one
    kafka_ssl_keyfile: FilePath | None = None  # its private key (PEM); None: inside the certfile
    kafka_ssl_key_password: SecretStr | None = None  # if that key is encrypted
    kafka_ssl_check_hostname: bool = True  # the broker's certificate must name the host we dialled
    topic_events: str = "metarec.events"  # keyed by user_id
    topic_recommendations: str = "metarec.recommendations"  # keyed by user_id, JSON
    topic_dead_letter: str = "metarec.dead-letter"  # invalid events with the reason and raw bytes
    topic_models: str = "metarec.models"  # compacted: the serving model's announcements (metarec.announce)
    partitions: int = Field(default=4, ge=1)  # partitions of the events topic; workers scale up to this
    replication_factor: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaSettings:
        kafka_security.check(self)
        return self

    def kafka_python_config(self) -> dict[str, object]:
        """Connection options in kafka-python's spelling (TLS and SASL from :mod:`metarec.kafka_security`)."""
        return {"bootstrap_servers": self.kafka_bootstrap.split(","), **kafka_security.kafka_python_auth(self)}


class WorkerSettings(KafkaSettings):
    """The adapter worker (``metarec worker``, ``services/adapter``)."""

    app_id: str = "metarec-adapter"  # consumer group and changelog prefix
    model_dir: Path = Path("models/latest")  # a versioned directory written by `metarec train`
    store: str = "memory://"  # faust table store; the changelog topic makes it durable
    data_dir: Path = Path(".state/worker")  # faust's local data directory
    web_host: str = "0.0.0.0"
    web_port: int = Field(default=6066, ge=1, le=65535)  # /metrics and /users/{id}/recommendations
    top_k: int = Field(default=10, ge=1)
    domains: str = ""  # comma-separated catalog domains to recommend for ("": every domain in the catalog)
    buffer_size: int = Field(default=64, ge=1)  # recent events kept per user (the support set)
    consumed_size: int = Field(default=512, ge=0)  # consumed items remembered per user, excluded from top-K
    inner_steps: int | None = Field(default=None, ge=0)  # override the model's meta-learned inner steps
    inner_lr: float | None = Field(default=None, gt=0)  # override the model's inner learning rate
    producer_linger_ms: float = Field(default=5.0, ge=0)  # batch changelog and output writes this long
    fetch_min_bytes: int = Field(default=65536, ge=1)  # a fetch returns once this much is there, or at
    fetch_max_wait_ms: int = Field(default=10, ge=0, le=1500)  # most this late (fewer, larger batches)
    torch_threads: int = Field(default=1, ge=1)  # intra-op threads for adaptation (1 is fastest per core)
    compute: Literal["process", "thread"] = "process"  # adapt + score in a child process, or a thread here
    batch_max_users: int = Field(default=256, ge=1)  # adapt at most this many users in one call
    linger_ms: float = Field(default=20.0, ge=0)  # wait this long to coalesce a user's events
    quality_window: int = Field(default=2000, ge=10)  # labelled events in the rolling live AUC/logloss
    # what an event may be (metarec.events.Limits; README "Messages"); the rest is dead-lettered
    max_event_bytes: int = Field(default=8192, ge=64, le=1 << 20)  # the whole message
    max_id_chars: int = Field(default=128, ge=1)  # event_id, user_id, item_id
    max_context_fields: int = Field(default=16, ge=0)
    max_context_chars: int = Field(default=128, ge=1)  # each context key and value
    max_rating: float = Field(default=10.0, gt=0)  # a rate event's value is within 0..max_rating
    max_future_s: float = Field(default=86_400.0, ge=0)  # how far ahead of this clock an event's ts may be
    ms_timestamps: Literal["reject", "convert"] = "reject"  # ts >= 1e11 is milliseconds: refuse, or divide
    dead_letter_raw_bytes: int = Field(default=RAW_LIMIT, ge=0, le=MAX_RAW_LIMIT)  # raw bytes kept per DLQ record
    latest_cache: int = Field(default=10000, ge=0)  # last recommendations kept for GET /users/{id}/...
    state_cache: int = Field(default=10000, ge=0)  # decoded user states kept beside their stored bytes
    group_instance_id: str | None = None  # static group membership (Kubernetes: the pod name)
    session_timeout_s: float = Field(default=10.0, ge=6.0, le=300.0)  # a silent member is dropped after this
    commit_interval_s: float = Field(default=1.0, gt=0.0, le=60.0)  # offsets (and the changelog) this often
    recovery_stall_s: float = Field(default=20.0, ge=0.0)  # a table recovery without progress this long: restart
    leave_group_on_shutdown: bool = True  # a static member leaves at SIGTERM, so its partitions move at once
    follow_models: bool = True  # switch to each version announced on topic_models (hot swap), between batches
    rollback_margin: float = Field(default=0.02, ge=0.0)  # adapted logloss worse than the previous version's by this
    rollback_window: int = Field(default=500, ge=10)  # over this many live predictions: roll back
    log_level: str = "info"

    def served_domains(self) -> list[str]:
        """``domains`` as a list (empty: the catalog's)."""
        return [d.strip() for d in self.domains.split(",") if d.strip()]

    def limits(self) -> Limits:
        """The event limits these settings set."""
        return Limits(max_event_bytes=self.max_event_bytes, max_id_chars=self.max_id_chars,
                      max_context_fields=self.max_context_fields, max_context_chars=self.max_context_chars,
                      max_rating=self.max_rating, max_future_s=self.max_future_s, ms_timestamps=self.ms_timestamps)


class TrainerSettings(KafkaSettings):
    """The continual meta-learning trainer (``metarec trainer``, ``services/trainer``)."""

    trainer_group: str = "metarec-trainer"  # its own consumer group on the events topic
    models_root: Path = Path("models")  # versions are written here (shared with the workers)
    trainer_web_port: int = Field(default=6067, ge=0, le=65535)  # /metrics (0: none)
    trainer_web_host: str = "0.0.0.0"
    window_users: int = Field(default=5000, ge=2)  # recent users kept (least recently active leave first)
    window_user_events: int = Field(default=128, ge=2)  # newest events kept per user
    window_horizon_s: float = Field(default=7 * 86_400.0, gt=0)  # users silent for longer (event time) leave
    round_every_events: int = Field(default=20_000, ge=1)  # a round after this many new events ...
    round_every_s: float = Field(default=600.0, gt=0)  # ... or this many seconds (whichever comes first)
    min_window_users: int = Field(default=50, ge=4)  # no round with fewer users in the window
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)  # newest slice of the window's events: the gate
    round_steps: int = Field(default=300, ge=1)  # outer steps per round at most
    round_budget_s: float = Field(default=60.0, gt=0)  # seconds of meta-training per round at most
    outer_lr: float = Field(default=1e-3, gt=0)  # warm-started: smaller than training from scratch
    gate_min_gain: float = Field(default=0.0, ge=0.0)  # the candidate's adapted loss must be lower by this
    torch_threads: int = Field(default=1, ge=1)
    seed: int = 0
    log_level: str = "info"
