"""With the broker stopped mid-run, nothing answered ACCEPTED is missing from the topic once the
broker is back. Runs on a broker of its own (deploy/local/kafka.sh on free ports, in a temporary
KAFKA_HOME), killed with SIGKILL mid-stream and started again on the same data. Bounded: < 60 s
once the broker's jars are resolved."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import TEST_TENANT, make_test_settings, unique_name
from tests.integration.ingest.test_grpc_ingest import AUTH, TOKENS, attempt, topic_values
from tests.integration.test_local_kafka import Broker, alive, free_port_pair, wait_gone
from trellis.common.kafka import ensure_topics
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.settings import Settings
from trellis.ingest.app import create_ingest

BATCH = 20


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    port, controller_port = free_port_pair(first=19400)
    broker = Broker(
        port=port,
        controller_port=controller_port,
        home=tmp_path / "kafka",
        env={
            **os.environ,
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(controller_port),
            "KAFKA_HOME": str(tmp_path / "kafka"),
            "KAFKA_START_TIMEOUT": "90",
            "KAFKA_STOP_TIMEOUT": "20",
            "PYTHON": sys.executable,
        },
    )
    started = broker.script("start", timeout=240)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield broker
    finally:
        try:
            pid = broker.pid
        except (OSError, ValueError):
            pid = None
        broker.script("stop", timeout=60)
        if pid is not None and alive(pid):
            os.kill(pid, 9)


def outage_settings(broker: Broker) -> Settings:
    base = make_test_settings(unique_name("outage"))
    kafka = base.kafka.model_copy(
        update={
            "bootstrap_servers": broker.bootstrap,
            "request_timeout_ms": 2_000,
            "delivery_timeout_ms": 3_000,
        }
    )
    ingest = base.ingest.model_copy(update={"max_batch_size": BATCH})
    return base.model_copy(update={"kafka": kafka, "ingest": ingest})


async def test_nothing_accepted_is_lost_when_the_broker_stops(own_broker: Broker) -> None:
    began = time.monotonic()
    settings = outage_settings(own_broker)
    ensure_topics(settings.kafka)
    app = create_ingest(settings, TOKENS, port=0)
    await app.start(ready_timeout_s=30)
    answers: dict[str, int] = {}  # event id -> last item status
    unavailable = 0
    stop_sending = asyncio.Event()

    async def send(stub: ingest_pb2_grpc.IngestServiceStub) -> None:
        nonlocal unavailable
        batch_number = 0
        while not stop_sending.is_set():
            events = [attempt(f"o{batch_number}-{i}") for i in range(BATCH)]
            batch_number += 1
            request = ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=events)
            try:
                reply = await stub.RecordEvents(request, metadata=AUTH, timeout=20)
            except grpc.aio.AioRpcError as error:
                # Only deliberate answers: nothing was stored, retry later.
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                unavailable += 1
                await asyncio.sleep(0.2)
                continue
            for result in reply.results:
                answers[result.event_id] = result.status
            await asyncio.sleep(0.01)

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            sender = asyncio.ensure_future(send(ingest_pb2_grpc.IngestServiceStub(channel)))
            await asyncio.sleep(2.0)
            pid = own_broker.pid
            os.kill(pid, 9)  # mid-stream, without warning
            assert await asyncio.to_thread(wait_gone, pid)
            await asyncio.sleep(4.0)  # longer than the delivery timeout: batches must fail
            restarted = await asyncio.to_thread(own_broker.script, "start", 120)
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            await asyncio.sleep(2.0)
            stop_sending.set()
            await asyncio.wait_for(sender, timeout=30)
    finally:
        await app.close()

    accepted = {e for e, status in answers.items() if status == ingest_pb2.ITEM_STATUS_ACCEPTED}
    not_stored = {e for e, s in answers.items() if s == ingest_pb2.ITEM_STATUS_NOT_STORED}
    on_topic = [e.event_id for e in topic_values(settings)]
    print(
        f"accepted {len(accepted)}, not stored {len(not_stored)}, unavailable batches "
        f"{unavailable}, on topic {len(on_topic)}, took {time.monotonic() - began:.1f} s"
    )
    assert time.monotonic() - began < 60
    assert accepted, "nothing was accepted before or after the outage"
    assert unavailable or not_stored, "the outage was never noticed"
    assert accepted <= set(on_topic), sorted(accepted - set(on_topic))[:10]
    # Idempotent producer: no record is stored twice by ingest's own retries.
    assert len(on_topic) == len(set(on_topic))
