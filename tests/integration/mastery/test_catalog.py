"""The worker follows the catalog topic: an attempt that names no skills takes the item's skills
from the catalog, and the tenant's latest parameter set drives the update (real broker)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import TEST_TENANT
from tests.integration.mastery.test_worker import SIS_ID, Collector, _attempt
from tests.integration.mastery.workers import Worker, wait_until_serving
from trellis.common.codec import encode_catalog, encode_envelope
from trellis.common.kafka import create_producer
from trellis.common.pb.events.v1 import catalog_pb2
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings


def test_attempts_join_the_catalog_and_use_the_published_parameter_set(
    settings: Settings,
    start_worker: Callable[[str], Worker],
) -> None:
    producer = create_producer(settings.kafka)
    catalog_topic = settings.kafka.topics.name("catalog")
    for record in [
        catalog_pb2.CatalogRecord(
            tenant_id=TEST_TENANT,
            item=catalog_pb2.Item(item_id="item-1", skill_ids=["fractions.add"]),
        ),
        catalog_pb2.CatalogRecord(
            tenant_id=TEST_TENANT,
            model_parameters=catalog_pb2.ModelParameters(
                version="fit-test",
                skills=[
                    catalog_pb2.SkillParameters(
                        skill_id="fractions.add", prior=0.5, learn=0.2, guess=0.25, slip=0.05
                    )
                ],
                weight_bkt=1.0,
            ),
        ),
    ]:
        encoded = encode_catalog(record)
        producer.send(catalog_topic, key=encoded.key, value=encoded.value, headers=encoded.headers)
    producer.flush()

    worker = start_worker("catalog")
    wait_until_serving(worker)
    learner = Pseudonymizer(settings.pseudonym.all_keys()).pseudonymize(TEST_TENANT, SIS_ID)
    collector = Collector(settings)
    try:
        attempt = _attempt("attempt-c1", learner, correct=True)
        del attempt.item_attempted.skill_ids[:]
        encoded = encode_envelope(attempt)
        producer.send(
            settings.kafka.topics.name("activity"),
            key=encoded.key,
            value=encoded.value,
            headers=encoded.headers,
        )
        producer.flush()
        collector.until(lambda: bool(collector.updates("attempt-c1")), "MasteryUpdated", worker)
        [update] = collector.updates("attempt-c1")
        change = update.mastery_updated
        assert change.skill_id == "fractions.add"
        assert change.model_version == "fit-test"
        # (0.5, 0.2, 0.25, 0.05), correct: posterior 19/24, after learning 5/6.
        assert change.p_before == pytest.approx(0.5)
        assert change.p_after == pytest.approx(5 / 6)
    finally:
        producer.close()
        collector.consumer.close()
