"""The sink's guard against kafka-python 3.0.12's stuck join (sink.py `_unstick_rebalance`).

The bug itself (a join whose SyncGroup answer arrives as a poll's timeout expires is never
completed) cannot be provoked on demand; what the guard acts on is what kafka-python's listener
reports of it: partitions revoked at a rebalance's start, and no assignment after. The test
reports exactly that through the sink's listener hook and checks that the sink asks for a fresh
join after two session timeouts, that the join completes (no second one), and that the sink goes
on storing records, each once.
"""

from __future__ import annotations

import time

from kafka import KafkaProducer

from tests.integration.reporting.test_sink import (
    Running,
    counts,
    item_attempted,
    produce,
    producer,
    sink_settings,
    store,
    wait_until,
)
from trellis.common.settings import Settings
from trellis.reporting.rows import ACTIVITY
from trellis.reporting.store.chdb import ChdbStore

__all__ = ["producer", "sink_settings", "store"]  # fixtures

SESSION_TIMEOUT_MS = 6_000


def test_a_rebalance_that_never_ends_makes_the_sink_join_again(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    settings = sink_settings.model_copy(
        update={
            "kafka": sink_settings.kafka.model_copy(
                update={"session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": 1_000}
            )
        }
    )
    topic = settings.kafka.topics.name("activity")
    produce(producer, topic, [item_attempted(n) for n in range(20)])

    with Running(settings, store) as sink:
        wait_until(lambda: counts(store).get(ACTIVITY) == 20, "the first records")
        # What kafka-python's listener reports when a join is left incomplete: partitions
        # revoked, then no assignment.
        sink._note_revoked(set())
        stuck_at = time.monotonic()
        wait_until(lambda: sink.stats.rejoins == 1, "a fresh join", timeout_s=30)
        waited = time.monotonic() - stuck_at
        produce(producer, topic, [item_attempted(n) for n in range(20, 40)])
        wait_until(lambda: counts(store).get(ACTIVITY) == 40, "records after the fresh join")
        time.sleep(2 * SESSION_TIMEOUT_MS / 1000)  # the join completed: no second rejoin

    assert 2 * SESSION_TIMEOUT_MS / 1000 <= waited < 2 * SESSION_TIMEOUT_MS / 1000 + 5
    assert sink.stats.rejoins == 1
    assert counts(store)[ACTIVITY] == 40
    assert sink.stats.dead_letters == 0
