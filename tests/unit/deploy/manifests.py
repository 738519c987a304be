"""The Kubernetes manifests of the Helm chart (deploy/helm/trellis), as `helm template` renders
them, and the settings a container of them would build.

Helm is the pinned one that tools/helm.sh installs into .local/tools/bin (`make helm`, a
dependency of `make test`). tools/run-tests.sh passes its path as CHART_TEST_HELM, so under `make
test` the chart's tests run or fail, never skip; elsewhere they skip when no helm is found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from pydantic import BaseModel

from trellis.common.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "trellis"
# Example values files beside the chart (one per kind of district).
EXAMPLE_VALUES = sorted((ROOT / "deploy" / "helm").glob("*.yaml"))
NAMESPACE = "trellis"
SERVICES = ("ingest", "mastery", "recommender", "reporting")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
SKIP_REASON = "helm is not installed: `make helm` (tools/helm.sh) installs it into .local/tools/bin"

Doc = dict[str, Any]


def helm_path() -> str | None:
    """CHART_TEST_HELM when set (it must then work), else the project's install, else PATH."""
    if configured := os.environ.get("CHART_TEST_HELM"):
        return configured
    installed = ROOT / ".local" / "tools" / "bin" / "helm"
    return str(installed) if installed.is_file() else shutil.which("helm")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    command = helm_path()
    assert command is not None, SKIP_REASON
    return subprocess.run([command, *args], capture_output=True, text=True, cwd=ROOT)


@dataclass(frozen=True)
class Release:
    """One `helm template` of the chart: a release name, values files and --set pairs."""

    name: str = "trellis"
    values: tuple[Path, ...] = ()
    set_values: tuple[str, ...] = ()

    def args(self) -> list[str]:
        return [
            "template",
            self.name,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *(f"--values={path}" for path in self.values),
            *(f"--set={pair}" for pair in self.set_values),
        ]


def render(release: Release) -> list[Doc]:
    out = helm(*release.args())
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
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
    for name, field_info in model.model_fields.items():
        env_name = f"{prefix}{name.upper()}"
        annotation = field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_env_names(annotation, f"{env_name}__")
        else:
            names.add(env_name)
    return names


def settings_from(env: dict[str, str]) -> Settings:
    """The settings a process builds from exactly this environment."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()
