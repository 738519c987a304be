"""deploy/Dockerfile against the workspace: it cannot be built here (no container engine), so
what would break the build or drift from the repository is checked by reading it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.deploy.manifests import (
    SKIP_REASON,
    WORKLOAD_KINDS,
    Release,
    helm_path,
    of_kind,
    render,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()


def test_every_workspace_member_is_copied_before_the_locked_sync() -> None:
    members = {str(p.relative_to(ROOT)) for p in ROOT.glob("services/*/pyproject.toml")}
    copied = set(re.findall(r"^COPY (services/\S+/pyproject\.toml) ", DOCKERFILE, re.MULTILINE))
    assert copied == members


def test_the_image_uses_the_uv_that_the_makefile_pins() -> None:
    [pinned] = re.findall(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert f"ghcr.io/astral-sh/uv:{pinned} " in DOCKERFILE


@pytest.mark.skipif(helm_path() is None, reason=SKIP_REASON)
def test_the_image_runs_as_the_user_the_chart_names() -> None:
    [(uid, gid)] = re.findall(r"^USER (\d+):(\d+)$", DOCKERFILE, re.MULTILINE)
    assert f"--uid {uid} " in DOCKERFILE, "the user exists in the image"
    for doc in of_kind(render(Release()), *WORKLOAD_KINDS):
        pod = doc["spec"]["template"]["spec"]["securityContext"]
        assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))
