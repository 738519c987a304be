from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trellis.common.pb.events.v1 import catalog_pb2
from trellis.ingest.catalog import CatalogView, cycle_with, find_cycle


def test_no_cycle_in_a_chain_or_diamond() -> None:
    assert find_cycle({"c": ["b"], "b": ["a"], "a": []}) is None
    assert find_cycle({"d": ["b", "c"], "b": ["a"], "c": ["a"]}) is None


def test_cycle_is_named_as_a_closed_path() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": ["x"]}) == ["x", "x"]


def test_upserted_skills_close_a_cycle_with_the_known_graph() -> None:
    view = CatalogView()
    for skill_id, prerequisites in (("b", ["a"]), ("c", ["b"])):
        view.apply(
            catalog_pb2.CatalogRecord(
                tenant_id="t",
                skill=catalog_pb2.Skill(skill_id=skill_id, prerequisite_ids=prerequisites),
            )
        )
    closing = catalog_pb2.Skill(skill_id="a", prerequisite_ids=["c"])

    assert cycle_with(view.tenant("t").prerequisites, [closing]) == ["a", "c", "b", "a"]
    assert cycle_with(view.tenant("other").prerequisites, [closing]) is None


@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=20))
def test_graphs_ordered_by_id_never_have_a_cycle(edges: list[tuple[int, int]]) -> None:
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        if a > b:  # prerequisites always have smaller ids: a DAG
            graph.setdefault(str(a), []).append(str(b))
    assert find_cycle(graph) is None
    if graph:
        first = next(iter(graph))
        graph.setdefault(graph[first][0], []).append(first)  # one back edge closes a cycle
        cycle = find_cycle(graph)
        assert cycle is not None and cycle[0] == cycle[-1]
