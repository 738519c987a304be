"""`python -m trellis.reporting serve`: wiring only.

One process owns the store (chDB is one process's store, DESIGN.md §7): it serves the sink's
decoding process (`sink_process`: the sink consumes and decodes there, this process inserts) from
a background thread and answers the report queries from a thread pool. Health turns SERVING once
the migrations are applied and the sink consumes, and follows the store and the sink from then
on. On SIGTERM: health NOT_SERVING and the gRPC server drains, then the sink flushes, commits and
leaves its group, then the store closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from trellis.common.grpc.server import GrpcServer, ServiceBinding, create_server, run_until_signal
from trellis.common.logging import configure_logging, get_logger
from trellis.common.metrics import start_metrics_server
from trellis.common.pb.reporting.v1 import reporting_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings
from trellis.reporting.adapters.grpc import SERVICE_NAME, ReportingServicer
from trellis.reporting.service import ReportingService
from trellis.reporting.sink_process import SinkProcess
from trellis.reporting.store import ReportingStore, StoreStatus, create_store

log = get_logger("trellis.reporting")

QUERY_THREADS = 4
HEALTH_INTERVAL_S = 5.0
SINK_STOP_TIMEOUT_S = 30.0


async def serve(settings: Settings) -> None:
    server_settings = settings.services.reporting
    start_metrics_server(server_settings.metrics_port, server_settings.host)
    store = create_store(settings.clickhouse)
    executor = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="reporting-store")
    service = ReportingService(
        store, Pseudonymizer(settings.pseudonym.all_keys()), executor, settings.reporting
    )
    server = create_server(
        server_settings,
        settings.auth.all_tokens(),
        [
            ServiceBinding(
                SERVICE_NAME,
                reporting_pb2_grpc.add_ReportingServiceServicer_to_server,
                ReportingServicer(service),
            )
        ],
        tls=settings.grpc_tls,
        certificates=settings.auth.all_certificates(),
    )
    sink = SinkProcess(settings, store)
    await server.start()
    readiness = asyncio.create_task(track_readiness(server, store, sink, executor))

    async def close() -> None:
        readiness.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await readiness
        if not await asyncio.to_thread(sink.stop, SINK_STOP_TIMEOUT_S):
            log.error("the sink did not stop in time")
        executor.shutdown(wait=True)
        store.close()
        log.info("reporting stopped")

    await run_until_signal(server, on_stop=close)


async def track_readiness(
    server: GrpcServer, store: ReportingStore, sink: SinkProcess, executor: ThreadPoolExecutor
) -> None:
    """Migrate (retrying until the store answers), start the sink, then keep health truthful."""
    loop = asyncio.get_running_loop()
    delay = 0.5
    while True:
        try:
            applied = await loop.run_in_executor(executor, store.migrate)
            log.info("store migrated", applied=applied)
            break
        except Exception as exc:
            log.warning("store not ready, retrying", error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    sink.start()
    serving: bool | None = None
    while True:
        status = await loop.run_in_executor(executor, store.status)
        ready = sink.healthy and status is StoreStatus.OK
        if ready != serving:
            await server.set_serving(ready)
            log.info("health", serving=ready, store=status.value, sink_healthy=sink.healthy)
            serving = ready
        # Check soon while not ready (the sink subscribes within a second or two).
        await asyncio.sleep(HEALTH_INTERVAL_S if ready else 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m trellis.reporting")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the ClickHouse sink and the reporting gRPC service")
    parser.parse_args()

    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
