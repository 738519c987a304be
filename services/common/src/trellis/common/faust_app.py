"""The Faust app factory: one configuration for every Faust worker of Trellis (DESIGN.md §4, §7).

What is fixed here, and why:
- at-least-once, never `exactly_once` (open recovery bugs, faust-streaming/faust#47); agents run
  with concurrency 1 and keep state idempotent by event id instead.
- RocksDB table store through the `rocksdict` binding. faust-streaming 0.15 has no
  `rocksdict://` scheme: `rocksdb://` selects faust's RocksDB store, which uses rocksdict whenever
  it is installed (the `rocksdict` extra; python-rocksdb is not). `memory://` is for unit tests.
- Topics are created by our admin step, not by Faust (`topic_allow_declare=False`): the shared
  topics by `trellis.common.kafka.ensure_topics`, and a worker's own changelog topics by the
  worker before it starts (`ensure_internal_topics`). No leader-election topic: nothing uses it.
- No Faust web server: the service's API is gRPC, its metrics are Prometheus on their own port.
- Broker session and heartbeat from `MasterySettings` (the test profile shortens them); the
  request timeout is never below the session timeout, which Faust requires.
- The connection's security (TLS, SASL) is the kafka-python clients' (`KafkaSettings`), given to
  Faust's aiokafka clients as `broker_credentials` (docs/security.md).
- The consumer closes the holes in Faust's rebalance and seek handling that lost events or let
  commits pass events not yet processed (`faust_consumer.RebalanceSafeTransport`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from trellis.common.faust_consumer import RebalanceSafeTransport
from trellis.common.kafka import create_admin, ssl_context
from trellis.common.settings import KafkaSettings, Settings

__all__ = [
    "broker_credentials",
    "changelog_topic_name",
    "create_app",
    "ensure_internal_topics",
    "internal_topic_specs",
]


def create_app(
    app_id: str,
    settings: Settings,
    *,
    store: str = "rocksdb://",
    datadir: Path | str | None = None,
    **overrides: Any,
) -> faust.App:
    """A configured, not yet started Faust app. `app_id` is also its consumer group id.

    `datadir` holds the RocksDB tables (default `settings.mastery.data_dir`); `overrides` are
    further Faust settings, for tests and benchmarks.
    """
    kafka = settings.kafka
    session_s = settings.mastery.broker_session_timeout_s
    config: dict[str, Any] = {
        "broker": [
            f"kafka://{server.strip()}"
            for server in kafka.bootstrap_servers.split(",")
            if server.strip()
        ],
        "broker_client_id": kafka.client_id,
        "broker_credentials": broker_credentials(kafka),
        "broker_session_timeout": session_s,
        "broker_heartbeat_interval": settings.mastery.broker_heartbeat_interval_s,
        "broker_request_timeout": max(kafka.request_timeout_ms / 1000, session_s),
        "store": store,
        "datadir": str(datadir if datadir is not None else settings.mastery.data_dir),
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_compression_type": kafka.compression_type,
        "producer_request_timeout": max(kafka.request_timeout_ms / 1000, session_s),
        "topic_partitions": kafka.topics.partitions,
        "topic_replication_factor": kafka.topics.replication_factor,
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "web_enabled": False,
        "autodiscover": False,
        "worker_redirect_stdouts": False,
    }
    config.update(overrides)
    app = faust.App(app_id, **config)
    app.transport = RebalanceSafeTransport(app.conf.broker_consumer, app)
    return app


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust's form of `security_protocol` and its settings (None: PLAINTEXT)."""
    if kafka.uses_sasl:
        return SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_secret(),
            ssl_context=ssl_context(kafka) if kafka.uses_ssl else None,
            mechanism=kafka.sasl_mechanism,
        )
    if kafka.uses_ssl:
        return SSLCredentials(ssl_context(kafka))
    return None


def changelog_topic_name(app_id: str, table_name: str) -> str:
    """The name Faust gives a table's changelog topic."""
    return f"{app_id}-{table_name}-changelog"


def internal_topic_specs(app_id: str, table_names: list[str], settings: Settings) -> list[NewTopic]:
    """Changelog topics of a worker's tables: compacted, partitioned like the source topics
    (a table is co-partitioned with the stream that writes it)."""
    topics = settings.kafka.topics
    return [
        NewTopic(
            name=changelog_topic_name(app_id, name),
            num_partitions=topics.partitions,
            replication_factor=topics.replication_factor,
            topic_configs={"cleanup.policy": "compact"},
        )
        for name in table_names
    ]


def ensure_internal_topics(app_id: str, table_names: list[str], settings: Settings) -> list[str]:
    """Create the missing changelog topics of a worker's tables; returns the names created."""
    admin = create_admin(settings.kafka)
    try:
        existing = set(admin.list_topics())
        created = []
        for spec in internal_topic_specs(app_id, table_names, settings):
            if spec.name in existing:
                continue
            try:
                admin.create_topics([spec])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another worker of the group created it first
        return created
    finally:
        admin.close()
