"""The reporting sink on the real broker and chDB: batches, exactly-once counts, replay, poison.

Each test has its own topics and consumer group (the `settings` fixture) and its own chDB path,
opened in this process only and closed at the end (one chDB engine per process).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import CommitFailedError

from trellis.common.codec import decode, encode_envelope, encode_roster
from trellis.common.kafka import create_consumer, create_producer
from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2, mastery_pb2, roster_pb2
from trellis.common.settings import Settings
from trellis.reporting.rows import ACTIVITY, MASTERY_EVENTS, MASTERY_HISTORY, MASTERY_LATEST
from trellis.reporting.sink import ReportingSink
from trellis.reporting.store.base import PartitionKey, ReportingStore
from trellis.reporting.store.chdb import ChdbStore
from trellis.reporting.store.clickhouse import ClickHouseStore

TENANT = "district-test"
T0 = datetime(2025, 9, 1, 8, 0, tzinfo=UTC)
LEARNERS = [f"learner-{i:02d}" for i in range(8)]
SKILLS = ["s-add", "s-sub", "s-mul"]
WAIT_S = 60.0


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def mastery_updated(n: int) -> envelope_pb2.Envelope:
    learner, skill = LEARNERS[n % len(LEARNERS)], SKILLS[n % len(SKILLS)]
    return envelope_pb2.Envelope(
        event_id=f"mu-{n}",
        tenant_id=TENANT,
        school_id="school-1",
        class_id=f"class-{n % 2}",
        learner_id=learner,
        occurred_at=_ts(T0 + timedelta(seconds=n)),
        ingested_at=_ts(T0 + timedelta(seconds=n, milliseconds=5)),
        mastery_updated=mastery_pb2.MasteryUpdated(
            skill_id=skill,
            p_before=0.2,
            p_after=min(0.99, 0.3 + n / 1000),
            level=mastery_pb2.MASTERY_LEVEL_PRACTICING,
            cause_event_id=f"ia-{n}",
            model_version="bkt-test",
            attempts=n + 1,
        ),
    )


def skill_mastered(n: int) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(
        event_id=f"sm-{n}",
        tenant_id=TENANT,
        learner_id=LEARNERS[n % len(LEARNERS)],
        occurred_at=_ts(T0 + timedelta(seconds=n)),
        skill_mastered=mastery_pb2.SkillMastered(skill_id="s-add", p_mastered=0.96),
    )


def item_attempted(n: int) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(
        event_id=f"ia-{n}",
        tenant_id=TENANT,
        school_id="school-1",
        class_id=f"class-{n % 2}",
        learner_id=LEARNERS[n % len(LEARNERS)],
        occurred_at=_ts(T0 + timedelta(seconds=n)),
        item_attempted=activity_pb2.ItemAttempted(
            item_id=f"item-{n % 5}", skill_ids=[SKILLS[n % 3]], correct=n % 3 != 0
        ),
    )


def produce(
    producer: KafkaProducer, topic: str, envelopes: Sequence[envelope_pb2.Envelope]
) -> None:
    futures = []
    for envelope in envelopes:
        encoded = encode_envelope(envelope)
        futures.append(
            producer.send(topic, key=encoded.key, value=encoded.value, headers=encoded.headers)
        )
    for future in futures:
        future.get(timeout=30)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def end_offsets(settings: Settings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        specs = {
            TopicPartition(topic, p): OffsetSpec.LATEST
            for topic in topics
            for p in range(settings.kafka.topics.partitions)
        }
        return {tp: info.offset for tp, info in admin.list_partition_offsets(specs).items()}
    finally:
        admin.close()


def committed(settings: Settings) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        group = settings.reporting.consumer_group
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        admin.close()


def all_committed(settings: Settings, sink: ReportingSink) -> Callable[[], bool]:
    def check() -> bool:
        ends = end_offsets(settings, sink.topics)
        done = committed(settings)
        return all(done.get(tp, 0) >= end for tp, end in ends.items())

    return check


def rewind_group(settings: Settings, sink: ReportingSink) -> None:
    """Reset the (empty) group's committed offsets to the beginning: a replay."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        specs = {
            TopicPartition(topic, p): OffsetSpec.EARLIEST
            for topic in sink.topics
            for p in range(settings.kafka.topics.partitions)
        }
        errors = admin.reset_group_offsets(settings.reporting.consumer_group, specs)
        assert all(r["error"].__name__ == "NoError" for r in errors.values()), errors
    finally:
        admin.close()
    assert all(offset == 0 for offset in committed(settings).values())


