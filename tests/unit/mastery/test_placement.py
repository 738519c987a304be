"""The read API's view of a Faust worker: which activity offsets its tables reflect, when a
partition it got may be read, and who owns each partition. Faust's app is replaced by the few
attributes the placement reads; the sensor is fed as Faust feeds it."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from faust.streams import _current_event
from faust.types import TP
from yarl import URL

from trellis.common.grpc.errors import Unavailable
from trellis.mastery.adapters.placement import AppliedOffsets, FaustPlacement

TOPIC = "activity"
ME = "http://10.0.0.1:50052"
PEER = "http://10.0.0.2:50052"


@dataclass
class FakeConsumer:
    _committed_offset: dict[TP, int | None] = field(default_factory=dict)


@dataclass
class FakeEnds:
    ends: dict[int, int] = field(default_factory=dict)
    asked: list[list[int]] = field(default_factory=list)
    on_ask: Any = None

    async def of(self, topic: str, partitions: list[int]) -> dict[int, int]:
        assert topic == TOPIC
        self.asked.append(partitions)
        if self.on_ask is not None:
            self.on_ask()
        return {p: self.ends.get(p, 0) for p in partitions}

    def close(self) -> None:
        pass


@dataclass
class FakeAssignor:
    actives: set[TP] = field(default_factory=set)
    members: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def assigned_actives(self) -> set[TP]:
        return self.actives

    def external_topics_metadata(self) -> dict[str, dict[str, list[int]]]:
        return self.members


@dataclass
class FakeApp:
    consumer: FakeConsumer = field(default_factory=FakeConsumer)
    assignor: FakeAssignor = field(default_factory=FakeAssignor)
    consumer_generation_id: int = 1
    rebalancing: bool = False
    rebalancing_count: int = 1
    in_recovery: bool = False
    conf: Any = field(default_factory=lambda: SimpleNamespace(canonical_url=URL(ME)))


@dataclass
class FakeEvent:  # weakly referenceable, as Faust keeps the current event
    message: Any


def event(
    partition: int, offset: int, generation: int = 1, topic: str = TOPIC, tracked: bool = True
) -> Any:
    message = SimpleNamespace(
        topic=topic, partition=partition, offset=offset, generation_id=generation, tracked=tracked
    )
    return FakeEvent(message)


@contextmanager
def acting_for(current: Any) -> Iterator[None]:
    token = _current_event.set(weakref.ref(current))
    try:
        yield
    finally:
        _current_event.reset(token)


def done(offsets: AppliedOffsets, current: Any) -> None:
    message = current.message
    offsets.on_stream_event_out(TP(TOPIC, message.partition), message.offset, None, current)  # type: ignore[arg-type]


@pytest.fixture
def app() -> FakeApp:
    return FakeApp()


@pytest.fixture
def ends() -> FakeEnds:
    return FakeEnds()


@pytest.fixture
def offsets(app: FakeApp, ends: FakeEnds) -> AppliedOffsets:
    return AppliedOffsets(app, TOPIC, ends)  # type: ignore[arg-type]


def test_offsets_follow_writes_and_finished_events(app: FakeApp, offsets: AppliedOffsets) -> None:
    assert offsets.applied(0) == -1
    app.consumer._committed_offset[TP(TOPIC, 0)] = 10  # offsets 0..9 were committed
    assert offsets.applied(0) == 9
    with acting_for(event(0, 14)):
        offsets.on_table_set(None, b"k", b"v")  # type: ignore[arg-type]
    assert offsets.applied(0) == 14
    done(offsets, event(0, 15))
    assert offsets.applied(0) == 15
    done(offsets, event(0, 12))  # earlier events of the batch, acked after it
    assert (offsets.applied(0), offsets.applied(1)) == (15, -1)


def test_an_event_of_an_older_generation_counts_only_if_it_wrote(
    app: FakeApp, offsets: AppliedOffsets
) -> None:
    app.consumer_generation_id = 2
    done(offsets, event(0, 30, generation=1))  # acked unprocessed after a rebalance
    assert offsets.applied(0) == -1
    with acting_for(event(0, 31, generation=1)):  # a batch in flight that wrote its state
        offsets.on_table_set(None, b"k", b"v")  # type: ignore[arg-type]
    assert offsets.applied(0) == 31
    with acting_for(event(0, 40, topic="elsewhere")):
        offsets.on_table_set(None, b"k", b"v")  # type: ignore[arg-type]
    assert offsets.applied(0) == 31


def test_an_event_the_stream_skipped_does_not_count(offsets: AppliedOffsets) -> None:
    # Skipped while the flow was stopped, in this generation: acked, never tracked nor applied.
    done(offsets, event(0, 7, tracked=False))
    assert offsets.applied(0) == -1


async def test_a_partition_is_read_once_applied_up_to_its_end_at_the_first_read(
    app: FakeApp, ends: FakeEnds, offsets: AppliedOffsets
) -> None:
    app.consumer._committed_offset[TP(TOPIC, 0)] = 10
    ends.ends[0] = 13  # the previous owner may have written 10..12
    assert not await offsets.caught_up([0])
    done(offsets, event(0, 11))
    ends.ends[0] = 20  # later arrivals do not move the mark of this generation
    assert not await offsets.caught_up([0])
    done(offsets, event(0, 12))
    assert await offsets.caught_up([0])
    offsets.on_rebalance_start(app)  # type: ignore[arg-type]
    assert not await offsets.caught_up([0])  # a new generation: the end is asked again


async def test_the_ends_are_asked_as_the_rebalance_ends_not_by_the_first_read(
    app: FakeApp, ends: FakeEnds, offsets: AppliedOffsets
) -> None:
    app.assignor.actives = {TP(TOPIC, 0), TP(TOPIC, 1), TP("other", 2)}
    ends.ends = {0: 5, 1: 0}
    offsets.on_rebalance_start(app)  # type: ignore[arg-type]
    offsets.on_rebalance_end(app, {})  # type: ignore[arg-type]
    assert not await offsets.caught_up([0])  # waits for the answer, 0..4 not applied
    assert await offsets.caught_up([1])
    assert [sorted(asked) for asked in ends.asked] == [[0, 1]]


async def test_a_rebalance_during_the_question_is_not_caught_up(
    app: FakeApp, ends: FakeEnds, offsets: AppliedOffsets
) -> None:
    def rebalanced() -> None:
        app.rebalancing_count += 1

    ends.on_ask = rebalanced
    assert not await offsets.caught_up([0])
    ends.on_ask = None
    assert await offsets.caught_up([0])  # asked again: an empty partition


async def test_a_broker_that_does_not_answer_means_not_caught_up(
    ends: FakeEnds, offsets: AppliedOffsets
) -> None:
    def down() -> None:
        raise TimeoutError("no broker")

    ends.on_ask = down
    assert not await offsets.caught_up([0])


def placement(app: FakeApp, offsets: AppliedOffsets) -> FaustPlacement:
    return FaustPlacement(app, TOPIC, 2, offsets)  # type: ignore[arg-type]


async def test_owners_come_from_the_assignment(app: FakeApp, offsets: AppliedOffsets) -> None:
    app.assignor.actives = {TP(TOPIC, 0)}
    app.assignor.members = {ME: {TOPIC: [0]}, PEER: {TOPIC: [1], "other": [0]}}
    assert await placement(app, offsets).owners() == {0: None, 1: "10.0.0.2:50052"}


@pytest.mark.parametrize(
    "change",
    [
        lambda app, ends: setattr(app, "rebalancing", True),
        lambda app, ends: setattr(app, "in_recovery", True),
        lambda app, ends: app.assignor.members.pop(PEER),  # partition 1 has no owner
        lambda app, ends: app.assignor.members.update({ME: {TOPIC: [0, 1]}, PEER: {}}),  # not held
        lambda app, ends: ends.ends.update({0: 5}),  # not caught up
    ],
)
async def test_no_owner_map_while_ownership_moves(
    app: FakeApp, ends: FakeEnds, offsets: AppliedOffsets, change: Any
) -> None:
    app.assignor.actives = {TP(TOPIC, 0)}
    app.assignor.members = {ME: {TOPIC: [0]}, PEER: {TOPIC: [1]}}
    change(app, ends)
    with pytest.raises(Unavailable):
        await placement(app, offsets).owners()
