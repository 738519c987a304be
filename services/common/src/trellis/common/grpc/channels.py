"""Channels from one Trellis process to another Trellis service (the recommender to mastery,
mastery workers to each other, the command-line tools to ingest): TLS when `grpc_tls.enabled`,
with the CA, client certificate and expected server name of GrpcTlsSettings; plaintext otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from trellis.common.settings import GrpcTlsSettings

__all__ = ["channel_credentials", "open_channel"]

ChannelOption = tuple[str, Any]


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def channel_credentials(tls: GrpcTlsSettings) -> grpc.ChannelCredentials:
    """The CA to verify the callee with (None: the system's roots) and, for mTLS, ours."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.client_key_file),
        certificate_chain=_read(tls.client_cert_file),
    )


def open_channel(
    target: str, tls: GrpcTlsSettings | None, options: Sequence[ChannelOption] = ()
) -> grpc.aio.Channel:
    """An aio channel to `target` (host:port), secured as `tls` says (None: plaintext)."""
    if tls is None or not tls.enabled:
        return grpc.aio.insecure_channel(target, options=options)
    if tls.server_name:
        options = (*options, ("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)