def dead_letters(settings: Settings, expected: int) -> list[envelope_pb2.DeadLetter]:
    consumer = KafkaConsumer(
        settings.kafka.topics.name("deadletter"),
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
    )
    letters: list[envelope_pb2.DeadLetter] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while (
            len({(x.source_partition, x.source_offset) for x in letters}) < expected
            and time.monotonic() < deadline
        ):
            for records in consumer.poll(timeout_ms=500).values():
                letters.extend(decode(envelope_pb2.DeadLetter, r.value, r.headers) for r in records)
    finally:
        consumer.close()
    return letters


@pytest.fixture
def sink_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "reporting": settings.reporting.model_copy(
                update={"batch_max_rows": 50, "batch_max_seconds": 0.2}
            )
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path / "chdb", "trellis")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def producer(settings: Settings) -> Iterator[KafkaProducer]:
    producer = create_producer(settings.kafka)
    try:
        yield producer
    finally:
        producer.close()


class Running:
    """A sink running in its thread for the length of a `with` block."""

    def __init__(self, settings: Settings, store: ReportingStore) -> None:
        self.sink = ReportingSink(settings, store)

    def __enter__(self) -> ReportingSink:
        self.sink.start()
        wait_until(self.sink.running.is_set, "the sink to subscribe")
        return self.sink

    def __exit__(self, *exc: object) -> None:
        assert self.sink.stop(timeout=30), "the sink did not stop"


def counts(store: ReportingStore) -> dict[str, int]:
    """Rows of the tables the sink writes (rollups and roster aside)."""
    tables = (ACTIVITY, MASTERY_HISTORY, MASTERY_LATEST, MASTERY_EVENTS)
    return {t: n for t, n in store.row_counts(TENANT).items() if t in tables}


