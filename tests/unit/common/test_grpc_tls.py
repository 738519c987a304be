"""TLS and mTLS of trellis.common.grpc: a real server and real channels with certificates made in
the test (tests/certificates.py), over the wire on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from tests.certificates import Authority, Issued
from trellis.common.grpc import GrpcServer, ServiceBinding, create_server, current_principal
from trellis.common.grpc.channels import open_channel
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc
from trellis.common.settings import GrpcTlsSettings, Principal, ServerSettings, Settings

TENANT = "district-a"
TEACHER_TOKEN = "teacher-token-not-secret"
TEACHER = Principal(tenant_id=TENANT, role="teacher", classes=["class-1"])
RECOMMENDER_URI = "spiffe://cluster.local/ns/trellis/sa/recommender"
SERVICE = Principal(tenant_id=TENANT, role="service")
REPORTING = reporting_pb2.DESCRIPTOR.services_by_name["ReportingService"].full_name


class WhoAmI(reporting_pb2_grpc.ReportingServiceServicer):
    """Answers with the caller's principal, as the interceptor authenticated it."""

    async def GetLearnerProgress(self, request: Any, context: Any) -> Any:
        principal = current_principal()
        return reporting_pb2.LearnerProgress(learner_id=f"{principal.role}@{principal.tenant_id}")


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Issued
    recommender: Issued  # a URI SAN that maps to a service principal
    stranger: Issued  # signed by the CA, but its identity maps to no principal
    rogue: Authority  # another CA
    impostor: Issued  # the recommender's identity, signed by the other CA


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = Authority(tmp_path / "ca")
    rogue = Authority(tmp_path / "rogue", name="rogue-ca")
    return Pki(
        ca=ca,
        server=ca.issue("trellis-reporting", dns=("localhost",), ips=("127.0.0.1",), server=True),
        recommender=ca.issue("recommender", uris=(RECOMMENDER_URI,)),
        stranger=ca.issue("stranger"),
        rogue=rogue,
        impostor=rogue.issue("impostor", uris=(RECOMMENDER_URI,)),
    )


def serving_tls(pki: Pki, *, mtls: bool) -> GrpcTlsSettings:
    return GrpcTlsSettings(
        enabled=True,
        cert_file=pki.server.cert_file,
        key_file=pki.server.key_file,
        client_ca_file=pki.ca.ca_file if mtls else None,
        require_client_cert=mtls,
    )


def calling_tls(ca_file: Path, client: Issued | None = None, **extra: Any) -> GrpcTlsSettings:
    return GrpcTlsSettings(
        enabled=True,
        ca_file=ca_file,
        client_cert_file=client.cert_file if client else None,
        client_key_file=client.key_file if client else None,
        **extra,
    )


async def start(tls: GrpcTlsSettings, health_port: int | None = None) -> GrpcServer:
    server = create_server(
        ServerSettings(port=0, metrics_port=0, grace_seconds=0.5, health_port=health_port),
        {TEACHER_TOKEN: TEACHER},
        [
            ServiceBinding(
                REPORTING, reporting_pb2_grpc.add_ReportingServiceServicer_to_server, WhoAmI()
            )
        ],
        tls=tls,
        certificates={RECOMMENDER_URI: SERVICE},
    )
    await server.start()
    await server.set_serving()
    return server


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[GrpcServer]:
    server = await start(serving_tls(pki, mtls=True), health_port=0)
    yield server
    await server.stop()


async def who_am_i(
    port: int, tls: GrpcTlsSettings | None, token: str | None = None, host: str = "127.0.0.1"
) -> str:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with open_channel(f"{host}:{port}", tls) as channel:
        reply = await reporting_pb2_grpc.ReportingServiceStub(channel).GetLearnerProgress(
            reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="S1"),
            metadata=metadata,
            timeout=10,
        )
    return str(reply.learner_id)


async def refused(
    port: int, tls: GrpcTlsSettings | None, token: str | None = None
) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await who_am_i(port, tls, token)
    return raised.value.code()


async def test_a_verified_client_certificate_stands_for_a_token(
    pki: Pki, mtls_server: GrpcServer
) -> None:
    tls = calling_tls(pki.ca.ca_file, pki.recommender)
    assert await who_am_i(mtls_server.port, tls) == f"service@{TENANT}"
    # A token still works, and decides over the certificate.
    assert await who_am_i(mtls_server.port, tls, TEACHER_TOKEN) == f"teacher@{TENANT}"
    assert await refused(mtls_server.port, tls, "unknown-token") == grpc.StatusCode.UNAUTHENTICATED


