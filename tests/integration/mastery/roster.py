"""Roster records as ingest stores them (learner ids pseudonymous), sent to the roster topic that
every mastery worker follows: class membership for the read API's class lists and scopes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tests.conftest import TEST_TENANT
from trellis.common.codec import Headers, encode_roster, entity_key
from trellis.common.kafka import create_producer
from trellis.common.pb.events.v1 import roster_pb2
from trellis.common.settings import Settings

#: The classes of the mastery integration tests and the schools the roster places them in.
SCHOOLS = {"class-7a": "school-1", "class-7b": "school-1", "class-9c": "school-2"}


def enrollment_id(class_id: str, pseudonym: str) -> str:
    return f"{class_id}:{pseudonym}"


def publish_roster(settings: Settings, members: Mapping[str, Iterable[str]]) -> None:
    """The classes of SCHOOLS, and an enrollment per (class, pseudonymous learner) of `members`
    (class id -> learners)."""
    records = [
        roster_pb2.RosterRecord(
            tenant_id=TEST_TENANT,
            school_class=roster_pb2.SchoolClass(sourced_id=class_id, school_id=school_id),
        )
        for class_id, school_id in SCHOOLS.items()
    ]
    records += [
        roster_pb2.RosterRecord(
            tenant_id=TEST_TENANT,
            enrollment=roster_pb2.Enrollment(
                sourced_id=enrollment_id(class_id, learner),
                class_id=class_id,
                user_id=learner,
                role="learner",
                school_id=SCHOOLS[class_id],
            ),
        )
        for class_id, learners in members.items()
        for learner in learners
    ]
    encoded = [encode_roster(r) for r in records]
    send_records(settings, "roster", [(e.key, e.value, e.headers) for e in encoded])


def end_enrollment(settings: Settings, class_id: str, pseudonym: str) -> None:
    """The enrollment's tombstone, as ingest would send when the SIS drops it."""
    key = entity_key(TEST_TENANT, "enrollment", enrollment_id(class_id, pseudonym))
    send_records(settings, "roster", [(key, None, [])])


def send_records(
    settings: Settings, topic_name: str, records: list[tuple[bytes, bytes | None, Headers]]
) -> None:
    """(key, value or None for a tombstone, headers) to the topic `topic_name`, then flushed."""
    producer = create_producer(settings.kafka)
    try:
        topic = settings.kafka.topics.name(topic_name)
        for key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers)
        producer.flush()
    finally:
        producer.close()
