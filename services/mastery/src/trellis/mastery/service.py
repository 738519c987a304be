"""Mastery use cases: apply an activity event to a learner's state; read a learner's mastery,
profile, or the mastery of a class's members.

Each use case loads state from a `LearnerStore`, calls one pure function of the domain and saves
the result; the Faust agent and the gRPC servicer only translate. The store is keyed by the
activity topic's message key, `tenant/learner`, so a learner's state lives in the partition of
their events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from trellis.common.codec import learner_key
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.mastery.catalog import CatalogView
from trellis.mastery.domain import (
    DEFAULT,
    EMPTY,
    BktParameters,
    LearnerState,
    Output,
    ParamsForSkill,
    Profile,
    SkillState,
    apply_attempt,
    apply_override,
    apply_profile,
    apply_tick,
    erasure_covers,
    note_class,
)
from trellis.mastery.events import (
    PROFILE_PAYLOADS,
    InvalidEvent,
    attempt_from_envelope,
    erased_envelope,
    event_time,
    output_envelope,
    override_from_envelope,
    profile_change_from_envelope,
)

MASTERY_PAYLOADS = frozenset({"item_attempted", "teacher_override", "review_tick"})
ERASURE = "learner_erasure_requested"
HANDLED_PAYLOADS = MASTERY_PAYLOADS | PROFILE_PAYLOADS | {ERASURE}


class LearnerStore(Protocol):
    def get(self, key: bytes) -> LearnerState | None: ...

    def put(self, key: bytes, state: LearnerState) -> None: ...

    def owns(self, key: bytes) -> bool:
        """Whether this process holds the state of `key` (its partition is assigned here)."""
        ...

    def owns_all(self) -> bool:
        """Whether this process holds every learner's state (every partition, none recovering)."""
        ...

    def erase(self, key: bytes, erased_at: datetime) -> None:
        """Delete the state of `key` (a tombstone in its changelog) and remember when it was
        erased (the erased marker: key and time, nothing else)."""
        ...

    def erased_at(self, key: bytes) -> datetime | None:
        """The time of the latest erasure of `key`, if any."""
        ...


class NotOwned(Exception):
    """The learner's state lives on another worker."""


@dataclass(frozen=True, slots=True)
class Handled:
    """What one activity event did: the envelopes to publish, and why nothing changed, if so."""

    outputs: tuple[envelope_pb2.Envelope, ...] = ()
    duplicate: bool = False
    skipped: str | None = None


def default_parameters(_skill_id: str) -> BktParameters:
    return DEFAULT


@dataclass(frozen=True, slots=True)
class Predictions:
    """P(correct) per item the catalog knows (unknown items are left out), and the version."""

    items: tuple[tuple[str, float], ...]
    model_version: str


