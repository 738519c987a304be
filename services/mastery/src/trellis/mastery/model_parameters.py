"""`ModelParameters` (catalog contract) <-> `ModelSet` (the model), and its JSON form.

Per-skill `forget` is per day without practice (as in `trellis.mastery.domain`); the fit
estimates it. JSON is protobuf's canonical mapping (`json_format`), so the file written by
`fit` is exactly what an `UpsertCatalog` call would carry.
"""

from __future__ import annotations

from google.protobuf import json_format

from trellis.common.pb.events.v1 import catalog_pb2
from trellis.mastery.domain import BktParameters
from trellis.mastery.prediction import Calibration, ModelSet


def to_proto(model: ModelSet) -> catalog_pb2.ModelParameters:
    message = catalog_pb2.ModelParameters(
        version=model.version,
        weight_bkt=model.calibration.weight_bkt,
        weight_difficulty=model.calibration.weight_difficulty,
        intercept=model.calibration.intercept,
    )
    for skill_id, p in sorted(model.skills.items()):
        message.skills.append(
            catalog_pb2.SkillParameters(
                skill_id=skill_id,
                prior=p.prior,
                learn=p.learn,
                guess=p.guess,
                slip=p.slip,
                forget=p.forget,
            )
        )
    for item_id, difficulty in sorted(model.item_difficulty.items()):
        message.item_difficulty[item_id] = difficulty
    return message


def from_proto(message: catalog_pb2.ModelParameters) -> ModelSet:
    return ModelSet(
        version=message.version,
        skills={
            s.skill_id: BktParameters(
                prior=s.prior,
                learn=s.learn,
                guess=s.guess,
                slip=s.slip,
                forget=s.forget,
                version=message.version,
            )
            for s in message.skills
        },
        item_difficulty=dict(message.item_difficulty),
        calibration=Calibration(message.weight_bkt, message.weight_difficulty, message.intercept),
    )


def to_json(model: ModelSet) -> str:
    return json_format.MessageToJson(to_proto(model), sort_keys=True, indent=1)


def from_json(text: str) -> ModelSet:
    return from_proto(json_format.Parse(text, catalog_pb2.ModelParameters()))
