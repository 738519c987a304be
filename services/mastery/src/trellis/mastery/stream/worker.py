"""The mastery worker process: the Faust worker plus the gRPC read API, on one event loop.

Lifecycle: the gRPC server starts first with health NOT_SERVING; the Faust app then joins the
group and recovers its tables from their changelogs; once recovery is done and the agents run,
health turns SERVING. On SIGTERM or SIGINT (Faust's signal handlers), the gRPC server goes
NOT_SERVING and drains within its grace period, then Faust stops: it waits for the event in
flight, commits offsets, flushes the producer and leaves the group.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import faust

from trellis.common.grpc.server import GrpcServer
from trellis.common.logging import get_logger

_log = get_logger("trellis.mastery.worker")

#: Garbage collector thresholds once the worker runs (Python's default: 700, 10, 10). Every event
#: replaces a few objects of its learner's state that lived long enough to reach the oldest
#: generation, so with the defaults a full collection ran every 2 s or so, each a stall of the
#: event loop of 0.1 to 0.4 s over every object of the process (docs/mastery-performance.md).
#: The collector only frees reference cycles (the rest goes by reference counting), and the hot
#: path makes few (its states and messages are immutable values), so collecting less often costs
#: little memory.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collection() -> None:
    """Move what startup built (modules, the app, the catalog) out of the collector's reach for
    good (`gc.freeze`: it is never garbage) and collect the rest less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class MasteryWorker(faust.Worker):
    def __init__(
        self, app: faust.App, server_factory: Callable[[], GrpcServer], **kwargs: Any
    ) -> None:
        # Logging is configured by the entry point (JSON); Faust must not replace it.
        kwargs.setdefault("override_logging", False)
        kwargs.setdefault("quiet", True)
        super().__init__(app, **kwargs)
        self.spinner = None
        self._server_factory = server_factory
        self._server: GrpcServer | None = None

    @property
    def server(self) -> GrpcServer | None:
        return self._server

    async def on_start(self) -> None:
        await super().on_start()
        if self._server is None:
            # Built here, on the loop that will run it.
            self._server = self._server_factory()
            await self._server.start()

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        tune_garbage_collection()  # after table recovery: its garbage is gone by now
        if self._server is not None and not self.should_stop:
            await self._server.set_serving()
            _log.info("mastery worker ready", grpc_port=self._server.port)

    async def on_stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        await super().on_stop()
