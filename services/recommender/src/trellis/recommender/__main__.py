"""`python -m trellis.recommender serve`: wiring only."""

from __future__ import annotations

import argparse
import asyncio

from trellis.common.grpc.server import ServiceBinding, create_server, run_until_signal
from trellis.common.logging import configure_logging, get_logger
from trellis.common.metrics import start_metrics_server
from trellis.common.pb.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from trellis.common.settings import Settings
from trellis.recommender.adapters.grpc import RecommenderServicer

log = get_logger(__name__)


async def serve(settings: Settings) -> None:
    server_settings = settings.services.recommender
    start_metrics_server(server_settings.metrics_port, server_settings.host)
    server = create_server(
        server_settings,
        settings.auth.all_tokens(),
        [
            ServiceBinding(
                recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name,
                recommender_pb2_grpc.add_RecommenderServiceServicer_to_server,
                RecommenderServicer(),
            )
        ],
    )
    await server.start()
    # Stateless, with nothing to load yet: ready as soon as it listens.
    await server.set_serving(True)
    log.info("recommender serving", port=server.port)
    await run_until_signal(server)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m trellis.recommender")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the recommender gRPC service")
    parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
