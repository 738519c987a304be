"""Follows a compacted topic (catalog, roster) into a local replica: read from the start, then
kept open. One thread with a group-less consumer assigned every partition, so every replica of a
service holds the whole topic. `caught_up` is set once the records present at start are applied:
services report SERVING only then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message
from kafka import TopicPartition

from trellis.common.codec import CodecError, Headers, decode
from trellis.common.kafka import create_consumer
from trellis.common.logging import get_logger
from trellis.common.settings import KafkaSettings

log = get_logger(__name__)
#: What a replica skips (with a warning) rather than stop on: a record it cannot decode or apply.
UNREADABLE = (CodecError, ValueError)
M = TypeVar("M", bound=Message)

# Applies one record: (key, value or None for a tombstone, headers).
Apply = Callable[[bytes | None, bytes | None, Headers], None]


class CompactedTopicFollower(threading.Thread):
    def __init__(self, kafka: KafkaSettings, topic: str, apply: Apply) -> None:
        super().__init__(name=f"{topic}-follower", daemon=True)
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
            except Exception as exc:  # the broker went away: start over, replicas are idempotent
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
        except UNREADABLE as exc:
            log.warning("record skipped", topic=self._topic, error=str(exc))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)


def decoded(message_type: type[M], apply: Callable[[M], None]) -> Apply:
    """An Apply that decodes each value as message_type and skips tombstones."""

    def apply_value(key: bytes | None, value: bytes | None, headers: Headers) -> None:
        if value is not None:
            apply(decode(message_type, value, headers))

    return apply_value
