"""Kafka security settings: one TLS context for kafka-python and faust, and clear errors for
settings that do not fit together (no broker here; tests/security runs them against one)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from pydantic import ValidationError

from metarec.kafka_security import faust_credentials, kafka_python_auth
from metarec.settings import KafkaSettings


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate with its key (serves as CA and as client certificate)."""
    d = tmp_path_factory.mktemp("pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-noenc", "-days", "1", "-subj", "/CN=t",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-noenc", "-days", "1", "-subj", "/CN=o",
                    "-keyout", str(d / "other-key.pem"), "-out", str(d / "other.pem")], check=True,
                   capture_output=True)
    return {"cert": d / "cert.pem", "key": d / "key.pem", "other_key": d / "other-key.pem"}


def test_plaintext_has_no_tls_and_no_credentials() -> None:
    s = KafkaSettings()
    assert kafka_python_auth(s) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(s) is None


def test_sasl_ssl_gives_both_libraries_the_same_verifying_context(pem: dict[str, Path]) -> None:
    s = KafkaSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="metarec",
                      kafka_sasl_password="s3cret", kafka_ssl_cafile=pem["cert"], kafka_ssl_certfile=pem["cert"],
                      kafka_ssl_keyfile=pem["key"])
    cfg = kafka_python_auth(s)
    assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_plain_username"] == "metarec" and cfg["sasl_plain_password"] == "s3cret"
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol.value == "SASL_SSL"
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.password == "s3cret"
    for ctx in (cfg["ssl_context"], creds.ssl_context):
        assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
        assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "t"),),)]
    assert "s3cret" not in repr(s) + repr(creds)


def test_ssl_alone_is_faust_ssl_credentials(pem: dict[str, Path]) -> None:
    s = KafkaSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=pem["cert"], kafka_ssl_check_hostname=False)
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials) and not creds.context.check_hostname
    assert "sasl_plain_username" not in kafka_python_auth(s)


@pytest.mark.parametrize("given, message", [
    ({"kafka_security_protocol": "SASL_SSL"}, "SASL_SSL needs METAREC_KAFKA_SASL_USERNAME and "
                                              "METAREC_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "needs METAREC_KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "PLAINTEXT sends no credentials"),
    ({"kafka_ssl_cafile": "CERT"}, "METAREC_KAFKA_SSL_CAFILE set but METAREC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "KEY"}, "KEYFILE is set without"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "CERT", "kafka_ssl_keyfile": "OTHER_KEY"},
     "not a usable certificate and key"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "KEY"}, "not a PEM CA bundle"),
])
def test_settings_that_do_not_fit_are_one_clear_error(pem: dict[str, Path], given: dict[str, str],
                                                      message: str) -> None:
    files = {"CERT": pem["cert"], "KEY": pem["key"], "OTHER_KEY": pem["other_key"]}
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**{k: files.get(v, v) for k, v in given.items()})