def test_sink_stores_every_event_once_and_a_replay_adds_nothing(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    mastery_topic = sink_settings.kafka.topics.name("mastery")
    activity_topic = sink_settings.kafka.topics.name("activity")
    updates = [mastery_updated(n) for n in range(240)]
    produce(producer, mastery_topic, updates + [skill_mastered(n) for n in range(3)])
    produce(producer, activity_topic, [item_attempted(n) for n in range(300)])
    cells = {(u.class_id, u.learner_id, u.mastery_updated.skill_id) for u in updates}
    expected = {ACTIVITY: 300, MASTERY_HISTORY: 240, MASTERY_LATEST: len(cells), MASTERY_EVENTS: 3}

    with Running(sink_settings, store) as sink:
        wait_until(lambda: counts(store) == expected, "every row")
        wait_until(all_committed(sink_settings, sink), "offsets committed")
    assert sink.stats.flushes > 1, "batches are bounded by batch_max_rows"
    assert sink.stats.dead_letters == 0
    assert sink.stats.not_projected == 0

    # The newest update of each learner x skill is the latest one.
    last = {}
    for u in updates:
        last[(u.learner_id, u.mastery_updated.skill_id)] = u.mastery_updated.p_after
    progress = store.learner_progress(TENANT, LEARNERS[0])
    assert {p.skill_id: p.p_mastered for p in progress} == {
        skill: p for (learner, skill), p in last.items() if learner == LEARNERS[0]
    }

    # Replay: the group's offsets go back to the start, everything is read again.
    rewind_group(sink_settings, sink)
    with Running(sink_settings, store) as replay:
        wait_until(lambda: replay.stats.consumed >= 543, "the replay to read everything")
        wait_until(all_committed(sink_settings, replay), "replayed offsets committed")
    assert counts(store) == expected
    assert sum(replay.stats.inserted.values()) == 0
    # (more if a rebalance made the replay read a range twice)
    assert replay.stats.already_stored >= 300 + 240 * 2


def test_a_crash_between_insert_and_commit_stores_nothing_twice(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    produce(
        producer,
        sink_settings.kafka.topics.name("mastery"),
        [mastery_updated(n) for n in range(60)],
    )

    # A sink whose commits never reach Kafka: as if it died right after every insert.
    crashing = ReportingSink(sink_settings, store)
    crashing._commit = lambda consumer, next_offsets: None  # type: ignore[method-assign]
    crashing.start()
    wait_until(lambda: counts(store)[MASTERY_HISTORY] == 60, "the first run's rows")
    assert crashing.stop(timeout=30)
    assert committed(sink_settings) == {}

    with Running(sink_settings, store) as sink:
        wait_until(all_committed(sink_settings, sink), "offsets committed by the second run")
    assert sink.stats.consumed >= 60  # more if a rebalance made it fetch a range again
    assert counts(store)[MASTERY_HISTORY] == 60
    assert sum(sink.stats.inserted.values()) == 0


class FlakyStore(ReportingStore):
    """Delegates to a real store; the first inserts fail, some after storing (ambiguous)."""

    def __init__(self, store: ReportingStore, fail_before: int, fail_after: int) -> None:
        self._store = store
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.fail_erase = 0
        self.erasures = 0
        self.tokens: list[str] = []

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], token: str) -> None:
        self.tokens.append(token)
        if self.fail_before > 0:
            self.fail_before -= 1
            raise ConnectionError("store unreachable")
        self._store.insert(table, rows, token)
        if self.fail_after > 0:
            self.fail_after -= 1
            raise TimeoutError("no answer after the insert")

    def status(self) -> Any:
        return self._store.status()

    def migrate(self) -> list[int]:
        return self._store.migrate()

    def positions(self, tables: Sequence[str]) -> dict[str, dict[PartitionKey, int]]:
        return self._store.positions(tables)

    def learner_progress(self, tenant_id: str, learner_id: str, **scope: Any) -> Any:
        return self._store.learner_progress(tenant_id, learner_id, **scope)

    def class_heatmap(
        self, tenant_id: str, class_id: str, limit: int, after: Any = None, **scope: Any
    ) -> Any:
        return self._store.class_heatmap(tenant_id, class_id, limit, after, **scope)

    def row_counts(self, tenant_id: str) -> dict[str, int]:
        return self._store.row_counts(tenant_id)

    def erased_learners(self) -> set[tuple[str, str]]:
        return self._store.erased_learners()

    def erase_learners(self, tenant_id: str, learner_ids: Sequence[str]) -> None:
        self.erasures += 1
        if self.fail_erase > 0:
            self.fail_erase -= 1
            raise ConnectionError("store unreachable during the erasure")
        self._store.erase_learners(tenant_id, learner_ids)

    def close(self) -> None:
        pass


