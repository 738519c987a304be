"""Ingest use cases: validate, pseudonymize, dedupe, publish, and answer each item on its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TypeVar

from google.protobuf import timestamp_pb2

from trellis.common.codec import Encoded, encode_catalog, encode_envelope, encode_roster
from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2
from trellis.common.pseudonym import Pseudonymizer, UnknownTenantKey
from trellis.ingest.catalog import CatalogView, cycle_with
from trellis.ingest.dedup import DedupWindow, Seen, fingerprint
from trellis.ingest.identity import seal_identity
from trellis.ingest.references import UnknownReferences, check_references
from trellis.ingest.roster import RosterView
from trellis.ingest.scope import check_roster_learners, learner_warnings
from trellis.ingest.validation import Violation, validate_catalog, validate_event, validate_roster

# Publishes records to a topic ("activity", "roster", "catalog"); answers, per record, whether
# Kafka confirmed it.
Publish = Callable[[str, Sequence[Encoded]], Awaitable[list[bool]]]
PSEUDONYM_CACHE_SIZE = 100_000
Record = TypeVar("Record", roster_pb2.RosterRecord, catalog_pb2.CatalogRecord)


class PrerequisiteCycle(ValueError):
    """A catalog batch would make the prerequisite graph cyclic: the whole batch is refused."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("prerequisite cycle: " + " -> ".join(cycle))


class UnmatchedIdentity(ValueError):
    """An identity names no learner record of its request: the whole request is refused."""

    def __init__(self, index: int) -> None:
        self.field = f"identities[{index}].sourced_id"
        super().__init__("matches no learner record of this request")


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
    # Accepted, with remarks (e.g. unknown references when they are flagged, not rejected).
    warnings: list[Violation] = field(default_factory=list)


