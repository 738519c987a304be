"""The compacted topics ingest follows: the catalog and the roster, each into its view."""

from __future__ import annotations

from trellis.common.follower import CompactedTopicFollower, decoded
from trellis.common.pb.events.v1 import catalog_pb2
from trellis.common.roster import roster_applier
from trellis.common.settings import KafkaSettings
from trellis.ingest.catalog import CatalogView
from trellis.ingest.roster import RosterView


def catalog_follower(kafka: KafkaSettings, view: CatalogView) -> CompactedTopicFollower:
    return CompactedTopicFollower(kafka, "catalog", decoded(catalog_pb2.CatalogRecord, view.apply))


def roster_follower(kafka: KafkaSettings, view: RosterView) -> CompactedTopicFollower:
    """Tombstones remove what they name, so that an ended enrollment no longer lets a teacher
    write about the learner."""
    return CompactedTopicFollower(kafka, "roster", roster_applier(view))
