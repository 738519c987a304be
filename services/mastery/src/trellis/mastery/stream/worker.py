"""The mastery worker process: the Faust worker plus the gRPC read API, on one event loop.

Lifecycle: the gRPC server starts first with health NOT_SERVING; the Faust app then joins the
group and recovers its tables from their changelogs; once recovery is done and the agents run,
health turns SERVING. On SIGTERM or SIGINT (Faust's signal handlers), the gRPC server goes
NOT_SERVING and drains within its grace period, then Faust stops: it waits for the event in
flight, commits offsets, flushes the producer and leaves the group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from trellis.common.grpc.server import GrpcServer
from trellis.common.logging import get_logger

_log = get_logger("trellis.mastery.worker")


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
        if self._server is not None and not self.should_stop:
            await self._server.set_serving()
            _log.info("mastery worker ready", grpc_port=self._server.port)

    async def on_stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        await super().on_stop()
