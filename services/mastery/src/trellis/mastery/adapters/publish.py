"""Publishes a fitted parameter set to the catalog through ingest's `UpsertCatalog` (gRPC, the
public contract: mastery imports no ingest code). The worker then picks it up from the catalog
topic; states updated from then on record its version."""

from __future__ import annotations

from trellis.common.grpc.channels import open_channel
from trellis.common.pb.events.v1 import catalog_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.settings import GrpcTlsSettings
from trellis.mastery.model_parameters import to_proto
from trellis.mastery.prediction import ModelSet


class PublishError(RuntimeError):
    """Ingest did not store the parameter set (its answer is in the message)."""


def upsert_request(tenant_id: str, model: ModelSet) -> ingest_pb2.UpsertCatalogRequest:
    return ingest_pb2.UpsertCatalogRequest(
        tenant_id=tenant_id,
        records=[catalog_pb2.CatalogRecord(tenant_id=tenant_id, model_parameters=to_proto(model))],
    )


async def publish(
    target: str,
    token: str,
    tenant_id: str,
    model: ModelSet,
    timeout_s: float = 30.0,
    tls: GrpcTlsSettings | None = None,
) -> ingest_pb2.ItemResult:
    """Send the set; returns ingest's answer for it (ACCEPTED or DUPLICATE), raises otherwise."""
    async with open_channel(target, tls) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        response = await stub.UpsertCatalog(
            upsert_request(tenant_id, model),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=timeout_s,
        )
    [result] = response.results
    if result.status not in (ingest_pb2.ITEM_STATUS_ACCEPTED, ingest_pb2.ITEM_STATUS_DUPLICATE):
        raise PublishError(str(result))
    return result
