"""Fixtures shared by every test level.

Integration and end-to-end tests need the broker that `make test` starts
(TRELLIS_KAFKA__BOOTSTRAP_SERVERS); they fail, never skip, when it is not there. Each test gets its
own topic prefix and consumer groups, and the test profile's short timeouts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from trellis.common.kafka import ensure_topics
from trellis.common.settings import Settings

# Shared, loaded CI machines: a property test's example must not fail for taking long.
hypothesis_settings.register_profile(
    "trellis", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("trellis")

TEST_TENANT = "district-test"
TEST_PSEUDONYM_KEY = "test-pseudonym-key-not-secret"


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_test_settings(prefix: str, **overrides: object) -> Settings:
    """Settings of the test profile: unique topics and groups, short Kafka and Faust timeouts."""
    base = Settings()
    values: dict[str, object] = {
        "kafka": base.kafka.model_copy(
            update={
                "topics": base.kafka.topics.model_copy(
                    update={"prefix": f"{prefix}.", "partitions": 2}
                ),
                "session_timeout_ms": 6_000,
                "heartbeat_interval_ms": 1_000,
                "request_timeout_ms": 10_000,
                "delivery_timeout_ms": 15_000,
            }
        ),
        "mastery": base.mastery.model_copy(
            update={
                "consumer_group": f"{prefix}-mastery",
                "broker_session_timeout_s": 6.0,
                "broker_heartbeat_interval_s": 1.0,
            }
        ),
        "reporting": base.reporting.model_copy(update={"consumer_group": f"{prefix}-reporting"}),
        "pseudonym": {"keys": {TEST_TENANT: {1: TEST_PSEUDONYM_KEY}}},
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings() -> Iterator[Settings]:
    """Test-profile settings with this test's own topics created on the test broker."""
    current = make_test_settings(unique_name("t"))
    ensure_topics(current.kafka)
    yield current


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the level its folder names: tests/unit -> unit, and so on."""
    for item in items:
        level = item.path.relative_to(item.config.rootpath / "tests").parts[0]
        if level in ("unit", "contract", "integration", "e2e"):
            item.add_marker(level if level != "contract" else "integration")