def test_store_failures_are_retried_and_a_retried_batch_is_stored_once(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    produce(
        producer,
        sink_settings.kafka.topics.name("activity"),
        [item_attempted(n) for n in range(40)],
    )
    flaky = FlakyStore(store, fail_before=2, fail_after=2)

    with Running(sink_settings, flaky) as sink:
        wait_until(lambda: counts(store)[ACTIVITY] == 40, "rows after the store recovered")
        wait_until(all_committed(sink_settings, sink), "offsets committed")
    assert counts(store)[ACTIVITY] == 40
    assert sink.stats.retries >= 4
    assert sink.healthy is False  # stopped
    # The retry of an ambiguous failure is the same block with the same token.
    assert len(flaky.tokens) > len(set(flaky.tokens))


def test_a_poison_message_goes_to_the_dead_letters_and_the_sink_goes_on(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    mastery_topic = sink_settings.kafka.topics.name("mastery")
    produce(producer, mastery_topic, [mastery_updated(n) for n in range(5)])
    producer.send(mastery_topic, key=b"district-test/x", value=b"\xff\x00 not a protobuf").get(30)
    bad = mastery_updated(99)
    bad.mastery_updated.p_after = 7.0  # decodes, but is not a probability
    produce(producer, mastery_topic, [bad, *(mastery_updated(n) for n in range(5, 10))])

    with Running(sink_settings, store) as sink:
        wait_until(lambda: counts(store)[MASTERY_HISTORY] == 10, "the valid rows")
        wait_until(all_committed(sink_settings, sink), "offsets committed past the poison")
    assert sink.stats.dead_letters >= 2  # at least once

    letters = dead_letters(sink_settings, expected=2)
    assert len({(letter.source_partition, letter.source_offset) for letter in letters}) == 2
    assert {letter.source_topic for letter in letters} == {mastery_topic}
    assert {letter.consumer for letter in letters} == {"trellis-reporting"}
    assert b"\xff\x00 not a protobuf" in {letter.original_value for letter in letters}
    assert any("p_after" in letter.error for letter in letters)


def test_the_server_store_uses_the_same_sql() -> None:
    # The sink only sees the port; the server adapter differs from chDB by its connection alone.
    assert ChdbStore.learner_progress is ClickHouseStore.learner_progress
    assert ChdbStore.insert is ClickHouseStore.insert


def roster_record(kind: str, entity: Any) -> roster_pb2.RosterRecord:
    return roster_pb2.RosterRecord(tenant_id=TENANT, **{kind: entity})


def test_records_of_a_partition_assigned_back_after_a_rebalance_are_not_lost(
    settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    """kafka-python keeps the fetch position of a partition that stays with a member across a
    rebalance: the sink must keep that partition's uncommitted records, not drop them."""
    # One batch stays open while another member joins the group and leaves again.
    open_batch = settings.model_copy(
        update={
            "reporting": settings.reporting.model_copy(
                update={"batch_max_rows": 10_000, "batch_max_seconds": 12.0}
            )
        }
    )
    produce(
        producer, settings.kafka.topics.name("activity"), [item_attempted(n) for n in range(120)]
    )

    with Running(open_batch, store) as sink:
        wait_until(lambda: sink.stats.consumed >= 120, "every record in the open batch")
        other = create_consumer(open_batch.kafka, open_batch.reporting.consumer_group)
        try:
            other.subscribe(sink.topics)
            wait_until(lambda: bool(other.poll(timeout_ms=200) or other.assignment()), "a join")
        finally:
            other.close(autocommit=False)
        assert sink.stats.flushes == 0, "the rebalance came after the batch was flushed"
        wait_until(all_committed(open_batch, sink), "offsets committed")
    assert store.row_counts(TENANT)[ACTIVITY] == 120


def test_offsets_whose_commit_failed_are_committed_later(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    """A refused commit (as during a rebalance) is retried: the records stay assigned and are not
    fetched again, so no later read would commit them."""
    refusals = [1]

    def consumer_refusing_one_commit() -> KafkaConsumer:
        consumer = create_consumer(sink_settings.kafka, sink_settings.reporting.consumer_group)
        commit_async = consumer.commit_async

        def refuse_once(offsets: Any = None, callback: Any = None) -> Any:
            if refusals[0]:
                refusals[0] -= 1
                # As kafka-python answers a failed commit: to its callback, in a later poll.
                failed = (callback, offsets, CommitFailedError("refused once"))
                consumer._coordinator.completed_offset_commits.appendleft(failed)
                return None
            return commit_async(offsets, callback)

        consumer.commit_async = refuse_once
        return consumer

    produce(
        producer,
        sink_settings.kafka.topics.name("activity"),
        [item_attempted(n) for n in range(30)],
    )
    sink = ReportingSink(sink_settings, store, consumer_factory=consumer_refusing_one_commit)
    sink.start()
    try:
        wait_until(all_committed(sink_settings, sink), "offsets committed after the refusal")
    finally:
        assert sink.stop(timeout=30)
    assert refusals == [0]
    assert store.row_counts(TENANT)[ACTIVITY] == 30


def test_roster_and_erasure_through_the_broker_and_a_replay_does_not_bring_them_back(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    roster_topic = sink_settings.kafka.topics.name("roster")
    records = [
        roster_record("org", roster_pb2.Org(sourced_id="school-1", name="North", type="school")),
        roster_record(
            "school_class", roster_pb2.SchoolClass(sourced_id="class-0", school_id="school-1")
        ),
        *(
            roster_record(
                "learner",
                roster_pb2.Learner(sourced_id=learner, school_id="school-1", grade="4"),
            )
            for learner in LEARNERS
        ),
        *(
            roster_record(
                "enrollment",
                roster_pb2.Enrollment(
                    sourced_id=f"e-{learner}", class_id="class-0", user_id=learner, role="learner"
                ),
            )
            for learner in LEARNERS
        ),
    ]
    for record in records:
        encoded = encode_roster(record)
        producer.send(roster_topic, key=encoded.key, value=encoded.value, headers=encoded.headers)
    # A tombstone: learner-07 leaves the roster.
    producer.send(roster_topic, key=f"{TENANT}/learner/{LEARNERS[7]}".encode(), value=None)
    produce(
        producer,
        sink_settings.kafka.topics.name("mastery"),
        [mastery_updated(n) for n in range(48)],
    )
    produce(
        producer,
        sink_settings.kafka.topics.name("activity"),
        [item_attempted(n) for n in range(48)],
    )
    erased = LEARNERS[0]
    erasure = envelope_pb2.Envelope(
        event_id="erase-0",
        tenant_id=TENANT,
        learner_id=erased,
        occurred_at=_ts(T0 + timedelta(hours=1)),
        learner_erasure_requested=activity_pb2.LearnerErasureRequested(reason="request"),
    )
    produce(producer, sink_settings.kafka.topics.name("activity"), [erasure])
    # A late mastery event of the erased learner (after the erasure) is dropped too.
    produce(producer, sink_settings.kafka.topics.name("mastery"), [mastery_updated(48)])

    def rows_of(learner: str) -> int:
        total = 0
        for table in (
            "activity",
            "mastery_history",
            "mastery_latest",
            "roster_learners",
            "roster_enrollments",
            "roster_class_enrollments",
            "engagement_daily",
        ):
            total += store.client.query(
                f"SELECT count() FROM trellis.{table} WHERE learner_id = {{l:String}}",
                parameters={"l": learner},
            ).result_rows[0][0]
        return total

    with Running(sink_settings, store) as sink:
        wait_until(all_committed(sink_settings, sink), "offsets committed")
    after = store.row_counts(TENANT)
    assert rows_of(erased) == 0
    assert store.erased_learners() == {(TENANT, erased)}
    # 8 learners, one erased, one tombstoned; 8 enrollments, one erased.
    assert (after["roster_learners"], after["roster_enrollments"]) == (6, 7)
    assert (after["roster_schools"], after["roster_classes"]) == (1, 1)
    # 48 attempts over 8 learners: 6 each, learner-00's removed.
    assert after[ACTIVITY] == 42
    assert after[MASTERY_HISTORY] == 42
    assert rows_of(LEARNERS[1]) > 0

    rewind_group(sink_settings, sink)
    with Running(sink_settings, store) as replay:
        wait_until(lambda: replay.stats.consumed >= 1 + len(records) + 49 + 49, "the replay")
        wait_until(all_committed(sink_settings, replay), "replayed offsets committed")
    assert rows_of(erased) == 0
    assert store.row_counts(TENANT) == after
    assert replay.stats.erased_rows_dropped >= 6 + 6 + 2


def test_an_erasure_that_fails_after_being_recorded_is_redone_before_the_commit(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    activity_topic = sink_settings.kafka.topics.name("activity")
    produce(producer, activity_topic, [item_attempted(n) for n in range(16)])
    with Running(sink_settings, store) as sink:
        wait_until(lambda: counts(store)[ACTIVITY] == 16, "the attempts")
        wait_until(all_committed(sink_settings, sink), "offsets committed")
    erasure = envelope_pb2.Envelope(
        event_id="erase-1",
        tenant_id=TENANT,
        learner_id=LEARNERS[1],
        occurred_at=_ts(T0 + timedelta(hours=1)),
        learner_erasure_requested=activity_pb2.LearnerErasureRequested(),
    )
    produce(producer, activity_topic, [erasure])
    flaky = FlakyStore(store, fail_before=0, fail_after=0)
    flaky.fail_erase = 2

    with Running(sink_settings, flaky) as sink:
        wait_until(lambda: counts(store)[ACTIVITY] == 14, "the erasure")
        wait_until(all_committed(sink_settings, sink), "offsets committed")

    # Recorded once, deleted on the third try; learner-01's 2 attempts are gone.
    assert store.erased_learners() == {(TENANT, LEARNERS[1])}
    assert flaky.erasures == 3
    assert sink.stats.retries >= 2
