"""Replay: rebuild every learner's mastery state from the activity log, and compare it with the
live state the worker keeps. Pure: records come in as (key, value, headers), states go out.

The rebuild applies each record with the worker's own use case (`MasteryService.record_activity`)
over an in-memory store, in the order of its partition, so it follows the same rules: a
duplicate changes nothing, an undecodable or invalid event is skipped (the worker dead-letters
it), an erasure deletes the state and leaves a marker.

What "equal" means: the same learners (keys `tenant/learner`) hold state, and each state is equal
field by field, nothing ignored: every skill (P(mastered) compared exactly, as floats, with its
attempts, levels, flags, override and model version), the dedup window (`seen_event_ids`), the
outputs kept for re-sending (`recent`), the profile, the classes and the time of an earlier
erasure; and the same erased markers with the same times. Exact, because the same events in the
same order through the same pure functions give the same bits, and the state codec round-trips
floats exactly; the caller puts both sides through the codec, so the comparison is of states as
stored. A difference therefore means a lost, doubled or reordered event, or parameters that
differ from the live run's (a parameter set published mid-stream: the rebuild uses the catalog
as it stands at the end).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from trellis.common.codec import CodecError, Headers, decode_envelope
from trellis.mastery.adapters.memory_store import InMemoryLearnerStore
from trellis.mastery.catalog import CatalogView
from trellis.mastery.domain import LearnerState
from trellis.mastery.events import InvalidEvent
from trellis.mastery.service import MasteryService

#: Longest text shown for one side of a difference.
SHOWN_CHARS = 400

#: One record of the activity topic: key, value (None for a tombstone), headers.
Record = tuple[bytes | None, bytes | None, Headers]


@dataclass
class Rebuilt:
    """State rebuilt from the log, and what the rebuild saw on the way."""

    states: dict[bytes, LearnerState]
    erased: dict[bytes, datetime]
    # Ids of every output the rebuild produced: what the mastery topic must hold.
    output_ids: set[str] = field(default_factory=set)
    events: int = 0
    # Events the worker dead-letters: undecodable or invalid (id, identity, key).
    invalid: int = 0


def rebuild(records: Iterable[Record], catalog: CatalogView) -> Rebuilt:
    """Apply every record, in the given order, into fresh state."""
    store = InMemoryLearnerStore()
    service = MasteryService(store, catalog=catalog)
    rebuilt = Rebuilt(store.states, store.erased)
    for key, value, headers in records:
        rebuilt.events += 1
        try:
            handled = service.record_activity(key or b"", decode_envelope(value, headers))
        except (CodecError, InvalidEvent):
            rebuilt.invalid += 1
            continue
        rebuilt.output_ids.update(output.event_id for output in handled.outputs)
    return rebuilt


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the live state differs from the rebuilt one.

    `part`: "state" (one side has no state for the learner), "skill" (`name` is the skill id),
    "field" (`name` is a field of `LearnerState`) or "erased" (the erased marker)."""

    learner: str
    part: str
    name: str
    live: str
    replayed: str

    def describe(self) -> str:
        where = self.learner if self.part == "state" else f"{self.learner} {self.part} {self.name}"
        return f"{where}: live {self.live} != replayed {self.replayed}"


def compare(
    live: Mapping[bytes, LearnerState],
    replayed: Mapping[bytes, LearnerState],
    live_erased: Mapping[bytes, datetime],
    replayed_erased: Mapping[bytes, datetime],
) -> list[Difference]:
    """Every difference between the live and the rebuilt state, by learner key; [] if equal."""
    differences: list[Difference] = []
    for key in sorted(live.keys() | replayed.keys()):
        learner = key.decode(errors="replace")
        mine, theirs = live.get(key), replayed.get(key)
        if mine is None or theirs is None:
            differences.append(Difference(learner, "state", "", _present(mine), _present(theirs)))
        elif mine != theirs:
            differences += _state_differences(learner, mine, theirs)
    for key in sorted(live_erased.keys() | replayed_erased.keys()):
        mine_at, theirs_at = live_erased.get(key), replayed_erased.get(key)
        if mine_at != theirs_at:
            learner = key.decode(errors="replace")
            differences.append(Difference(learner, "erased", "", _show(mine_at), _show(theirs_at)))
    return differences


def _state_differences(
    learner: str, live: LearnerState, replayed: LearnerState
) -> list[Difference]:
    found = []
    for skill_id in sorted(live.skills.keys() | replayed.skills.keys()):
        mine, theirs = live.skills.get(skill_id), replayed.skills.get(skill_id)
        if mine != theirs:
            found.append(Difference(learner, "skill", skill_id, *_shown(mine, theirs)))
    for f in fields(LearnerState):
        if f.name == "skills":
            continue
        mine_value, theirs_value = getattr(live, f.name), getattr(replayed, f.name)
        if mine_value != theirs_value:
            found.append(Difference(learner, "field", f.name, *_shown(mine_value, theirs_value)))
    return found


def _present(state: LearnerState | None) -> str:
    return "absent" if state is None else "present"


def _shown(live: Any, replayed: Any) -> tuple[str, str]:
    """Both values for a reader. Sequences (the dedup window, the outputs kept) can be long:
    their length, and their items from the first that differs, cut at `SHOWN_CHARS`."""
    if isinstance(live, tuple | bytes) and isinstance(replayed, tuple | bytes):
        first = next(
            (i for i, (a, b) in enumerate(zip(live, replayed, strict=False)) if a != b),
            min(len(live), len(replayed)),
        )
        return _sequence(live, first), _sequence(replayed, first)
    return _cut(_show(live)), _cut(_show(replayed))


def _sequence(value: tuple[Any, ...] | bytes, first: int) -> str:
    return _cut(f"{len(value)} entries, from #{first}: {value[first:]!r}")


def _show(value: Any) -> str:
    return "absent" if value is None else repr(value)


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def report(rebuilt: Rebuilt, live_learners: int, differences: list[Difference]) -> dict[str, Any]:
    """The verdict as a JSON-ready document (the `replay --json` output)."""
    return {
        "equal": not differences,
        "events": rebuilt.events,
        "invalid_events": rebuilt.invalid,
        "learners": {"live": live_learners, "replayed": len(rebuilt.states)},
        "differences": [asdict(d) for d in differences],
    }


def report_lines(document: dict[str, Any]) -> list[str]:
    """The verdict for a terminal: counts, one line per difference, then equal or not."""
    learners = document["learners"]
    lines = [
        f"{document['events']} events replayed ({document['invalid_events']} invalid); "
        f"learners with state: live {learners['live']}, replayed {learners['replayed']}"
    ]
    lines += [Difference(**d).describe() for d in document["differences"]]
    count = len(document["differences"])
    lines.append("equal" if document["equal"] else f"NOT equal: {count} differences")
    return lines
