#!/usr/bin/env bash
# `make test`: start a Kafka broker of the tests' own (fresh data, its own port), run every test
# level against it, and stop it whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

export KAFKA_PORT="${TEST_KAFKA_PORT:-19092}"
export KAFKA_HOME=".local/kafka/test-instance"
export TRELLIS_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:${KAFKA_PORT}"
# The chart's tests (tests/unit/deploy) render with this helm: set, they never skip.
CHART_TEST_HELM="$(tools/helm.sh)"
export CHART_TEST_HELM

deploy/local/kafka.sh clean >/dev/null
trap 'deploy/local/kafka.sh stop' EXIT
deploy/local/kafka.sh start

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
fi
exit "$status"
