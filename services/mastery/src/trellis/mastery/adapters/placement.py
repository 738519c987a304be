"""Where each partition's state lives among the mastery workers, and which activity it reflects.

Routing: Faust's partition assignor already sends every member of the group the whole partition
map (each member's active partitions under its `canonical_url`, see `faust.assignor`); each
worker sets that URL to its own gRPC address (`canonical_url`), so the map tells a worker whom to
ask for a partition it does not hold. While a rebalance or a table recovery is under way here,
nothing is answered (`Unavailable`, retryable): the map or the local state may be stale.

Offsets: `AppliedOffsets`, a Faust sensor, notes per activity partition the offset of the last
event whose effect is in the tables: when the agent writes a table (the event it acts for is
Faust's current event) and when it is done with an event (acked, also when it changed nothing).
Reads run on the worker's event loop between two steps of the agent, so a read and the offsets
beside it see the same tables. The group's committed offset is the floor.

A partition that arrives here may hold more than its committed offset says: its previous owner
can have written the state of events it had not committed yet (a batch in flight at the
rebalance, or a crash), and the changelog brought those writes here. So after each rebalance a
partition is read only once this worker has itself applied everything up to the partition's end
as it was when the rebalance ended (those events are re-read; the dedup by event id makes them
no-ops). Until then its reads are UNAVAILABLE ("catching up"). The ends are asked for as the
rebalance ends (`PartitionEnds`), so a first read rarely waits for them.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

import faust
from faust.types import TP, AppT, CollectionT, EventT, StreamT
from yarl import URL

from trellis.common.grpc.errors import Unavailable
from trellis.common.logging import get_logger
from trellis.mastery.adapters.partition_ends import PartitionEnds
from trellis.mastery.adapters.partitioning import partition_of

log = get_logger("trellis.mastery.placement")


class AppliedOffsets(faust.Sensor):
    """Per partition of `topic`: the offset of the last event applied here (-1: none), and how far
    this worker must have applied before the partition is read in this generation."""

    def __init__(self, app: faust.App, topic: str, ends: PartitionEnds) -> None:
        super().__init__()
        self._app = app
        self._topic = topic
        self._ends = ends
        self._applied: dict[int, int] = {}
        self._must_reach: dict[int, int] = {}
        self._ends_asked: asyncio.Future[bool] | None = None

    def on_rebalance_start(self, app: AppT) -> dict[Any, Any]:
        self._must_reach.clear()
        return super().on_rebalance_start(app)

    def on_rebalance_end(self, app: AppT, state: dict[Any, Any]) -> None:
        super().on_rebalance_end(app, state)
        mine = [tp.partition for tp in app.assignor.assigned_actives() if tp.topic == self._topic]
        self._ends_asked = asyncio.ensure_future(self._learn_ends(mine))

    def on_table_set(self, table: CollectionT, key: Any, value: Any) -> None:
        # A write is an applied event whatever the generation it was fetched in.
        self._note(faust.current_event())

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT[Any],
        event: EventT[Any],
        state: dict[Any, Any] | None = None,
    ) -> None:
        # A message the stream skipped (fetched before a rebalance, or while the flow was
        # stopped) applied nothing; the stream never tracked it (see `faust_consumer`).
        message = event.message
        if message.tracked and message.generation_id == self._app.consumer_generation_id:
            self._note(event)

    def _note(self, event: EventT[Any] | None) -> None:
        if event is None or event.message.topic != self._topic:
            return
        message = event.message
        if message.offset > self._applied.get(message.partition, -1):
            self._applied[message.partition] = message.offset

    def applied(self, partition: int) -> int:
        # Faust keeps no public accessor for what it last committed (or found committed when the
        # partition was assigned); `None` there means nothing committed.
        committed: dict[TP, int | None] = cast(Any, self._app.consumer)._committed_offset
        floor = (committed.get(TP(self._topic, partition)) or 0) - 1
        return max(self._applied.get(partition, -1), floor)

    async def caught_up(self, partitions: list[int]) -> bool:
        """Whether every partition is caught up (see the module docstring); waits for the ends
        asked for at the rebalance's end, or asks for those still unknown."""
        if self._ends_asked is not None and any(p not in self._must_reach for p in partitions):
            await asyncio.shield(self._ends_asked)
        unknown = [p for p in partitions if p not in self._must_reach]
        if unknown and not await self._learn_ends(unknown):
            return False
        return all(self.applied(p) >= self._must_reach[p] for p in partitions)

    async def _learn_ends(self, partitions: list[int]) -> bool:
        """Notes the partitions' current ends as what they must reach in this generation; False
        (nothing noted) when a rebalance began meanwhile or the broker did not answer."""
        rebalance = self._app.rebalancing_count
        try:
            ends = await self._ends.of(self._topic, partitions)
        except Exception:  # the read that needs them asks again, and answers UNAVAILABLE till then
            log.warning("partition ends unknown", partitions=partitions, exc_info=True)
            return False
        if rebalance != self._app.rebalancing_count or self._app.rebalancing:
            return False
        for partition, end in ends.items():
            self._must_reach.setdefault(partition, end - 1)
        return True

    async def on_stop(self) -> None:
        self._ends.close()


