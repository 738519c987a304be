"""Follows a compacted topic (catalog or roster) into a view: read from the start, then kept open.

A thread with a group-less consumer assigned every partition: each ingest replica keeps the whole
view. `caught_up` is set once the records present at start are applied (readiness).
"""

from __future__ import annotations

import threading
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import Message
from kafka import TopicPartition

from trellis.common.codec import CodecError, decode
from trellis.common.kafka import create_consumer
from trellis.common.logging import get_logger
from trellis.common.pb.events.v1 import catalog_pb2, roster_pb2
from trellis.common.settings import KafkaSettings
from trellis.ingest.catalog import CatalogView
from trellis.ingest.roster import RosterView

log = get_logger(__name__)
M = TypeVar("M", bound=Message)
M_contra = TypeVar("M_contra", bound=Message, contravariant=True)


class View(Protocol[M_contra]):
    def apply(self, record: M_contra) -> None: ...


class TopicFollower(threading.Thread, Generic[M]):
    def __init__(
        self, kafka: KafkaSettings, topic: str, message_type: type[M], view: View[M]
    ) -> None:
        super().__init__(name=f"{topic}-follower", daemon=True)
        self._kafka = kafka
        self._topic = topic
        self._message_type = message_type
        self._view = view
        self._stopping = threading.Event()
        self.caught_up = threading.Event()

    def run(self) -> None:
        consumer = create_consumer(self._kafka, group_id=None)
        topic = self._kafka.topics.name(self._topic)
        try:
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            end = consumer.end_offsets(partitions)
            while not self._stopping.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        self._apply(record.value, record.headers)
                if not self.caught_up.is_set() and all(
                    consumer.position(p) >= end[p] for p in partitions
                ):
                    self.caught_up.set()
                    log.info("replica caught up", topic=topic)
        finally:
            consumer.close()

    def _apply(self, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        if value is None:
            return  # tombstones: entities are retired, not deleted, in v1
        try:
            self._view.apply(decode(self._message_type, value, headers))
        except CodecError as exc:
            log.warning("undecodable record skipped", topic=self._topic, error=str(exc))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)


def CatalogFollower(
    kafka: KafkaSettings, view: CatalogView
) -> TopicFollower[catalog_pb2.CatalogRecord]:
    return TopicFollower(kafka, "catalog", catalog_pb2.CatalogRecord, view)


def RosterFollower(
    kafka: KafkaSettings, view: RosterView
) -> TopicFollower[roster_pb2.RosterRecord]:
    return TopicFollower(kafka, "roster", roster_pb2.RosterRecord, view)
