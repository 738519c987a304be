"""`NextActivities` latency (p50/p99) and requests/s on one recommender process.

Subject: the real local stack, as `deploy/local/stack.sh services-up` starts it (ingest, the
mastery worker with its read API, the recommender and reporting, each its own process, auth on;
topics under a unique prefix on the given broker, 2 partitions), with a simulated district loaded
through ingest (catalog and roster upserts, then every simulated event with `RecordEvents`); the
benchmark waits until mastery shows the last learner's attempts, then asks the one recommender
process for `NextActivities` (k = 3) for the district's learners, round-robin.

Comparison (figures only): the same phases against a recommender process whose mastery read API
is an in-process fake (a grpc.aio server on loopback in a thread of the benchmark) serving states
that mastery's pure BKT computed from the same simulated events: what the recommender costs
without the mastery service's own work.

Two phases, each bounded in requests: one request in flight (latency of a single request: the
target), then `CONCURRENCY` in flight (requests/s, and the latency under that load); a warm-up of
200 requests first. Sizes: quick 1,000 requests per phase; full 5,000 per phase. District: 3 grades
x 8 skills, 8 items and 2 resources per skill, 300 learners with 14 simulated days each, ending
yesterday (seed 7; about 17,000 events). Target: p99 < 20 ms at one request in flight.

Run alone: `.venv/bin/python -m bench.benchmarks.recommender_latency [--full]` (broker on
127.0.0.1:9092; about 1 minute quick, 2 minutes full).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from pydantic import SecretStr

from bench.framework import BenchContext, BenchResult, run_standalone
from bench.service_process import KEY, TENANT, TOKEN, free_port, start_service, wait_serving
from trellis.common.codec import encode_catalog
from trellis.common.kafka import create_producer, ensure_topics
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pb.mastery.v1 import mastery_pb2 as api
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pb.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings
from trellis.mastery import domain as mastery
from trellis.mastery.events import LEVELS
from trellis.simulator.district import DistrictConfig
from trellis.simulator.learners import BehaviourConfig
from trellis.simulator.load import setup_district
from trellis.simulator.simulation import Simulation, simulate

CONCURRENCY = 8
REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeMastery(mastery_pb2_grpc.MasteryServiceServicer):
    """The mastery read API from precomputed states (keyed by SIS id and by pseudonym)."""

    states: dict[str, api.LearnerMastery] = field(default_factory=dict)
    profiles: dict[str, api.LearnerProfile] = field(default_factory=dict)
    p_by_item: dict[str, dict[str, float]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def _count(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1

    async def GetLearnerMastery(self, request: Any, context: Any) -> api.LearnerMastery:
        self._count("GetLearnerMastery")
        return self.states.get(request.learner_id, api.LearnerMastery())

    async def GetLearnerProfile(self, request: Any, context: Any) -> api.LearnerProfile:
        self._count("GetLearnerProfile")
        return self.profiles.get(request.learner_id, api.LearnerProfile())

    async def PredictItems(self, request: Any, context: Any) -> api.PredictItemsResponse:
        self._count("PredictItems")
        known = self.p_by_item.get(request.learner_id, {})
        return api.PredictItemsResponse(
            predictions=[
                api.ItemPrediction(item_id=i, p_correct=known.get(i, 0.3)) for i in request.item_ids
            ]
        )


def simulated(learners: int, seed: int = 7) -> Simulation:
    config = DistrictConfig(
        seed=seed,
        tenant_id=TENANT,
        learners=learners,
        grades=("3", "4", "5"),
        skills_per_grade=8,
        items_per_skill=8,
        resources_per_skill=2,
    )
    # The simulated fortnight ends today, so the recommender sees recent practice (with the
    # simulator's default start in September, every skill would look due for review).
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return simulate(config, BehaviourConfig(days=14, start=start - timedelta(days=15)))


def build_fake(sim: Simulation) -> tuple[FakeMastery, list[str], list[Any], int]:
    district = sim.district
    pseudonym = Pseudonymizer({TENANT: {"1": SecretStr(KEY)}})
    states: dict[str, mastery.LearnerState] = {}
    profiles: dict[str, api.LearnerProfile] = {}
    attempts = 0
    for envelope in sim.events:
        learner = envelope.learner_id
        state = states.get(learner, mastery.EMPTY)
        if envelope.HasField("item_attempted"):
            a = envelope.item_attempted
            state, _ = mastery.apply_attempt(
                state,
                mastery.Attempt(envelope.event_id, tuple(a.skill_ids), 1.0 if a.correct else 0.0),
                lambda _s: mastery.DEFAULT,
                envelope.occurred_at.ToDatetime(tzinfo=UTC),
            )
            attempts += 1
        states[learner] = state
        profile = profiles.setdefault(learner, api.LearnerProfile(tenant_id=TENANT))
        if envelope.HasField("interest_declared"):
            profile.interests.extend(envelope.interest_declared.tags)
        elif envelope.HasField("preference_set"):
            profile.modality = envelope.preference_set.modality
        elif envelope.HasField("accommodation_set"):
            profile.accommodations.extend(envelope.accommodation_set.accommodations)
        elif envelope.HasField("goal_set"):
            profile.goals.add(
                goal_id=envelope.goal_set.goal_id, skill_id=envelope.goal_set.skill_id
            )
    items_of = {i.item_id: i.skill_id for i in district.items}
    fake = FakeMastery()
    ids = []
    for learner in district.learners:
        sis = learner.learner_id
        state = states.get(sis, mastery.EMPTY)
        reply = api.LearnerMastery(tenant_id=TENANT, learner_id=sis)
        p_of: dict[str, float] = {}
        for skill_id, s in state.skills.items():
            reply.skills.add(
                skill_id=skill_id,
                p_mastered=s.effective,
                level=LEVELS[s.level],
                attempts=s.attempts,
                struggling=s.struggling,
                model_version=s.model_version,
            )
            if s.last_event_time is not None:
                reply.skills[-1].last_practiced_at.FromDatetime(s.last_event_time)
            p_of[skill_id] = s.effective
        p_by_item = {
            item: mastery.p_correct(p_of.get(skill, mastery.DEFAULT.prior), mastery.DEFAULT)
            for item, skill in items_of.items()
        }
        for key in (sis, pseudonym.pseudonymize(TENANT, sis)):
            fake.states[key] = reply
            fake.profiles[key] = profiles.get(sis, api.LearnerProfile())
            fake.p_by_item[key] = p_by_item
        ids.append(sis)
    records = []
    for record in sim.catalog:
        record.tenant_id = TENANT
        records.append(encode_catalog(record))
    return fake, ids, records, attempts


class MasteryServer:
    """The fake on its own event loop in a thread: it does not share the client's loop."""

    def __init__(self, fake: FakeMastery) -> None:
        self.fake = fake
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = grpc.aio.server()
        mastery_pb2_grpc.add_MasteryServiceServicer_to_server(self.fake, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake mastery did not start")

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


async def load(
    target: str, learners: list[str], n: int, concurrency: int
) -> tuple[list[float], float, dict[str, int], dict[str, int]]:
    """n requests with `concurrency` in flight: latencies (ms), seconds, statuses, option codes."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    codes: dict[str, int] = {}
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    counter = iter(range(n))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)

        async def worker() -> None:
            for i in counter:
                request = recommender_pb2.NextActivitiesRequest(
                    tenant_id=TENANT, learner_id=learners[i % len(learners)], k=3
                )
                started = time.perf_counter()
                try:
                    reply = await stub.NextActivities(request, metadata=metadata, timeout=10)
                    status = "OK"
                    for option in reply.options[:1]:
                        for reason in option.reasons[:1]:
                            codes[reason.code] = codes.get(reason.code, 0) + 1
                except grpc.aio.AioRpcError as error:
                    status = error.code().name
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return latencies, seconds, statuses, codes


def summary(latencies: list[float], seconds: float, statuses: dict[str, int]) -> dict[str, Any]:
    values = np.array(latencies)
    return {
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "max_ms": round(float(values.max()), 2),
        "statuses": statuses,
    }


def run_fake(ctx: BenchContext, n: int) -> dict[str, Any]:
    """The same phases with the in-process fake mastery."""
    prefix = f"bench-recommender-{uuid.uuid4().hex[:8]}."
    base = Settings()
    kafka = base.kafka.model_copy(
        update={
            "bootstrap_servers": ctx.bootstrap_servers,
            "topics": base.kafka.topics.model_copy(update={"prefix": prefix}),
        }
    )
    ensure_topics(kafka)
    print("recommender latency bench: simulating the district", flush=True)
    fake, learners, records, attempts = build_fake(simulated(300))
    producer = create_producer(kafka)
    try:
        topic = kafka.topics.name("catalog")
        for future in [
            producer.send(topic, key=r.key, value=r.value, headers=r.headers) for r in records
        ]:
            future.get(timeout=30)
    finally:
        producer.close()
    server = MasteryServer(fake)
    server.start()
    port = free_port()
    target = f"127.0.0.1:{port}"
    process = start_service(
        "recommender",
        ctx.work_dir / "recommender.log",
        bootstrap=ctx.bootstrap_servers,
        prefix=prefix,
        port=port,
        env={"TRELLIS_RECOMMENDER__MASTERY_ADDRESS": f"127.0.0.1:{server.port}"},
    )
    phases: dict[str, dict[str, Any]] = {}
    try:
        wait_serving(target, process)
        asyncio.run(load(target, learners, 200, 4))  # warm-up, not counted
        for name, concurrency in (("one_in_flight", 1), (f"{CONCURRENCY}_in_flight", CONCURRENCY)):
            latencies, seconds, statuses, codes = asyncio.run(
                load(target, learners, n, concurrency)
            )
            phases[name] = {
                "concurrency": concurrency,
                **summary(latencies, seconds, statuses),
                "first_option_reasons": codes,
            }
            print(f"  {name}: {phases[name]}", flush=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        server.close()
    return {
        "catalog_records": len(records),
        "simulated_attempts_behind_states": attempts,
        "mastery_calls": fake.calls,
        **phases,
    }


SERVICES = ("ingest", "mastery", "recommender", "reporting")


async def record_events(target: str, sim: Simulation, batch: int = 200) -> int:
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    stored = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for i in range(0, len(sim.events), batch):
            reply = await stub.RecordEvents(
                ingest_pb2.RecordEventsRequest(tenant_id=TENANT, events=sim.events[i : i + batch]),
                metadata=metadata,
                timeout=60,
            )
            stored += sum(r.status == ingest_pb2.ITEM_STATUS_ACCEPTED for r in reply.results)
    return stored


def wait_mastery(target: str, sim: Simulation, timeout_s: float = 180) -> float:
    """Until the learner of the last attempt shows all their attempts: seconds waited."""
    last = next(e for e in reversed(sim.events) if e.HasField("item_attempted"))
    learner = last.learner_id
    expected = sum(
        len(e.item_attempted.skill_ids)
        for e in sim.events
        if e.learner_id == learner and e.HasField("item_attempted")
    )
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    started = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        stub = mastery_pb2_grpc.MasteryServiceStub(channel)
        while time.monotonic() - started < timeout_s:
            try:
                reply = stub.GetLearnerMastery(
                    api.GetLearnerMasteryRequest(tenant_id=TENANT, learner_id=learner),
                    metadata=metadata,
                    timeout=5,
                )
                if sum(s.attempts for s in reply.skills) >= expected:
                    return time.monotonic() - started
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise TimeoutError("mastery did not catch up with the simulated events")


def run_real_stack(ctx: BenchContext, n: int) -> dict[str, Any]:
    """The same phases against the real local stack (deploy/local/stack.sh services-up)."""
    prefix = f"bench-recstack-{uuid.uuid4().hex[:8]}."
    base = Settings()
    kafka = base.kafka.model_copy(
        update={
            "bootstrap_servers": ctx.bootstrap_servers,
            "topics": base.kafka.topics.model_copy(update={"prefix": prefix, "partitions": 2}),
        }
    )
    ensure_topics(kafka)
    sim = simulated(300)
    ports = {service: free_port() for service in SERVICES}
    env = {
        **os.environ,
        "STACK_RUN_DIR": str(ctx.work_dir / "run"),
        "STACK_HEALTH_TIMEOUT": "120",
        "TRELLIS_KAFKA__BOOTSTRAP_SERVERS": ctx.bootstrap_servers,
        "TRELLIS_KAFKA__TOPICS__PREFIX": prefix,
        "TRELLIS_KAFKA__TOPICS__PARTITIONS": "2",
        "TRELLIS_MASTERY__CONSUMER_GROUP": f"{prefix}mastery",
        "TRELLIS_MASTERY__DATA_DIR": str(ctx.work_dir / "mastery"),
        "TRELLIS_REPORTING__CONSUMER_GROUP": f"{prefix}reporting",
        "TRELLIS_CLICKHOUSE__CHDB_PATH": str(ctx.work_dir / "chdb"),
        "TRELLIS_AUTH__TOKENS": json.dumps({TOKEN: {"tenant_id": TENANT, "role": "service"}}),
        "TRELLIS_PSEUDONYM__KEYS": json.dumps({TENANT: {"1": KEY}}),
        "TRELLIS_LOG_LEVEL": "WARNING",
    }
    for service, port in ports.items():
        env[f"TRELLIS_SERVICES__{service.upper()}__PORT"] = str(port)
        env[f"TRELLIS_SERVICES__{service.upper()}__METRICS_PORT"] = str(free_port())
    script = str(REPO / "deploy" / "local" / "stack.sh")
    out: dict[str, Any] = {"events": len(sim.events)}
    subprocess.run([script, "services-up"], env=env, check=True, timeout=180, cwd=REPO)
    try:
        ingest = f"127.0.0.1:{ports['ingest']}"
        out["setup"] = asyncio.run(setup_district(ingest, TOKEN, sim.district))
        time.sleep(1.0)  # ingest's replicas follow the catalog and roster
        started = time.monotonic()
        out["stored"] = asyncio.run(record_events(ingest, sim))
        out["ingest_seconds"] = round(time.monotonic() - started, 1)
        out["mastery_catch_up_seconds"] = round(
            wait_mastery(f"127.0.0.1:{ports['mastery']}", sim), 1
        )
        target = f"127.0.0.1:{ports['recommender']}"
        learners = [learner.learner_id for learner in sim.district.learners]
        asyncio.run(load(target, learners, 200, 4))  # warm-up
        for name, concurrency in (("one_in_flight", 1), (f"{CONCURRENCY}_in_flight", CONCURRENCY)):
            latencies, seconds, statuses, codes = asyncio.run(
                load(target, learners, n, concurrency)
            )
            out[name] = {**summary(latencies, seconds, statuses), "first_option_reasons": codes}
            print(f"  real stack {name}: {out[name]}", flush=True)
    finally:
        subprocess.run([script, "services-down"], env=env, check=True, timeout=180, cwd=REPO)
    return out


def run(ctx: BenchContext) -> list[BenchResult]:
    n = 1_000 if ctx.quick else 5_000
    print("recommender latency bench: the real local stack", flush=True)
    real = run_real_stack(ctx, n)
    print("recommender latency bench: the same with a fake in-process mastery", flush=True)
    fake = run_fake(ctx, n)
    single, loaded = real["one_in_flight"], real[f"{CONCURRENCY}_in_flight"]
    figures = {
        "stack": "deploy/local/stack.sh services-up (ingest, mastery worker + read API, "
        "recommender, reporting as processes), district loaded through ingest",
        "learners": 300,
        "requests_per_phase": n,
        "real_stack": real,
        "fake_mastery_comparison": fake,
    }
    ok = all(s == "OK" for p in (single, loaded) for s in p["statuses"])
    return [
        BenchResult(
            name="recommender.next_activities_p99_ms",
            unit="ms",
            value=single["p99_ms"],
            target="p99 < 20 ms (one request in flight, mastery local)",
            passed=ok and single["p99_ms"] < 20,
            figures={**figures, "p50_ms": single["p50_ms"]},
        ),
        BenchResult(
            name="recommender.next_activities_per_second",
            unit="requests/s",
            value=loaded["requests_per_s"],
            figures={
                **figures,
                "concurrency": CONCURRENCY,
                "p50_ms": loaded["p50_ms"],
                "p99_ms": loaded["p99_ms"],
            },
        ),
    ]


if __name__ == "__main__":
    run_standalone(run)
