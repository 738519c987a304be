"""Rebuilds the dedup window at start from the tail of the activity topic.

The window remembers fingerprints of the stored form (minus `ingested_at`), so the stored records
themselves are enough: an event accepted before a restart is answered DUPLICATE after it.
"""

from __future__ import annotations

import time

from kafka import TopicPartition

from trellis.common.codec import CodecError, decode_envelope
from trellis.common.kafka import create_consumer
from trellis.common.logging import get_logger
from trellis.common.settings import KafkaSettings
from trellis.ingest.dedup import DedupWindow, fingerprint

log = get_logger(__name__)


def restore_window(
    kafka: KafkaSettings, window: DedupWindow, max_records: int, timeout_s: float = 120.0
) -> int:
    """Remembers up to `max_records` of the latest activity records; answers how many."""
    if max_records <= 0:
        return 0
    consumer = create_consumer(kafka, group_id=None, enable_auto_commit=False)
    topic = kafka.topics.name("activity")
    restored = 0
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return 0
        consumer.assign(partitions)
        begin = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
        per_partition = max(1, max_records // len(partitions))
        for p in partitions:
            consumer.seek(p, max(begin[p], end[p] - per_partition))
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(p) < end[p] for p in partitions):
            if time.monotonic() > deadline:
                log.warning("dedup window restore timed out", topic=topic, restored=restored)
                break
            for records in consumer.poll(timeout_ms=500, max_records=5_000).values():
                for record in records:
                    if record.offset >= end[TopicPartition(record.topic, record.partition)]:
                        continue
                    try:
                        event = decode_envelope(record.value, record.headers)
                    except CodecError:
                        continue
                    window.remember(event.tenant_id, event.event_id, fingerprint(event))
                    restored += 1
    finally:
        consumer.close()
    log.info("dedup window restored", topic=topic, records=restored)
    return restored
