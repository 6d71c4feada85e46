"""The worker and every command that talks to Kafka, over SASL_SSL with hostname verification,
against a broker that refuses whatever no ACL allows (see conftest)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metarec.data import write_jsonl
from metarec.events import Event, encode
from metarec.kafka_acls import granted, worker_grants
from metarec.kafka_io import producer, read_recommendations
from metarec.kafka_security import ssl_context
from metarec.settings import KafkaSettings, WorkerSettings
from tests.broker.conftest import WorkerProcess, free_port
from tests.conftest import ROOT
from tests.security.conftest import SecureKafka

pytestmark = pytest.mark.security

N_USERS = 20


@dataclass
class Deployment:
    kafka: SecureKafka
    names: dict[str, str]  # METAREC_TOPIC_* and METAREC_APP_ID of this module
    worker: WorkerProcess
    events: Path  # one event for each of N_USERS users
    users: set[str]
    topics_out: str  # what `metarec topics` printed

    def env(self, user: str, password: str | None = None) -> dict[str, str]:
        return self.kafka.env(user, password, **self.names)


@pytest.fixture(scope="module")
def deployment(secure_kafka: SecureKafka, model_dir: Path, sim_events: list,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Topics made by the admin, the worker's ACLs granted, the worker running as ``metarec``."""
    tag = uuid.uuid4().hex[:10]
    names = {"METAREC_TOPIC_EVENTS": f"s-{tag}-events", "METAREC_TOPIC_RECOMMENDATIONS": f"s-{tag}-recs",
             "METAREC_TOPIC_DEAD_LETTER": f"s-{tag}-dlq", "METAREC_TOPIC_MODELS": f"s-{tag}-models",
             "METAREC_APP_ID": f"s-{tag}-adapter"}
    admin = secure_kafka.env("admin", **names)
    topics = secure_kafka.cli(admin, "topics")
    assert topics.returncode == 0, topics.stderr
    acls = secure_kafka.cli(admin, "acls", "--principal", "User:metarec")
    assert acls.returncode == 0, acls.stderr

    first: dict[str, object] = {}
    for e in sim_events:
        first.setdefault(e.user_id, e)
    chosen = list(first.values())[:N_USERS]
    tmp = tmp_path_factory.mktemp("secure")
    write_jsonl(chosen, tmp / "events.jsonl")

    worker = WorkerProcess({**secure_kafka.env("metarec", **names), "METAREC_MODEL_DIR": str(model_dir),
                            "METAREC_DATA_DIR": str(tmp / "faust"), "METAREC_WEB_PORT": str(free_port()),
                            "METAREC_WEB_HOST": "127.0.0.1", "METAREC_LINGER_MS": "10"}, tmp / "worker.log")
    worker.start()
    try:
        yield Deployment(secure_kafka, names, worker, tmp / "events.jsonl", {e.user_id for e in chosen},
                         topics.stdout)
    finally:
        worker.stop()


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_the_clients_verify_the_broker_and_its_host_name(secure_kafka: SecureKafka) -> None:
    ctx = ssl_context(KafkaSettings(kafka_bootstrap=secure_kafka.bootstrap, kafka_security_protocol="SASL_SSL",
                                    kafka_sasl_username="u", kafka_sasl_password="p",
                                    kafka_ssl_cafile=secure_kafka.cafile))
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED


def test_topics_over_sasl_ssl(deployment: Deployment) -> None:
    names = deployment.names
    for t in ("METAREC_TOPIC_EVENTS", "METAREC_TOPIC_RECOMMENDATIONS", "METAREC_TOPIC_DEAD_LETTER"):
        assert names[t] in deployment.topics_out
    again = deployment.kafka.cli(deployment.env("admin"), "topics")
    assert again.returncode == 0 and "nothing (all exist)" in again.stdout, again.stderr


def test_the_worker_consumes_and_recommends_over_sasl_ssl(deployment: Deployment) -> None:
    k = deployment.kafka
    sent = k.cli(deployment.env("admin"), "replay", "--events", str(deployment.events), "--rate", "0")
    assert sent.returncode == 0 and f"sent {N_USERS} events" in sent.stdout, sent.stderr
    tail = k.cli(deployment.env("admin"), "tail", "--from-beginning", "--raw", "--limit", str(N_USERS),
                 "--timeout", "90")
    assert tail.returncode == 0, tail.stderr
    recs = [json.loads(line) for line in tail.stdout.splitlines()]
    assert {r["user_id"] for r in recs} == deployment.users, deployment.worker.tail()
    assert all(len(r["items"]) == 10 for r in recs)
    assert "metarec_recommendations_emitted_total" in deployment.worker.metrics()


def test_a_keyless_event_is_re_keyed_over_sasl_ssl(deployment: Deployment, sim_events: list) -> None:
    """The worker sends it back to the events topic keyed by its user (its WRITE on that topic)."""
    admin = settings_of(deployment.env("admin"))
    user = f"keyless-{uuid.uuid4().hex[:6]}"
    e = sim_events[0]
    ev = Event(event_id=uuid.uuid4().hex, user_id=user, item_id=e.item_id, kind=e.kind, value=e.value, ts=e.ts,
               context=e.context)
    prod = producer(admin)
    prod.send(admin.topic_events, key=None, value=encode(ev)).get(timeout=30)
    prod.close()
    for rec in read_recommendations(admin, from_beginning=True, timeout_s=60):
        if rec["user_id"] == user:
            break
    else:
        raise AssertionError(f"no recommendation for the keyless user:\n{deployment.worker.tail()}")


