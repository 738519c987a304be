"""Load generator: simulated learners' events sent to ingest over gRPC, on loopback only.

Open loop at a fixed offered rate: request k is due at `start + k * batch / rate` whatever
happened to the earlier ones, and its latency is measured from that due time, so a slow server
shows as latency instead of silently lowering the offered rate (no coordinated omission). With
`rate=None` ("max") `concurrency` senders send back to back. Bounded by a duration, an event count
and the number of requests in flight.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import psutil

from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.simulator.district import (
    District,
    DistrictConfig,
    build_district,
    catalog_records,
    roster_records,
)
from trellis.simulator.learners import BehaviourConfig, LearnerRun

LOOPBACK_NAMES = {"localhost"}
SETUP_BATCH = 500


def check_loopback(target: str) -> None:
    host = target.rsplit(":", 1)[0].strip("[]")
    if host in LOOPBACK_NAMES:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the load generator only targets loopback addresses, not {host!r}")


def make_district(learners: int, seed: int, tenant_id: str = "demo-district") -> District:
    """The load's district: with the demo's seed (2026) its catalog is the demo district's."""
    return build_district(DistrictConfig(seed=seed, learners=learners, tenant_id=tenant_id))


async def setup_district(target: str, token: str, district: District) -> dict[str, int]:
    """Upserts the district's catalog and roster, so that every reference of the load is known."""
    check_loopback(target)
    metadata = (("authorization", f"Bearer {token}"),)
    tenant_id = district.config.tenant_id
    stored = {"catalog": 0, "roster": 0}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        catalog = catalog_records(district)
        for i in range(0, len(catalog), SETUP_BATCH):
            reply = await stub.UpsertCatalog(
                ingest_pb2.UpsertCatalogRequest(
                    tenant_id=tenant_id, records=catalog[i : i + SETUP_BATCH]
                ),
                metadata=metadata,
                timeout=60,
            )
            stored["catalog"] += _stored(reply.results)
        roster = roster_records(district)
        for i in range(0, len(roster), SETUP_BATCH):
            reply = await stub.UpsertRoster(
                ingest_pb2.UpsertRosterRequest(
                    tenant_id=tenant_id, records=roster[i : i + SETUP_BATCH]
                ),
                metadata=metadata,
                timeout=60,
            )
            stored["roster"] += _stored(reply.results)
    return stored


def _stored(results: Sequence[ingest_pb2.ItemResult]) -> int:
    ok = (ingest_pb2.ITEM_STATUS_ACCEPTED, ingest_pb2.ITEM_STATUS_DUPLICATE)
    return sum(r.status in ok for r in results)


def make_events(
    count: int, learners: int, seed: int, run_id: str, days: int = 20
) -> list[envelope_pb2.Envelope]:
    """`count` activity events of `learners` simulated learners, interleaved across learners
    (each learner's own events in order), with ids unique to `run_id`, all in the past."""
    district = make_district(learners, seed)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events: list[envelope_pb2.Envelope] = []
    epoch = 0
    while len(events) < count:
        behaviour = BehaviourConfig(
            days=days,
            start=start - timedelta(days=days + 1),
            event_prefix=f"load-{run_id}-{epoch}-",
            late_joiners=0.0,
            offline_devices=0.0,
        )
        streams = [
            LearnerRun(district, learner, behaviour).events() for learner in district.learners
        ]
        while streams and len(events) < count:
            alive = []
            for stream in streams:
                timed = next(stream, None)
                if timed is not None:
                    events.append(timed.envelope)
                    alive.append(stream)
                    if len(events) >= count:
                        break
            streams = alive
        epoch += 1
    return events


