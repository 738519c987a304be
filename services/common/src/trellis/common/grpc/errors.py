"""The errors servicers raise; the interceptor turns them into gRPC statuses with rich details.

Servicers never touch status codes: they raise one of these, and `trellis.common.grpc.interceptors`
aborts the call with the code and `google.rpc` details (grpcio-status), so every service answers
the same way. Client helpers at the bottom unpack the details again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TrellisError",
    "Unauthenticated",
    "Unavailable",
    "bad_request_fields",
    "bad_request_violations",
    "retry_after_seconds",
    "to_status",
]

_DETAILS_KEY = "grpc-status-details-bin"


class TrellisError(Exception):
    """Base of the vocabulary: a status code and a message safe to show the caller."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_message = "error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def details(self) -> list[any_pb2.Any]:
        """`google.rpc` detail messages packed as Any; none by default."""
        return []


class InvalidArgument(TrellisError):
    """A request malformed as a whole; each violation names the field path and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_message = "invalid request"

    def __init__(self, violations: Iterable[tuple[str, str]], message: str | None = None) -> None:
        self.violations = list(violations)
        super().__init__(message)

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                for field, description in self.violations
            ]
        )
        return [_pack(bad_request)]


class Unauthenticated(TrellisError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_message = "missing or unknown bearer token"


class PermissionDenied(TrellisError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_message = "outside the caller's scope"


class NotFound(TrellisError):
    code = grpc.StatusCode.NOT_FOUND
    default_message = "not found"


class Unavailable(TrellisError):
    """A dependency is down; the caller may retry (ingest: nothing could be stored)."""

    code = grpc.StatusCode.UNAVAILABLE
    default_message = "temporarily unavailable"


class ResourceExhausted(TrellisError):
    """Overload: RetryInfo tells well-behaved clients how long to back off."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_message = "overloaded, retry later"

    def __init__(self, retry_after_s: float, message: str | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)

    def details(self) -> list[any_pb2.Any]:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_s * 1e9))
        return [_pack(error_details_pb2.RetryInfo(retry_delay=delay))]


def to_status(error: TrellisError) -> grpc.Status:
    """The grpc.Status (code, message, `grpc-status-details-bin` trailer) for an error."""
    proto = status_pb2.Status(
        code=_code_number(error.code), message=error.message, details=error.details()
    )
    return rpc_status.to_status(proto)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _code_number(code: grpc.StatusCode) -> int:
    # grpc.StatusCode values are (number, name); google.rpc.Code uses the same numbers.
    number: int = code.value[0]
    return number


# --- client side: read the details back from a failed call (sync or aio RpcError) ---


def _status_details(rpc_error: grpc.RpcError) -> list[any_pb2.Any]:
    # Read the trailer directly rather than via rpc_status.from_call: that needs the sync call
    # API, while aio errors expose the same trailer through `trailing_metadata()`.
    trailing: Any = rpc_error.trailing_metadata()
    for key, value in trailing or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []


def bad_request_violations(rpc_error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) of every BadRequest field violation carried by a failed call."""
    violations: list[tuple[str, str]] = []
    for detail in _status_details(rpc_error):
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
    return violations


def bad_request_fields(rpc_error: grpc.RpcError) -> list[str]:
    """Field paths of the BadRequest violations carried by a failed call (empty if none)."""
    return [field for field, _ in bad_request_violations(rpc_error)]


def retry_after_seconds(rpc_error: grpc.RpcError) -> float | None:
    """The RetryInfo delay of a failed call, or None when the server gave none."""
    for detail in _status_details(rpc_error):
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(retry_info):
            return float(retry_info.retry_delay.ToNanoseconds()) / 1e9
    return None
