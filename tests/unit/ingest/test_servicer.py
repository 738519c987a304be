"""The servicer refuses calls with UNAVAILABLE until its process has loaded the dedup window and
the replicas, and counts flagged items by their warning."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from tests.unit.ingest.test_properties import TENANT, call_as, make_servicer, valid_event
from trellis.common.grpc.errors import Unavailable
from trellis.common.pb.ingest.v1 import ingest_pb2
from trellis.common.settings import Principal


def test_not_ready_answers_unavailable() -> None:
    servicer = make_servicer()
    servicer.ready = False
    request = ingest_pb2.RecordEventsRequest(tenant_id=TENANT, events=[valid_event()])
    with pytest.raises(Unavailable) as refused:
        call_as(Principal(tenant_id=TENANT), servicer.RecordEvents, request)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE

    servicer.ready = True
    reply = call_as(Principal(tenant_id=TENANT), servicer.RecordEvents, request)
    assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED]
    # Flagged (the default): accepted, with the unknown class, item and skill as warnings, and
    # counted by the first of them.
    assert [w.field for w in reply.results[0].warnings] == [
        "events[0].class_id",
        "events[0].item_attempted.item_id",
        "events[0].item_attempted.skill_ids[0]",
    ]
    labels = {
        "tenant": TENANT,
        "kind": "activity",
        "status": "accepted",
        "reason": "events[].class_id is not in the roster: its school is unchecked",
    }
    assert (REGISTRY.get_sample_value("trellis_ingest_items_total", labels) or 0) >= 1


def test_stream_not_ready_answers_unavailable() -> None:
    servicer = make_servicer()
    servicer.ready = False

    async def consume() -> None:
        async def events():  # type: ignore[no-untyped-def]
            yield valid_event()

        async for _ in servicer.StreamEvents(events(), None):  # type: ignore[arg-type]
            pass

    with pytest.raises(Unavailable):
        call_as(Principal(tenant_id=TENANT), lambda _r, _c: consume(), None)
