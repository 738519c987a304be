"""Property-based tests (hypothesis) of validation and of the servicer.

1. Random and malformed requests: validation and the servicer never raise anything but the
   errors that become deliberate gRPC statuses, so nothing escapes as UNKNOWN or INTERNAL.
2. For every validated field, a valid event with that one field made invalid is rejected with
   that field's path.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from trellis.common.codec import Encoded
from trellis.common.grpc.auth import reset_current_principal, set_current_principal
from trellis.common.grpc.errors import TrellisError
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Principal
from trellis.ingest.adapters.grpc import IngestServicer
from trellis.ingest.catalog import CatalogView
from trellis.ingest.dedup import DedupWindow
from trellis.ingest.service import IngestService, Status
from trellis.ingest.validation import MAX_DURATION_SECONDS, MAX_ID_LENGTH, validate_event

TENANT = "district-a"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PAYLOADS = [f.name for f in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields]
INT64 = st.integers(-(2**63), 2**63 - 1)
ANY_TEXT = st.text(max_size=200) | st.sampled_from(["", "a/b", "x\x00y", "x" * 129, TENANT])
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


class MemoryPublisher:
    async def __call__(self, topic: str, records: Sequence[Encoded]) -> list[bool]:
        return [True] * len(records)


@st.composite
def random_envelopes(draw: st.DrawFn) -> envelope_pb2.Envelope:
    """Any field with any value, including out-of-range timestamps, NaN and foreign payloads."""
    event = envelope_pb2.Envelope(
        event_id=draw(ANY_TEXT),
        tenant_id=draw(ANY_TEXT),
        school_id=draw(ANY_TEXT),
        class_id=draw(ANY_TEXT),
        learner_id=draw(ANY_TEXT),
    )
    if draw(st.booleans()):
        event.occurred_at.seconds = draw(INT64)
        event.occurred_at.nanos = draw(st.integers(-(2**31), 2**31 - 1))
    payload = draw(st.none() | st.sampled_from(PAYLOADS))
    if payload is not None:
        getattr(event, payload).SetInParent()
    if payload == "item_attempted":
        attempt = event.item_attempted
        attempt.item_id = draw(ANY_TEXT)
        attempt.skill_ids.extend(draw(st.lists(ANY_TEXT, max_size=3)))
        if draw(st.booleans()):
            attempt.score = draw(ANY_FLOAT)
        if draw(st.booleans()):
            attempt.correct = draw(st.booleans())
        attempt.duration_seconds = draw(ANY_FLOAT)
    elif payload == "resource_engaged":
        event.resource_engaged.resource_id = draw(ANY_TEXT)
        event.resource_engaged.seconds = draw(ANY_FLOAT)
        event.resource_engaged.completion = draw(ANY_FLOAT)
    elif payload == "teacher_override":
        event.teacher_override.skill_id = draw(ANY_TEXT)
        event.teacher_override.p_mastered = draw(ANY_FLOAT)
    return event


def make_servicer(max_batch_size: int = 5) -> IngestServicer:
    service = IngestService(
        MemoryPublisher(),
        Pseudonymizer({TENANT: {1: SecretStr("k")}}),
        DedupWindow(1_000),
        CatalogView(),
    )
    return IngestServicer(service, max_batch_size=max_batch_size, max_in_flight=2)


def call_as(principal: Principal, method: Callable[..., Any], request: Any) -> Any:
    token = set_current_principal(principal)
    try:
        return asyncio.run(method(request, None))
    finally:
        reset_current_principal(token)


def deliberate(exc: TrellisError) -> bool:
    return exc.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


@settings(max_examples=300, deadline=None)
@given(random_envelopes())
def test_validation_never_raises(event: envelope_pb2.Envelope) -> None:
    for violation in validate_event(event, "events[0]", TENANT, NOW):
        assert violation.field.startswith("events[0].")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tenant=st.sampled_from([TENANT, "", "district-without-key", "a/b"]),
    events=st.lists(random_envelopes() | st.builds(lambda: valid_event()), max_size=7),
    role=st.sampled_from(["service", "platform_admin", "teacher", "learner"]),
    schools=st.lists(st.sampled_from(["", "s1", "s2"]), max_size=2),
)
def test_servicer_answers_random_batches_deliberately(
    tenant: str, events: list[envelope_pb2.Envelope], role: Any, schools: list[str]
) -> None:
    principal = Principal(tenant_id=TENANT, role=role, schools=schools, classes=["c1"])
    request = ingest_pb2.RecordEventsRequest(tenant_id=tenant, events=events)
    try:
        reply = call_as(principal, make_servicer().RecordEvents, request)
    except TrellisError as exc:
        assert deliberate(exc), exc
        return
    assert [r.index for r in reply.results] == list(range(len(events)))
    assert all(r.status != ingest_pb2.ITEM_STATUS_UNSPECIFIED for r in reply.results)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(
        [
            ("RecordEvents", ingest_pb2.RecordEventsRequest),
            ("UpsertRoster", ingest_pb2.UpsertRosterRequest),
            ("UpsertCatalog", ingest_pb2.UpsertCatalogRequest),
        ]
    ),
    data=st.binary(max_size=300),
    prefix=st.sampled_from([b"", b"\n\x0adistrict-a"]),
)
def test_servicer_answers_arbitrary_bytes_deliberately(
    method: tuple[str, Any], data: bytes, prefix: bytes
) -> None:
    name, request_type = method
    try:
        request = request_type.FromString(prefix + data)
    except Exception:  # protobuf (and so grpc) refuses what it cannot parse
        return
    try:
        call_as(Principal(tenant_id=TENANT), getattr(make_servicer(), name), request)
    except TrellisError as exc:
        assert deliberate(exc), exc


def valid_event() -> envelope_pb2.Envelope:
    event = envelope_pb2.Envelope(event_id="e1", learner_id="sis-1", school_id="s1", class_id="c1")
    event.occurred_at.FromDatetime(NOW - timedelta(minutes=1))
    event.item_attempted.item_id = "item-1"
    event.item_attempted.skill_ids.append("fractions")
    event.item_attempted.score = 0.5
    event.item_attempted.duration_seconds = 30.0
    return event


BAD_ID = (
    st.just("")
    | st.text(min_size=MAX_ID_LENGTH + 1, max_size=MAX_ID_LENGTH + 20)
    | st.tuples(st.text(max_size=10), st.sampled_from("/\x00"), st.text(max_size=10)).map("".join)
)
BAD_OPTIONAL_ID = BAD_ID.filter(bool)
BAD_FRACTION = st.floats(allow_nan=True).filter(lambda x: math.isnan(x) or not 0 <= x <= 1)
BAD_DURATION = st.floats(allow_nan=True).filter(
    lambda x: math.isnan(x) or not 0 <= x <= MAX_DURATION_SECONDS
)


def _set(path: str) -> Callable[[envelope_pb2.Envelope, Any], None]:
    def apply(event: envelope_pb2.Envelope, value: Any) -> None:
        *parents, name = path.split(".")
        target: Any = event
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return apply


def _set_skill(event: envelope_pb2.Envelope, value: str) -> None:
    event.item_attempted.skill_ids[0] = value


def _future(event: envelope_pb2.Envelope, minutes: int) -> None:
    event.occurred_at.FromDatetime(NOW + timedelta(minutes=minutes))


def _out_of_range(event: envelope_pb2.Envelope, seconds: int) -> None:
    event.occurred_at.seconds = seconds


def _no_outcome(event: envelope_pb2.Envelope, _: Any) -> None:
    event.item_attempted.ClearField("score")


def _engaged(event: envelope_pb2.Envelope, field: str, value: Any) -> None:
    event.resource_engaged.resource_id = "r1"
    event.resource_engaged.completion = 0.5
    event.resource_engaged.seconds = 10
    setattr(event.resource_engaged, field, value)


def _override(event: envelope_pb2.Envelope, field: str, value: Any) -> None:
    event.teacher_override.skill_id = "fractions"
    event.teacher_override.p_mastered = 0.5
    setattr(event.teacher_override, field, value)


# Every validated field of an activity event: (path in the answer, how to break it, bad values).
INVALIDATIONS: list[tuple[str, Callable[[envelope_pb2.Envelope, Any], None], Any]] = [
    ("event_id", _set("event_id"), BAD_ID),
    ("tenant_id", _set("tenant_id"), st.text(min_size=1).filter(lambda t: t != TENANT)),
    ("learner_id", _set("learner_id"), BAD_ID),
    ("school_id", _set("school_id"), BAD_OPTIONAL_ID),
    ("class_id", _set("class_id"), BAD_OPTIONAL_ID),
    ("occurred_at", _future, st.integers(6, 10**6)),
    (
        "occurred_at",
        _out_of_range,
        st.integers(253402300800, 2**62) | st.integers(-(2**62), -62135596801),
    ),
    ("occurred_at", lambda e, _: e.ClearField("occurred_at"), st.none()),
    ("payload", lambda e, _: e.ClearField("item_attempted"), st.none()),
    ("item_attempted.item_id", _set("item_attempted.item_id"), BAD_ID),
    ("item_attempted.skill_ids[0]", _set_skill, BAD_ID),
    ("item_attempted.score", _set("item_attempted.score"), BAD_FRACTION),
    ("item_attempted.correct", _no_outcome, st.none()),
    ("item_attempted.duration_seconds", _set("item_attempted.duration_seconds"), BAD_DURATION),
    ("resource_engaged.resource_id", lambda e, v: _engaged(e, "resource_id", v), BAD_ID),
    ("resource_engaged.completion", lambda e, v: _engaged(e, "completion", v), BAD_FRACTION),
    (
        "resource_engaged.seconds",
        lambda e, v: _engaged(e, "seconds", v),
        st.floats(max_value=-1e-9) | st.just(math.nan),
    ),
    ("teacher_override.skill_id", lambda e, v: _override(e, "skill_id", v), BAD_ID),
    ("teacher_override.p_mastered", lambda e, v: _override(e, "p_mastered", v), BAD_FRACTION),
    ("mastery_updated", lambda e, _: e.mastery_updated.SetInParent(), st.none()),
]


def test_valid_event_is_accepted() -> None:
    assert validate_event(valid_event(), "events[0]", TENANT, NOW) == []


@settings(max_examples=400, deadline=None)
@given(case=st.sampled_from(INVALIDATIONS), data=st.data(), index=st.integers(0, 999))
def test_one_invalid_field_is_rejected_with_its_path(
    case: Any, data: st.DataObject, index: int
) -> None:
    path, invalidate, values = case
    event = valid_event()
    invalidate(event, data.draw(values))

    outcomes = asyncio.run(
        IngestService(
            MemoryPublisher(),
            Pseudonymizer({TENANT: {1: SecretStr("k")}}),
            DedupWindow(10),
            CatalogView(),
        ).record_events(TENANT, [event], NOW, first_index=index)
    )

    assert outcomes[0].status is Status.REJECTED
    assert f"events[{index}].{path}" in [v.field for v in outcomes[0].violations]
