"""`python -m trellis.ingest serve | load DIR`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from trellis.common.grpc.server import ServiceBinding, create_server, run_until_signal
from trellis.common.kafka import create_producer
from trellis.common.logging import configure_logging, get_logger
from trellis.common.metrics import start_metrics_server
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings
from trellis.ingest.adapters.dedup_restore import restore_window
from trellis.ingest.adapters.follower import CatalogFollower, RosterFollower, TopicFollower
from trellis.ingest.adapters.grpc import IngestServicer
from trellis.ingest.adapters.kafka_publisher import KafkaPublisher
from trellis.ingest.catalog import CatalogView
from trellis.ingest.dedup import DedupWindow
from trellis.ingest.loader import load_directory
from trellis.ingest.roster import RosterView
from trellis.ingest.service import IngestService

log = get_logger(__name__)


async def serve(settings: Settings) -> None:
    server_settings = settings.services.ingest
    start_metrics_server(server_settings.metrics_port, server_settings.host)
    publisher = KafkaPublisher(
        create_producer(settings.kafka), settings.kafka, settings.ingest.max_in_flight_batches
    )
    catalog, roster = CatalogView(), RosterView()
    followers: list[TopicFollower[Any]] = [
        CatalogFollower(settings.kafka, catalog),
        RosterFollower(settings.kafka, roster),
    ]
    for follower in followers:
        follower.start()
    dedup = DedupWindow(settings.ingest.dedup_capacity)
    service = IngestService(
        publisher,
        Pseudonymizer(settings.pseudonym.all_keys()),
        dedup,
        catalog,
        roster,
        settings.ingest.unknown_references,
    )
    servicer = IngestServicer(
        service, settings.ingest.max_batch_size, settings.ingest.max_in_flight_batches
    )
    server = create_server(
        server_settings,
        settings.auth.all_tokens(),
        [
            ServiceBinding(
                ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
                ingest_pb2_grpc.add_IngestServiceServicer_to_server,
                servicer,
            )
        ],
    )
    await server.start()
    # The producer connected when it was built; the dedup window and the replicas come next.
    await asyncio.to_thread(
        restore_window,
        settings.kafka,
        dedup,
        min(settings.ingest.dedup_restore_records, settings.ingest.dedup_capacity),
    )
    while not all(follower.caught_up.is_set() for follower in followers):
        await asyncio.sleep(0.1)
    await server.set_serving(True)
    log.info("ingest serving", port=server.port)

    async def close() -> None:
        for follower in followers:
            await asyncio.to_thread(follower.stop)
        await asyncio.to_thread(publisher.close)

    await run_until_signal(server, on_stop=close)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m trellis.ingest")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the ingest gRPC service")
    load = commands.add_parser("load", help="send a directory of demo records to ingest")
    load.add_argument("directory", type=Path)
    load.add_argument("--tenant", required=True)
    load.add_argument("--token", required=True, help="bearer token of a service principal")
    load.add_argument("--target", help="host:port of ingest (default: from settings)")
    args = parser.parse_args()

    settings = Settings()
    configure_logging(settings.log_level)
    if args.command == "serve":
        asyncio.run(serve(settings))
    else:
        ingest = settings.services.ingest
        target = args.target or f"{ingest.host}:{ingest.port}"
        counts = asyncio.run(load_directory(args.directory, args.tenant, args.token, target))
        print(", ".join(f"{name}: {n} stored" for name, n in counts.items()))


if __name__ == "__main__":
    main()
