"""The compacted topics ingest follows: the catalog and the roster, each into its view."""

from __future__ import annotations

from trellis.common.codec import Headers
from trellis.common.follower import Apply, CompactedTopicFollower, decoded
from trellis.common.pb.events.v1 import catalog_pb2, roster_pb2
from trellis.common.settings import KafkaSettings
from trellis.ingest.catalog import CatalogView
from trellis.ingest.roster import RosterView


def catalog_follower(kafka: KafkaSettings, view: CatalogView) -> CompactedTopicFollower:
    return CompactedTopicFollower(kafka, "catalog", decoded(catalog_pb2.CatalogRecord, view.apply))


def roster_follower(kafka: KafkaSettings, view: RosterView) -> CompactedTopicFollower:
    return CompactedTopicFollower(kafka, "roster", roster_applier(view))


def roster_applier(view: RosterView) -> Apply:
    """Records into the view; tombstones (keys `tenant/kind/id`) remove what they name, so that
    an ended enrollment no longer lets a teacher write about the learner."""
    apply_record = decoded(roster_pb2.RosterRecord, view.apply)

    def apply(key: bytes | None, value: bytes | None, headers: Headers) -> None:
        if value is not None:
            apply_record(key, value, headers)
            return
        parts = (key or b"").decode(errors="replace").split("/", 2)
        if len(parts) == 3:
            view.remove(*parts)

    return apply