class FaustPlacement:
    """The read API's view of the group: partition owners and applied offsets."""

    def __init__(
        self, app: faust.App, topic: str, partitions: int, offsets: AppliedOffsets
    ) -> None:
        self._app = app
        self.topic = topic
        self.partitions = partitions
        self._offsets = offsets

    def partition_of(self, key: bytes) -> int:
        return partition_of(key, self.partitions)

    async def owners(self) -> dict[int, str | None]:
        """Each partition's owner: None for this worker, else its gRPC address (host:port).
        Unavailable while the group rebalances, tables recover, a partition has no owner, or
        this worker catches up on a partition it got. Nothing awaits after the last check, so
        a read right after this call sees the state it vouched for."""
        local = [p for p, owner in self._owners().items() if owner is None]
        if not await self._offsets.caught_up(local):
            raise Unavailable("a mastery worker is catching up after a rebalance, retry")
        found = self._owners()
        if [p for p, owner in found.items() if owner is None] != local:
            raise Unavailable("mastery workers are rebalancing, retry")
        return found

    def _owners(self) -> dict[int, str | None]:
        app = self._app
        if app.rebalancing or app.in_recovery:
            raise Unavailable("mastery workers are rebalancing, retry")
        me = _address(app.conf.canonical_url)
        # `external_topics_metadata` is on Faust's assignor, not on its interface type.
        members: dict[str, dict[str, list[int]]] = cast(
            Any, app.assignor
        ).external_topics_metadata()
        found: dict[int, str | None] = {}
        for url, topics in members.items():
            for partition in topics.get(self.topic, ()):
                found[partition] = _address(URL(url))
        actives = app.assignor.assigned_actives()
        for partition in range(self.partitions):
            if TP(self.topic, partition) in actives:
                found[partition] = None
            elif found.get(partition) in (None, me):
                # No owner, or the map names this worker for a partition it does not hold.
                raise Unavailable("a partition of the mastery state has no ready owner, retry")
        return found

    def applied(self, partition: int) -> int:
        return self._offsets.applied(partition)


def _address(url: URL) -> str:
    return f"{url.host}:{url.port}"


def attach(app: faust.App, topic: str, partitions: int, ends: PartitionEnds) -> FaustPlacement:
    """The placement of a worker's app, its offsets sensor installed."""
    offsets = AppliedOffsets(app, topic, ends)
    app.sensors.add(offsets)
    return FaustPlacement(app, topic, partitions, offsets)


def canonical_url(host: str, port: int) -> str:
    """The URL this worker advertises to the group: its gRPC address as other workers reach it
    (its own host name's address when it listens on every interface, as in a pod)."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = socket.gethostbyname(socket.gethostname())
    return f"http://{host}:{port}"
