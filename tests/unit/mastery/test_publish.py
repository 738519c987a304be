"""`publish`: a fitted set reaches ingest's UpsertCatalog as one catalog record, with the token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.mastery.adapters.publish import PublishError, publish
from trellis.mastery.domain import BktParameters
from trellis.mastery.model_parameters import to_json
from trellis.mastery.prediction import Calibration, ModelSet

MODEL = ModelSet(
    version="fit-abc",
    skills={"a": BktParameters(prior=0.4, version="fit-abc")},
    item_difficulty={"i1": 0.5},
    calibration=Calibration(1.1, -1.0, 0.05),
)


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[tuple[ingest_pb2.UpsertCatalogRequest, dict[str, Any]]] = []

    async def UpsertCatalog(self, request: Any, context: Any) -> ingest_pb2.UpsertResponse:
        self.requests.append((request, dict(context.invocation_metadata())))
        return ingest_pb2.UpsertResponse(results=[ingest_pb2.ItemResult(status=self.status)])


async def serve(fake: FakeIngest) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_a_set_is_sent_as_one_catalog_record_with_the_token() -> None:
    fake = FakeIngest(ingest_pb2.ITEM_STATUS_ACCEPTED)
    server, target = await serve(fake)
    try:
        await publish(target, "tok-1", "district-a", MODEL)
    finally:
        await server.stop(None)
    [(request, metadata)] = fake.requests
    assert metadata["authorization"] == "Bearer tok-1"
    assert request.tenant_id == "district-a"
    [record] = request.records
    assert record.tenant_id == "district-a"
    assert record.model_parameters.version == "fit-abc"
    assert record.model_parameters.item_difficulty["i1"] == 0.5
    assert record.model_parameters.skills[0].prior == 0.4


async def test_a_refusal_is_an_error() -> None:
    server, target = await serve(FakeIngest(ingest_pb2.ITEM_STATUS_REJECTED))
    try:
        with pytest.raises(PublishError):
            await publish(target, "tok-1", "district-a", MODEL)
    finally:
        await server.stop(None)


def test_the_json_written_by_fit_is_what_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(to_json(MODEL))
    from trellis.mastery.model_parameters import from_json

    assert from_json(path.read_text()) == MODEL
