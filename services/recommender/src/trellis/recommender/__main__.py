"""`python -m trellis.recommender serve`: wiring only."""

from __future__ import annotations

import argparse
import asyncio

from trellis.common.grpc.server import run_until_signal
from trellis.common.logging import configure_logging
from trellis.common.metrics import start_metrics_server
from trellis.common.settings import Settings
from trellis.recommender.adapters.app import Recommender


async def serve(settings: Settings) -> None:
    server_settings = settings.services.recommender
    start_metrics_server(server_settings.metrics_port, server_settings.host)
    recommender = Recommender(settings)
    await recommender.start()
    await run_until_signal(recommender.server, recommender.close)


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
