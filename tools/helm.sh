#!/usr/bin/env bash
# Helm for the chart's tests (tests/unit/deploy): installs the pinned version once, with Go through
# the module proxy, into the git-ignored .local/tools/bin (as `make setup` does for uv), and prints
# its path. `make helm`; `make test` depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0
# What helm's own Makefile stamps into a release binary: its version, and the Kubernetes version
# that `helm template` and `helm lint` assume (1.<minor of k8s.io/client-go>, v0.37.0 in helm
# v3.22.0's go.mod). Without them it assumes Kubernetes 1.20, below the chart's kubeVersion.
K8S_VERSION_MINOR=37
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
for package in pkg/lint/rules pkg/chartutil; do
  LDFLAGS+=" -X helm.sh/helm/v3/${package}.k8sVersionMajor=1"
  LDFLAGS+=" -X helm.sh/helm/v3/${package}.k8sVersionMinor=${K8S_VERSION_MINOR}"
done

bin_dir="$PWD/.local/tools/bin"
helm="$bin_dir/helm"
if [[ "$("$helm" version --template '{{.Version}}' 2>/dev/null)" != "$HELM_VERSION" ]]; then
  command -v go >/dev/null || { echo "tools/helm.sh: installing helm needs Go (https://go.dev/dl/)" >&2; exit 1; }
  echo "installing helm ${HELM_VERSION} into ${bin_dir} (go install, once; a few minutes when Go's caches are cold)" >&2
  GOBIN="$bin_dir" go install -ldflags "$LDFLAGS" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
fi
echo "$helm"
