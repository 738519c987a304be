"""The gRPC runtime kit every service uses: server factory, interceptor, auth, errors."""

from trellis.common.grpc.auth import (
    Authenticator,
    authorize_class,
    authorize_class_school,
    authorize_enrolled,
    authorize_learner,
    authorize_school,
    authorize_tenant,
    current_principal,
    require_role,
    scoped_by_roster,
)
from trellis.common.grpc.channels import open_channel
from trellis.common.grpc.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TrellisError,
    Unauthenticated,
    Unavailable,
    bad_request_fields,
    bad_request_violations,
    retry_after_seconds,
)
from trellis.common.grpc.server import GrpcServer, ServiceBinding, create_server, run_until_signal

__all__ = [
    "Authenticator",
    "GrpcServer",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServiceBinding",
    "TrellisError",
    "Unauthenticated",
    "Unavailable",
    "authorize_class",
    "authorize_class_school",
    "authorize_enrolled",
    "authorize_learner",
    "authorize_school",
    "authorize_tenant",
    "bad_request_fields",
    "bad_request_violations",
    "create_server",
    "current_principal",
    "open_channel",
    "require_role",
    "retry_after_seconds",
    "run_until_signal",
    "scoped_by_roster",
]
