"""Kafka security settings against a real broker: one broker of the test's own (never the dev or
test broker), started by deploy/local/kafka.sh with two more listeners, SASL_SSL with SCRAM-SHA-512
(the user created at storage format) and SSL with required client certificates (mTLS), TLS from
certificates made in the test. Every client kind of trellis.common goes through each listener:
kafka-python's admin, producer and consumer, and Faust's producer (aiokafka)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from tests.certificates import Authority, Issued
from trellis.common.faust_app import create_app
from trellis.common.kafka import create_admin, create_consumer, create_producer, ensure_topics
from trellis.common.settings import KafkaSettings, Settings, TopicSettings

ROOT = Path(__file__).resolve().parents[3]
KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
SCRAM_USER = "trellis-app"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class SecuredBroker:
    scram_bootstrap: str
    mtls_bootstrap: str
    ca: Authority
    client: Issued  # signed by the broker's CA, for the mTLS listener
    password_file: Path
    stranger_ca: Authority  # a CA that the broker does not trust, and that did not sign it


def broker_config(ports: dict[str, int], keystore: Path, truststore: Path) -> str:
    plain, controller = ports["plain"], ports["controller"]
    scram, mtls = ports["scram"], ports["mtls"]
    return f"""
listeners=PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},\
SASL_SSL://127.0.0.1:{scram},SSL://127.0.0.1:{mtls}
advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{scram},\
SSL://127.0.0.1:{mtls}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
listener.name.ssl.ssl.client.auth=required
"""


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    home = tmp_path_factory.mktemp("secured-kafka")
    ca = Authority(home / "pki")
    broker = ca.issue("kafka-broker", dns=("localhost",), ips=("127.0.0.1",), server=True)
    client = ca.issue("trellis-mtls-client")
    password = uuid.uuid4().hex
    password_file = home / "sasl-password"
    password_file.write_text(password + "\n")  # as a mounted Secret's key often ends
    ports = dict(zip(("plain", "controller", "scram", "mtls"), free_ports(4), strict=True))
    extra = home / "extra.properties"
    extra.write_text(broker_config(ports, broker.keystore(), ca.ca_file))
    env = {
        **os.environ,
        "KAFKA_PORT": str(ports["plain"]),
        "KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "KAFKA_HOME": str(home / "instance"),
        "KAFKA_EXTRA_CONFIG": str(extra),
        "KAFKA_FORMAT_ARGS": f"--add-scram SCRAM-SHA-512=[name={SCRAM_USER},password={password}]",
        "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
        "KAFKA_START_TIMEOUT": "60",
        "KAFKA_STOP_TIMEOUT": "15",
    }
    started = time.monotonic()
    try:
        subprocess.run([KAFKA_SH, "start"], env=env, check=True, timeout=120)
        print(f"secured broker ready after {time.monotonic() - started:.1f} s")
        yield SecuredBroker(
            scram_bootstrap=f"127.0.0.1:{ports['scram']}",
            mtls_bootstrap=f"127.0.0.1:{ports['mtls']}",
            ca=ca,
            client=client,
            password_file=password_file,
            stranger_ca=Authority(home / "stranger", name="stranger-ca"),
        )
    finally:
        subprocess.run([KAFKA_SH, "clean"], env=env, check=False, timeout=60)


def scram(broker: SecuredBroker, **changes: object) -> KafkaSettings:
    values: dict[str, object] = {
        "bootstrap_servers": broker.scram_bootstrap,
        "security_protocol": "SASL_SSL",
        "ssl_ca_file": broker.ca.ca_file,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": SCRAM_USER,
        "sasl_password_file": broker.password_file,
        "request_timeout_ms": 10_000,
        "topics": TopicSettings(prefix=f"sec-{uuid.uuid4().hex[:8]}.", partitions=1),
        **changes,
    }
    return KafkaSettings.model_validate(values)


def mtls(broker: SecuredBroker, **changes: object) -> KafkaSettings:
    values: dict[str, object] = {
        "bootstrap_servers": broker.mtls_bootstrap,
        "security_protocol": "SSL",
        "ssl_ca_file": broker.ca.ca_file,
        "ssl_cert_file": broker.client.cert_file,
        "ssl_key_file": broker.client.key_file,
        "request_timeout_ms": 10_000,
        "topics": TopicSettings(prefix=f"sec-{uuid.uuid4().hex[:8]}.", partitions=1),
        **changes,
    }
    return KafkaSettings.model_validate(values)


async def round_trip(kafka: KafkaSettings) -> None:
    """Topics by the admin, one record by kafka-python and one by Faust, both read back."""
    ensure_topics(kafka, timeout_s=20)
    topic = kafka.topics.name("activity")
    producer = create_producer(kafka)
    try:
        producer.send(topic, key=b"k", value=b"from kafka-python").get(timeout=20)
    finally:
        producer.close()
    app = create_app("security-test", Settings(kafka=kafka), store="memory://")
    faust_producer = app.producer
    await faust_producer.start()
    try:
        await faust_producer.send_and_wait(topic, b"k", b"from faust", None, None, None)
    finally:
        await faust_producer.stop()
    consumer = create_consumer(kafka, None, consumer_timeout_ms=15_000)
    try:
        consumer.subscribe([topic])
        values = []
        for record in consumer:
            values.append(record.value)
            if len(values) == 2:
                break
    finally:
        consumer.close()
    assert sorted(values) == [b"from faust", b"from kafka-python"]


def refused(kafka: KafkaSettings) -> None:
    with pytest.raises(KafkaError):
        admin = create_admin(kafka, request_timeout_ms=5_000, api_version_auto_timeout_ms=5_000)
        try:
            admin.list_topics()
        finally:
            admin.close()


async def test_scram_over_tls_carries_every_client(secured_broker: SecuredBroker) -> None:
    await round_trip(scram(secured_broker))


async def test_mtls_carries_every_client(secured_broker: SecuredBroker) -> None:
    await round_trip(mtls(secured_broker))


def test_wrong_credentials_and_unknown_certificates_are_refused(
    secured_broker: SecuredBroker,
) -> None:
    wrong_password = secured_broker.password_file.with_name("wrong-password")
    wrong_password.write_text("not-the-password")
    refused(scram(secured_broker, sasl_password_file=wrong_password))
    # The broker's certificate checked against a CA that did not sign it.
    refused(scram(secured_broker, ssl_ca_file=secured_broker.stranger_ca.ca_file))
    # The mTLS listener without a client certificate, and with one from a CA it does not trust.
    refused(mtls(secured_broker, ssl_cert_file=None, ssl_key_file=None))
    stranger = secured_broker.stranger_ca.issue("stranger-client")
    refused(mtls(secured_broker, ssl_cert_file=stranger.cert_file, ssl_key_file=stranger.key_file))