@dataclass
class LoadReport:
    target: str
    offered_rate: float | None  # events/s; None: as fast as possible
    duration_s: float
    events_sent: int
    requests: int
    achieved_rate: float  # events stored (accepted or duplicate) per second of wall time
    answered_rate: float  # events answered in any way (rejected, errors too) per second
    statuses: dict[str, int]
    rpc_errors: dict[str, int]
    latency_ms: dict[str, float]  # per request, from its due time
    late_requests: int  # requests that started more than 10 ms after their due time
    cpu_percent: dict[str, float] = field(default_factory=dict)  # "self" and each pid

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_times(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return float("nan")


async def run_load(
    target: str,
    token: str,
    tenant_id: str,
    events: Sequence[envelope_pb2.Envelope],
    rate: float | None,
    duration_s: float,
    batch: int = 10,
    concurrency: int = 64,
    pids: Sequence[int] = (),
    on_progress: Callable[[int], None] | None = None,
    on_answer: Callable[[Sequence[envelope_pb2.Envelope], float], None] | None = None,
) -> LoadReport:
    """`on_answer(events, acked_at)` gets each answered batch and the `time.time()` of its answer:
    a latency benchmark matches them with the `MasteryUpdated.cause_event_id`s it consumes."""
    check_loopback(target)
    metadata = (("authorization", f"Bearer {token}"),)
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    late = 0
    sent = 0
    processes = {"self": psutil.Process(os.getpid())}
    processes.update({str(pid): psutil.Process(pid) for pid in pids})
    cpu_before = {name: _cpu_times(p) for name, p in processes.items()}

    async with grpc.aio.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        slots = asyncio.Semaphore(concurrency)
        start = time.perf_counter()
        deadline = start + duration_s

        async def send(chunk: Sequence[envelope_pb2.Envelope], due: float) -> None:
            nonlocal sent
            try:
                reply = await stub.RecordEvents(
                    ingest_pb2.RecordEventsRequest(tenant_id=tenant_id, events=chunk),
                    metadata=metadata,
                    timeout=30,
                )
                for result in reply.results:
                    statuses[ingest_pb2.ItemStatus.Name(result.status)] += 1
                if on_answer is not None:
                    on_answer(chunk, time.time())
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1
            finally:
                latencies.append(time.perf_counter() - due)
                sent += len(chunk)
                slots.release()
                if on_progress is not None:
                    on_progress(len(chunk))

        tasks: set[asyncio.Task[None]] = set()
        if rate is not None:
            interval = batch / rate
            for k, chunk in enumerate(batches):
                due = start + k * interval
                if due >= deadline:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()  # bounded in flight: waiting here counts in the latency
                if time.perf_counter() - due > 0.010:
                    late += 1
                task = asyncio.create_task(send(chunk, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        else:
            queue = iter(batches)

            async def sender() -> None:
                for chunk in queue:
                    if time.perf_counter() >= deadline:
                        return
                    await slots.acquire()
                    await send(chunk, time.perf_counter())

            await asyncio.gather(*(sender() for _ in range(concurrency)))
        if tasks:
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start

    cpu = {
        name: round(100.0 * (_cpu_times(p) - cpu_before[name]) / elapsed, 1)
        for name, p in processes.items()
    }
    stored = statuses["ITEM_STATUS_ACCEPTED"] + statuses["ITEM_STATUS_DUPLICATE"]
    values = np.array(latencies) * 1000.0 if latencies else np.zeros(1)
    return LoadReport(
        target=target,
        offered_rate=rate,
        duration_s=round(elapsed, 3),
        events_sent=sent,
        requests=len(latencies),
        achieved_rate=round(stored / elapsed, 1) if elapsed > 0 else 0.0,
        answered_rate=round(sent / elapsed, 1) if elapsed > 0 else 0.0,
        statuses=dict(statuses),
        rpc_errors=dict(errors),
        latency_ms={
            "p50": round(float(np.percentile(values, 50)), 2),
            "p90": round(float(np.percentile(values, 90)), 2),
            "p99": round(float(np.percentile(values, 99)), 2),
            "max": round(float(values.max()), 2),
        },
        late_requests=late,
        cpu_percent=cpu,
    )


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]
