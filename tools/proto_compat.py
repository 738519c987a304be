"""A `buf breaking`-style check: proto/ may only grow within v1.

Compares the contracts of today with the baseline in proto/baseline.json (every message field,
enum value and RPC that a v1 contract ever published). Removing or renaming any of them, changing
a field's type, label or oneof, or an RPC's types fails. `--update` adds new elements to the
baseline (run it, with a CHANGELOG.md entry, when a contract grows).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
BASELINE = PROTO_DIR / "baseline.json"


def _descriptors() -> descriptor_pb2.FileDescriptorSet:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{resources.files('grpc_tools') / '_proto'}",
            f"--descriptor_set_out={out}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _messages(prefix: str, messages, elements: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    for message in messages:
        name = f"{prefix}.{message.name}"
        elements[f"message {name}"] = ""
        for field in message.field:
            oneof = (
                message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else ""
            )
            kind = field.type_name or descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)
            elements[f"field {name}#{field.number}"] = f"{field.name} {field.label} {kind} {oneof}"
        _messages(name, message.nested_type, elements)
        _enums(name, message.enum_type, elements)


def _enums(prefix: str, enums, elements: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    for enum in enums:
        for value in enum.value:
            elements[f"enum {prefix}.{enum.name}#{value.number}"] = value.name


def contract_elements() -> dict[str, str]:
    """Every published element of the contracts, with what must not change about it."""
    elements: dict[str, str] = {}
    for file in _descriptors().file:
        if file.package.startswith("google."):
            continue
        _messages(file.package, file.message_type, elements)
        _enums(file.package, file.enum_type, elements)
        for service in file.service:
            for method in service.method:
                elements[f"rpc {file.package}.{service.name}/{method.name}"] = (
                    f"{method.input_type} {method.client_streaming} "
                    f"{method.output_type} {method.server_streaming}"
                )
    return elements


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="add new elements to the baseline")
    update = parser.parse_args().update
    baseline: dict[str, str] = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    current = contract_elements()
    broken = [
        f"{key}: was {old or '<present>'!r}, now {current.get(key, '<removed>')!r}"
        for key, old in baseline.items()
        if current.get(key) != old
    ]
    if broken:
        print("proto/ breaks published v1 contracts:", *broken, sep="\n  ", file=sys.stderr)
        return 1
    added = sorted(set(current) - set(baseline))
    if update:
        BASELINE.write_text(json.dumps(dict(sorted(current.items())), indent=1) + "\n")
        print(f"baseline updated: {len(added)} new elements")
    elif added:
        print(f"{len(added)} contract elements not in the baseline yet: run with --update")
        return 1
    else:
        print(f"proto compatible with the baseline ({len(baseline)} elements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
