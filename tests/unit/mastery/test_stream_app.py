"""How the mastery worker's Faust app is configured (trellis.common.faust_app), without a broker."""

from __future__ import annotations

from pathlib import Path

from faust.types.enums import ProcessingGuarantee

from tests.conftest import make_test_settings
from trellis.common.faust_app import changelog_topic_name, internal_topic_specs
from trellis.mastery.stream.app import create_stream
from trellis.mastery.stream.tables import ERASED, LEARNERS, TABLE_NAMES


def test_the_app_follows_the_settings(tmp_path: Path) -> None:
    settings = make_test_settings("unit-app")
    stream = create_stream(settings, datadir=tmp_path)
    conf = stream.app.conf

    assert conf.id == "unit-app-mastery"  # the app id is the consumer group
    assert [str(url) for url in conf.broker] == [f"kafka://{settings.kafka.bootstrap_servers}"]
    # (faust types its settings loosely)
    assert conf.processing_guarantee == ProcessingGuarantee.AT_LEAST_ONCE  # type: ignore[comparison-overlap]
    assert conf.store.scheme == "rocksdb"
    assert conf.datadir == tmp_path
    assert conf.broker_session_timeout == 6.0
    assert conf.broker_heartbeat_interval == 1.0
    assert conf.broker_request_timeout >= conf.broker_session_timeout
    assert conf.topic_partitions == 2
    assert not conf.topic_allow_declare
    assert conf.topic_disable_leader
    assert not conf.web_enabled
    assert stream.agent.concurrency == 1
    assert stream.topics.activity.get_topic_name() == "unit-app.trellis.activity.v1"


def test_the_rocksdb_store_uses_rocksdict(tmp_path: Path) -> None:
    stream = create_stream(make_test_settings("unit-store"), datadir=tmp_path)
    assert stream.tables.learners.data.use_rocksdict  # type: ignore[attr-defined]


def test_changelog_topics_are_compacted_and_copartitioned() -> None:
    settings = make_test_settings("unit-topics")
    specs = internal_topic_specs(settings.mastery.consumer_group, TABLE_NAMES, settings)
    assert [spec.name for spec in specs] == [
        changelog_topic_name("unit-topics-mastery", LEARNERS),
        changelog_topic_name("unit-topics-mastery", ERASED),
    ]
    assert specs[0].name == "unit-topics-mastery-learners-changelog"
    for spec in specs:
        assert spec.num_partitions == settings.kafka.topics.partitions
        assert spec.topic_configs == {"cleanup.policy": "compact"}
