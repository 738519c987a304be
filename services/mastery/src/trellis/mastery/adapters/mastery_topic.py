"""Reads the mastery topic for one subscription: a kafka-python consumer with manual assignment
(no group: nothing is committed, every subscriber reads on its own), polled in a thread of its
own so the worker's event loop never blocks on it, and closed when the subscription ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from trellis.common.kafka import create_consumer
from trellis.common.settings import KafkaSettings

#: How long one poll waits for records; also how long a cancelled subscription may keep its
#: thread before the consumer is closed.
POLL_MS = 500

T = TypeVar("T")


class MasteryTopicReader:
    def __init__(self, kafka: KafkaSettings, topic: str, start: Mapping[int, int | None]) -> None:
        """`start`: per partition to read, the first offset, or None for the end."""
        self._kafka = kafka
        self._topic = topic
        self._start = dict(start)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mastery-subscriber")
        self._consumer: KafkaConsumer | None = None

    async def open(self) -> None:
        """Assign and seek; once this returns, every event published later will be read."""
        await self._in_thread(self._open)

    def _open(self) -> None:
        consumer = create_consumer(self._kafka, None)
        self._consumer = consumer  # from here on, close() closes it
        tps = {p: TopicPartition(self._topic, p) for p in self._start}
        consumer.assign(list(tps.values()))
        for partition, offset in self._start.items():
            if offset is None:
                consumer.seek_to_end(tps[partition])
            else:
                consumer.seek(tps[partition], offset)
        for tp in tps.values():
            consumer.position(tp)  # resolves "the end" now, not at the first poll

    async def records(self) -> AsyncIterator[ConsumerRecord]:
        """Records as they come, in order per partition; ends only when closed or cancelled."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("open() first")
        while True:
            batches = await self._in_thread(lambda: consumer.poll(timeout_ms=POLL_MS))
            for batch in batches.values():
                for record in batch:
                    yield record

    def close(self) -> None:
        """Close the consumer in its thread, after whatever runs there (an open, a poll);
        returns at once."""
        self._executor.submit(self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


class MasteryTopic:
    """Where subscriptions read: the mastery topic of these Kafka settings."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self.name = kafka.topics.name("mastery")
        self.partitions = kafka.topics.partitions

    def reader(self, start: Mapping[int, int | None]) -> MasteryTopicReader:
        return MasteryTopicReader(self._kafka, self.name, start)
