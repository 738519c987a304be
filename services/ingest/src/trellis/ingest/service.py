"""Ingest use cases: validate, pseudonymize, dedupe, publish, and answer each item on its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TypeVar

from trellis.common.codec import Encoded, encode_catalog, encode_envelope, encode_roster
from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2
from trellis.common.pseudonym import Pseudonymizer
from trellis.ingest.catalog import CatalogView, cycle_with
from trellis.ingest.dedup import DedupWindow, Seen, fingerprint
from trellis.ingest.validation import Violation, validate_catalog, validate_event, validate_roster

# Publishes records to a topic ("activity", "roster", "catalog"); answers, per record, whether
# Kafka confirmed it.
Publish = Callable[[str, Sequence[Encoded]], Awaitable[list[bool]]]
Record = TypeVar("Record", roster_pb2.RosterRecord, catalog_pb2.CatalogRecord)


class PrerequisiteCycle(ValueError):
    """A catalog batch would make the prerequisite graph cyclic: the whole batch is refused."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("prerequisite cycle: " + " -> ".join(cycle))


class Status(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    NOT_STORED = "not_stored"


@dataclass
class ItemOutcome:
    index: int
    event_id: str
    status: Status
    violations: list[Violation] = field(default_factory=list)


class IngestService:
    def __init__(
        self,
        publish: Publish,
        pseudonymizer: Pseudonymizer,
        dedup: DedupWindow,
        catalog: CatalogView,
    ) -> None:
        self._publish = publish
        self._pseudonymizer = pseudonymizer
        self._dedup = dedup
        self._catalog = catalog

    async def record_events(
        self,
        tenant_id: str,
        events: Sequence[envelope_pb2.Envelope],
        now: datetime,
        first_index: int = 0,
    ) -> list[ItemOutcome]:
        """Answers each event; `first_index` numbers them within a longer stream."""
        outcomes = [
            ItemOutcome(first_index + i, e.event_id, Status.ACCEPTED) for i, e in enumerate(events)
        ]
        pending: dict[str, int] = {}  # event_id -> position of its first copy in to_publish
        to_publish: list[tuple[ItemOutcome, bytes, envelope_pb2.Envelope]] = []
        for outcome, event in zip(outcomes, events, strict=True):
            path = f"events[{outcome.index}]"
            outcome.violations = validate_event(event, path, tenant_id, now)
            if outcome.violations:
                outcome.status = Status.REJECTED
                continue
            digest = fingerprint(event)
            seen = self._dedup.check(tenant_id, event.event_id, digest)
            if seen is Seen.NEW and event.event_id in pending:
                first = to_publish[pending[event.event_id]]
                seen = Seen.DUPLICATE if first[1] == digest else Seen.CONFLICT
            if seen is Seen.CONFLICT:
                outcome.status = Status.REJECTED
                outcome.violations = [
                    Violation(f"{path}.event_id", "an event with this id and other content exists")
                ]
            elif seen is Seen.DUPLICATE:
                outcome.status = Status.DUPLICATE
            else:
                pending[event.event_id] = len(to_publish)
                to_publish.append((outcome, digest, self._stored_form(tenant_id, event, now)))
        stored = await self._publish("activity", [encode_envelope(e) for _, _, e in to_publish])
        for (outcome, digest, event), ok in zip(to_publish, stored, strict=True):
            if ok:
                self._dedup.remember(tenant_id, event.event_id, digest)
            else:
                outcome.status = Status.NOT_STORED
        return outcomes

    def _stored_form(
        self, tenant_id: str, event: envelope_pb2.Envelope, now: datetime
    ) -> envelope_pb2.Envelope:
        """The event as the log keeps it: pseudonymous learner, tenant and ingest time set."""
        stored = envelope_pb2.Envelope()
        stored.CopyFrom(event)
        stored.tenant_id = tenant_id
        stored.pseudonym_key_version = self._pseudonymizer.current_version(tenant_id)
        stored.learner_id = self._pseudonymizer.pseudonymize(tenant_id, event.learner_id)
        stored.ingested_at.FromDatetime(now)
        return stored

    async def upsert_roster(
        self, tenant_id: str, records: Sequence[roster_pb2.RosterRecord]
    ) -> list[ItemOutcome]:
        return await self._upsert(
            "roster",
            records,
            validate_roster,
            lambda r: encode_roster(self._pseudonymize_roster(tenant_id, r)),
        )

    async def upsert_catalog(
        self, tenant_id: str, records: Sequence[catalog_pb2.CatalogRecord]
    ) -> list[ItemOutcome]:
        """Raises PrerequisiteCycle, storing nothing, when the skills would close a cycle."""
        skills = [r.skill for r in records if r.WhichOneof("entity") == "skill"]
        if cycle := cycle_with(self._catalog.prerequisites(tenant_id), skills):
            raise PrerequisiteCycle(cycle)
        copies = [_copy(record) for record in records]
        for copy in copies:
            copy.tenant_id = tenant_id
        outcomes = await self._upsert("catalog", copies, validate_catalog, encode_catalog)
        # Seen at once by the next batch; the follower applies the same records again later.
        for outcome, copy in zip(outcomes, copies, strict=True):
            if outcome.status is Status.ACCEPTED:
                self._catalog.apply(copy)
        return outcomes

    async def _upsert(
        self,
        topic: str,
        records: Sequence[Record],
        validate: Callable[[Record, str], list[Violation]],
        encode: Callable[[Record], Encoded],
    ) -> list[ItemOutcome]:
        outcomes = [ItemOutcome(i, "", Status.ACCEPTED) for i in range(len(records))]
        valid: list[int] = []
        for outcome, record in zip(outcomes, records, strict=True):
            outcome.violations = validate(record, f"records[{outcome.index}]")
            if outcome.violations:
                outcome.status = Status.REJECTED
            else:
                valid.append(outcome.index)
        stored = await self._publish(topic, [encode(records[i]) for i in valid])
        for index, ok in zip(valid, stored, strict=True):
            if not ok:
                outcomes[index].status = Status.NOT_STORED
        return outcomes

    def _pseudonymize_roster(
        self, tenant_id: str, record: roster_pb2.RosterRecord
    ) -> roster_pb2.RosterRecord:
        """Learners and enrollments carry the same pseudonymous id as activity, or joins fail.
        Staff ids in enrollments are pseudonymized the same way."""
        record = _copy(record)
        record.tenant_id = tenant_id
        kind = record.WhichOneof("entity")
        if kind == "learner":
            record.learner.sourced_id = self._pseudonymizer.pseudonymize(
                tenant_id, record.learner.sourced_id
            )
        elif kind == "enrollment":
            record.enrollment.user_id = self._pseudonymizer.pseudonymize(
                tenant_id, record.enrollment.user_id
            )
        return record


def _copy(record: Record) -> Record:
    copy = type(record)()
    copy.CopyFrom(record)
    return copy
