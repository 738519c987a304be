"""Checks of what an activity event refers to, against the catalog and roster replicas. Pure.

Unknown catalog references (item, skill, resource) are rejected, flagged or ignored by setting;
a class that the roster places in another school than the event's is always rejected; a class
that the roster does not know yet is accepted with a warning (rosters often lag the activity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trellis.common.pb.events.v1 import envelope_pb2
from trellis.ingest.catalog import CatalogView
from trellis.ingest.roster import RosterView
from trellis.ingest.validation import Violation

UnknownReferences = Literal["reject", "flag", "off"]


@dataclass
class ReferenceFindings:
    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)


def check_references(
    event: envelope_pb2.Envelope,
    path: str,
    tenant_id: str,
    catalog: CatalogView,
    roster: RosterView,
    unknown: UnknownReferences,
) -> ReferenceFindings:
    """Findings for one valid event; `path` names it in the answer (e.g. "events[3]")."""
    findings = ReferenceFindings()
    if event.class_id:
        school = roster.school_of(tenant_id, event.class_id)
        if school is None:
            if unknown != "off":
                findings.warnings.append(
                    Violation(f"{path}.class_id", "is not in the roster: its school is unchecked")
                )
        elif event.school_id and school != event.school_id:
            findings.violations.append(
                Violation(f"{path}.class_id", "belongs to another school than school_id")
            )
    if unknown == "off":
        return findings
    kind = event.WhichOneof("payload")
    items: list[str] = []
    skills: list[str] = []
    resources: list[str] = []
    if kind == "item_attempted":
        items = [event.item_attempted.item_id]
        skills = list(event.item_attempted.skill_ids)
    elif kind == "resource_engaged":
        resources = [event.resource_engaged.resource_id]
    else:
        return findings
    missing_items, missing_skills, missing_resources = catalog.unknown(
        tenant_id, items, skills, resources
    )
    found = [
        Violation(f"{path}.item_attempted.item_id", "is not in the catalog") for _ in missing_items
    ]
    found += [
        Violation(f"{path}.item_attempted.skill_ids[{i}]", "is not in the catalog")
        for i, skill in enumerate(skills)
        if skill in missing_skills
    ]
    found += [
        Violation(f"{path}.resource_engaged.resource_id", "is not in the catalog")
        for _ in missing_resources
    ]
    (findings.violations if unknown == "reject" else findings.warnings).extend(found)
    return findings
