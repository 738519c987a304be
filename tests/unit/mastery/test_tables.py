"""The table store's cache of decoded states: trusted between rebalances, and bounded."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from trellis.mastery.adapters.state_codec import encode, encode_state
from trellis.mastery.domain import DEFAULT, EMPTY, Attempt, apply_attempt
from trellis.mastery.stream import tables
from trellis.mastery.stream.tables import TableLearnerStore

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def store(table: dict[bytes, bytes]) -> TableLearnerStore:
    return TableLearnerStore(cast(Any, None), cast(Any, table), "activity", 2, cast(Any, {}))


def test_a_stored_state_is_read_back_without_decoding_until_a_rebalance() -> None:
    table: dict[bytes, bytes] = {}
    learners = store(table)
    one, _ = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), lambda _: DEFAULT, T0)
    learners.put(b"t/l", one)
    assert learners.get(b"t/l") is one  # from the cache: the bytes match
    two, _ = apply_attempt(one, Attempt("e2", ("a",), 0.0), lambda _: DEFAULT, T0)
    table[b"t/l"] = encode_state(two)  # e.g. recovered from the changelog after a rebalance
    assert learners.get(b"t/l") is one  # the cache is the truth between rebalances
    learners.forget_decoded()  # what the rebalance signals call
    assert learners.get(b"t/l") == two
    learners.erase(b"t/l", T0)
    assert learners.get(b"t/l") is None
    assert learners.erased_at(b"t/l") == T0


def test_the_cache_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(tables, "DECODED_CACHE_SIZE", 3)
    table: dict[bytes, bytes] = {}
    learners = store(table)
    for n in range(5):
        learners.put(f"t/{n}".encode(), EMPTY)
    assert list(learners._decoded) == [b"t/2", b"t/3", b"t/4"]
    assert learners.get(b"t/0") == EMPTY  # decoded again from the table


def test_a_shown_state_is_what_reads_get_until_stored_even_across_a_rebalance() -> None:
    table: dict[bytes, bytes] = {}
    told: list[bytes] = []
    sensors = SimpleNamespace(on_table_set=lambda _t, key, _v: told.append(key))
    learners = TableLearnerStore(
        cast(Any, SimpleNamespace(sensors=sensors)), cast(Any, table), "activity", 2
    )
    one, _ = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), lambda _: DEFAULT, T0)
    table[b"t/l"] = encode_state(EMPTY)  # the store, before the batch's write
    learners._show({b"t/l": encode(one)}, lambda _key: nullcontext())
    learners.forget_decoded()  # a rebalance while the batch's changelog records are in flight
    assert learners.get(b"t/l") is one  # not the store's older state under the newer offsets
    assert told == [b"t/l"]
