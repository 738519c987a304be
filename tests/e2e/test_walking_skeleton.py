"""One attempt through the whole system: ingest -> Kafka -> mastery (BKT) -> Kafka -> reporting
(chDB) -> a reporting query. Every service runs as its own process, started by the same script as
`make up` (the `stack` fixture), against the test broker; the test talks gRPC only."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import pytest

from tests.conftest import TEST_TENANT
from tests.e2e.conftest import ADMIN_TOKEN, TOKEN
from trellis.common.pb.events.v1 import envelope_pb2, mastery_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc

# One correct answer from the default BKT parameters (prior 0.3, learn 0.1, guess 0.2, slip 0.1):
#   posterior = 0.3*0.9 / (0.3*0.9 + 0.7*0.2) = 0.27/0.41 = 0.658536585...
#   after the learning step: 0.658536585 + (1 - 0.658536585)*0.1 = 0.692682926829...
EXPECTED_P_MASTERED = 0.6926829268292683


def wait_for_progress(
    reporting: reporting_pb2_grpc.ReportingServiceStub, learner_id: str, timeout: float
) -> reporting_pb2.LearnerProgress:
    deadline = time.monotonic() + timeout
    while True:
        progress = reporting.GetLearnerProgress(
            reporting_pb2.GetLearnerProgressRequest(tenant_id=TEST_TENANT, learner_id=learner_id),
            metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
            timeout=5,
        )
        if progress.skills or time.monotonic() > deadline:
            return progress
        time.sleep(0.5)


def test_one_attempt_reaches_the_report(stack: dict[str, int]) -> None:
    attempt = envelope_pb2.Envelope(
        event_id="e2e-attempt-1", learner_id="sis-e2e-1", school_id="s1", class_id="c1"
    )
    attempt.occurred_at.FromDatetime(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    attempt.item_attempted.item_id = "frac.add-like.q1"
    attempt.item_attempted.skill_ids.append("frac.add-like")
    attempt.item_attempted.correct = True

    with grpc.insecure_channel(f"127.0.0.1:{stack['ingest']}") as channel:
        reply = ingest_pb2_grpc.IngestServiceStub(channel).RecordEvents(
            ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=[attempt]),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=30,
        )
    assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED]

    with grpc.insecure_channel(f"127.0.0.1:{stack['reporting']}") as channel:
        progress = wait_for_progress(
            reporting_pb2_grpc.ReportingServiceStub(channel), "sis-e2e-1", timeout=90
        )

    assert [s.skill_id for s in progress.skills] == ["frac.add-like"]
    skill = progress.skills[0]
    assert skill.p_mastered == pytest.approx(EXPECTED_P_MASTERED, abs=1e-12)
    assert skill.level == mastery_pb2.MASTERY_LEVEL_PRACTICING
    assert skill.attempts == 1
