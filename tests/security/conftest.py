"""A second, secured broker for the session: SASL_SSL (SCRAM-SHA-512) with a CA and a broker
certificate made at start, KRaft's StandardAuthorizer and no access without an ACL.

It is the project's own (``METAREC_KAFKA_SECURE=1 deploy/kafka/kafka.sh up``), on its own port
(``METAREC_TEST_SECURE_KAFKA_PORT``, default 19094) and state folder, always started by the
suite (``METAREC_KAFKA_BOOTSTRAP`` names the plain broker only). Users: ``admin`` (a super user),
``metarec`` (the worker's principal) and ``outsider`` (holds no ACL).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, project_kafka

SECURE_KAFKA_PORT = os.environ.get("METAREC_TEST_SECURE_KAFKA_PORT", "19094")
USERS = ("admin", "metarec", "outsider")


@dataclass
class SecureKafka:
    bootstrap: str
    state: Path
    outputs: list[str] = field(default_factory=list)  # every CLI stdout and stderr, checked for secrets

    @property
    def cafile(self) -> Path:
        return self.state / "tls" / "ca.pem"

    def password(self, user: str) -> str:
        return (self.state / "secrets" / f"{user}.password").read_text().strip()

    def secrets(self) -> list[str]:
        return [self.password(u) for u in USERS]

    def env(self, user: str, password: str | None = None, **more: str) -> dict[str, str]:
        """A client's environment: SASL_SSL as ``user``, verifying the broker against the test CA."""
        return {**os.environ, "METAREC_KAFKA_BOOTSTRAP": self.bootstrap, "METAREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "METAREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "METAREC_KAFKA_SSL_CAFILE": str(self.cafile),
                "METAREC_KAFKA_SASL_USERNAME": user,
                "METAREC_KAFKA_SASL_PASSWORD": self.password(user) if password is None else password, **more}

    def cli(self, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``python -m metarec ARGS``; its output is kept for the secrets check."""
        out = subprocess.run([sys.executable, "-m", "metarec", *args], env=env, capture_output=True, text=True,
                             timeout=timeout, cwd=ROOT)
        self.outputs += [out.stdout, out.stderr]
        return out


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureKafka]:
    state = ROOT / ".state" / "kafka-secure-test"
    with project_kafka(SECURE_KAFKA_PORT, state, fresh=True, METAREC_KAFKA_SECURE="1",
                       METAREC_KAFKA_USERS=" ".join(u for u in USERS if u != "admin")) as bootstrap:
        yield SecureKafka(bootstrap, state)
