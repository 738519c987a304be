"""The sink's bookkeeping of commits sent without waiting: answers may come late, out of order."""

from __future__ import annotations

from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from trellis.common.settings import Settings
from trellis.reporting.projection import RawRecord, Totals
from trellis.reporting.sink import ReportingSink

KEY = ("t.activity", 0)
TP = TopicPartition(*KEY)


class _NoProjection:
    def project(self, records: list[RawRecord], reload: bool) -> tuple[list[object], Totals]:
        raise AssertionError("not called")


def _sink() -> ReportingSink:
    return ReportingSink(Settings(), projector=_NoProjection())


def _sent(sink: ReportingSink, offset: int) -> dict[TopicPartition, OffsetAndMetadata]:
    """As `_commit` records a commit it sends."""
    sink._commits_in_flight[KEY] = max(offset, sink._commits_in_flight.get(KEY, 0))
    return {TP: OffsetAndMetadata(offset, "", -1)}


def test_a_failed_commit_is_kept_for_a_retry() -> None:
    sink = _sink()
    sink._commit_answered(_sent(sink, 10), CommitFailedError("rebalancing"))

    assert sink._uncommitted == {KEY: 10}
    assert sink._commits_in_flight == {}
    assert sink.stats.commits == 0


def test_a_failure_answered_after_a_later_commit_landed_is_not_retried() -> None:
    sink = _sink()
    first, second = _sent(sink, 10), _sent(sink, 20)
    # kafka-python hands answers over newest first when both came before a poll.
    sink._commit_answered(second, None)
    sink._commit_answered(first, CommitFailedError("late"))

    assert sink._uncommitted == {}
    assert sink._commits_in_flight == {}
    assert sink._commits_confirmed == {KEY: 20}
    assert sink.stats.commits == 1


def test_a_landed_commit_settles_an_older_retry_but_not_a_newer_one() -> None:
    sink = _sink()
    sink._uncommitted = {KEY: 10}
    sink._commit_answered(_sent(sink, 15), None)
    assert sink._uncommitted == {}

    sink._uncommitted = {KEY: 30}
    sink._commit_answered(_sent(sink, 25), None)
    assert sink._uncommitted == {KEY: 30}
    assert sink._commits_in_flight == {}
