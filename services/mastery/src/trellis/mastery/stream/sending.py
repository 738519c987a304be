"""A micro-batch's records sent to Kafka as one record batch per partition.

aiokafka's `send` costs, per record, a coroutine, a future, the partitioner (murmur2 in pure
Python), size checks and the accumulator's bookkeeping; Faust's wrapper adds its own. Sending a
batch built with the producer's `create_batch` costs one append per record and one future per
partition, and no wait for the producer's linger. Records keep their order within a partition
(a learner's outputs stay in order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from faust.types import AppT

from trellis.common.codec import Headers

#: A record to produce: topic, partition (None: by key, as the producer's own partitioner,
#: aiokafka's default, picks it), key, value (None: a tombstone), headers.
Outgoing = tuple[str, int | None, bytes | None, bytes | None, Headers | None]

_PARTITIONER = DefaultPartitioner()
#: The partitioner's answers, kept between calls: its murmur2 is pure Python, and a learner's
#: key comes back batch after batch. Keyed by topic, partition count and key; bounded.
_PARTITION_OF_KEY: dict[tuple[str, int, bytes], int] = {}
PARTITION_CACHE_SIZE = 100_000


def kafka_producer(app: AppT) -> AIOKafkaProducer:
    """The aiokafka producer under the app's (started with the app; Faust keeps no public
    accessor for it)."""
    producer: AIOKafkaProducer = cast(Any, app.producer)._ensure_producer()
    return producer


#: A record batch handed to the producer: its partition, its record count, and the future of the
#: broker's answer (the offset of its first record).
Submitted = tuple[TopicPartition, int, "asyncio.Future[Any]"]


async def send_all(
    producer: AIOKafkaProducer, records: Iterable[Outgoing]
) -> dict[TopicPartition, int]:
    """Send `records` and wait until the broker has stored every one of them (raises if it did
    not: the caller sends them all again). Returns the offset of the last record stored in each
    partition written."""
    return await wait_stored(await submit_all(producer, records))


async def submit_all(producer: AIOKafkaProducer, records: Iterable[Outgoing]) -> list[Submitted]:
    """Hand `records` to the producer in record batches, without waiting for the broker (its
    sender writes them once the event loop runs it)."""
    partitions: dict[str, list[int]] = {}
    open_batches: dict[TopicPartition, Any] = {}
    submitted: list[Submitted] = []
    for topic, partition, key, value, headers in records:
        if partition is None:
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            if key is None:
                partition = _PARTITIONER(None, partitions[topic], partitions[topic])
            else:
                partition = _partition_of(topic, partitions[topic], key)
        where = TopicPartition(topic, partition)
        batch = open_batches.get(where)
        if batch is not None and _append(batch, key, value, headers):
            continue
        if batch is not None:  # full: on its way, and a new one for the partition
            submitted.append(await _submit(producer, batch, where))
        batch = open_batches[where] = producer.create_batch()
        if not _append(batch, key, value, headers):
            raise MessageSizeTooLargeError(f"a record for {where} is larger than a batch")
    for where, batch in open_batches.items():
        submitted.append(await _submit(producer, batch, where))
    return submitted


async def wait_stored(submitted: list[Submitted]) -> dict[TopicPartition, int]:
    """Wait until the broker has stored every batch of `submitted` (raises the first failure,
    after all have an answer); returns the offset of the last record stored per partition."""
    answers = await asyncio.gather(*(future for _, _, future in submitted), return_exceptions=True)
    last: dict[TopicPartition, int] = {}
    for (where, count, _), answer in zip(submitted, answers, strict=True):
        if isinstance(answer, BaseException):
            raise answer
        # A batch's records take consecutive offsets from the one the broker returns.
        last[where] = max(last.get(where, -1), answer.offset + count - 1)
    return last


def _partition_of(topic: str, partitions: list[int], key: bytes) -> int:
    cached = (topic, len(partitions), key)
    partition = _PARTITION_OF_KEY.get(cached)
    if partition is None:
        if len(_PARTITION_OF_KEY) >= PARTITION_CACHE_SIZE:
            _PARTITION_OF_KEY.clear()
        partition = _PARTITION_OF_KEY[cached] = _PARTITIONER(key, partitions, partitions)
    return partition


def _append(batch: Any, key: bytes | None, value: bytes | None, headers: Headers | None) -> bool:
    return batch.append(timestamp=None, key=key, value=value, headers=headers or []) is not None


async def _submit(producer: AIOKafkaProducer, batch: Any, where: TopicPartition) -> Submitted:
    # Closed: complete, so the producer sends it at once instead of letting it linger for
    # records that will not come (and no other sender can add to it).
    batch.close()
    future = await producer.send_batch(batch, where.topic, partition=where.partition)
    return where, batch.record_count(), future
