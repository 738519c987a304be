"""`python -m trellis.mastery worker`: the Faust worker and the mastery read API in one process.

Wiring only: settings are read once here and passed down.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trellis.common.grpc.server import GrpcServer, ServiceBinding, create_server
from trellis.common.logging import configure_logging, get_logger
from trellis.common.metrics import start_metrics_server
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings
from trellis.mastery.adapters.grpc import SERVICE_NAME, MasteryServicer
from trellis.mastery.stream.app import create_stream, ensure_stream_topics
from trellis.mastery.stream.worker import MasteryWorker


def worker(settings: Settings) -> None:
    log = get_logger("trellis.mastery")
    server_settings = settings.services.mastery
    created = ensure_stream_topics(settings)
    if created:
        log.info("changelog topics created", topics=created)
    stream = create_stream(settings)
    servicer = MasteryServicer(stream.service, Pseudonymizer(settings.pseudonym.all_keys()))

    def grpc_server() -> GrpcServer:
        binding = ServiceBinding(
            SERVICE_NAME, mastery_pb2_grpc.add_MasteryServiceServicer_to_server, servicer
        )
        return create_server(server_settings, settings.auth.all_tokens(), [binding])

    metrics_port = start_metrics_server(server_settings.metrics_port, server_settings.host)
    log.info(
        "mastery worker starting",
        group=settings.mastery.consumer_group,
        grpc_port=server_settings.port,
        metrics_port=metrics_port,
        data_dir=str(settings.mastery.data_dir),
    )
    MasteryWorker(stream.app, grpc_server).execute_from_commandline()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trellis.mastery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="consume activity, keep mastery state, serve the read API")
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_level)
    if args.command == "worker":
        worker(settings)


if __name__ == "__main__":
    main(sys.argv[1:])