def settings_of(env: dict[str, str]) -> KafkaSettings:
    """The KafkaSettings a process with ``env`` would read."""
    return KafkaSettings(**{k.removeprefix("METAREC_").lower(): v for k, v in env.items()
                            if k.startswith(("METAREC_KAFKA_", "METAREC_TOPIC_"))})


def test_the_worker_holds_exactly_its_acls(deployment: Deployment) -> None:
    admin = settings_of(deployment.env("admin"))
    worker = WorkerSettings(app_id=deployment.names["METAREC_APP_ID"],
                            topic_events=deployment.names["METAREC_TOPIC_EVENTS"],
                            topic_recommendations=deployment.names["METAREC_TOPIC_RECOMMENDATIONS"],
                            topic_dead_letter=deployment.names["METAREC_TOPIC_DEAD_LETTER"],
                            topic_models=deployment.names["METAREC_TOPIC_MODELS"])
    tag = deployment.names["METAREC_APP_ID"].split("-")[1]
    held = granted(admin, "User:metarec")
    assert {g for g in held if tag in g.name} == set(worker_grants(worker, "User:metarec"))
    assert {g.resource for g in held} <= {"TOPIC", "GROUP"}  # nothing on the cluster


@pytest.mark.parametrize("user", ["metarec", "outsider"])
def test_a_principal_without_the_acl_cannot_read_recommendations(deployment: Deployment, user: str) -> None:
    out = deployment.kafka.cli(deployment.env(user), "tail", "--from-beginning", "--timeout", "20")
    line = one_line_error(out)
    assert deployment.names["METAREC_TOPIC_RECOMMENDATIONS"] in line
    if user == "metarec":  # may WRITE it, so it sees the topic, but not READ it
        assert "refused User:metarec" in line and "TOPIC_AUTHORIZATION_FAILED" in line
    else:  # may not even DESCRIBE it
        assert "shows User:outsider no topic" in line


def test_an_outsider_can_neither_create_topics_nor_write_events(deployment: Deployment) -> None:
    k = deployment.kafka
    for args in (("topics",), ("replay", "--events", str(deployment.events), "--rate", "0")):
        line = one_line_error(k.cli(deployment.env("outsider"), *args))
        assert "refused User:outsider" in line and "AUTHORIZATION_FAILED" in line, line


def at_once(k: SecureKafka, runs: list[tuple[dict[str, str], tuple[str, ...]]]
            ) -> list[subprocess.CompletedProcess[str]]:
    """Run ``python -m metarec ARGS`` for each (env, args) side by side: a failed connection
    takes kafka-python's whole bootstrap timeout (10 s)."""
    procs = [subprocess.Popen([sys.executable, "-m", "metarec", *args], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for env, args in runs]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        k.outputs += [stdout, stderr]
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


def test_a_wrong_password_or_an_unknown_ca_is_one_clear_line_and_status_2(deployment: Deployment,
                                                                          tmp_path: Path) -> None:
    """Every command that talks to Kafka with a wrong password; one with a CA that did not sign the broker."""
    k, wrong = deployment.kafka, "not-the-password-" + uuid.uuid4().hex
    commands = [("topics",), ("replay", "--events", str(deployment.events)), ("tail", "--timeout", "5"),
                ("acls", "--principal", "User:metarec"),
                ("worker", "--model-dir", deployment.worker.env["METAREC_MODEL_DIR"])]
    env = {**deployment.env("metarec", wrong), "METAREC_DATA_DIR": str(tmp_path / "faust"),
           "METAREC_WEB_PORT": str(free_port())}
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-noenc", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other)], check=True, capture_output=True)
    unknown_ca = {**deployment.env("admin"), "METAREC_KAFKA_SSL_CAFILE": str(other)}
    *refused, untrusted = at_once(k, [(env, c) for c in commands] + [(unknown_ca, ("topics",))])
    for cmd, out in zip(commands, refused, strict=True):
        line = one_line_error(out)
        # kafka-python drops the broker's answer on most attempts (see metarec.kafka_io._Seen), so the
        # line says "refused the credentials" or "hung up ... most likely it refused the credentials"
        assert "User:metarec" in line and "the credentials" in line and "METAREC_KAFKA_SASL_PASSWORD" in line, \
            (cmd, line)
        assert wrong not in out.stdout + out.stderr
    line = one_line_error(untrusted)
    assert "TLS with Kafka at" in line and "certificate verify failed" in line


def test_a_sasl_ssl_setting_without_a_user_is_one_clear_line(deployment: Deployment) -> None:
    env = deployment.env("admin")
    del env["METAREC_KAFKA_SASL_USERNAME"]
    line = one_line_error(deployment.kafka.cli(env, "topics"))
    assert "SASL_SSL needs METAREC_KAFKA_SASL_USERNAME" in line


def test_no_secret_in_logs_metrics_or_output(deployment: Deployment) -> None:
    """Last: every command above has run, and the worker has logged its start and its work."""
    k = deployment.kafka
    texts = {"worker log": deployment.worker.log_path.read_text(errors="replace"),
             "worker /metrics": deployment.worker.metrics(),
             "CLI output": "\n".join(k.outputs),
             "broker logs": "\n".join(p.read_text(errors="replace") for p in (k.state / "logs").glob("*.log"))}
    assert texts["worker log"] and texts["CLI output"]
    for where, text in texts.items():
        for secret in k.secrets():
            assert secret not in text, f"a password appears in the {where}"
