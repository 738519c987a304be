"""The event codec: how Trellis records become Kafka keys, values and headers, and back.

Every producer and consumer goes through here, so that payload encoding can change in one place
(per-learner encryption for crypto-shredding is the planned next step; see DESIGN.md §3a).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2

CONTENT_TYPE = b"application/x-protobuf"
Headers = list[tuple[str, bytes]]
M = TypeVar("M", bound=Message)


class CodecError(ValueError):
    """A message that cannot be decoded: it belongs on the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class Encoded:
    key: bytes
    value: bytes
    headers: Headers


def learner_key(tenant_id: str, learner_id: str) -> bytes:
    """Partition key of activity and mastery: one learner's events stay ordered."""
    return f"{tenant_id}/{learner_id}".encode()


def entity_key(tenant_id: str, kind: str, entity_id: str) -> bytes:
    """Key of a compacted roster or catalog record: two tenants never overwrite each other."""
    return f"{tenant_id}/{kind}/{entity_id}".encode()


def headers_for(message: Message) -> Headers:
    return [("content-type", CONTENT_TYPE), ("schema", message.DESCRIPTOR.full_name.encode())]


def encode_envelope(envelope: envelope_pb2.Envelope) -> Encoded:
    return Encoded(
        learner_key(envelope.tenant_id, envelope.learner_id),
        envelope.SerializeToString(deterministic=True),
        headers_for(envelope),
    )


def roster_kind(record: roster_pb2.RosterRecord) -> tuple[str, str]:
    """(kind, sourcedId) of a roster record."""
    kind = record.WhichOneof("entity")
    if kind is None:
        raise CodecError("roster record has no entity")
    return kind, getattr(record, kind).sourced_id


def catalog_kind(record: catalog_pb2.CatalogRecord) -> tuple[str, str]:
    """(kind, id) of a catalog record."""
    kind = record.WhichOneof("entity")
    if kind is None:
        raise CodecError("catalog record has no entity")
    entity = getattr(record, kind)
    ids = {
        "skill": "skill_id",
        "item": "item_id",
        "resource": "resource_id",
        "model_parameters": "version",
    }
    return kind, getattr(entity, ids[kind])


def encode_roster(record: roster_pb2.RosterRecord) -> Encoded:
    kind, entity_id = roster_kind(record)
    return Encoded(
        entity_key(record.tenant_id, kind, entity_id),
        record.SerializeToString(deterministic=True),
        headers_for(record),
    )


def encode_catalog(record: catalog_pb2.CatalogRecord) -> Encoded:
    kind, entity_id = catalog_kind(record)
    return Encoded(
        entity_key(record.tenant_id, kind, entity_id),
        record.SerializeToString(deterministic=True),
        headers_for(record),
    )


def decode(message_type: type[M], value: bytes | None, headers: Headers | None = None) -> M:
    """Decode a value; a schema header that names another type, or bad bytes, raise CodecError."""
    if value is None:
        raise CodecError("tombstone: no value")
    schema = dict(headers or []).get("schema")
    if schema is not None and schema.decode() != message_type.DESCRIPTOR.full_name:
        raise CodecError(f"schema {schema.decode()!r} is not {message_type.DESCRIPTOR.full_name!r}")
    message = message_type()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise CodecError(f"undecodable {message_type.DESCRIPTOR.full_name}: {exc}") from exc
    return message


def decode_envelope(value: bytes | None, headers: Headers | None = None) -> envelope_pb2.Envelope:
    return decode(envelope_pb2.Envelope, value, headers)
