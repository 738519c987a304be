"""Which learners a caller scoped to schools (a district admin or service token with a school
list) may write about, by the roster (docs/authorization.md). Pure.

Reads reach a learner through the classes the roster enrols them in (learner roles, current
enrollments); writes follow the same membership:

- an erasure is irreversible and deletes the learner everywhere, so it needs a learner whom the
  roster enrols only in classes it places in the caller's schools: any other learner, an unknown
  one included, is refused. (Only: a caller may enrol any learner id in a class of its own, so
  one enrollment in its schools would let it erase another school's learner.)
- any other event is refused only when the roster enrols the learner and none of those classes
  lies in one of the caller's schools; a learner the roster enrols nowhere yet is accepted with a
  warning (rosters lag activity, as for an unknown class in `trellis.ingest.references`).

A class the roster places in no school counts for none. Learner records' `school_id` counts for
nothing: a caller may write a learner record naming its own school for any learner id, so it
would widen the caller's scope, and reads ignore it too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from enum import Enum

from trellis.common.pb.events.v1 import envelope_pb2
from trellis.ingest.validation import Violation

ERASURE = "learner_erasure_requested"
UNKNOWN_LEARNER = "is not enrolled by the roster: the caller's school scope is unchecked"
ERASURE_OUT_OF_SCOPE = "erasure of a learner enrolled outside the caller's schools, or nowhere"
LEARNER_OUT_OF_SCOPE = "learner enrolled by the roster outside the caller's schools only"


class Reach(Enum):
    ONLY_IN_SCHOOLS = "only_in_schools"  # every class enrolling them is in the caller's schools
    IN_SCHOOLS = "in_schools"  # some class enrolling them is in the caller's schools, not all
    ELSEWHERE = "elsewhere"  # enrolled, but in no such class
    UNKNOWN = "unknown"  # enrolled in no class at all


class OutOfScope(ValueError):
    """An event about a learner outside the caller's schools: its whole batch is refused."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


def reach(
    learner_classes: Collection[str],
    school_of: Callable[[str], str | None],
    schools: Collection[str],
) -> Reach:
    """Where the learner, enrolled in `learner_classes`, stands for a caller scoped to
    `schools`; `school_of` places a class (None: the roster places it nowhere)."""
    if not learner_classes:
        return Reach.UNKNOWN
    inside = [school_of(class_id) in schools for class_id in learner_classes]
    if all(inside):
        return Reach.ONLY_IN_SCHOOLS
    return Reach.IN_SCHOOLS if any(inside) else Reach.ELSEWHERE


def learner_warnings(
    events: Sequence[envelope_pb2.Envelope],
    first_index: int,
    schools: Collection[str],
    classes_of: Callable[[str], Collection[str]],
    school_of: Callable[[str], str | None],
) -> dict[int, Violation]:
    """The warnings, by event index, of a batch a caller scoped to `schools` (never empty: an
    empty list means every school, and such a caller is not checked here) may write;
    `classes_of` gives the classes that enrol a learner (by the event's learner id). Raises
    OutOfScope at the first event outside the scope."""
    warnings: dict[int, Violation] = {}
    for index, event in enumerate(events, start=first_index):
        if not event.learner_id:
            continue  # rejected on its own by validation
        path = f"events[{index}].learner_id"
        where = reach(classes_of(event.learner_id), school_of, schools)
        if event.WhichOneof("payload") == ERASURE and where is not Reach.ONLY_IN_SCHOOLS:
            raise OutOfScope(path, ERASURE_OUT_OF_SCOPE)
        if where is Reach.ELSEWHERE:
            raise OutOfScope(path, LEARNER_OUT_OF_SCOPE)
        if where is Reach.UNKNOWN:
            warnings[index] = Violation(path, UNKNOWN_LEARNER)
    return warnings
