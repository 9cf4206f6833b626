"""KafkaSecurity: the TLS and SASL settings of every Kafka client, read from the environment once.

Every Kafka client spendsentry creates (worker, notifier, ThrottleGuard,
UsageReporter, the CLI) takes its security settings from here, so one set of
variables configures them all. A component reads them once, when it is built
(``KafkaSecurity.from_env()``, or a settings object handed to it), and passes
the frozen object on; each new client gets ``settings.client_kwargs()``.
Secrets come only from the environment or from files named in it, and never
appear in ``repr`` or logs.

=====================================  ==============================================
variable                               meaning
=====================================  ==============================================
``SPENDSENTRY_KAFKA_SECURITY_PROTOCOL``  PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
``SPENDSENTRY_KAFKA_SASL_MECHANISM``     PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
``SPENDSENTRY_KAFKA_SASL_USERNAME``      SASL user name
``SPENDSENTRY_KAFKA_SASL_PASSWORD``      SASL password (or ``..._PASSWORD_FILE``)
``SPENDSENTRY_KAFKA_SSL_CAFILE``         CA bundle to verify the brokers
``SPENDSENTRY_KAFKA_SSL_CERTFILE``       client certificate (mutual TLS)
``SPENDSENTRY_KAFKA_SSL_KEYFILE``        client key (mutual TLS)
=====================================  ==============================================

>>> s = KafkaSecurity.from_env({"SPENDSENTRY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
...                             "SPENDSENTRY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
...                             "SPENDSENTRY_KAFKA_SASL_USERNAME": "svc",
...                             "SPENDSENTRY_KAFKA_SASL_PASSWORD": "hunter2"})
>>> kw = s.client_kwargs()
>>> kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"]
('SASL_PLAINTEXT', 'SCRAM-SHA-512', 'svc')
>>> "hunter2" in repr(s)
False
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spendsentry.errors import ConfigError

__all__ = ["MECHANISMS", "PREFIX", "PROTOCOLS", "KafkaSecurity", "client_kwargs", "resolve"]

PREFIX = "SPENDSENTRY_KAFKA_"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SASL settings for aiokafka clients."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Read the settings; a wrong value raises ConfigError naming the variable."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value.strip() if value and value.strip() else None

        protocol = (get("SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"{PREFIX}SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
        mechanism = get("SASL_MECHANISM")
        password = get("SASL_PASSWORD")
        password_file = get("SASL_PASSWORD_FILE")
        if password_file:
            try:
                password = Path(password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{PREFIX}SASL_PASSWORD_FILE: cannot read {password_file}: {exc.strerror}"
                ) from None
        if protocol.startswith("SASL"):
            mechanism = (mechanism or "PLAIN").upper()
            if mechanism not in MECHANISMS:
                raise ConfigError(
                    f"{PREFIX}SASL_MECHANISM={mechanism!r} is not one of {', '.join(MECHANISMS)}"
                )
            if not get("SASL_USERNAME") or not password:
                raise ConfigError(
                    f"{protocol} needs {PREFIX}SASL_USERNAME and {PREFIX}SASL_PASSWORD "
                    f"(or {PREFIX}SASL_PASSWORD_FILE)"
                )
        for name in ("SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE"):
            path = get(name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{PREFIX}{name}: no such file: {path}")
        return cls(
            protocol=protocol,
            sasl_mechanism=mechanism if protocol.startswith("SASL") else None,
            sasl_username=get("SASL_USERNAME"),
            sasl_password=password,
            ssl_cafile=get("SSL_CAFILE"),
            ssl_certfile=get("SSL_CERTFILE"),
            ssl_keyfile=get("SSL_KEYFILE"),
        )

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (system CAs unless a CA file is given), or None."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaConsumer / Producer / AdminClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs


def client_kwargs(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The security keyword arguments for a new aiokafka client, from the environment.

    Reads the environment on every call: code that makes several clients should
    build one :class:`KafkaSecurity` and call its ``client_kwargs()`` instead.
    """
    return KafkaSecurity.from_env(env).client_kwargs()


def resolve(security: KafkaSecurity | None) -> KafkaSecurity:
    """``security``, or the settings in the environment now when it is None.

    What a component calls once in its constructor, so that a caller may hand
    it the settings it already read and everyone else gets the environment's.

    >>> resolve(KafkaSecurity("SSL")).protocol
    'SSL'
    """
    return KafkaSecurity.from_env() if security is None else security
