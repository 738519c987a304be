"""Follows the compacted catalog topic into the worker's `CatalogView`: read from the start,
then kept open (items, skill thresholds, parameter sets, applied in topic order).

A thread with a group-less consumer assigned every partition, so every worker holds the whole
catalog (what a Faust GlobalTable would do; faust-streaming's GlobalTable recovery stalled on
this broker, and a plain consumer is simpler). `caught_up` is set once the records present at
start are applied: the worker waits for it before consuming activity, so that the first events
already see the catalog.
"""

from __future__ import annotations

import threading

from kafka import TopicPartition

from trellis.common.codec import CodecError, decode
from trellis.common.kafka import create_consumer
from trellis.common.logging import get_logger
from trellis.common.pb.events.v1 import catalog_pb2
from trellis.common.settings import KafkaSettings
from trellis.mastery.catalog import CatalogView

_log = get_logger("trellis.mastery.catalog")


class CatalogFollower(threading.Thread):
    def __init__(self, kafka: KafkaSettings, view: CatalogView) -> None:
        super().__init__(name="catalog-follower", daemon=True)
        self._kafka = kafka
        self._view = view
        self._stopping = threading.Event()
        self.caught_up = threading.Event()

    def run(self) -> None:
        consumer = create_consumer(self._kafka, group_id=None)
        topic = self._kafka.topics.name("catalog")
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
                    _log.info("catalog caught up", topic=topic)
        except Exception:
            _log.exception("catalog follower failed", topic=topic)
            raise
        finally:
            consumer.close()

    def _apply(self, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        if value is None:
            return  # tombstones: entities are retired, not deleted, in v1
        try:
            self._view.apply(decode(catalog_pb2.CatalogRecord, value, headers))
        except (CodecError, ValueError) as exc:
            _log.warning(
                "catalog record skipped", topic=self._kafka.topics.name("catalog"), error=str(exc)
            )

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)
