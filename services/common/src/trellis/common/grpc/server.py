"""The gRPC server every Trellis service runs: one factory, the same runtime everywhere.

`create_server` binds the port (0 in tests: the bound one is `GrpcServer.port`), installs the
interceptor of `trellis.common.grpc.interceptors`, the standard health service and reflection.
With `grpc_tls.enabled` the port speaks TLS (and with `require_client_cert`, mTLS: the client
certificate's identity can stand for a bearer token); otherwise plaintext, for loopback or a mesh
that encrypts in front. Kubernetes' gRPC probes speak plaintext only: `health_port` serves the
health service alone, in plaintext, for them (docs/security.md).
Health starts NOT_SERVING for every service: a service calls `set_serving()` once it is truly
ready (mastery after table recovery, recommender after loading its catalog). On SIGTERM,
`run_until_signal` flips health to NOT_SERVING, lets in-flight calls finish, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from trellis.common.grpc.auth import Authenticator
from trellis.common.grpc.interceptors import RpcInterceptor
from trellis.common.logging import get_logger
from trellis.common.settings import GrpcTlsSettings, Principal, ServerSettings

__all__ = ["GrpcServer", "ServiceBinding", "create_server", "run_until_signal"]

_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # room for large ingest batches and class heatmaps
_OPTIONS = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    # Without this, a second process started on the same port silently shares its traffic.
    ("grpc.so_reuseport", 0),
    # Keep idle client connections alive through proxies and notice dead peers.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

_log = get_logger("trellis.grpc.server")


@dataclass(frozen=True)
class ServiceBinding:
    """One servicer and how to register it, e.g.
    `ServiceBinding("trellis.ingest.v1.IngestService",
    ingest_pb2_grpc.add_IngestServiceServicer_to_server, IngestServicer(...))`."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: object


class GrpcServer:
    """A grpc.aio.Server with its health service; see the module docstring for the lifecycle."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: Any,  # grpc_health.v1.health.aio.HealthServicer
        service_names: Sequence[str],
        port: int,
        grace_seconds: float,
        health_server: grpc.aio.Server | None = None,
        health_port: int | None = None,
    ) -> None:
        self._server = server
        self._health_server = health_server
        self.health_port = health_port
        self._health = health_servicer
        self._service_names = tuple(service_names)
        self.port = port
        self._grace_seconds = grace_seconds
        self._started = False
        self._stopped = False

    @property
    def service_names(self) -> tuple[str, ...]:
        return self._service_names

    async def start(self) -> None:
        """Start serving calls; health reports NOT_SERVING until set_serving(). Idempotent."""
        if self._started:
            return
        self._started = True
        # Before start: the library servicer begins with the overall status SERVING.
        await self._set_health(_NOT_SERVING)
        await self._server.start()
        if self._health_server is not None:
            await self._health_server.start()
        _log.info(
            "grpc server started",
            port=self.port,
            health_port=self.health_port,
            services=list(self._service_names),
        )

    async def set_serving(self, serving: bool = True) -> None:
        """Report the overall status ("") and every service's. Ignored once stopping."""
        await self._set_health(_SERVING if serving else _NOT_SERVING)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

    async def stop(self) -> None:
        """Graceful: health NOT_SERVING for good, then refuse new calls and let in-flight ones
        finish within the grace period. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        _log.info("grpc server stopping", grace_seconds=self._grace_seconds)
        await self._server.stop(self._grace_seconds)
        if self._health_server is not None:
            await self._health_server.stop(0)
        _log.info("grpc server stopped")

    async def _set_health(self, status: int) -> None:
        for name in ("", *self._service_names):
            await self._health.set(name, status)


def create_server(
    server_settings: ServerSettings,
    tokens: dict[str, Principal],
    services: Sequence[ServiceBinding],
    *,
    tls: GrpcTlsSettings | None = None,
    certificates: dict[str, Principal] | None = None,
) -> GrpcServer:
    """Build and bind (not start) the server; RuntimeError if the port is taken. `certificates`
    maps client certificate identities to principals (used with `tls.require_client_cert`)."""
    authenticator = Authenticator(tokens, certificates)
    server = grpc.aio.server(interceptors=[RpcInterceptor(authenticator)], options=_OPTIONS)
    for binding in services:
        binding.add_to_server(binding.servicer, server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *(binding.name for binding in services),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = _bind(server, server_settings.host, server_settings.port, tls)
    health_server, health_port = None, None
    if server_settings.health_port is not None:
        health_server = grpc.aio.server(options=_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = _bind(health_server, server_settings.host, server_settings.health_port, None)
    return GrpcServer(
        server,
        health_servicer,
        [binding.name for binding in services],
        port,
        server_settings.grace_seconds,
        health_server,
        health_port,
    )


def _server_credentials(tls: GrpcTlsSettings) -> grpc.ServerCredentials:
    """The server's certificate and, with `require_client_cert`, the CA of its clients'."""
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("grpc_tls.enabled needs cert_file and key_file to serve")
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=None if tls.client_ca_file is None else tls.client_ca_file.read_bytes(),
        require_client_auth=tls.require_client_cert,
    )


def _bind(server: grpc.aio.Server, host: str, port: int, tls: GrpcTlsSettings | None) -> int:
    address = f"{host}:{port}"
    if tls is not None and tls.enabled:
        bound = server.add_secure_port(address, _server_credentials(tls))
    else:
        # Loopback by default (ServerSettings.host), or a mesh that encrypts in front.
        bound = server.add_insecure_port(address)
    if bound == 0:  # older grpc returns 0 instead of raising
        raise RuntimeError(f"could not bind {address}")
    return bound


async def run_until_signal(
    server: GrpcServer, on_stop: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT (or until the server ends by itself), stop gracefully,
    then run `on_stop` (close producers, commit offsets...). Starts the server if needed."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await server.start()
        # Never cancel wait_for_termination: grpc's shutdown would then end in CancelledError.
        terminated = asyncio.ensure_future(server.wait_for_termination())
        signalled = asyncio.ensure_future(stop_requested.wait())
        await asyncio.wait((terminated, signalled), return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        if stop_requested.is_set():
            _log.info("stop signal received")
        try:
            await server.stop()
            await terminated
        finally:
            # Even if stopping failed: producers must still flush, consumers commit.
            if on_stop is not None:
                await on_stop()
    finally:
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
