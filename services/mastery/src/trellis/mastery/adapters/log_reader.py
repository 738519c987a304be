"""Reads topics for the replay: each from the beginning up to the end offsets taken when the read
starts (kafka-python, no group, every partition assigned), so a read ends even while producers
write on. Then the three inputs of `trellis.mastery.replay`: the catalog, the activity log and
the live state (the worker's table changelogs, the latest value per key).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from trellis.common.faust_app import changelog_topic_name
from trellis.common.follower import UNREADABLE, decoded
from trellis.common.kafka import create_consumer
from trellis.common.pb.events.v1 import catalog_pb2
from trellis.common.settings import KafkaSettings, Settings
from trellis.mastery.adapters.state_codec import decode_state, encode_state
from trellis.mastery.catalog import CatalogView
from trellis.mastery.domain import LearnerState
from trellis.mastery.fitting import Progress
from trellis.mastery.replay import Rebuilt, rebuild
from trellis.mastery.stream.tables import ERASED, LEARNERS

#: A read that receives nothing for this long while records remain gives up (broker gone).
IDLE_TIMEOUT_S = 30.0


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def read_to_end(
    kafka: KafkaSettings, topic: str, progress: Progress = _no_progress
) -> Iterator[ConsumerRecord]:
    """Every record of `topic` up to its end offsets at the start, partition by partition in
    offset order (partitions interleaved). Progress is reported under the topic's name."""
    consumer = create_consumer(kafka, group_id=None)
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            raise LookupError(f"topic {topic} does not exist")
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        consumer.seek_to_beginning(*partitions)
        total = sum(ends[tp] - starts[tp] for tp in partitions)
        remaining = {tp for tp in partitions if ends[tp] > starts[tp]}
        consumer.pause(*(set(partitions) - remaining))
        progress(topic, 0, total)
        last_record = time.monotonic()
        while remaining:
            batches = consumer.poll(timeout_ms=500)
            for tp, records in batches.items():
                last_record = time.monotonic()
                yield from (r for r in records if r.offset < ends[tp])
            for tp in list(remaining):
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)  # records written since the start are not ours
            if remaining and time.monotonic() - last_record > IDLE_TIMEOUT_S:
                raise TimeoutError(f"{topic}: nothing read for {IDLE_TIMEOUT_S:.0f} s")
            done = sum(min(consumer.position(tp), ends[tp]) - starts[tp] for tp in partitions)
            progress(topic, done, total)
    finally:
        consumer.close()


def latest_values(kafka: KafkaSettings, topic: str) -> dict[bytes, bytes]:
    """The latest value of every key of a compacted topic; a tombstone removes the key."""
    values: dict[bytes, bytes] = {}
    for record in read_to_end(kafka, topic):
        if record.key is None:
            continue
        if record.value is None:
            values.pop(record.key, None)
        else:
            values[record.key] = record.value
    return values


def read_catalog(kafka: KafkaSettings) -> CatalogView:
    """The catalog as it stands now (what a caught-up worker holds)."""
    catalog = CatalogView()
    apply = decoded(catalog_pb2.CatalogRecord, catalog.apply)  # as the worker's follower does
    for record in read_to_end(kafka, kafka.topics.name("catalog")):
        try:
            apply(record.key, record.value, list(record.headers or []))
        except UNREADABLE:
            continue  # the worker's follower skips it too
    return catalog


@dataclass(frozen=True)
class LiveState:
    """The worker's tables as their changelogs hold them."""

    states: dict[bytes, LearnerState]
    erased: dict[bytes, datetime]


def read_live_state(settings: Settings) -> LiveState:
    group = settings.mastery.consumer_group
    kafka = settings.kafka
    learners = latest_values(kafka, changelog_topic_name(group, LEARNERS))
    erased = latest_values(kafka, changelog_topic_name(group, ERASED))
    return LiveState(
        {key: decode_state(value) for key, value in learners.items()},
        {key: datetime.fromisoformat(value.decode()) for key, value in erased.items()},
    )


def replay_log(settings: Settings, progress: Progress = _no_progress) -> Rebuilt:
    """Rebuild all mastery state from the activity topic, with the catalog as it stands now.

    States come back as stored: through the state codec, as the live ones are read."""
    kafka = settings.kafka
    catalog = read_catalog(kafka)
    records = (
        (r.key, r.value, list(r.headers or []))
        for r in read_to_end(kafka, kafka.topics.name("activity"), progress)
    )
    rebuilt = rebuild(records, catalog)
    for key, state in rebuilt.states.items():
        rebuilt.states[key] = decode_state(encode_state(state))
    return rebuilt
