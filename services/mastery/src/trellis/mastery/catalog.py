"""What the mastery worker knows of the catalog (`trellis.catalog.v1`): items (skills and
difficulty), per-skill mastery thresholds, and fitted parameter sets, per tenant.

Fed one `CatalogRecord` at a time, in topic order (`apply`), by whatever follows the topic (a
Faust GlobalTable in the worker, a list in tests). No I/O.

Which parameter set is active: the most recently applied `ModelParameters` record of the tenant.
States record the version that produced them (`SkillState.model_version`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from trellis.common.pb.events.v1 import catalog_pb2
from trellis.mastery.domain import MASTERY_THRESHOLD, BktParameters, ParamsForSkill
from trellis.mastery.model_parameters import from_proto
from trellis.mastery.prediction import ModelSet

#: A tenant's parameter set until one is published: one object, so that what it derives once
#: (its default parameters) is not derived again on every event.
DEFAULT_MODEL = ModelSet()


@dataclass(frozen=True, slots=True)
class ItemInfo:
    skill_ids: tuple[str, ...]
    difficulty: float = 0.0


@dataclass
class CatalogView:
    items: dict[tuple[str, str], ItemInfo] = field(default_factory=dict)
    thresholds: dict[tuple[str, str], float] = field(default_factory=dict)
    models: dict[str, ModelSet] = field(default_factory=dict)

    def apply(self, record: catalog_pb2.CatalogRecord) -> None:
        tenant = record.tenant_id
        kind = record.WhichOneof("entity")
        if kind == "item":
            item = record.item
            self.items[(tenant, item.item_id)] = ItemInfo(tuple(item.skill_ids), item.difficulty)
        elif kind == "skill":
            skill = record.skill
            if 0.0 < skill.mastery_threshold < 1.0:
                self.thresholds[(tenant, skill.skill_id)] = skill.mastery_threshold
            else:
                self.thresholds.pop((tenant, skill.skill_id), None)
        elif kind == "model_parameters":
            self.models[tenant] = from_proto(record.model_parameters)

    def item(self, tenant_id: str, item_id: str) -> ItemInfo | None:
        return self.items.get((tenant_id, item_id))

    def model(self, tenant_id: str) -> ModelSet:
        return self.models.get(tenant_id) or DEFAULT_MODEL

    def params_for(self, tenant_id: str) -> ParamsForSkill:
        """The tenant's parameters per skill, with the skill's own mastery threshold."""
        model = self.model(tenant_id)

        def params(skill_id: str) -> BktParameters:
            found = model.params_for_skill(skill_id)
            threshold = self.thresholds.get((tenant_id, skill_id), MASTERY_THRESHOLD)
            if threshold == found.mastery_threshold:
                return found
            return replace(found, mastery_threshold=threshold)

        return params
