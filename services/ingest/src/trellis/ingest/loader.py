"""Sends a directory of records (protobuf JSON: catalog.json, roster.json, activity.json) to
ingest over gRPC, like any other client. `make run` loads the demo district with it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from trellis.common.grpc.channels import open_channel
from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.settings import GrpcTlsSettings

BATCH = 500


def _read(path: Path, message_type: type[Any]) -> list[Any]:
    if not path.exists():
        return []
    return [json_format.ParseDict(item, message_type()) for item in json.loads(path.read_text())]


async def _send_batches(
    call: Callable[..., Awaitable[Any]],
    make_request: Callable[[Sequence[Any]], Any],
    items: Sequence[Any],
    metadata: tuple[tuple[str, str], ...],
) -> int:
    accepted = 0
    for start in range(0, len(items), BATCH):
        reply = await call(make_request(items[start : start + BATCH]), metadata=metadata)
        rejected = [r for r in reply.results if r.status == ingest_pb2.ITEM_STATUS_REJECTED]
        if rejected:
            raise ValueError(f"{len(rejected)} rejected, first: {rejected[0]}")
        accepted += sum(r.status != ingest_pb2.ITEM_STATUS_NOT_STORED for r in reply.results)
    return accepted


async def load_directory(
    directory: Path, tenant_id: str, token: str, target: str, tls: GrpcTlsSettings | None = None
) -> dict[str, int]:
    """Catalog first, then roster, then activity, so that every reference already exists."""
    metadata = (("authorization", f"Bearer {token}"),)
    async with open_channel(target, tls) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        return {
            "catalog": await _send_batches(
                stub.UpsertCatalog,
                lambda b: ingest_pb2.UpsertCatalogRequest(tenant_id=tenant_id, records=b),
                _read(directory / "catalog.json", catalog_pb2.CatalogRecord),
                metadata,
            ),
            "roster": await _send_batches(
                stub.UpsertRoster,
                lambda b: ingest_pb2.UpsertRosterRequest(tenant_id=tenant_id, records=b),
                _read(directory / "roster.json", roster_pb2.RosterRecord),
                metadata,
            ),
            "activity": await _send_batches(
                stub.RecordEvents,
                lambda b: ingest_pb2.RecordEventsRequest(tenant_id=tenant_id, events=b),
                _read(directory / "activity.json", envelope_pb2.Envelope),
                metadata,
            ),
        }
