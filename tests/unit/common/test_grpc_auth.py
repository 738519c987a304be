"""trellis.common.grpc.auth: bearer tokens to principals, and the scope checks servicers call."""

from __future__ import annotations

import pytest

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
from trellis.common.grpc.errors import InvalidArgument, PermissionDenied, Unauthenticated
from trellis.common.settings import Principal

SERVICE = Principal(tenant_id="d1", role="service")
TEACHER = Principal(tenant_id="d1", role="teacher", schools=["s1"], classes=["c1"])
LEARNER = Principal(tenant_id="d1", role="learner", classes=["c1"], learner_id="S1")
DISTRICT_ADMIN = Principal(tenant_id="d1", role="district_admin")
SCHOOL_ADMIN = Principal(tenant_id="d1", role="district_admin", schools=["s1"])
PLATFORM_ADMIN = Principal(tenant_id="ops", role="platform_admin")
SCHOOL_SERVICE = Principal(tenant_id="d1", role="service", schools=["s1"])

authenticator = Authenticator({"tok-service": SERVICE, "tok-teacher": TEACHER})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer tok-service", SERVICE),
        ("bearer tok-teacher", TEACHER),
        ("Bearer  tok-teacher ", TEACHER),
    ],
)
def test_a_known_bearer_token_gives_its_principal(header: str, expected: Principal) -> None:
    assert authenticator.authenticate((("authorization", header),)) == expected


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        None,
        (("authorization", "Bearer tok-unknown"),),
        (("authorization", "Bearer tok-servic"),),  # a prefix of a real token
        (("authorization", "Bearer "),),
        (("authorization", "tok-service"),),  # not a bearer header
        (("authorization-bin", b"tok-service"),),
        (("x-token", "tok-service"),),
    ],
)
def test_missing_or_unknown_tokens_are_unauthenticated(metadata: object) -> None:
    with pytest.raises(Unauthenticated) as raised:
        authenticator.authenticate(metadata)  # type: ignore[arg-type]
    assert "tok-" not in raised.value.message


def test_no_principal_outside_an_authenticated_call() -> None:
    with pytest.raises(Unauthenticated):
        current_principal()


def test_tenant() -> None:
    authorize_tenant(SERVICE, "d1")
    with pytest.raises(PermissionDenied):
        authorize_tenant(SERVICE, "d2")
    with pytest.raises(InvalidArgument) as raised:
        authorize_tenant(SERVICE, "")
    assert raised.value.violations == [("tenant_id", "must not be empty")]
    # Platform operators act for every district.
    authorize_tenant(PLATFORM_ADMIN, "d2")


def test_school() -> None:
    for principal in (SERVICE, DISTRICT_ADMIN, TEACHER, SCHOOL_ADMIN, PLATFORM_ADMIN):
        authorize_school(principal, "s1")
    for principal in (DISTRICT_ADMIN, SERVICE, PLATFORM_ADMIN):
        authorize_school(principal, "s2")  # no school list: every school of the tenant
    for principal in (TEACHER, SCHOOL_ADMIN, LEARNER):
        with pytest.raises(PermissionDenied):
            authorize_school(principal, "s2")


def test_class() -> None:
    for principal in (SERVICE, DISTRICT_ADMIN, TEACHER, PLATFORM_ADMIN):
        authorize_class(principal, "c1")
    with pytest.raises(PermissionDenied):
        authorize_class(TEACHER, "c2")
    authorize_class(DISTRICT_ADMIN, "c2")


def test_a_learner_never_reads_a_class_not_even_one_of_theirs() -> None:
    for class_id in ("c1", "c2"):
        with pytest.raises(PermissionDenied):
            authorize_class(LEARNER, class_id)


