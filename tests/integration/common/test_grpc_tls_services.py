"""gRPC mTLS across real services: a mastery worker process and an in-process recommender, each
serving mTLS with certificates made in the test, the recommender calling mastery over mTLS. A
caller identified by its certificate alone reaches mastery through the recommender, which mastery
identifies by the recommender's certificate; the worker's readiness is read on its plaintext
health port."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from tests.certificates import Authority, Issued
from tests.conftest import TEST_TENANT
from tests.integration.mastery.roster import send_records
from tests.integration.mastery.workers import free_port, running_worker
from trellis.common.codec import encode_catalog
from trellis.common.grpc.channels import open_channel
from trellis.common.pb.events.v1 import catalog_pb2
from trellis.common.pb.recommender.v1 import recommender_pb2 as rec
from trellis.common.pb.recommender.v1 import recommender_pb2_grpc
from trellis.common.settings import GrpcTlsSettings, Principal, Settings
from trellis.recommender.adapters.app import Recommender
from trellis.recommender.adapters.mastery_client import MasteryClient
from trellis.recommender.service import MasteryDenied, MasteryUnavailable

RECOMMENDER_ID = "spiffe://trellis.test/recommender"
DASHBOARD_ID = "spiffe://trellis.test/dashboard"
SERVICE = Principal(tenant_id=TEST_TENANT, role="service")


@dataclass(frozen=True)
class Pki:
    ca: Authority
    mastery: Issued
    recommender_server: Issued
    recommender_client: Issued  # the recommender's identity as mastery's caller
    dashboard: Issued  # a caller of the recommender
    stranger: Issued  # signed by the CA, mapped to no principal


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = Authority(tmp_path / "pki")
    return Pki(
        ca=ca,
        # Named like the chart's mastery Service, not by address: callers check that name
        # (`server_name`), as mastery workers do when they call each other by pod IP.
        mastery=ca.issue("trellis-mastery", dns=("trellis-mastery",), server=True),
        recommender_server=ca.issue("trellis-recommender", ips=("127.0.0.1",), server=True),
        recommender_client=ca.issue("recommender-client", uris=(RECOMMENDER_ID,)),
        dashboard=ca.issue("dashboard", uris=(DASHBOARD_ID,)),
        stranger=ca.issue("stranger"),
    )


def mtls(
    pki: Pki, server: Issued | None, client: Issued | None, server_name: str | None = None
) -> GrpcTlsSettings:
    return GrpcTlsSettings(
        enabled=True,
        cert_file=server.cert_file if server else None,
        key_file=server.key_file if server else None,
        client_ca_file=pki.ca.ca_file if server else None,
        require_client_cert=server is not None,
        ca_file=pki.ca.ca_file,
        client_cert_file=client.cert_file if client else None,
        client_key_file=client.key_file if client else None,
        server_name=server_name,
    )


@pytest.fixture
def mastery_worker(settings: Settings, pki: Pki, tmp_path: Path) -> Iterator[str]:
    env = {
        "TRELLIS_SERVICES__MASTERY__HEALTH_PORT": str(free_port()),
        "TRELLIS_GRPC_TLS__ENABLED": "true",
        "TRELLIS_GRPC_TLS__CERT_FILE": str(pki.mastery.cert_file),
        "TRELLIS_GRPC_TLS__KEY_FILE": str(pki.mastery.key_file),
        "TRELLIS_GRPC_TLS__REQUIRE_CLIENT_CERT": "true",
        "TRELLIS_GRPC_TLS__CLIENT_CA_FILE": str(pki.ca.ca_file),
        "TRELLIS_AUTH__CERTIFICATES": json.dumps({RECOMMENDER_ID: SERVICE.model_dump()}),
    }
    with running_worker(settings, tmp_path / "mastery", tmp_path / "mastery.log", env) as worker:
        yield f"127.0.0.1:{worker.port}"


@pytest.fixture
async def recommender(
    settings: Settings, pki: Pki, mastery_worker: str
) -> AsyncIterator[Recommender]:
    skill = catalog_pb2.Skill(skill_id="count")
    item = catalog_pb2.Item(item_id="count-1", skill_ids=["count"], difficulty=-1.0)
    encoded = [
        encode_catalog(catalog_pb2.CatalogRecord(tenant_id=TEST_TENANT, skill=skill)),
        encode_catalog(catalog_pb2.CatalogRecord(tenant_id=TEST_TENANT, item=item)),
    ]
    send_records(settings, "catalog", [(e.key, e.value, e.headers) for e in encoded])
    current = settings.model_copy(
        update={
            "grpc_tls": mtls(
                pki, pki.recommender_server, pki.recommender_client, "trellis-mastery"
            ),
            "auth": settings.auth.model_copy(update={"certificates": {DASHBOARD_ID: SERVICE}}),
            "recommender": settings.recommender.model_copy(
                update={"mastery_address": mastery_worker, "mastery_deadline_s": 5.0}
            ),
        }
    )
    running = Recommender(current, port=0)
    await running.start()
    try:
        yield running
    finally:
        await running.server.stop()
        await running.close()


async def test_a_certificate_reaches_mastery_through_the_recommender(
    pki: Pki, recommender: Recommender
) -> None:
    target = f"127.0.0.1:{recommender.server.port}"
    async with open_channel(target, mtls(pki, None, pki.dashboard)) as channel:
        answer = await recommender_pb2_grpc.RecommenderServiceStub(channel).NextActivities(
            rec.NextActivitiesRequest(tenant_id=TEST_TENANT, learner_id="sis-1"), timeout=20
        )
    assert [o.activity_id for o in answer.options if o.activity_kind == "item"] == ["count-1"]
    # Without a certificate the recommender's own handshake refuses the caller.
    async with open_channel(target, mtls(pki, None, None)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await recommender_pb2_grpc.RecommenderServiceStub(channel).NextActivities(
                rec.NextActivitiesRequest(tenant_id=TEST_TENANT, learner_id="sis-1"), timeout=20
            )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def read_state(
    pki: Pki, address: str, client: Issued | None, server_name: str | None = "trellis-mastery"
) -> object:
    """A learner's state as the recommender's mastery client reads it with these credentials."""
    mastery = MasteryClient(address, None, 5.0, mtls(pki, None, client, server_name))
    try:
        return await mastery.learner_state(TEST_TENANT, "sis-1", datetime.now(UTC))
    finally:
        await mastery.close()


async def test_mastery_identifies_the_recommender_by_its_certificate(
    pki: Pki, mastery_worker: str
) -> None:
    assert await read_state(pki, mastery_worker, pki.recommender_client) is not None
    # Verified, but its identity maps to no principal.
    with pytest.raises(MasteryDenied):
        await read_state(pki, mastery_worker, pki.stranger)
    # No certificate: the handshake fails.
    with pytest.raises(MasteryUnavailable):
        await read_state(pki, mastery_worker, None)
    # The worker's certificate names the service, not the address called.
    with pytest.raises(MasteryUnavailable):
        await read_state(pki, mastery_worker, pki.recommender_client, server_name=None)
