"""Class membership from the roster topic, on a worker process and the real broker: a class lists
the learners the roster enrols (one without events too), a teacher reads an enrolled learner until
the enrollment's tombstone arrives, a school-scoped admin reads within its schools only, and a
class subscription carries its members' events only."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from tests.conftest import TEST_TENANT
from tests.integration.mastery.envelopes import learner_event
from tests.integration.mastery.roster import end_enrollment, publish_roster, send_records
from tests.integration.mastery.workers import TOKEN, Worker, wait_until_serving
from trellis.common.codec import encode_envelope
from trellis.common.pb.events.v1 import activity_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings

WAIT_S = 30.0


def _as(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _until(check: Callable[[], bool], what: str, worker: Worker) -> None:
    deadline = time.monotonic() + WAIT_S
    while not _answered(check):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{worker.output()}")
        time.sleep(0.2)


def _answered(check: Callable[[], bool]) -> bool:
    """`check()`, where UNAVAILABLE (a worker catching up after its first assignment, the read
    API's retryable answer) counts as not yet."""
    try:
        return check()
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return False


def _send(settings: Settings, event_id: str, learner: str) -> None:
    """A correct attempt of `learner` in class-7a."""
    attempt = learner_event(
        event_id,
        learner,
        datetime(2026, 9, 1, 8, 0, tzinfo=UTC),
        item_attempted=activity_pb2.ItemAttempted(skill_ids=["fractions.add"], correct=True),
    )
    encoded = encode_envelope(attempt)
    send_records(settings, "activity", [(encoded.key, encoded.value, encoded.headers)])


def test_reads_follow_the_rosters_enrollments(
    settings: Settings, start_worker: Callable[[str], Worker]
) -> None:
    pseudonyms = Pseudonymizer(settings.pseudonym.all_keys())
    active, newcomer = (pseudonyms.pseudonymize(TEST_TENANT, s) for s in ("sis-r1", "sis-r2"))
    publish_roster(settings, {"class-7a": [active, newcomer]})
    worker = start_worker("roster")
    wait_until_serving(worker)
    _send(settings, "roster-1", active)

    with grpc.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        stub = mastery_pb2_grpc.MasteryServiceStub(channel)

        def read(token: str, sis_id: str = "sis-r1") -> Any:
            request = api_pb2.GetLearnerMasteryRequest(tenant_id=TEST_TENANT, learner_id=sis_id)
            return stub.GetLearnerMastery(request, metadata=_as(token), timeout=5.0)

        def whole_class(token: str) -> Any:
            request = api_pb2.GetClassMasteryRequest(tenant_id=TEST_TENANT, class_id="class-7a")
            return stub.GetClassMastery(request, metadata=_as(token), timeout=5.0)

        def denied(call: Callable[[], Any]) -> bool:
            try:
                call()
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc
                return True
            return False

        _until(lambda: bool(read(TOKEN).skills), "the attempt's update", worker)

        # The class: both enrolled learners, the one without events with no skills.
        members = {m.learner_id: len(m.skills) for m in whole_class("mastery-teacher-7a").learners}
        assert members == {active: 1, newcomer: 0}
        assert [s.skill_id for s in read("mastery-teacher-7a").skills] == ["fractions.add"]
        assert not read("mastery-teacher-7a", "sis-r2").skills  # enrolled, no state yet

        # School-scoped: the roster places class-7a in school-1.
        assert read("mastery-admin-school-1").skills
        assert len(whole_class("mastery-admin-school-1").learners) == 2
        assert denied(lambda: read("mastery-admin-school-2"))
        assert denied(lambda: whole_class("mastery-admin-school-2"))

        # The enrollment ends (its tombstone): out of the class and of the teacher's reach.
        end_enrollment(settings, "class-7a", active)
        _until(lambda: denied(lambda: read("mastery-teacher-7a")), "the tombstone", worker)
        assert [m.learner_id for m in whole_class("mastery-teacher-7a").learners] == [newcomer]
        assert denied(lambda: read("mastery-admin-school-1"))
        assert read(TOKEN).skills  # a tenant-wide caller still reads the learner's state

        # A class subscription carries the events of the class's members only: from the
        # beginning, the first event is the newcomer's, not the earlier one of the learner who
        # left (whose events named class-7a too).
        stream = stub.SubscribeMastery(
            api_pb2.SubscribeMasteryRequest(
                tenant_id=TEST_TENANT, class_id="class-7a", from_beginning=True
            ),
            metadata=_as("mastery-teacher-7a"),
            timeout=WAIT_S,
        )
        _send(settings, "roster-2", newcomer)
        first = next(iter(stream))
        stream.cancel()
        assert (first.learner_id, first.class_id) == (newcomer, "class-7a")
