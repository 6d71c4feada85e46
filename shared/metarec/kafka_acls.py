"""The worker's rights on a secured cluster, as Kafka ACLs (``metarec acls``).

On a broker with an authorizer and ``allow.everyone.if.no.acl.found=false`` a principal may do
nothing it is not granted. The worker needs exactly (``A`` = ``METAREC_APP_ID``):

- READ the events topic (its source; READ includes DESCRIBE), and WRITE it: an event without a
  key is sent back to it keyed by its ``user_id`` (README "Messages");
- WRITE the recommendations and dead-letter topics;
- READ, WRITE, CREATE, DESCRIBE on topics whose names start with ``A-``: faust creates, reads and
  writes its own there (the table changelog ``A-users-changelog`` and the partition assignor's
  ``A-__assignor-__leader``; a prefix, so that a new table needs no new grant);
- READ the consumer group ``A`` (join, fetch and commit offsets);
- READ the models topic (it follows the served version, :mod:`metarec.announce`) and WRITE it (a
  worker that rolls a version back announces it).

Nothing on the cluster: the topics the worker reads and writes exist before it starts
(``metarec topics``, as an admin), and Kafka since 3.0 lets an idempotent producer write with
WRITE on a topic alone (KIP-679), so IDEMPOTENT_WRITE is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from metarec.settings import KafkaSettings, WorkerSettings


@dataclass(frozen=True)
class Grant:
    """One ALLOW ACL: ``principal`` may do ``operation`` on the ``resource`` called (or prefixed) ``name``."""

    principal: str  # User:<name>
    operation: Literal["READ", "WRITE", "CREATE", "DESCRIBE"]
    resource: Literal["TOPIC", "GROUP"]
    name: str
    pattern: Literal["LITERAL", "PREFIXED"] = "LITERAL"

    def __str__(self) -> str:
        return f"{self.principal} may {self.operation} {self.resource.lower()} {self.name}" + (
            "* (prefix)" if self.pattern == "PREFIXED" else "")


def worker_grants(settings: WorkerSettings, principal: str) -> list[Grant]:
    """The ACLs the worker (``METAREC_APP_ID`` and topics from ``settings``) needs, no more."""
    prefix = f"{settings.app_id}-"
    return [
        Grant(principal, "READ", "TOPIC", settings.topic_events),
        Grant(principal, "WRITE", "TOPIC", settings.topic_events),  # keyless events, re-keyed
        Grant(principal, "WRITE", "TOPIC", settings.topic_recommendations),
        Grant(principal, "WRITE", "TOPIC", settings.topic_dead_letter),
        *(Grant(principal, op, "TOPIC", prefix, "PREFIXED") for op in ("READ", "WRITE", "CREATE", "DESCRIBE")),
        Grant(principal, "READ", "GROUP", settings.app_id),
        Grant(principal, "READ", "TOPIC", settings.topic_models),
        Grant(principal, "WRITE", "TOPIC", settings.topic_models),
    ]


def trainer_grants(settings: KafkaSettings, principal: str, group: str = "metarec-trainer") -> list[Grant]:
    """The continual trainer's ACLs: READ the events topic and its group ``group`` (offsets only),
    READ and WRITE the models topic (it announces versions and follows rollbacks)."""
    return [
        Grant(principal, "READ", "TOPIC", settings.topic_events),
        Grant(principal, "READ", "GROUP", group),
        Grant(principal, "READ", "TOPIC", settings.topic_models),
        Grant(principal, "WRITE", "TOPIC", settings.topic_models),
    ]


def _acl(g: Grant) -> Any:
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    return ACL(principal=g.principal, host="*", operation=ACLOperation[g.operation],
               permission_type=ACLPermissionType.ALLOW,
               resource_pattern=ResourcePattern(ResourceType[g.resource], g.name, ACLResourcePatternType[g.pattern]))


def grant(settings: KafkaSettings, grants: list[Grant]) -> None:
    """Create ``grants`` on the cluster, connected with ``settings`` (an admin's credentials).
    Granting what exists already is a no-op."""
    from metarec.errors import BrokerError
    from metarec.kafka_io import admin_client, refused_as_broker_error

    admin = admin_client(settings, "metarec-acls")
    try:
        with refused_as_broker_error(settings):
            result = admin.create_acls([_acl(g) for g in grants])
    finally:
        admin.close()
    if result["failed"]:
        raise BrokerError(f"Kafka at {settings.kafka_bootstrap} refused to create ACLs: {result['failed'][0]}")


def granted(settings: KafkaSettings, principal: str) -> set[Grant]:
    """Every ALLOW ACL ``principal`` holds on the cluster (to check that it holds no more)."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    from metarec.kafka_io import admin_client, refused_as_broker_error

    admin = admin_client(settings, "metarec-acls")
    try:
        with refused_as_broker_error(settings):
            acls, _ = admin.describe_acls(ACLFilter(
                principal=principal, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
    finally:
        admin.close()
    return {Grant(a.principal, a.operation.name, (r := a.resource_pattern).resource_type.name, r.resource_name,
                  r.pattern_type.name) for a in acls if a.permission_type == ACLPermissionType.ALLOW}
