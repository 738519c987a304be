"""Which learners a caller scoped to schools (a district admin or service token with a school
list) may write about, by the roster (docs/authorization.md). Pure.

Reads reach a learner through the classes the roster enrols them in (learner roles, current
enrollments); writes follow the same membership:

- an erasure is irreversible and deletes the learner everywhere, so it needs a learner whom the
  roster enrols only in classes it places in the caller's schools: any other learner, an unknown
  one included, is refused. (Only: a learner also enrolled in another school is that school's
  too, and a caller may have enrolled an id before the roster placed it anywhere.)
- any other event is refused only when the roster enrols the learner and none of those classes
  lies in one of the caller's schools; a learner the roster enrols nowhere yet is accepted with a
  warning (rosters lag activity, as for an unknown class in `trellis.ingest.references`).
- a learner's enrollment (role "learner": other roles give no scope) or learner record is
  refused when the roster already places the learner, by their classes or their stored record,
  only outside the caller's schools: enrolling them in a class of its own would bring another
  school's learner into the caller's scope. A learner the roster places nowhere yet is new
  (rosters send a learner's record and enrollments together) and accepted. The roster is the one
  before the request: its own records do not count, they are checked against that roster too.

A class the roster places in no school counts for none. For events, learner records' `school_id`
counts for nothing (reads ignore it too); for roster writes it counts as a place, since a scoped
caller can write a record naming its school only for a learner it may already enrol.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from enum import Enum

from trellis.common.pb.events.v1 import envelope_pb2, roster_pb2
from trellis.ingest.validation import Violation

ERASURE = "learner_erasure_requested"
UNKNOWN_LEARNER = "is not enrolled by the roster: the caller's school scope is unchecked"
ERASURE_OUT_OF_SCOPE = "erasure of a learner enrolled outside the caller's schools, or nowhere"
LEARNER_OUT_OF_SCOPE = "learner enrolled by the roster outside the caller's schools only"
ROSTER_LEARNER_OUT_OF_SCOPE = "learner placed by the roster outside the caller's schools only"

#: Where the roster places a learner (by the id a request names): a school per place, None for a
#: class the roster places in no school.
Places = Callable[[str], Collection[str | None]]


class Reach(Enum):
    ONLY_IN_SCHOOLS = "only_in_schools"  # every place of the learner is one of the caller's schools
    IN_SCHOOLS = "in_schools"  # some place is, not all
    ELSEWHERE = "elsewhere"  # placed, but in none of them
    UNKNOWN = "unknown"  # placed nowhere at all


class OutOfScope(ValueError):
    """An item about a learner outside the caller's schools: its whole batch is refused."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


def reach(places: Collection[str | None], schools: Collection[str]) -> Reach:
    """Where a learner the roster places in `places` stands for a caller scoped to `schools`."""
    if not places:
        return Reach.UNKNOWN
    inside = [place in schools for place in places]
    if all(inside):
        return Reach.ONLY_IN_SCHOOLS
    return Reach.IN_SCHOOLS if any(inside) else Reach.ELSEWHERE


def learner_warnings(
    events: Sequence[envelope_pb2.Envelope],
    first_index: int,
    schools: Collection[str],
    class_schools: Places,
) -> dict[int, Violation]:
    """The warnings, by event index, of a batch a caller scoped to `schools` (never empty: an
    empty list means every school, and such a caller is not checked here) may write;
    `class_schools` gives the schools of the classes that enrol a learner (by the event's learner
    id). Raises OutOfScope at the first event outside the scope."""
    warnings: dict[int, Violation] = {}
    for index, event in enumerate(events, start=first_index):
        if not event.learner_id:
            continue  # rejected on its own by validation
        path = f"events[{index}].learner_id"
        where = reach(class_schools(event.learner_id), schools)
        if event.WhichOneof("payload") == ERASURE and where is not Reach.ONLY_IN_SCHOOLS:
            raise OutOfScope(path, ERASURE_OUT_OF_SCOPE)
        if where is Reach.ELSEWHERE:
            raise OutOfScope(path, LEARNER_OUT_OF_SCOPE)
        if where is Reach.UNKNOWN:
            warnings[index] = Violation(path, UNKNOWN_LEARNER)
    return warnings


def check_roster_learners(
    records: Sequence[roster_pb2.RosterRecord], schools: Collection[str], learner_places: Places
) -> None:
    """Raises OutOfScope at the first learner record or learner's enrollment of a roster batch
    from a caller scoped to `schools` about a learner whom `learner_places` (the schools of
    their classes and of their stored record) puts only outside them."""
    for index, record in enumerate(records):
        kind = record.WhichOneof("entity")
        if kind == "learner":
            field, learner_id = "learner.sourced_id", record.learner.sourced_id
        elif kind == "enrollment" and record.enrollment.role == "learner":
            field, learner_id = "enrollment.user_id", record.enrollment.user_id
        else:
            continue
        # An empty id is rejected on its own by validation.
        if learner_id and reach(learner_places(learner_id), schools) is Reach.ELSEWHERE:
            raise OutOfScope(f"records[{index}].{field}", ROSTER_LEARNER_OUT_OF_SCOPE)
