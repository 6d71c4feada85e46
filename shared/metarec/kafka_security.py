"""TLS and SASL for every Kafka client, from :class:`metarec.settings.KafkaSettings`.

One definition for both libraries: :func:`ssl_context` builds the one TLS context that
kafka-python (the command line: :func:`kafka_python_auth`) and faust/aiokafka (the worker:
:func:`faust_credentials`) are given, so the CA, the client certificate and hostname
verification cannot differ between them. :func:`check` runs when the settings are read and
turns an inconsistent combination into one readable error that names the variables.

The password only leaves its ``SecretStr`` here, into the client libraries' options.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarec.settings import KafkaSettings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def check(s: KafkaSettings) -> None:
    """Raise ``ValueError`` naming the ``METAREC_*`` variables when the security settings do not fit."""
    proto = s.kafka_security_protocol
    if proto in SASL_PROTOCOLS:
        missing = [name for name, v in (("METAREC_KAFKA_SASL_USERNAME", s.kafka_sasl_username),
                                        ("METAREC_KAFKA_SASL_PASSWORD", s.kafka_sasl_password)) if not v]
        if missing:
            raise ValueError(f"METAREC_KAFKA_SECURITY_PROTOCOL={proto} needs {' and '.join(missing)}")
    elif s.kafka_sasl_username or s.kafka_sasl_password:
        raise ValueError(f"METAREC_KAFKA_SASL_USERNAME/_PASSWORD are set but METAREC_KAFKA_SECURITY_PROTOCOL={proto} "
                         "sends no credentials (use SASL_SSL)")
    tls_files = [n for n, v in (("METAREC_KAFKA_SSL_CAFILE", s.kafka_ssl_cafile),
                                ("METAREC_KAFKA_SSL_CERTFILE", s.kafka_ssl_certfile),
                                ("METAREC_KAFKA_SSL_KEYFILE", s.kafka_ssl_keyfile)) if v]
    if proto not in TLS_PROTOCOLS:
        if tls_files:
            raise ValueError(f"{', '.join(tls_files)} set but METAREC_KAFKA_SECURITY_PROTOCOL={proto} uses no TLS "
                             "(use SSL or SASL_SSL)")
        return
    if s.kafka_ssl_keyfile and not s.kafka_ssl_certfile:
        raise ValueError("METAREC_KAFKA_SSL_KEYFILE is set without METAREC_KAFKA_SSL_CERTFILE")
    ssl_context(s)  # unreadable or mismatched PEM files fail now, not at the first connection


def ssl_context(s: KafkaSettings) -> ssl.SSLContext | None:
    """The client TLS context (None without TLS): verifies the broker's chain against
    ``kafka_ssl_cafile`` (or the system CAs) and, unless turned off, its host name; presents the
    client certificate when one is set."""
    if s.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    ca = s.kafka_ssl_cafile
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    except ssl.SSLError as exc:
        raise ValueError(f"METAREC_KAFKA_SSL_CAFILE={ca}: not a PEM CA bundle ({exc.reason or exc})") from None
    ctx.check_hostname = s.kafka_ssl_check_hostname  # the chain is verified either way (CERT_REQUIRED)
    if s.kafka_ssl_certfile:
        keypw = s.kafka_ssl_key_password
        try:
            # an empty password, not None: an encrypted key without one must fail, not prompt on a terminal
            ctx.load_cert_chain(str(s.kafka_ssl_certfile), str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None,
                                password=keypw.get_secret_value() if keypw else "")
        except ssl.SSLError as exc:
            raise ValueError(f"METAREC_KAFKA_SSL_CERTFILE={s.kafka_ssl_certfile}, METAREC_KAFKA_SSL_KEYFILE="
                             f"{s.kafka_ssl_keyfile}: not a usable certificate and key "
                             f"({exc.reason or exc}; an encrypted key needs METAREC_KAFKA_SSL_KEY_PASSWORD)") from None
    return ctx


def _password(s: KafkaSettings) -> str:
    return s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else ""


def principal(s: KafkaSettings) -> str:
    """Who the broker will see these settings as, for error messages."""
    if s.kafka_security_protocol in SASL_PROTOCOLS:
        return f"User:{s.kafka_sasl_username}"
    if s.kafka_ssl_certfile:
        return f"the subject of {s.kafka_ssl_certfile}"
    return "User:ANONYMOUS"


def kafka_python_auth(s: KafkaSettings) -> dict[str, Any]:
    """kafka-python's security options (``security_protocol``, ``ssl_context``, ``sasl_*``)."""
    cfg: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    ctx = ssl_context(s)
    if ctx is not None:
        cfg["ssl_context"] = ctx
    if s.kafka_security_protocol in SASL_PROTOCOLS:
        cfg.update(sasl_mechanism=s.kafka_sasl_mechanism, sasl_plain_username=s.kafka_sasl_username,
                   sasl_plain_password=_password(s))
    return cfg


def faust_credentials(s: KafkaSettings) -> Any:
    """faust's ``broker_credentials`` (None for PLAINTEXT); faust hands them to aiokafka as
    ``security_protocol``, ``ssl_context`` and ``sasl_*``, for its consumer, producer and admin."""
    import faust

    proto, ctx = s.kafka_security_protocol, ssl_context(s)
    if proto == "PLAINTEXT":
        return None
    if proto == "SSL":
        return faust.SSLCredentials(ctx)
    # SASLCredentials is SASL_SSL exactly when it has a context, SASL_PLAINTEXT otherwise
    return faust.SASLCredentials(username=s.kafka_sasl_username, password=_password(s),
                                 mechanism=s.kafka_sasl_mechanism, ssl_context=ctx)
