"""`python -m trellis.ingest serve | load DIR`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from trellis.common.grpc.server import run_until_signal
from trellis.common.logging import configure_logging, get_logger
from trellis.common.metrics import start_metrics_server
from trellis.common.settings import Settings
from trellis.ingest.app import create_ingest
from trellis.ingest.loader import load_directory

log = get_logger(__name__)


async def serve(settings: Settings) -> None:
    server_settings = settings.services.ingest
    start_metrics_server(server_settings.metrics_port, server_settings.host)
    app = create_ingest(settings)
    # The port opens at once; calls and health wait for the dedup window and the replicas.
    await app.start()
    log.info("ingest serving", port=app.server.port)
    await run_until_signal(app.server, on_stop=app.close_clients)


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
        counts = asyncio.run(
            load_directory(args.directory, args.tenant, args.token, target, settings.grpc_tls)
        )
        print(", ".join(f"{name}: {n} stored" for name, n in counts.items()))


if __name__ == "__main__":
    main()
