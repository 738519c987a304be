"""Publishes encoded records with kafka-python and reports, per record, whether Kafka stored it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError

from trellis.common.codec import Encoded
from trellis.common.settings import KafkaSettings
from trellis.ingest.adapters.metrics import PRODUCE_SECONDS

log = structlog.get_logger(__name__)


class KafkaPublisher:
    def __init__(self, producer: KafkaProducer, kafka: KafkaSettings, max_in_flight: int) -> None:
        self._producer = producer
        self._kafka = kafka
        # kafka-python blocks while waiting for acks: each in-flight batch waits in its own thread.
        self._executor = ThreadPoolExecutor(max_in_flight, thread_name_prefix="ingest-publish")

    async def __call__(self, topic: str, records: Sequence[Encoded]) -> list[bool]:
        if not records:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._send_and_wait, topic, records)

    def _send_and_wait(self, topic: str, records: Sequence[Encoded]) -> list[bool]:
        name = self._kafka.topics.name(topic)
        started = time.perf_counter()
        futures = []
        for record in records:
            try:
                futures.append(
                    self._producer.send(
                        name, key=record.key, value=record.value, headers=record.headers
                    )
                )
            except KafkaError as exc:
                log.warning("produce failed", topic=name, error=str(exc))
                futures.append(None)
        try:
            self._producer.flush(timeout=self._kafka.delivery_timeout_ms / 1000)
        except KafkaError as exc:
            # Not flushed in time: every record not acknowledged by now is answered NOT_STORED
            # (it may still land later: a retry is then a duplicate, which consumers dedupe).
            log.warning("flush timed out", topic=name, error=str(exc))
        stored = []
        for future in futures:
            try:
                stored.append(future is not None and future.get(timeout=0) is not None)
            except KafkaError as exc:
                log.warning("record not stored", topic=name, error=str(exc))
                stored.append(False)
        PRODUCE_SECONDS.labels(topic).observe(time.perf_counter() - started)
        return stored

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        try:
            self._producer.close(timeout=self._kafka.request_timeout_ms / 1000)
        except KafkaError as exc:  # unacknowledged records were answered NOT_STORED already
            log.warning("producer closed before flushing", error=str(exc))
            # kafka-python's close() raises on a flush timeout before it stops its sender thread
            # (3.0.x): stop that thread here, so that no I/O thread outlives the publisher.
            sender = getattr(self._producer, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(timeout=1.0)
            self._producer._closed = True
