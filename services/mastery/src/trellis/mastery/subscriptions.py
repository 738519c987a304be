"""What a mastery subscription carries (one tenant, maybe one class or learner) and where each
partition of the mastery topic starts. Pure: the reading is in `adapters.mastery_topic`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trellis.common.codec import learner_key
from trellis.common.pb.events.v1 import envelope_pb2


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Mastery events of `tenant_id`; with `class_id`, those whose cause named that class; with
    `learner_id` (pseudonymous), that learner's only; with `schools` (a caller scoped to
    schools), those whose cause named one of them."""

    tenant_id: str
    class_id: str = ""
    learner_id: str = ""
    schools: frozenset[str] = frozenset()

    def accepts_key(self, key: bytes | None) -> bool:
        """A cheap first test on the record key (`tenant/learner`), before decoding."""
        if key is None:
            return False
        if self.learner_id:
            return key == learner_key(self.tenant_id, self.learner_id)
        return key.startswith(learner_key(self.tenant_id, ""))

    def accepts(self, envelope: envelope_pb2.Envelope) -> bool:
        return (
            envelope.tenant_id == self.tenant_id
            and (not self.class_id or envelope.class_id == self.class_id)
            and (not self.learner_id or envelope.learner_id == self.learner_id)
            and (not self.schools or envelope.school_id in self.schools)
        )


def start_offsets(
    partitions: range, after: Mapping[int, int], from_beginning: bool
) -> dict[int, int | None]:
    """The first offset to read per partition: right after the one named in `after`; else the
    beginning (0: the broker moves it to the oldest kept) or, None, the end (new events only).
    ValueError for a partition the topic does not have or an offset below -1."""
    for partition, offset in after.items():
        if partition not in partitions:
            raise ValueError(f"partition {partition} is not a partition of the mastery topic")
        if offset < -1:
            raise ValueError(f"offset {offset} of partition {partition} is below -1")
    return {p: after[p] + 1 if p in after else (0 if from_beginning else None) for p in partitions}
