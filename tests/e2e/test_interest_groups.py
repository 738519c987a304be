"""An interest group formed through the real services: a roster, a catalog and declared interests
sent to ingest; the mastery worker folding the interests into each learner's profile; the
recommender grouping the class of its roster replica (pseudonymous ids) with the profiles it reads
from mastery by those ids. The interest events name no class: membership is the roster's."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import pytest
from pydantic import SecretStr

from tests.conftest import TEST_PSEUDONYM_KEY, TEST_TENANT
from tests.e2e.conftest import TEACHER_CLASS, TEACHER_TOKEN, TOKEN
from trellis.common.pb.events.v1 import activity_pb2, catalog_pb2, envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pb.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from trellis.common.pb.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer

SCHOOL = "s-e2e"
LIKES = {f"sis-int-{n}": "music" if n < 3 else "space" for n in range(6)}
RESOURCES = {"music": "rhythm-podcast", "space": "orbit-video"}
ACCEPTED = ingest_pb2.ITEM_STATUS_ACCEPTED


def auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def send_district(channel: grpc.Channel) -> None:
    ingest = ingest_pb2_grpc.IngestServiceStub(channel)
    skill = catalog_pb2.Skill(skill_id="listening", name="Listening")
    catalog = [catalog_pb2.CatalogRecord(tenant_id=TEST_TENANT, skill=skill)] + [
        catalog_pb2.CatalogRecord(
            tenant_id=TEST_TENANT,
            resource=catalog_pb2.Resource(
                resource_id=resource, skill_ids=["listening"], interest_tags=[tag]
            ),
        )
        for tag, resource in RESOURCES.items()
    ]
    roster = [
        roster_pb2.RosterRecord(
            tenant_id=TEST_TENANT,
            school_class=roster_pb2.SchoolClass(sourced_id=TEACHER_CLASS, school_id=SCHOOL),
        )
    ]
    for sis in LIKES:
        roster += [
            roster_pb2.RosterRecord(
                tenant_id=TEST_TENANT,
                learner=roster_pb2.Learner(sourced_id=sis, school_id=SCHOOL),
            ),
            roster_pb2.RosterRecord(
                tenant_id=TEST_TENANT,
                enrollment=roster_pb2.Enrollment(
                    sourced_id=f"enr-{sis}",
                    class_id=TEACHER_CLASS,
                    user_id=sis,
                    role="learner",
                    school_id=SCHOOL,
                ),
            ),
        ]
    events = []
    for sis, tag in LIKES.items():
        event = envelope_pb2.Envelope(
            event_id=f"interest-{sis}",
            learner_id=sis,
            school_id=SCHOOL,
            interest_declared=activity_pb2.InterestDeclared(tags=[tag]),
        )
        event.occurred_at.FromDatetime(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
        events.append(event)
    answers = [
        ingest.UpsertCatalog(
            ingest_pb2.UpsertCatalogRequest(tenant_id=TEST_TENANT, records=catalog),
            metadata=auth(TOKEN),
            timeout=30,
        ),
        ingest.UpsertRoster(
            ingest_pb2.UpsertRosterRequest(tenant_id=TEST_TENANT, records=roster),
            metadata=auth(TOKEN),
            timeout=30,
        ),
        ingest.RecordEvents(
            ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=events),
            metadata=auth(TOKEN),
            timeout=30,
        ),
    ]
    assert [r.status for answer in answers for r in answer.results] == [ACCEPTED] * (
        len(catalog) + len(roster) + len(events)
    )


def wait_for_interests(channel: grpc.Channel, timeout: float) -> None:
    """Until the mastery worker has every learner's interest (read by SIS id, as a tool would)."""
    mastery = mastery_pb2_grpc.MasteryServiceStub(channel)
    deadline = time.monotonic() + timeout
    waiting = dict(LIKES)
    while waiting and time.monotonic() < deadline:
        for sis, tag in list(waiting.items()):
            try:
                profile = mastery.GetLearnerProfile(
                    mastery_pb2.GetLearnerProfileRequest(tenant_id=TEST_TENANT, learner_id=sis),
                    metadata=auth(TOKEN),
                    timeout=5,
                )
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:  # rebalancing: retry
                    raise
                continue
            if list(profile.interests) == [tag]:
                del waiting[sis]
        time.sleep(0.3)
    assert not waiting, f"interests not in mastery after {timeout} s: {sorted(waiting)}"


def group_by_interest(
    channel: grpc.Channel, timeout: float
) -> recommender_pb2.GroupLearnersResponse:
    """As the class's teacher, until the recommender's roster replica holds the whole class."""
    recommender = recommender_pb2_grpc.RecommenderServiceStub(channel)
    deadline = time.monotonic() + timeout
    while True:
        answer = recommender.GroupLearners(
            recommender_pb2.GroupLearnersRequest(
                tenant_id=TEST_TENANT,
                class_id=TEACHER_CLASS,
                purpose=recommender_pb2.GROUPING_PURPOSE_INTEREST,
            ),
            metadata=auth(TEACHER_TOKEN),
            timeout=10,
        )
        members = [lid for g in answer.groups for lid in g.learner_ids]
        if len(members) + len(answer.unplaced_learner_ids) == len(LIKES):
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"the class is not complete after {timeout} s: {answer}")
        time.sleep(0.5)


def test_learners_who_share_an_interest_are_grouped(stack: dict[str, int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack['ingest']}") as channel:
        send_district(channel)
    with grpc.insecure_channel(f"127.0.0.1:{stack['mastery']}") as channel:
        wait_for_interests(channel, timeout=90)
    with grpc.insecure_channel(f"127.0.0.1:{stack['recommender']}") as channel:
        answer = group_by_interest(channel, timeout=60)

    pseudonym = Pseudonymizer({TEST_TENANT: {1: SecretStr(TEST_PSEUDONYM_KEY)}}).pseudonymize
    expected = {
        tag: sorted(pseudonym(TEST_TENANT, sis) for sis, liked in LIKES.items() if liked == tag)
        for tag in RESOURCES
    }
    assert {g.binding: sorted(g.learner_ids) for g in answer.groups} == expected
    assert {g.binding: g.suggested_activity_id for g in answer.groups} == RESOURCES
    assert not answer.unplaced_learner_ids
