"""The committed generated code is exactly what `make proto` makes from proto/ today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools/gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    generator = _load_generator()
    generator.generate(tmp_path / "pb")

    fresh, committed = _tree(tmp_path / "pb"), _tree(generator.OUT_DIR)
    assert sorted(fresh) == sorted(committed), "run `make proto`: generated files differ"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make proto`: out of date: {stale}"


def test_wire_names_are_the_proto_packages() -> None:
    """Moving the modules under trellis.common.pb must not change what goes on the wire."""
    from trellis.common.pb.events.v1 import envelope_pb2
    from trellis.common.pb.ingest.v1 import ingest_pb2_grpc

    assert envelope_pb2.Envelope.DESCRIPTOR.full_name == "trellis.events.v1.Envelope"
    assert envelope_pb2.Envelope.__module__ == "trellis.common.pb.events.v1.envelope_pb2"
    source = (
        ROOT / "services/common/src/trellis/common/pb/ingest/v1/ingest_pb2_grpc.py"
    ).read_text()
    assert "'/trellis.ingest.v1.IngestService/RecordEvents'" in source
    assert "trellis.common.pb.ingest.v1.IngestService" not in source
    assert ingest_pb2_grpc.IngestServiceStub
