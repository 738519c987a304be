"""SubscribeMastery and SubscribeMasteryEvents on a worker process and the real broker: filtered
by class and by learner, resumed from positions, live from the end, and cancelled by the client.

What each stream must carry is computed from the activity this test produced, by the same domain
code: the mastery events (with their deterministic ids) that each activity event gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import pytest

from tests.conftest import TEST_TENANT
from tests.integration.mastery.test_two_workers import AUTH, CLASSES, LEARNERS, Log
from tests.integration.mastery.workers import Worker, wait_until_serving
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings
from trellis.mastery.adapters.grpc import SUBSCRIBED
from trellis.mastery.adapters.memory_store import InMemoryLearnerStore
from trellis.mastery.service import MasteryService

STREAM_DEADLINE_S = 30.0


def _outputs(log: Log) -> list[envelope_pb2.Envelope]:
    """The mastery events the log's activity gives, in the order of each learner's events."""
    service = MasteryService(InMemoryLearnerStore())
    found: list[envelope_pb2.Envelope] = []
    for _, _, key, envelope in log.events:
        found += service.record_activity(key, envelope).outputs
    return found


def _take(stream: Any, count: int) -> list[Any]:
    """The first `count` messages of a server stream, then cancel it."""
    taken = []
    for message in stream:
        taken.append(message)
        if len(taken) == count:
            break
    stream.cancel()
    return taken


def _ids(events: Iterable[envelope_pb2.Envelope]) -> list[str]:
    return [e.event_id for e in events]


def _in_partition_order(items: list[api_pb2.MasteryEventAt]) -> None:
    last: dict[int, int] = {}
    for item in items:
        position = item.position
        assert position.offset > last.get(position.partition, -1)
        last[position.partition] = position.offset


def test_subscriptions_filter_resume_and_follow_live(
    settings: Settings,
    start_worker: Callable[[str], Worker],
) -> None:
    log = Log(settings, Pseudonymizer(settings.pseudonym.all_keys()))
    log.publish_roster()
    worker = start_worker("subscribed")
    wait_until_serving(worker)
    for n in range(24):
        log.send(n)
    everything = _outputs(log)
    in_class = [e for e in everything if e.class_id == "class-7a"]
    one = log.pseudonyms.pseudonymize(TEST_TENANT, "sis-3")
    of_one = [e for e in everything if e.learner_id == one]
    assert in_class and of_one and len(in_class) < len(everything)

    with grpc.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        stub = mastery_pb2_grpc.MasteryServiceStub(channel)

        def subscribe(method: str = "SubscribeMasteryEvents", **fields: Any) -> Any:
            request = api_pb2.SubscribeMasteryRequest(tenant_id=TEST_TENANT, **fields)
            return getattr(stub, method)(request, metadata=AUTH, timeout=STREAM_DEADLINE_S)

        # A class, from the beginning: its events, in order per partition, with positions.
        class_stream = _take(subscribe(class_id="class-7a", from_beginning=True), len(in_class))
        assert sorted(_ids(i.event for i in class_stream)) == sorted(_ids(in_class))
        assert all(i.event.class_id == "class-7a" for i in class_stream)
        assert {i.position.topic for i in class_stream} == {settings.kafka.topics.name("mastery")}
        _in_partition_order(class_stream)

        # One learner (SIS id), as plain envelopes: their events, in their order.
        learner_stream = _take(
            subscribe("SubscribeMastery", learner_id="sis-3", from_beginning=True), len(of_one)
        )
        assert _ids(learner_stream) == _ids(of_one)

        # Resumed after the first half of the class's events: exactly the second half.
        half = len(class_stream) // 2
        after: dict[int, int] = {}
        for item in class_stream[:half]:
            after[item.position.partition] = item.position.offset
        resumed = _take(
            subscribe(
                class_id="class-7a",
                from_beginning=True,  # a partition with nothing handled yet starts at its start
                after=[api_pb2.PartitionOffset(partition=p, offset=o) for p, o in after.items()],
            ),
            len(class_stream) - half,
        )
        assert sorted(_ids(i.event for i in resumed)) == sorted(
            _ids(i.event for i in class_stream[half:])
        )

        # Live: from the end, once subscribed (initial metadata), only what comes next.
        live = subscribe()
        assert SUBSCRIBED in tuple(live.initial_metadata())
        log.send(24)
        fresh = _outputs(log)[len(everything) :]
        assert fresh
        assert _ids(i.event for i in _take(live, len(fresh))) == _ids(fresh)

        # Scopes on the worker process: a school-scoped admin receives its schools' events only
        # (all of this log is in school-1) and reads the learners the roster enrols in classes
        # of its schools; a teacher reads the learners of their class only.
        def as_(token: str) -> tuple[tuple[str, str]]:
            return (("authorization", f"Bearer {token}"),)

        school_1 = stub.SubscribeMasteryEvents(
            api_pb2.SubscribeMasteryRequest(tenant_id=TEST_TENANT, from_beginning=True),
            metadata=as_("mastery-admin-school-1"),
            timeout=STREAM_DEADLINE_S,
        )
        all_so_far = everything + fresh
        taken = _take(school_1, len(all_so_far))
        assert sorted(_ids(i.event for i in taken)) == sorted(_ids(all_so_far))
        school_2 = stub.SubscribeMasteryEvents(
            api_pb2.SubscribeMasteryRequest(tenant_id=TEST_TENANT, from_beginning=True),
            metadata=as_("mastery-admin-school-2"),
            timeout=3.0,
        )
        with pytest.raises(grpc.RpcError) as ended:
            next(iter(school_2))
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # nothing in its schools
        in_7a = next(sis for sis in LEARNERS if CLASSES[LEARNERS.index(sis) % 2] == "class-7a")
        in_7b = next(sis for sis in LEARNERS if CLASSES[LEARNERS.index(sis) % 2] == "class-7b")
        for token, sis_id, allowed in [
            ("mastery-teacher-7a", in_7a, True),
            ("mastery-teacher-7a", in_7b, False),
            ("mastery-admin-school-1", in_7a, True),
            ("mastery-admin-school-2", in_7a, False),
        ]:
            request = api_pb2.GetLearnerMasteryRequest(tenant_id=TEST_TENANT, learner_id=sis_id)
            if allowed:
                assert stub.GetLearnerMastery(request, metadata=as_(token), timeout=5.0).skills
            else:
                with pytest.raises(grpc.RpcError) as denied:
                    stub.GetLearnerMastery(request, metadata=as_(token), timeout=5.0)
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # Cancelled streams let go of their consumers; the worker keeps serving.
        time.sleep(1.0)
        read = api_pb2.GetLearnerMasteryRequest(tenant_id=TEST_TENANT, learner_id="sis-3")
        assert stub.GetLearnerMastery(read, metadata=AUTH, timeout=5.0).skills
    cancelled = worker.output().count('"code": "CANCELLED"')
    assert cancelled >= 4, worker.output()[-4000:]
    assert worker.process.poll() is None