def test_class_school() -> None:
    for principal in (SERVICE, DISTRICT_ADMIN, TEACHER, PLATFORM_ADMIN, SCHOOL_ADMIN):
        authorize_class_school(principal, "s1")
    # Unscoped callers and teachers (scoped by class) need no school.
    for principal in (SERVICE, DISTRICT_ADMIN, TEACHER, PLATFORM_ADMIN):
        authorize_class_school(principal, None)
    for principal in (SCHOOL_ADMIN, SCHOOL_SERVICE):
        for school in ("s2", None):
            with pytest.raises(PermissionDenied):
                authorize_class_school(principal, school)


def test_which_callers_need_the_roster_to_reach_a_learner() -> None:
    assert [
        scoped_by_roster(p)
        for p in (SERVICE, DISTRICT_ADMIN, PLATFORM_ADMIN, LEARNER, TEACHER, SCHOOL_ADMIN)
    ] == [False, False, False, False, True, True]
    assert scoped_by_roster(SCHOOL_SERVICE)
    assert not scoped_by_roster(PLATFORM_ADMIN.model_copy(update={"schools": ["s1"]}))


def test_enrolled() -> None:
    schools = {"c1": "s1", "c2": "s2"}.get
    # Teachers reach the learners of their classes.
    authorize_enrolled(TEACHER, {"c1", "c9"})
    for classes in (set(), {"c2"}):
        with pytest.raises(PermissionDenied):
            authorize_enrolled(TEACHER, classes, schools)
    # Callers scoped to schools reach learners with a class in one of them.
    for principal in (SCHOOL_ADMIN, SCHOOL_SERVICE):
        authorize_enrolled(principal, {"c2", "c1"}, schools)
        for classes, school_of in (({"c2"}, schools), ({"c1"}, None), (set(), schools)):
            with pytest.raises(PermissionDenied):
                authorize_enrolled(principal, classes, school_of)
    # The others need no roster: learners are checked by id, the rest are tenant-wide.
    for principal in (SERVICE, DISTRICT_ADMIN, PLATFORM_ADMIN, LEARNER):
        authorize_enrolled(principal, set())


def test_learner() -> None:
    authorize_learner(LEARNER, "S1")
    with pytest.raises(PermissionDenied):
        authorize_learner(LEARNER, "S2")
    with pytest.raises(PermissionDenied):
        authorize_learner(LEARNER.model_copy(update={"learner_id": None}), "S1")
    authorize_learner(TEACHER, "S2")


def test_role() -> None:
    require_role(TEACHER, "teacher", "district_admin")
    with pytest.raises(PermissionDenied):
        require_role(LEARNER, "teacher", "district_admin")


certified = Authenticator(
    {"tok-teacher": TEACHER},
    {"spiffe://cluster.local/ns/trellis/sa/recommender": SERVICE, "ops-tool": PLATFORM_ADMIN},
)


def test_a_known_certificate_identity_without_a_token_gives_its_principal() -> None:
    uri = b"spiffe://cluster.local/ns/trellis/sa/recommender"
    assert certified.authenticate((), [b"recommender.trellis.svc", uri]) == SERVICE
    assert certified.authenticate(None, [b"ops-tool"]) == PLATFORM_ADMIN


def test_a_token_decides_over_a_certificate() -> None:
    identity = [b"ops-tool"]
    assert certified.authenticate((("authorization", "Bearer tok-teacher"),), identity) == TEACHER
    # An unknown or malformed token never falls back to the certificate's principal.
    for header in ("Bearer tok-unknown", "tok-teacher", "Bearer "):
        with pytest.raises(Unauthenticated):
            certified.authenticate((("authorization", header),), identity)


@pytest.mark.parametrize("identities", [None, [], [b"someone-else"]])
def test_no_token_and_no_known_certificate_is_unauthenticated(identities: object) -> None:
    with pytest.raises(Unauthenticated):
        certified.authenticate((), identities)  # type: ignore[arg-type]


def test_a_certificate_naming_two_principals_is_refused() -> None:
    both = [b"ops-tool", b"spiffe://cluster.local/ns/trellis/sa/recommender"]
    with pytest.raises(Unauthenticated):
        certified.authenticate((), both)
