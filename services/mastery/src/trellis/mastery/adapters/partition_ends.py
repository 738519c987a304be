"""The current end offsets of a topic's partitions, asked on a connection of their own.

Faust's consumer asks through its fetch connection, where the broker answers requests in order:
behind an idle fetch's long poll, a worker's first ListOffsets waited 1.3-1.5 s, longer than a
reader's deadline. A kafka-python consumer of its own (no group, nothing assigned), in a thread
of its own so the worker's event loop never blocks on it, answers in milliseconds.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from kafka import KafkaConsumer, TopicPartition

from trellis.common.kafka import create_consumer
from trellis.common.settings import KafkaSettings


class PartitionEnds:
    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="partition-ends")
        self._consumer: KafkaConsumer | None = None

    async def of(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Per partition, the offset the next record written to it will have."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._ends, topic, partitions)

    def _ends(self, topic: str, partitions: list[int]) -> dict[int, int]:
        if self._consumer is None:
            self._consumer = create_consumer(self._kafka, None)
        ends = self._consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: end for tp, end in ends.items()}

    def close(self) -> None:
        """Close the consumer in its thread, after a question under way; returns at once."""
        self._executor.submit(self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
