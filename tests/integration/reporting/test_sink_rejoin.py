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
from trellis.reporting.sink import ReportingSink
from trellis.reporting.store.chdb import ChdbStore

__all__ = ["producer", "sink_settings", "store"]  # fixtures

SESSION_TIMEOUT_MS = 6_000


def pretend_a_join_left_incomplete(sink: ReportingSink) -> float:
    """Put the sink in the state kafka-python's listener leaves it in when a join is never
    completed (partitions revoked, no assignment after) until it asks for a fresh join; the
    seconds that took. A real rebalance of the sink's first minutes (kafka-python rejoins once
    the metadata of topics created just before is complete) ends the pretence: it starts again."""
    deadline = time.monotonic() + 60
    stuck_at = time.monotonic()
    while sink.stats.rejoins == 0:
        assert time.monotonic() < deadline, "no fresh join within 60 s"
        with sink._lock:
            if sink._rebalancing_since is None:
                sink._rebalancing_since = stuck_at = time.monotonic()
        time.sleep(0.05)
    return time.monotonic() - stuck_at


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
        waited = pretend_a_join_left_incomplete(sink)
        produce(producer, topic, [item_attempted(n) for n in range(20, 40)])
        wait_until(lambda: counts(store).get(ACTIVITY) == 40, "records after the fresh join")
        time.sleep(2 * SESSION_TIMEOUT_MS / 1000)  # the join completed: no second rejoin

    assert 2 * SESSION_TIMEOUT_MS / 1000 <= waited < 2 * SESSION_TIMEOUT_MS / 1000 + 10
    assert sink.stats.rejoins == 1
    assert counts(store)[ACTIVITY] == 40
    assert sink.stats.dead_letters == 0
