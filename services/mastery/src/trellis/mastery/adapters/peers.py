"""Calls from one mastery worker to another: a read forwarded to the owner of a partition.

The forwarded call carries the caller's own `authorization` and request id, so the owner checks
the same scope again; and a marker header, so a worker that receives a forwarded call never
forwards it further (maps disagree only during a rebalance: it answers UNAVAILABLE instead of
bouncing the call around). A caller that a client certificate identified has no token to pass
on: the owner then sees this worker's own certificate (docs/security.md). Each call has a
deadline: the caller's remaining time, at most `timeout_s`. A transient failure of the owner
(down, moving, deadline) is UNAVAILABLE to the caller, retryable; any other status is passed on
as the owner gave it.
"""

from __future__ import annotations

from typing import Any

import grpc

from trellis.common.grpc.channels import open_channel
from trellis.common.grpc.errors import Unavailable
from trellis.common.grpc.interceptors import REQUEST_ID_KEY
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.settings import GrpcTlsSettings

FORWARDED_KEY = "x-trellis-forwarded"
_PASSED_ON = ("authorization", REQUEST_ID_KEY)
_TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
Context = grpc.aio.ServicerContext[Any, Any]


def was_forwarded(context: Context) -> bool:
    return any(key == FORWARDED_KEY for key, _ in context.invocation_metadata() or ())


class Peers:
    """One channel per other worker, opened on first use."""

    def __init__(self, tls: GrpcTlsSettings | None = None, timeout_s: float = 2.0) -> None:
        self._tls = tls
        self._timeout_s = timeout_s
        self._stubs: dict[str, mastery_pb2_grpc.MasteryServiceStub] = {}

    def _stub(self, address: str) -> mastery_pb2_grpc.MasteryServiceStub:
        stub = self._stubs.get(address)
        if stub is None:
            stub = mastery_pb2_grpc.MasteryServiceStub(open_channel(address, self._tls))
            self._stubs[address] = stub
        return stub

    async def call(self, address: str, method: str, request: Any, context: Context) -> Any:
        """`method` of the worker at `address` with `request`, on behalf of the current call."""
        remaining = context.time_remaining()
        timeout = self._timeout_s if remaining is None else min(self._timeout_s, remaining)
        metadata = [
            (key, value) for key, value in context.invocation_metadata() or () if key in _PASSED_ON
        ]
        metadata.append((FORWARDED_KEY, "1"))
        try:
            return await getattr(self._stub(address), method)(
                request, timeout=timeout, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _TRANSIENT:
                raise Unavailable(
                    f"the worker holding this state did not answer ({exc.code().name}), retry"
                ) from exc
            await context.abort(exc.code(), exc.details() or "")
            raise  # abort raises; this keeps type checkers content
