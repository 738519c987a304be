"""Generate Python code and mypy stubs for every contract in proto/ (`make proto`).

protoc names generated modules after the proto packages (`trellis.events.v1`), which would collide
with the service packages (`trellis.ingest`, ...). The code therefore lives under
`trellis.common.pb`, and this script rewrites the generated imports to that prefix.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services/common/src/trellis/common/pb"
AREAS = ("events", "ingest", "mastery", "recommender", "reporting")
# Module references only: quoted names ('/trellis.ingest.v1.IngestService/RecordEvents') are
# wire names and stay as the proto packages say.
_MODULE = re.compile(rf"(?<![/'\"])\btrellis\.({'|'.join(AREAS)})\.v1\b")
_MODULE_NAME = re.compile(rf"'trellis\.({'|'.join(AREAS)})\.v1\.(\w+_pb2)'")
HEADER = '"""Generated from proto/ by `make proto`. Do not edit."""\n'


def generate(out_dir: Path) -> None:
    """Write the generated package to out_dir (replacing it)."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{resources.files('grpc_tools') / '_proto'}",
            f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(Path(tmp) / "trellis", out_dir)
    for path in sorted(out_dir.rglob("*.py*")):
        source = path.read_text()
        if path.stem.endswith("_pb2_grpc") and "Stub" not in source:
            path.unlink()  # a proto file without services: no gRPC module
        else:
            path.write_text(_rewrite(source))
    for package in [out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())]:
        (package / "__init__.py").write_text(HEADER)


def _rewrite(source: str) -> str:
    # The serialized descriptor keeps the proto package names: only code lines are rewritten.
    return "".join(
        line if "AddSerializedFile" in line else _rewrite_line(line)
        for line in source.splitlines(keepends=True)
    )


def _rewrite_line(line: str) -> str:
    line = _MODULE_NAME.sub(r"'trellis.common.pb.\1.v1.\2'", line)  # the module's own name
    return _MODULE.sub(r"trellis.common.pb.\1.v1", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
