"""trellis.common.kafka and faust_app: the Kafka security settings as every client receives them
(the real listeners are in tests/integration/common/test_kafka_security.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import ValidationError

from tests.certificates import Authority
from trellis.common.faust_app import broker_credentials, create_app
from trellis.common.kafka import security_config
from trellis.common.settings import KafkaSettings, Settings


def test_plaintext_stays_the_default() -> None:
    kafka = KafkaSettings()
    assert security_config(kafka) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(kafka) is None


def test_sasl_without_tls(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="app",
        sasl_password_file=secret,
    )
    assert security_config(kafka) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "app",
        "sasl_plain_password": "s3cret",
    }
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert (credentials.username, credentials.password) == ("app", "s3cret")


def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    client = ca.issue("client")
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_file=ca.ca_file,
        ssl_cert_file=client.cert_file,
        ssl_key_file=client.key_file,
    )
    context = security_config(kafka)["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, SSLCredentials)
    assert credentials.protocol.value == "SSL"
    app = create_app("creds", Settings(kafka=kafka), store="memory://")
    assert isinstance(app.conf.broker_credentials, SSLCredentials)


def test_sasl_over_tls_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = Authority(tmp_path)
    monkeypatch.setenv("TRELLIS_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TRELLIS_KAFKA__SSL_CA_FILE", str(ca.ca_file))
    monkeypatch.setenv("TRELLIS_KAFKA__SASL_USERNAME", "trellis")
    monkeypatch.setenv("TRELLIS_KAFKA__SASL_PASSWORD", "inline-secret")
    kafka = Settings().kafka
    config = security_config(kafka)
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "inline-secret"
    assert isinstance(config["ssl_context"], ssl.SSLContext)
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.ssl_context is not None
    assert "inline-secret" not in repr(kafka)


@pytest.mark.parametrize(
    "incomplete",
    [
        {"security_protocol": "SASL_SSL", "sasl_password": "x"},
        {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "app"},
        {"security_protocol": "SSL", "ssl_cert_file": "client.crt"},
    ],
)
def test_half_configurations_are_refused(incomplete: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        KafkaSettings.model_validate(incomplete)
