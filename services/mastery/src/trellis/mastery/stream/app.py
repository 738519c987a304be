"""Assembles the mastery stream: Faust app, topics, table, service and agent, from Settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import AgentT

from trellis.common.faust_app import create_app, ensure_internal_topics
from trellis.common.settings import Settings
from trellis.mastery.catalog import CatalogView
from trellis.mastery.service import MasteryService
from trellis.mastery.stream.agents import register_agents
from trellis.mastery.stream.staging import StagedWrites
from trellis.mastery.stream.tables import TABLE_NAMES, TableLearnerStore, Tables, define_tables
from trellis.mastery.stream.topics import Topics, define_topics


@dataclass(frozen=True)
class MasteryStream:
    app: faust.App
    topics: Topics
    tables: Tables
    store: TableLearnerStore
    #: Reads (the gRPC API): straight from the table.
    service: MasteryService
    #: The agent's: writes held in `staged` until the batch's outputs are stored.
    writer: MasteryService
    staged: StagedWrites
    agent: AgentT[Any]


#: The worker's producer (outputs, dead letters, changelogs). Faust's defaults (no linger, 16 KB
#: batches) send many small requests; a longer linger (20 ms) made each batch wait longer for its
#: acknowledgements; the changelog values (digests, doubles) barely compress, so gzip was CPU for
#: little. Measured in docs/mastery-performance.md. A caller's own settings win.
PRODUCER_SETTINGS: dict[str, Any] = {
    "producer_linger": 0.005,
    "producer_max_batch_size": 262_144,  # under the broker's 1 MB message.max.bytes
    "producer_compression_type": None,
}


def create_stream(
    settings: Settings,
    *,
    store: str = "rocksdb://",
    datadir: Path | str | None = None,
    catalog: CatalogView | None = None,
    **faust_overrides: Any,
) -> MasteryStream:
    """The mastery worker's Faust app, consumer group `settings.mastery.consumer_group`.

    `store="memory://"` for unit tests (with `agent.test_context()`); RocksDB otherwise.
    `catalog`: the view that the catalog follower keeps (an empty one: defaults everywhere).
    """
    app = create_app(
        settings.mastery.consumer_group,
        settings,
        store=store,
        datadir=datadir if datadir is not None else settings.mastery.data_dir,
        **{**PRODUCER_SETTINGS, **faust_overrides},
    )
    topics = define_topics(app, settings)
    catalog = catalog if catalog is not None else CatalogView()
    tables = define_tables(app, settings)
    store_adapter = TableLearnerStore(
        app,
        tables.learners,
        source_topic=settings.kafka.topics.name("activity"),
        partitions=settings.kafka.topics.partitions,
        erased=tables.erased,
    )
    # Partitions that change hands may change underneath the store's decoded states.
    app.on_partitions_revoked.connect(store_adapter.forget_decoded)
    app.on_partitions_assigned.connect(store_adapter.forget_decoded)
    service = MasteryService(store_adapter, catalog=catalog)
    staged = StagedWrites(store_adapter)
    writer = MasteryService(staged, catalog=catalog)
    agent = register_agents(app, topics, writer, staged)
    return MasteryStream(app, topics, tables, store_adapter, service, writer, staged, agent)


def ensure_stream_topics(settings: Settings) -> list[str]:
    """Create the worker's own changelog topics if missing (the shared topics are the stack's)."""
    return ensure_internal_topics(settings.mastery.consumer_group, TABLE_NAMES, settings)
