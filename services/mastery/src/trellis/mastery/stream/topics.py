"""The topics the mastery worker reads and writes. Raw bytes: the event codec does the decoding."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import faust
from faust.types import TopicT

from trellis.common.settings import Settings


@dataclass(frozen=True)
class Topics:
    activity: TopicT
    mastery: TopicT
    deadletter: TopicT

    @cached_property  # read for every output
    def mastery_name(self) -> str:
        return self.mastery.get_topic_name()

    @property
    def deadletter_name(self) -> str:
        return self.deadletter.get_topic_name()


def define_topics(app: faust.App, settings: Settings) -> Topics:
    names = settings.kafka.topics

    def raw(topic: str) -> TopicT:
        return app.topic(
            names.name(topic),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=names.partitions,
        )

    return Topics(activity=raw("activity"), mastery=raw("mastery"), deadletter=raw("deadletter"))