class MasteryService:
    def __init__(
        self,
        store: LearnerStore,
        params_for_skill: ParamsForSkill | None = None,
        catalog: CatalogView | None = None,
    ):
        """Parameters come from `params_for_skill` when given (tests, tools), else from the
        catalog: the tenant's active parameter set and its skills' thresholds (defaults until a
        set arrives)."""
        self._store = store
        self._fixed_params = params_for_skill
        self._catalog = catalog or CatalogView()

    def _params(self, tenant_id: str) -> ParamsForSkill:
        if self._fixed_params is not None:
            return self._fixed_params
        return self._catalog.params_for(tenant_id)

    def record_activity(self, key: bytes, envelope: envelope_pb2.Envelope) -> Handled:
        """Apply one event of the activity topic, read under message key `key`.

        Raises InvalidEvent for an event that cannot be applied (dead-letter it). A duplicate
        changes nothing and returns the outputs of its first application again.
        """
        payload = envelope.WhichOneof("payload")
        if payload not in HANDLED_PAYLOADS:
            return Handled(skipped=f"payload {payload} is not handled")
        _check_identity(key, envelope)
        stored = self._store.get(key)
        # A state begun after an erasure carries its time; without a state, ask the marker.
        erased_at = self._store.erased_at(key) if stored is None else stored.erased_before
        if payload == ERASURE:
            return self._erase(key, envelope, erased_at)
        if erased_at is not None and erasure_covers(erased_at, event_time(envelope)):
            # An event from before the learner's erasure (late or re-sent): it stays erased.
            return Handled(skipped="learner erased")
        state = stored or (EMPTY if erased_at is None else replace(EMPTY, erased_before=erased_at))
        outputs: tuple[Output, ...] = ()
        if payload in PROFILE_PAYLOADS:
            change, _ = profile_change_from_envelope(envelope)
            new_state = apply_profile(state, envelope.event_id, change)
        elif payload == "item_attempted":
            attempt, now = attempt_from_envelope(envelope)
            if not attempt.skill_ids:
                # "Empty means take them from the catalog".
                item = self._catalog.item(envelope.tenant_id, envelope.item_attempted.item_id)
                if item is None or not item.skill_ids:
                    return Handled(skipped="item_attempted without skill_ids, item not in catalog")
                attempt = replace(attempt, skill_ids=item.skill_ids)
            new_state, outputs = apply_attempt(
                state, attempt, self._params(envelope.tenant_id), now
            )
        elif payload == "teacher_override":
            override, now = override_from_envelope(envelope)
            new_state, outputs = apply_override(
                state, override, self._params(envelope.tenant_id), now
            )
        else:
            now = event_time(envelope)
            new_state, outputs = apply_tick(
                state, envelope.event_id, self._params(envelope.tenant_id), now
            )
        duplicate = new_state is state
        if not duplicate:
            self._store.put(key, note_class(new_state, envelope.class_id))
        return Handled(tuple(output_envelope(envelope, o) for o in outputs), duplicate=duplicate)

    def _erase(
        self, key: bytes, envelope: envelope_pb2.Envelope, erased_at: datetime | None
    ) -> Handled:
        """Delete the learner's state and announce `LearnerErased` (same id every time).

        A request at or before the latest erasure is already honoured (what it covers is gone;
        a state begun since holds only later events): it writes nothing and re-sends the
        announcement, as any duplicate re-sends its outputs."""
        now = event_time(envelope)
        announced = (erased_envelope(envelope),)
        if erasure_covers(erased_at, now):
            return Handled(announced, duplicate=True)
        self._store.erase(key, now)
        return Handled(announced)

    def mastery_of(
        self, tenant_id: str, learner_id: str, skill_ids: Iterable[str] = ()
    ) -> dict[str, SkillState]:
        """A learner's skills (pseudonymous `learner_id`): the requested ones, a skill without
        attempts at its prior; or, with no skill ids, every skill that has state."""
        key = learner_key(tenant_id, learner_id)
        if not self._store.owns(key):
            raise NotOwned(tenant_id)
        state = self._store.get(key) or EMPTY
        wanted = list(dict.fromkeys(skill_ids))
        if not wanted:
            return dict(state.skills)
        params = self._params(tenant_id)
        return {s: state.skill(s, params(s)) for s in wanted}

    def profile_of(self, tenant_id: str, learner_id: str) -> tuple[Profile, tuple[str, ...]]:
        """A learner's profile and classes (pseudonymous `learner_id`); empty when unknown."""
        key = learner_key(tenant_id, learner_id)
        if not self._store.owns(key):
            raise NotOwned(tenant_id)
        state = self._store.get(key) or EMPTY
        return state.profile, state.class_ids

    def class_mastery(
        self,
        tenant_id: str,
        learner_ids: Iterable[str],
        skill_ids: Iterable[str] = (),
        include: Callable[[bytes], bool] | None = None,
    ) -> dict[str, dict[str, SkillState]]:
        """Per learner of `learner_ids` (pseudonymous ids: the members of a class, as the roster
        gives them): their skills, as `mastery_of` gives them (a learner without state: no
        skills, or the requested ones at their prior). With `include`, only the learners whose
        keys it accepts (a worker reading its share of the partitions, which it checked it
        holds); without, every one, and the store must hold every partition (NotOwned else)."""
        if include is None and not self._store.owns_all():
            raise NotOwned(tenant_id)
        wanted = list(dict.fromkeys(skill_ids))
        params = self._params(tenant_id)
        found: dict[str, dict[str, SkillState]] = {}
        for learner_id in sorted(set(learner_ids)):
            key = learner_key(tenant_id, learner_id)
            if include is not None and not include(key):
                continue
            state = self._store.get(key) or EMPTY
            if wanted:
                found[learner_id] = {s: state.skill(s, params(s)) for s in wanted}
            else:
                found[learner_id] = dict(state.skills)
        return found

    def predict_items(
        self, tenant_id: str, learner_id: str, item_ids: Sequence[str], now: datetime
    ) -> Predictions:
        """Predicted success of this learner's next attempt on each item at `now`, from the
        tenant's active parameter set (`trellis.mastery.prediction`)."""
        key = learner_key(tenant_id, learner_id)
        if not self._store.owns(key):
            raise NotOwned(tenant_id)
        state = self._store.get(key) or EMPTY
        model = self._catalog.model(tenant_id)
        out = []
        for item_id in dict.fromkeys(item_ids):
            info = self._catalog.item(tenant_id, item_id)
            if info is None:
                continue
            p = model.predict(state, item_id, info.skill_ids, now, info.difficulty)
            out.append((item_id, p))
        return Predictions(tuple(out), model.version)


def _check_identity(key: bytes, envelope: envelope_pb2.Envelope) -> None:
    if not envelope.event_id:
        raise InvalidEvent("event has no event_id")
    if not envelope.tenant_id or not envelope.learner_id:
        raise InvalidEvent("event has no tenant_id or learner_id")
    if key != learner_key(envelope.tenant_id, envelope.learner_id):
        # State is keyed (and partitioned) by the message key: a mismatch would misfile it.
        raise InvalidEvent("message key is not tenant_id/learner_id of the event")
