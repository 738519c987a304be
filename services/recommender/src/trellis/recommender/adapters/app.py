"""The assembled recommender process: replica followers, mastery client, gRPC server.
Built by `__main__` and by the integration tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from trellis.common.follower import CompactedTopicFollower
from trellis.common.grpc.server import GrpcServer, ServiceBinding, create_server
from trellis.common.logging import get_logger
from trellis.common.pb.recommender.v1 import recommender_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.roster import roster_applier
from trellis.common.settings import RecommenderSettings, Settings
from trellis.recommender.adapters.followers import catalog_applier
from trellis.recommender.adapters.grpc import SERVICE_NAME, RecommenderServicer
from trellis.recommender.adapters.mastery_client import MasteryClient
from trellis.recommender.policy import PolicyConfig
from trellis.recommender.replica import Replica
from trellis.recommender.service import RecommenderService

log = get_logger(__name__)


class PolicyFor:
    """The policy configuration of a tenant: the settings' defaults and the tenant's band."""

    def __init__(self, settings: RecommenderSettings) -> None:
        self._settings = settings
        self._cache: dict[str, PolicyConfig] = {}

    def __call__(self, tenant_id: str) -> PolicyConfig:
        config = self._cache.get(tenant_id)
        if config is None:
            low, high = self._settings.band(tenant_id)
            config = PolicyConfig(
                band_low=low,
                band_high=high,
                k=self._settings.default_k,
                broaden_every=self._settings.broaden_every,
                review_after_days=self._settings.review_after_days,
            )
            self._cache[tenant_id] = config
        return config


class Recommender:
    """The assembled process: replica followers, mastery client, gRPC server."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        rec = settings.recommender
        self.replica = Replica()
        self.followers = [
            CompactedTopicFollower(settings.kafka, "catalog", catalog_applier(self.replica)),
            CompactedTopicFollower(settings.kafka, "roster", roster_applier(self.replica.roster)),
        ]
        token = rec.mastery_token.get_secret_value() if rec.mastery_token else None
        mastery = settings.services.mastery
        address = rec.mastery_address or f"{mastery.host}:{mastery.port}"
        self.mastery = MasteryClient(address, token, rec.mastery_deadline_s, settings.grpc_tls)
        service = RecommenderService(
            self.replica, self.mastery, PolicyFor(rec), lambda: datetime.now(UTC)
        )
        server_settings = settings.services.recommender
        if port is not None:
            server_settings = server_settings.model_copy(update={"port": port})
        self.server: GrpcServer = create_server(
            server_settings,
            settings.auth.all_tokens(),
            [
                ServiceBinding(
                    SERVICE_NAME,
                    recommender_pb2_grpc.add_RecommenderServiceServicer_to_server,
                    RecommenderServicer(
                        service, self.replica, Pseudonymizer(settings.pseudonym.all_keys()), rec
                    ),
                )
            ],
            tls=settings.grpc_tls,
            certificates=settings.auth.all_certificates(),
        )

    async def start(self) -> None:
        """Serve (health NOT_SERVING), load the replicas, then report SERVING."""
        await self.server.start()
        for follower in self.followers:
            follower.start()
        for follower in self.followers:
            while not follower.caught_up.is_set():
                await asyncio.sleep(0.05)
        await self.server.set_serving(True)
        log.info("recommender serving", port=self.server.port)

    async def close(self) -> None:
        for follower in self.followers:
            await asyncio.to_thread(follower.stop)
        await self.mastery.close()
