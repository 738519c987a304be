"""Follow the compacted catalog and roster topics into the Replica: read from the start at boot,
then kept open. A thread with a group-less consumer assigned every partition, so each replica of
the recommender keeps the whole catalog and class membership. `caught_up` is set once every record
present at start is applied (readiness).

Generic enough for `trellis.common` (a "compacted topic follower" with an apply callback); kept
here until the lead moves it there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kafka import TopicPartition

from trellis.common.codec import CodecError, decode
from trellis.common.kafka import create_consumer
from trellis.common.logging import get_logger
from trellis.common.pb.events.v1 import catalog_pb2, roster_pb2
from trellis.common.settings import KafkaSettings
from trellis.recommender.adapters import convert
from trellis.recommender.replica import Enrollment, Replica

log = get_logger(__name__)

Headers = list[tuple[str, bytes]]
Apply = Callable[[bytes | None, bytes | None, Headers], None]


class CompactedTopicFollower(threading.Thread):
    def __init__(self, kafka: KafkaSettings, topic: str, apply: Apply, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._kafka = kafka
        self._topic = kafka.topics.name(topic)
        self._apply = apply
        self._stopping = threading.Event()
        self.caught_up = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._follow()
                return
            except Exception as exc:  # the broker went away: start over, the replica is idempotent
                log.warning("follower restarting", topic=self._topic, error=str(exc))
                self._stopping.wait(1.0)

    def _follow(self) -> None:
        consumer = create_consumer(self._kafka, group_id=None)
        try:
            numbers = consumer.partitions_for_topic(self._topic)
            while not numbers and not self._stopping.is_set():
                log.info("waiting for topic", topic=self._topic)
                time.sleep(0.5)
                numbers = consumer.partitions_for_topic(self._topic)
            partitions = [TopicPartition(self._topic, p) for p in sorted(numbers or ())]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            end = consumer.end_offsets(partitions)
            while not self._stopping.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        self._safe_apply(record.key, record.value, list(record.headers or []))
                if not self.caught_up.is_set() and all(
                    consumer.position(p) >= end[p] for p in partitions
                ):
                    self.caught_up.set()
                    log.info("replica caught up", topic=self._topic)
        finally:
            consumer.close()

    def _safe_apply(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        try:
            self._apply(key, value, headers)
        except (CodecError, ValueError) as exc:
            log.warning("record skipped", topic=self._topic, error=str(exc))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)


def _split_key(key: bytes | None) -> tuple[str, str, str]:
    """`tenant/kind/id` (the id may itself contain '/')."""
    parts = (key or b"").decode().split("/", 2)
    if len(parts) != 3:
        raise ValueError(f"unexpected key {key!r}")
    return parts[0], parts[1], parts[2]


def catalog_applier(replica: Replica) -> Apply:
    def apply(key: bytes | None, value: bytes | None, headers: Headers) -> None:
        if value is None:
            tenant_id, kind, entity_id = _split_key(key)
            replica.remove_catalog(tenant_id, kind, entity_id)
            return
        record = decode(catalog_pb2.CatalogRecord, value, headers)
        entity = record.WhichOneof("entity")
        if entity == "skill":
            replica.put_skill(record.tenant_id, convert.skill(record.skill))
        elif entity == "item":
            replica.put_item(record.tenant_id, convert.item(record.item))
        elif entity == "resource":
            replica.put_resource(record.tenant_id, convert.resource(record.resource))
        # model parameters: the mastery service applies them; predictions come from it.

    return apply


def roster_applier(replica: Replica) -> Apply:
    def apply(key: bytes | None, value: bytes | None, headers: Headers) -> None:
        if value is None:
            tenant_id, kind, entity_id = _split_key(key)
            if kind == "enrollment":
                replica.remove_enrollment(tenant_id, entity_id)
            elif kind == "school_class":
                replica.remove_class(tenant_id, entity_id)
            return
        record = decode(roster_pb2.RosterRecord, value, headers)
        entity = record.WhichOneof("entity")
        if entity == "enrollment":
            e = record.enrollment
            replica.put_enrollment(
                record.tenant_id, e.sourced_id, Enrollment(e.class_id, e.user_id, e.role)
            )
        elif entity == "school_class":
            replica.put_class(
                record.tenant_id, record.school_class.sourced_id, record.school_class.school_id
            )

    return apply
