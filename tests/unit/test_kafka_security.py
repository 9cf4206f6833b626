"""Production Kafka settings: TLS and SASL from the environment, secrets kept out of sight."""

from __future__ import annotations

import ssl

import pytest

from spendsentry.errors import ConfigError
from spendsentry.kafka_security import KafkaSecurity, client_kwargs

P = "SPENDSENTRY_KAFKA_"


def test_default_is_plaintext_with_no_extra_settings():
    assert client_kwargs({}) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_password_file_and_system_cas(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-pass\n")
    sec = KafkaSecurity.from_env(
        {
            P + "SECURITY_PROTOCOL": "sasl_ssl",
            P + "SASL_MECHANISM": "scram-sha-256",
            P + "SASL_USERNAME": "spendsentry",
            P + "SASL_PASSWORD_FILE": str(secret),
        }
    )
    kw = sec.client_kwargs()
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kw["sasl_plain_password"] == "s3cr3t-pass"
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "s3cr3t-pass" not in repr(sec) and "s3cr3t-pass" not in str(sec)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({P + "SECURITY_PROTOCOL": "TLS"}, "SECURITY_PROTOCOL"),
        ({P + "SECURITY_PROTOCOL": "SASL_SSL", P + "SASL_USERNAME": "u"}, "SASL_PASSWORD"),
        (
            {
                P + "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                P + "SASL_MECHANISM": "GSSAPI",
                P + "SASL_USERNAME": "u",
                P + "SASL_PASSWORD": "p",
            },
            "SASL_MECHANISM",
        ),
        ({P + "SSL_CAFILE": "/nonexistent/ca.pem"}, "SSL_CAFILE"),
        (
            {
                P + "SECURITY_PROTOCOL": "SASL_SSL",
                P + "SASL_USERNAME": "u",
                P + "SASL_PASSWORD_FILE": "/nonexistent/pw",
            },
            "SASL_PASSWORD_FILE",
        ),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        KafkaSecurity.from_env(env)