async def test_a_certificate_without_a_principal_needs_a_token(
    pki: Pki, mtls_server: GrpcServer
) -> None:
    tls = calling_tls(pki.ca.ca_file, pki.stranger)
    assert await refused(mtls_server.port, tls) == grpc.StatusCode.UNAUTHENTICATED
    assert await who_am_i(mtls_server.port, tls, TEACHER_TOKEN) == f"teacher@{TENANT}"


async def test_mtls_refuses_callers_without_a_certificate_of_its_ca(
    pki: Pki, mtls_server: GrpcServer
) -> None:
    port = mtls_server.port
    # No certificate, even with a good token: the handshake fails.
    assert await refused(port, calling_tls(pki.ca.ca_file), TEACHER_TOKEN) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # The recommender's identity, signed by another CA.
    assert await refused(port, calling_tls(pki.ca.ca_file, pki.impostor)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # Plaintext to a TLS port.
    assert await refused(port, None, TEACHER_TOKEN) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_refuses_a_server_its_ca_did_not_sign(
    pki: Pki, mtls_server: GrpcServer
) -> None:
    tls = calling_tls(pki.rogue.ca_file, pki.recommender)
    assert await refused(mtls_server.port, tls) == grpc.StatusCode.UNAVAILABLE


async def test_tls_without_client_certificates_authenticates_by_token(pki: Pki) -> None:
    server = await start(serving_tls(pki, mtls=False))
    try:
        tls = calling_tls(pki.ca.ca_file)
        assert await who_am_i(server.port, tls, TEACHER_TOKEN) == f"teacher@{TENANT}"
        assert await refused(server.port, tls) == grpc.StatusCode.UNAUTHENTICATED
        # Plaintext stays refused.
        assert await refused(server.port, None, TEACHER_TOKEN) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop()


async def test_server_name_checks_a_name_other_than_the_address(pki: Pki) -> None:
    named = pki.ca.issue("trellis-mastery", dns=("trellis-mastery",), server=True)
    server = await start(
        GrpcTlsSettings(enabled=True, cert_file=named.cert_file, key_file=named.key_file)
    )
    try:
        # Called by IP (as mastery workers call each other): the certificate names the service.
        plain = calling_tls(pki.ca.ca_file)
        assert await refused(server.port, plain, TEACHER_TOKEN) == grpc.StatusCode.UNAVAILABLE
        named_tls = calling_tls(pki.ca.ca_file, server_name="trellis-mastery")
        assert await who_am_i(server.port, named_tls, TEACHER_TOKEN) == f"teacher@{TENANT}"
    finally:
        await server.stop()


async def test_the_health_port_answers_probes_in_plaintext_and_serves_nothing_else(
    mtls_server: GrpcServer,
) -> None:
    assert mtls_server.health_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mtls_server.health_port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=REPORTING), timeout=10
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await reporting_pb2_grpc.ReportingServiceStub(channel).GetLearnerProgress(
                reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT), timeout=10
            )
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_tls_settings_refuse_half_configurations(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    for incomplete in (
        {"cert_file": pem},
        {"client_cert_file": pem},
        {"require_client_cert": True},
        # grpc's Python server cannot ask for an optional client certificate.
        {"client_ca_file": pem},
    ):
        with pytest.raises(ValidationError):
            GrpcTlsSettings(enabled=True, **incomplete)  # type: ignore[arg-type]


async def test_serving_tls_needs_a_certificate() -> None:
    with pytest.raises(ValueError, match="cert_file"):
        create_server(
            ServerSettings(port=0, metrics_port=0), {}, [], tls=GrpcTlsSettings(enabled=True)
        )


def test_settings_read_tls_and_certificate_principals_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identities = tmp_path / "certificates.json"
    identities.write_text(f'{{"{RECOMMENDER_URI}": {{"tenant_id": "{TENANT}"}}}}')
    monkeypatch.setenv("TRELLIS_GRPC_TLS__ENABLED", "true")
    monkeypatch.setenv("TRELLIS_GRPC_TLS__CA_FILE", "/var/run/secrets/trellis-tls/ca.crt")
    monkeypatch.setenv("TRELLIS_AUTH__CERTIFICATES_FILE", str(identities))
    monkeypatch.setenv("TRELLIS_AUTH__CERTIFICATES", '{"ops-tool": {"tenant_id": "ops"}}')
    settings = Settings()
    assert settings.grpc_tls.enabled
    assert settings.grpc_tls.ca_file == Path("/var/run/secrets/trellis-tls/ca.crt")
    assert settings.auth.all_certificates() == {
        RECOMMENDER_URI: Principal(tenant_id=TENANT),
        "ops-tool": Principal(tenant_id="ops"),
    }
