"""kafka-python producers, consumers and topic administration, one configuration for all,
including the security of the connection (`security_config`: TLS, SASL; docs/security.md)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError

from trellis.common.codec import headers_for
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.settings import KafkaSettings

COMPACTED = ("roster", "catalog")
ALL_TOPICS = ("activity", "roster", "catalog", "mastery", "deadletter")


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """TLS to the brokers: their certificates verified against `ssl_ca_file` (or the system's
    roots) with host names checked; this client's certificate when one is configured (mTLS)."""
    context = ssl.create_default_context(
        cafile=None if kafka.ssl_ca_file is None else str(kafka.ssl_ca_file)
    )
    if kafka.ssl_cert_file is not None and kafka.ssl_key_file is not None:
        context.load_cert_chain(kafka.ssl_cert_file, kafka.ssl_key_file)
    return context


def security_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The connection options of every kafka-python client (producers, consumers, admin)."""
    config: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.uses_ssl:
        config["ssl_context"] = ssl_context(kafka)
    if kafka.uses_sasl:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        config["sasl_plain_password"] = kafka.sasl_secret()
    return config


def _client_config(kafka: KafkaSettings) -> dict[str, Any]:
    return {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        **security_config(kafka),
    }


def create_admin(kafka: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**{**_client_config(kafka), **overrides})


def create_producer(kafka: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """An idempotent producer that waits for all in-sync replicas: an ack means stored."""
    config: dict[str, Any] = {
        **_client_config(kafka),
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": kafka.compression_type,
        "linger_ms": 5,
        "request_timeout_ms": kafka.request_timeout_ms,
        "delivery_timeout_ms": kafka.delivery_timeout_ms,
    }
    return KafkaProducer(**{**config, **overrides})


def create_consumer(kafka: KafkaSettings, group_id: str | None, **overrides: Any) -> KafkaConsumer:
    """A consumer that commits only when told: offsets follow processing, never run ahead of it."""
    config: dict[str, Any] = {
        **_client_config(kafka),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    return KafkaConsumer(**{**config, **overrides})


def topic_specs(kafka: KafkaSettings) -> list[NewTopic]:
    topics = kafka.topics
    specs = []
    for topic in ALL_TOPICS:
        configs = (
            {"cleanup.policy": "compact"}
            if topic in COMPACTED
            else {"cleanup.policy": "delete", "retention.ms": str(topics.retention_ms)}
        )
        specs.append(
            NewTopic(
                name=topics.name(topic),
                num_partitions=topics.partitions,
                replication_factor=topics.replication_factor,
                topic_configs=configs,
            )
        )
    return specs


def ensure_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> list[str]:
    """Create the topics of DESIGN.md §3 that do not exist yet and wait until the cluster lists
    them all (a created topic can be missing from metadata for a moment); returns those created."""
    admin = create_admin(kafka)
    try:
        specs = topic_specs(kafka)
        existing = set(admin.list_topics())
        created = []
        for spec in (s for s in specs if s.name not in existing):
            try:
                admin.create_topics([spec])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another process created it first
        deadline = time.monotonic() + timeout_s
        while missing := {s.name for s in specs} - set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible after {timeout_s:.0f} s: {sorted(missing)}")
            time.sleep(0.2)
        return created
    finally:
        admin.close()


def dead_letter(record: ConsumerRecord, error: str, consumer: str) -> envelope_pb2.DeadLetter:
    failed_at = Timestamp()
    failed_at.GetCurrentTime()
    return envelope_pb2.DeadLetter(
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        original_key=record.key or b"",
        original_value=record.value or b"",
        error=error,
        consumer=consumer,
        failed_at=failed_at,
    )


def send_dead_letters(
    producer: KafkaProducer, kafka: KafkaSettings, letters: Iterable[envelope_pb2.DeadLetter]
) -> None:
    """Send poison messages to the dead-letter topic and wait until Kafka stored them."""
    futures = [
        producer.send(
            kafka.topics.name("deadletter"),
            key=letter.original_key or None,
            value=letter.SerializeToString(),
            headers=headers_for(letter),
        )
        for letter in letters
    ]
    for future in futures:
        future.get(timeout=kafka.request_timeout_ms / 1000)


def main() -> None:
    """`python -m trellis.common.kafka`: create the topics named by the settings."""
    from trellis.common.settings import Settings

    settings = Settings()
    created = ensure_topics(settings.kafka)
    print(f"topics ready ({len(created)} created): {', '.join(created) or 'none missing'}")


if __name__ == "__main__":
    main()
