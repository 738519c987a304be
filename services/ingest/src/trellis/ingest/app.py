"""Builds a whole ingest process (producer, replicas, dedup window, gRPC server) from settings.

Used by `__main__` (serve), by the integration tests and by the benchmark, so all three run the
same wiring. `start()` opens the port at once but reports SERVING only after the dedup window is
rebuilt and the catalog and roster replicas have caught up; until then calls are answered
UNAVAILABLE (retry), never with answers from an incomplete window or replica.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from trellis.common.follower import CompactedTopicFollower
from trellis.common.grpc.server import GrpcServer, ServiceBinding, create_server
from trellis.common.kafka import create_producer
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Principal, Settings
from trellis.ingest.adapters.dedup_restore import restore_window
from trellis.ingest.adapters.follower import catalog_follower, roster_follower
from trellis.ingest.adapters.grpc import IngestServicer
from trellis.ingest.adapters.kafka_publisher import KafkaPublisher
from trellis.ingest.catalog import CatalogView
from trellis.ingest.dedup import DedupWindow
from trellis.ingest.roster import RosterView
from trellis.ingest.service import IngestService


@dataclass
class IngestApp:
    server: GrpcServer
    servicer: IngestServicer
    service: IngestService
    publisher: KafkaPublisher
    followers: list[CompactedTopicFollower]
    dedup: DedupWindow
    catalog: CatalogView
    roster: RosterView
    settings: Settings

    async def start(self, ready_timeout_s: float = 120.0) -> None:
        await self.server.start()
        ingest = self.settings.ingest
        await asyncio.to_thread(
            restore_window,
            self.settings.kafka,
            self.dedup,
            min(ingest.dedup_restore_records, ingest.dedup_capacity),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout_s
        while not all(f.caught_up.is_set() for f in self.followers):
            if loop.time() > deadline:
                raise TimeoutError("catalog and roster replicas did not catch up")
            await asyncio.sleep(0.05)
        self.servicer.ready = True
        await self.server.set_serving(True)

    async def close(self) -> None:
        """Stop the server (graceful), then the replicas and the producer (flushing)."""
        await self.server.stop()
        await self.close_clients()

    async def close_clients(self) -> None:
        for follower in self.followers:
            await asyncio.to_thread(follower.stop)
        await asyncio.to_thread(self.publisher.close)


def create_ingest(
    settings: Settings, tokens: dict[str, Principal] | None = None, port: int | None = None
) -> IngestApp:
    """Build (not start) ingest; `tokens` default to the settings', `port` to the settings' (0:
    any free port, see `app.server.port`)."""
    ingest = settings.ingest
    publisher = KafkaPublisher(
        create_producer(settings.kafka), settings.kafka, ingest.max_in_flight_batches
    )
    catalog, roster = CatalogView(), RosterView()
    followers: list[CompactedTopicFollower] = [
        catalog_follower(settings.kafka, catalog),
        roster_follower(settings.kafka, roster),
    ]
    for follower in followers:
        follower.start()
    dedup = DedupWindow(ingest.dedup_capacity)
    service = IngestService(
        publisher,
        Pseudonymizer(settings.pseudonym.all_keys()),
        dedup,
        catalog,
        roster,
        ingest.unknown_references,
    )
    servicer = IngestServicer(
        service, ingest.max_batch_size, ingest.max_in_flight_batches, ready=False
    )
    server_settings = settings.services.ingest
    if port is not None:
        server_settings = server_settings.model_copy(update={"port": port})
    server = create_server(
        server_settings,
        settings.auth.all_tokens() if tokens is None else tokens,
        [
            ServiceBinding(
                ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
                ingest_pb2_grpc.add_IngestServiceServicer_to_server,
                servicer,
            )
        ],
        tls=settings.grpc_tls,
        certificates=settings.auth.all_certificates(),
    )
    return IngestApp(
        server, servicer, service, publisher, followers, dedup, catalog, roster, settings
    )
