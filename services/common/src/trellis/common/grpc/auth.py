"""Authentication (bearer token, or verified client certificate) and the scope checks every
servicer calls (DESIGN.md §3a, docs/security.md).

The interceptor authenticates each call and puts the caller's Principal in a contextvar;
servicers read it with `current_principal()` and check the request against it with the
`authorize_*` and `require_role` helpers, which raise the errors of `trellis.common.grpc.errors`.
Tokens are never logged, and never stored here in the clear: only their digests are kept.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from trellis.common.grpc.errors import InvalidArgument, PermissionDenied, Unauthenticated
from trellis.common.settings import Principal, Role

__all__ = [
    "Authenticator",
    "authorize_class",
    "authorize_class_school",
    "authorize_enrolled",
    "authorize_learner",
    "authorize_school",
    "authorize_tenant",
    "current_principal",
    "require_role",
    "scoped_by_roster",
]

_BEARER = "bearer "
_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "trellis_principal", default=None
)


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps compare_digest from leaking the token's length.
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    """Maps a call to its Principal: by its `authorization: Bearer <token>` metadata, or, when it
    carries none, by the identity of the client certificate that the TLS handshake verified.

    An `authorization` header, when present, decides alone: an unknown or malformed one is refused
    even over a known certificate, so a service that passes its caller's token on never lends the
    caller its own identity.
    """

    def __init__(
        self,
        tokens: Mapping[str, Principal],
        certificates: Mapping[str, Principal] | None = None,
    ) -> None:
        self._principals = [(_digest(token), principal) for token, principal in tokens.items()]
        self._certificates = dict(certificates or {})

    def authenticate(
        self,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        peer_identities: Iterable[bytes] | None = None,
    ) -> Principal:
        """The caller's Principal; Unauthenticated if the token is unknown, or if there is no
        token and no verified certificate identity (`peer_identities`) with a principal."""
        if not any(key == "authorization" for key, _ in metadata or ()):
            return self._by_certificate(peer_identities)
        presented = _bearer_token(metadata)
        if presented is None:
            raise Unauthenticated("missing bearer token")
        candidate = _digest(presented)
        found: Principal | None = None
        # Every token is compared, without early exit, so timing says nothing about which matched.
        for digest, principal in self._principals:
            if hmac.compare_digest(candidate, digest):
                found = principal
        if found is None:
            raise Unauthenticated("unknown bearer token")
        return found

    def _by_certificate(self, peer_identities: Iterable[bytes] | None) -> Principal:
        names = [identity.decode(errors="replace") for identity in peer_identities or ()]
        matched = {name: self._certificates[name] for name in names if name in self._certificates}
        if not matched:
            raise Unauthenticated("missing bearer token (and no known client certificate)")
        if len({p.model_dump_json() for p in matched.values()}) > 1:
            # Names of one certificate that map to different principals: refuse, never pick.
            raise Unauthenticated("client certificate names several principals")
        return next(iter(matched.values()))


def _bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            if value[: len(_BEARER)].lower() == _BEARER:
                token = value[len(_BEARER) :].strip()
                return token or None
            return None
    return None


def set_current_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    """Used by the interceptor; each RPC runs in its own task, so this stays with the call."""
    return _principal.set(principal)


def reset_current_principal(token: contextvars.Token[Principal | None]) -> None:
    _principal.reset(token)


def current_principal() -> Principal:
    """The authenticated caller of the current RPC; Unauthenticated outside of one."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated()
    return principal


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise PermissionDenied(f"role {principal.role} may not call this method")


def authorize_tenant(principal: Principal, tenant_id: str) -> None:
    """The request names the caller's tenant (a platform admin may name any tenant)."""
    if not tenant_id:
        raise InvalidArgument([("tenant_id", "must not be empty")])
    if principal.role == "platform_admin":
        return
    if principal.tenant_id != tenant_id:
        raise PermissionDenied("tenant outside the caller's scope")


def authorize_school(principal: Principal, school_id: str) -> None:
    """The school is in the caller's scope: an empty school list means every school of the tenant.

    Call after authorize_tenant. Teachers and learners reach schools only through their lists.
    """
    if principal.role == "platform_admin":
        return
    if principal.schools:
        if school_id not in principal.schools:
            raise PermissionDenied("school outside the caller's scope")
    elif principal.role in ("teacher", "learner"):
        raise PermissionDenied("school outside the caller's scope")


def authorize_class(principal: Principal, class_id: str) -> None:
    """Teachers are scoped to their classes; learners never read a class (only their own data);
    services and admins see every class.

    Call after authorize_tenant. Whether an admin's class lies in one of their schools needs the
    roster: servicers then call authorize_class_school with what their roster knows.
    """
    if principal.role == "learner":
        raise PermissionDenied("a learner reads only their own records, never a class")
    if principal.role == "teacher" and class_id not in principal.classes:
        raise PermissionDenied("class outside the caller's scope")


def scoped_to_schools(principal: Principal) -> bool:
    """Whether the caller's scope is a list of schools: a district admin or a service with one.
    Teachers are scoped by their classes, learners by their own id, platform admins and callers
    without a school list by their tenant."""
    return principal.role not in ("platform_admin", "teacher", "learner") and bool(
        principal.schools
    )


def authorize_class_school(principal: Principal, school_id: str | None) -> None:
    """After authorize_class: a caller scoped to schools passes only if the class's school, as
    the servicer's roster knows it, is one of theirs; None (the roster lacks the class, or the
    service keeps no schools) is refused. Other callers pass (see scoped_to_schools)."""
    if not scoped_to_schools(principal):
        return
    if school_id is None or school_id not in principal.schools:
        raise PermissionDenied("class outside the caller's schools")


def authorize_learner(principal: Principal, learner_id: str) -> None:
    """A learner may only read their own records (by SIS id). Other roles pass: a teacher's or a
    school-scoped caller's scope over a learner is the learner's classes, which the servicer
    checks with authorize_enrolled (see scoped_by_roster)."""
    if principal.role == "learner" and (
        principal.learner_id is None or principal.learner_id != learner_id
    ):
        raise PermissionDenied("learner outside the caller's scope")


def scoped_by_roster(principal: Principal) -> bool:
    """Whether reaching a learner needs the learner's classes: teachers (their classes) and
    callers scoped to schools. Learners (own id) and unscoped callers need no roster."""
    return principal.role == "teacher" or scoped_to_schools(principal)


def authorize_enrolled(
    principal: Principal,
    learner_classes: Collection[str],
    school_of: Callable[[str], str | None] | None = None,
) -> None:
    """After authorize_learner: the learner, whose classes the servicer's roster gives, is in the
    caller's scope. A teacher teaches one of those classes; a caller scoped to schools has one
    of them in its schools (`school_of` places a class; None: the service cannot, so it refuses).
    A learner without known classes is outside every such scope."""
    if not scoped_by_roster(principal):
        return
    if principal.role == "teacher":
        if not set(learner_classes) & set(principal.classes):
            raise PermissionDenied("learner outside the caller's classes")
        return
    schools = {school_of(c) for c in learner_classes} if school_of is not None else set()
    if not schools & set(principal.schools):
        raise PermissionDenied("learner outside the caller's schools")
