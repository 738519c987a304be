"""trellis.common.grpc.errors: the statuses and google.rpc details each error becomes."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from trellis.common.grpc.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    bad_request_fields,
    retry_after_seconds,
    to_status,
)


class FakeRpcError(grpc.RpcError):
    """What a client sees: a failed call's trailing metadata."""

    def __init__(self, status: grpc.Status) -> None:
        self._trailing = status.trailing_metadata

    def trailing_metadata(self) -> Any:
        return self._trailing


def test_invalid_argument_packs_a_bad_request() -> None:
    status = to_status(InvalidArgument([("events[3].learner_id", "required"), ("tenant_id", "x")]))

    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    ((key, value),) = status.trailing_metadata
    proto = status_pb2.Status.FromString(value)
    bad_request = error_details_pb2.BadRequest()
    assert key == "grpc-status-details-bin" and proto.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["events[3].learner_id", "tenant_id"]
    assert bad_request_fields(FakeRpcError(status)) == ["events[3].learner_id", "tenant_id"]


def test_resource_exhausted_packs_retry_info() -> None:
    status = to_status(ResourceExhausted(retry_after_s=0.25))

    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_after_seconds(FakeRpcError(status)) == 0.25
    assert bad_request_fields(FakeRpcError(status)) == []


def test_each_error_has_its_code_and_a_default_message() -> None:
    for error, code in [
        (Unauthenticated(), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied(), grpc.StatusCode.PERMISSION_DENIED),
        (NotFound("no such class"), grpc.StatusCode.NOT_FOUND),
        (Unavailable(), grpc.StatusCode.UNAVAILABLE),
    ]:
        status = to_status(error)
        assert status.code == code
        assert status.details
    assert to_status(NotFound("no such class")).details == "no such class"


def test_client_helpers_tolerate_calls_without_details() -> None:
    class Bare(grpc.RpcError):
        def trailing_metadata(self) -> Any:
            return None

    assert bad_request_fields(Bare()) == []
    assert retry_after_seconds(Bare()) is None
