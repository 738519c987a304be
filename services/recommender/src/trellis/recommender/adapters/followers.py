"""How catalog records (and their tombstones) update the recommender's Replica.
`trellis.common.follower.CompactedTopicFollower` feeds them from the compacted topic; roster
records go to `Replica.roster` through `trellis.common.roster.roster_applier`."""

from __future__ import annotations

from trellis.common.codec import Headers, decode
from trellis.common.follower import Apply
from trellis.common.pb.events.v1 import catalog_pb2
from trellis.recommender.adapters import convert
from trellis.recommender.replica import Replica


def _split_key(key: bytes | None) -> tuple[str, str, str]:
    """`tenant/kind/id` (the id may itself contain '/')."""
    parts = (key or b"").decode().split("/", 2)
    if len(parts) != 3:
        raise ValueError(f"unexpected key {key!r}")
    return parts[0], parts[1], parts[2]


def catalog_applier(replica: Replica) -> Apply:
    def apply(key: bytes | None, value: bytes | None, headers: Headers) -> None:
        if value is None:
            tenant_id, kind, entity_id = _split_key(key)
            replica.remove_catalog(tenant_id, kind, entity_id)
            return
        record = decode(catalog_pb2.CatalogRecord, value, headers)
        entity = record.WhichOneof("entity")
        if entity == "skill":
            replica.put_skill(record.tenant_id, convert.skill(record.skill))
        elif entity == "item":
            replica.put_item(record.tenant_id, convert.item(record.item))
        elif entity == "resource":
            replica.put_resource(record.tenant_id, convert.resource(record.resource))
        # model parameters: the mastery service applies them; predictions come from it.

    return apply