class IngestService:
    def __init__(
        self,
        publish: Publish,
        pseudonymizer: Pseudonymizer,
        dedup: DedupWindow,
        catalog: CatalogView,
        roster: RosterView | None = None,
        unknown_references: UnknownReferences = "flag",
    ) -> None:
        self._publish = publish
        self._pseudonymizer = pseudonymizer
        self._dedup = dedup
        self._catalog = catalog
        self._roster = RosterView() if roster is None else roster
        self._unknown_references = unknown_references
        self._pseudonyms: dict[tuple[str, int, str], str] = {}
        # (tenant, event_id) -> fingerprint of events being produced by some call right now.
        self._publishing: dict[tuple[str, str], bytes] = {}

    def _pseudonym(self, tenant_id: str, sis_id: str) -> str:
        """The current pseudonym, memoized (bounded: cleared when full): an HMAC per event costs."""
        version = self._pseudonymizer.current_version(tenant_id)
        key = (tenant_id, version, sis_id)
        pseudonym = self._pseudonyms.get(key)
        if pseudonym is None:
            if len(self._pseudonyms) >= PSEUDONYM_CACHE_SIZE:
                self._pseudonyms.clear()
            pseudonym = self._pseudonymizer.pseudonymize(tenant_id, sis_id, version)
            self._pseudonyms[key] = pseudonym
        return pseudonym

    def knows_tenant(self, tenant_id: str) -> bool:
        """Whether ingest holds the tenant's pseudonym key (without it nothing can be stored)."""
        try:
            self._pseudonymizer.current_version(tenant_id)
        except UnknownTenantKey:
            return False
        return True

    def enrolled(self, tenant_id: str, class_id: str, sis_learner_id: str) -> bool:
        """Whether the roster enrols the learner (SIS id) in the class."""
        pseudonym = self._pseudonym(tenant_id, sis_learner_id)
        return self._roster.enrolled(tenant_id, class_id, pseudonym)

    def roster_schools(self, tenant_id: str, record: roster_pb2.RosterRecord) -> set[str]:
        """The schools a roster record writes into (RosterView.schools_named)."""
        return self._roster.schools_named(
            tenant_id, record, lambda sis_id: self._pseudonym(tenant_id, sis_id)
        )

    async def record_events(
        self,
        tenant_id: str,
        events: Sequence[envelope_pb2.Envelope],
        now: datetime,
        first_index: int = 0,
        schools: Collection[str] = (),
    ) -> list[ItemOutcome]:
        """Answers each event; `first_index` numbers them within a longer stream. `schools` is
        the scope of a caller scoped to schools (empty for any other caller): raises
        `scope.OutOfScope`, storing nothing, when an event is about a learner outside it."""
        scope_warnings = self._learner_scope(tenant_id, events, first_index, schools)
        outcomes = [
            ItemOutcome(first_index + i, e.event_id, Status.ACCEPTED) for i, e in enumerate(events)
        ]
        ingested_at = timestamp_pb2.Timestamp()
        ingested_at.FromDatetime(now)
        pending: dict[str, int] = {}  # event_id -> position of its first copy in to_publish
        to_publish: list[tuple[ItemOutcome, bytes, envelope_pb2.Envelope]] = []
        for outcome, event in zip(outcomes, events, strict=True):
            path = f"events[{outcome.index}]"
            outcome.violations = validate_event(event, path, tenant_id, now)
            if outcome.violations:
                outcome.status = Status.REJECTED
                continue
            findings = check_references(
                event, path, tenant_id, self._catalog, self._roster, self._unknown_references
            )
            outcome.warnings = scope_warnings.get(outcome.index, []) + findings.warnings
            if findings.violations:
                outcome.status = Status.REJECTED
                outcome.violations = findings.violations
                continue
            # The fingerprint is of the stored form, so that a restart can rebuild the window
            # from the topic itself.
            stored_form = self._stored_form(tenant_id, event, ingested_at)
            digest = fingerprint(stored_form)
            seen = self._dedup.check(tenant_id, event.event_id, digest)
            if seen is Seen.NEW and event.event_id in pending:
                first = to_publish[pending[event.event_id]]
                seen = Seen.DUPLICATE if first[1] == digest else Seen.CONFLICT
            elsewhere = self._publishing.get((tenant_id, event.event_id))
            if seen is Seen.NEW and elsewhere is not None:
                # Another call is producing this id now: its outcome is not known yet, so this
                # copy is not stored (a retry is then answered DUPLICATE), or is a conflict.
                if elsewhere == digest:
                    outcome.status = Status.NOT_STORED
                    continue
                seen = Seen.CONFLICT
            if seen is Seen.CONFLICT:
                outcome.status = Status.REJECTED
                outcome.violations = [
                    Violation(f"{path}.event_id", "an event with this id and other content exists")
                ]
            elif seen is Seen.DUPLICATE:
                outcome.status = Status.DUPLICATE
            else:
                pending[event.event_id] = len(to_publish)
                to_publish.append((outcome, digest, stored_form))
        keys = [(tenant_id, e.event_id) for _, _, e in to_publish]
        for key, (_, digest, _) in zip(keys, to_publish, strict=True):
            self._publishing[key] = digest
        try:
            stored = await self._publish("activity", [encode_envelope(e) for _, _, e in to_publish])
            for (outcome, digest, event), ok in zip(to_publish, stored, strict=True):
                if ok:
                    self._dedup.remember(tenant_id, event.event_id, digest)
                else:
                    outcome.status = Status.NOT_STORED
        finally:
            for key in keys:
                self._publishing.pop(key, None)
        return outcomes

    def _learner_scope(
        self,
        tenant_id: str,
        events: Sequence[envelope_pb2.Envelope],
        first_index: int,
        schools: Collection[str],
    ) -> dict[int, list[Violation]]:
        """Warnings by event index for a caller scoped to `schools` (scope.learner_warnings);
        the roster holds pseudonymous learner ids, events SIS ids."""
        if not schools:
            return {}
        found = learner_warnings(
            events,
            first_index,
            schools,
            lambda sis_id: self._roster.class_schools(
                tenant_id, self._pseudonym(tenant_id, sis_id)
            ),
        )
        return {index: [warning] for index, warning in found.items()}

    def _stored_form(
        self, tenant_id: str, event: envelope_pb2.Envelope, ingested_at: timestamp_pb2.Timestamp
    ) -> envelope_pb2.Envelope:
        """The event as the log keeps it: pseudonymous learner, tenant and ingest time set."""
        stored = envelope_pb2.Envelope()
        stored.CopyFrom(event)
        stored.tenant_id = tenant_id
        stored.pseudonym_key_version = self._pseudonymizer.current_version(tenant_id)
        stored.learner_id = self._pseudonym(tenant_id, event.learner_id)
        stored.ingested_at.CopyFrom(ingested_at)
        return stored

    async def upsert_roster(
        self,
        tenant_id: str,
        records: Sequence[roster_pb2.RosterRecord],
        identities: Sequence[ingest_pb2.LearnerIdentity] = (),
        schools: Collection[str] = (),
    ) -> list[ItemOutcome]:
        """Raises UnmatchedIdentity, storing nothing, when an identity names no learner record.
        `schools` is the scope of a caller scoped to schools (empty for any other caller): raises
        `scope.OutOfScope`, storing nothing, when a record names a learner the roster places only
        outside it (`scope.check_roster_learners`; the roster holds pseudonymous ids)."""
        if schools:
            check_roster_learners(
                records,
                schools,
                lambda sis_id: self._roster.learner_places(
                    tenant_id, self._pseudonym(tenant_id, sis_id)
                ),
            )
        learners = {r.learner.sourced_id for r in records if r.WhichOneof("entity") == "learner"}
        by_learner: dict[str, ingest_pb2.LearnerIdentity] = {}
        for i, identity in enumerate(identities):
            if identity.sourced_id not in learners:
                raise UnmatchedIdentity(i)
            by_learner[identity.sourced_id] = identity
        # Validated as sent (SIS ids), stored pseudonymized.
        stored: dict[int, roster_pb2.RosterRecord] = {}

        def encode(index: int, record: roster_pb2.RosterRecord) -> Encoded:
            stored[index] = self._pseudonymize_roster(tenant_id, record, by_learner)
            return encode_roster(stored[index])

        outcomes = await self._upsert("roster", records, validate_roster, encode)
        for outcome in outcomes:
            if outcome.status is Status.ACCEPTED:
                self._roster.apply(stored[outcome.index])
        return outcomes

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
        outcomes = await self._upsert(
            "catalog", copies, validate_catalog, lambda _, record: encode_catalog(record)
        )
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
        encode: Callable[[int, Record], Encoded],
    ) -> list[ItemOutcome]:
        outcomes = [ItemOutcome(i, "", Status.ACCEPTED) for i in range(len(records))]
        valid: list[int] = []
        for outcome, record in zip(outcomes, records, strict=True):
            outcome.violations = validate(record, f"records[{outcome.index}]")
            if outcome.violations:
                outcome.status = Status.REJECTED
            else:
                valid.append(outcome.index)
        stored = await self._publish(topic, [encode(i, records[i]) for i in valid])
        for index, ok in zip(valid, stored, strict=True):
            if not ok:
                outcomes[index].status = Status.NOT_STORED
        return outcomes

    def _pseudonymize_roster(
        self,
        tenant_id: str,
        record: roster_pb2.RosterRecord,
        identities: dict[str, ingest_pb2.LearnerIdentity],
    ) -> roster_pb2.RosterRecord:
        """Learners and enrollments carry the same pseudonymous id as activity, or joins fail.
        Staff ids in enrollments are pseudonymized the same way. A learner's clear identity is
        sealed with the tenant key; a caller's own `sealed_identity` bytes are never passed on."""
        record = _copy(record)
        record.tenant_id = tenant_id
        kind = record.WhichOneof("entity")
        if kind == "learner":
            sis_id = record.learner.sourced_id
            record.learner.ClearField("sealed_identity")
            pseudonym = self._pseudonymizer.pseudonymize(tenant_id, sis_id)
            record.learner.sourced_id = pseudonym
            identity = identities.get(sis_id)
            if identity is not None:
                version = self._pseudonymizer.current_version(tenant_id)
                key = self._pseudonymizer.keys[tenant_id][version].get_secret_value().encode()
                clear = {"sis_id": sis_id, "display_name": identity.display_name}
                if identity.email:
                    clear["email"] = identity.email
                record.learner.sealed_identity = seal_identity(
                    key, version, tenant_id, pseudonym, clear
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
