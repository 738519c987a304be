"""One server interceptor for every cross-cutting concern of a Trellis RPC.

For each call, in this order: a request id (the caller's `x-request-id` or a new one, bound to the
log context and echoed in the trailing metadata), authentication (the Principal goes to a
contextvar for the servicer), then the servicer itself. At the end, the errors of
`trellis.common.grpc.errors` become statuses with rich details, anything unexpected becomes a
generic INTERNAL, and one log line and the RPC metrics record the outcome.

It wraps the method handler's behaviour rather than acting in `intercept_service` alone, so that
it runs with the call's context and sees its outcome, for all four call shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import structlog

from trellis.common.grpc.auth import (
    Authenticator,
    reset_current_principal,
    set_current_principal,
)
from trellis.common.grpc.errors import TrellisError, Unavailable, to_status
from trellis.common.logging import get_logger
from trellis.common.metrics import RPC_HANDLED, RPC_LATENCY

__all__ = ["PUBLIC_SERVICES", "REQUEST_ID_KEY", "RpcInterceptor"]

REQUEST_ID_KEY = "x-request-id"
# Probes and tooling must work without a token; these services expose no tenant data.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# A caller's request id lands in our logs and trailers: accept only short, plain ids.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")

_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

_log = get_logger("trellis.grpc")

# Strings: grpc.RpcMethodHandler is generic only in the type stubs.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Scope = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]


class _Internal(TrellisError):
    code = grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class _Rpc:
    service: str
    method: str
    public: bool
    metadata: Sequence[tuple[str, str | bytes]]


class RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Request id, auth, error mapping, logging and metrics around every handler."""

    def __init__(
        self, authenticator: Authenticator, public_services: frozenset[str] = PUBLIC_SERVICES
    ) -> None:
        self._authenticator = authenticator
        self._public_services = public_services

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return handler
        path: str = handler_call_details.method
        service, _, method = path.lstrip("/").partition("/")
        rpc = _Rpc(
            service=service,
            method=method,
            public=service in self._public_services,
            metadata=tuple(handler_call_details.invocation_metadata or ()),
        )
        return _wrap_handler(handler, lambda context: self._scope(rpc, context))

    @contextlib.asynccontextmanager
    async def _scope(self, rpc: _Rpc, context: Context) -> AsyncIterator[None]:
        started = time.perf_counter()
        request_id = _request_id(rpc.metadata)
        # Each RPC runs in its own task; the resets below only keep the task's context tidy.
        log_tokens = dict(
            structlog.contextvars.bind_contextvars(
                request_id=request_id, method=f"{rpc.service}/{rpc.method}"
            )
        )
        principal_token = set_current_principal(None)
        code = grpc.StatusCode.OK
        try:
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            if not rpc.public:
                principal = self._authenticator.authenticate(
                    rpc.metadata, context.peer_identities()
                )
                set_current_principal(principal)
                log_tokens.update(
                    structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id)
                )
            yield
            code = context.code() or grpc.StatusCode.OK
            _keep_request_id(context, request_id)
        except TrellisError as error:
            code = error.code
            await _abort(context, error, request_id)
        except grpc.aio.AbortError:
            # The servicer aborted by itself: the status is already set.
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # grpc cancels the handler both when the caller goes away and when its deadline passes.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception as unexpected:
            failure = _unexpected(unexpected, request_id)
            code = failure.code
            await _abort(context, failure, request_id)
        finally:
            elapsed = time.perf_counter() - started
            RPC_HANDLED.labels(rpc.service, rpc.method, code.name).inc()
            RPC_LATENCY.labels(rpc.service, rpc.method).observe(elapsed)
            # Probes call health every few seconds: keep them out of the INFO stream.
            log = _log.debug if rpc.public else _log.info
            log("rpc", code=code.name, duration_ms=round(elapsed * 1000, 3))
            _reset(log_tokens, principal_token)


def _unexpected(error: Exception, request_id: str) -> TrellisError:
    """What the caller sees of an exception the servicer did not expect (call in `except`)."""
    if isinstance(error, grpc.aio.AioRpcError) and error.code() in _TRANSIENT:
        # A call to another service failed transiently: stay retryable for our caller.
        _log.warning("downstream call failed", downstream_code=error.code().name)
        return Unavailable("a dependency is unavailable, retry")
    _log.exception("unexpected error in servicer")
    # No internals in the answer, only the id to quote when reporting it.
    return _Internal(f"internal error (request id {request_id})")


def _request_id(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    for key, value in metadata:
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def _keep_request_id(context: Context, request_id: str) -> None:
    # A servicer may have replaced the trailers we set at the start: put the id back.
    trailing = tuple(context.trailing_metadata() or ())
    if not any(key == REQUEST_ID_KEY for key, _ in trailing):
        context.set_trailing_metadata((*trailing, (REQUEST_ID_KEY, request_id)))


async def _abort(context: Context, error: TrellisError, request_id: str) -> None:
    status = to_status(error)
    await context.abort(
        status.code,
        status.details,
        trailing_metadata=(*status.trailing_metadata, (REQUEST_ID_KEY, request_id)),
    )


def _reset(
    log_tokens: Mapping[str, contextvars.Token[Any]],
    principal_token: contextvars.Token[Any],
) -> None:
    # A response generator finalized outside its task cannot reset; its context dies with it.
    with contextlib.suppress(ValueError):
        structlog.contextvars.reset_contextvars(**log_tokens)
    with contextlib.suppress(ValueError):
        reset_current_principal(principal_token)


# --- the four call shapes ---


def _wrap_handler(handler: Handler, scope: Scope) -> Handler:
    h: Any = handler
    if h.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _returning(h.unary_unary, scope),
            request_deserializer=h.request_deserializer,
            response_serializer=h.response_serializer,
        )
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(h.unary_stream, scope),
            request_deserializer=h.request_deserializer,
            response_serializer=h.response_serializer,
        )
    if h.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _returning(h.stream_unary, scope),
            request_deserializer=h.request_deserializer,
            response_serializer=h.response_serializer,
        )
    if h.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(h.stream_stream, scope),
            request_deserializer=h.request_deserializer,
            response_serializer=h.response_serializer,
        )
    return handler


def _returning(behavior: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    """A behaviour that returns its response (or writes its stream with context.write)."""

    async def wrapper(request: Any, context: Context) -> Any:
        async with scope(context):
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result

    return wrapper


def _streaming(behavior: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    """A behaviour with a response stream: an async generator, or a coroutine that writes."""
    if not inspect.isasyncgenfunction(behavior):
        return _returning(behavior, scope)

    async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
        async with scope(context), contextlib.aclosing(behavior(request, context)) as responses:
            async for response in responses:
                yield response

    return wrapper
