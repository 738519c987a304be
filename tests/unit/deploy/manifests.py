"""Reading the Kubernetes manifests of deploy/k8s the way a cluster would see them.

The base is read straight from its files (resources and the ConfigMap generator's env files), so
its checks need nothing installed. Overlays need Kustomize: they are rendered with `kustomize
build` or `kubectl kustomize` when either is on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from pydantic import BaseModel

from trellis.common.settings import Settings

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
SERVICES = ("ingest", "mastery", "recommender", "reporting")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

Doc = dict[str, Any]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as Kustomize's configMapGenerator `envs` reads them."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def load_base() -> list[Doc]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((BASE / resource).read_text())
        if doc
    ]
    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env_file in generator.get("envs", []):
            data.update(read_env_file(BASE / env_file))
        docs.append({"kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    return docs


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(directory: Path) -> list[Doc]:
    command = kustomize_command()
    assert command is not None
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def of_kind(docs: list[Doc], *kinds: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] in kinds]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def workload(docs: list[Doc], service: str) -> tuple[Doc, Doc]:
    """The Deployment or StatefulSet running `service`, and its container of that name."""
    found = [
        (doc, container)
        for doc in of_kind(docs, *WORKLOAD_KINDS)
        for container in doc["spec"]["template"]["spec"]["containers"]
        if container["name"] == service
    ]
    assert len(found) == 1, f"{service}: {len(found)} workloads"
    return found[0]


def container_env(docs: list[Doc], container: Doc) -> dict[str, Doc]:
    """Every variable of the container: {name: {"value": ...}} or {name: {"valueFrom": ...}}
    (ConfigMap `envFrom` first, `env` entries override, as in a pod)."""
    env: dict[str, Doc] = {}
    for source in container.get("envFrom", []):
        config_map = named(docs, "ConfigMap", source["configMapRef"]["name"])
        env.update({k: {"value": v} for k, v in config_map["data"].items()})
    env.update({entry["name"]: entry for entry in container.get("env", [])})
    return env


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = "TRELLIS_") -> set[str]:
    """Every environment variable that the settings model reads (nested models with `__`)."""
    names = set()
    for name, field in model.model_fields.items():
        env_name = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_env_names(annotation, f"{env_name}__")
        else:
            names.add(env_name)
    return names


def settings_from(env: dict[str, str]) -> Settings:
    """The settings a process builds from exactly this environment."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()
