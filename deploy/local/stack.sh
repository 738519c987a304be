#!/usr/bin/env bash
# The single-machine stack: Apache Kafka (KRaft) + ingest, mastery, recommender, reporting.
#   up        start Kafka, create the topics, start the services in the background, wait for health
#   down      stop the services, then Kafka
#   run       up, load the demo district, print where everything listens, wait for Ctrl-C, down
#   services-up / services-down   the services alone, against a Kafka that runs already (tests)
# Settings come from deploy/local/dev.env unless the environment sets them already.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=.venv/bin/python
RUN_DIR="${STACK_RUN_DIR:-.local/run}"
SERVICES=(ingest mastery recommender reporting)

from_dev_env=()
set -a
while IFS='=' read -r name value; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  [[ -n "${!name:-}" ]] || { eval "$name=$value"; from_dev_env+=("$name"); }
done < deploy/local/dev.env
set +a
export TRELLIS_KAFKA__BOOTSTRAP_SERVERS="${TRELLIS_KAFKA__BOOTSTRAP_SERVERS:-127.0.0.1:${KAFKA_PORT:-9092}}"

# dev.env's principal of role `service` (whole tenant): the demo load uses it, and so does the
# recommender towards mastery (interest grouping reads profiles by pseudonymous id, which mastery
# allows only to callers scoped to the whole tenant). The recommender gets it only while dev.env's
# tokens are in force and the environment names no token of its own: a caller that brings its own
# tokens (the e2e tests, bench/benchmarks/recommender_latency.py) keeps its own choice, which is
# also why it is not a line of dev.env (every process, whatever the tokens, would read it).
DEV_SERVICE_TOKEN=dev-service-token
recommender_env=()
if [[ " ${from_dev_env[*]} " == *" TRELLIS_AUTH__TOKENS "* && -z "${TRELLIS_RECOMMENDER__MASTERY_TOKEN:-}" ]]; then
  recommender_env=(env "TRELLIS_RECOMMENDER__MASTERY_TOKEN=$DEV_SERVICE_TOKEN")
fi

port_of() {  # the gRPC port of a service, as its settings say
  $PY -c "from trellis.common.settings import Settings; print(Settings().services.$1.port)"
}

command_of() {
  case "$1" in
    mastery) echo "$PY -m trellis.mastery worker" ;;
    recommender) echo "${recommender_env[*]} $PY -m trellis.recommender serve" ;;
    *) echo "$PY -m trellis.$1 serve" ;;
  esac
}

services_up() {
  mkdir -p "$RUN_DIR"
  targets=()
  for service in "${SERVICES[@]}"; do
    pid_file="$RUN_DIR/$service.pid"
    if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      echo "$service already running (pid $(cat "$pid_file"))"
    else
      # setsid: Ctrl-C in the terminal reaches this script, which stops the services in order.
      setsid $(command_of "$service") >"$RUN_DIR/$service.log" 2>&1 &
      echo $! >"$pid_file"
    fi
    targets+=("127.0.0.1:$(port_of "$service")")
  done
  if ! $PY tools/wait_serving.py "${targets[@]}" --timeout "${STACK_HEALTH_TIMEOUT:-120}"; then
    for service in "${SERVICES[@]}"; do
      echo "--- $RUN_DIR/$service.log (last lines)"; tail -n 20 "$RUN_DIR/$service.log" || true
    done
    return 1
  fi
}

services_down() {
  for service in "${SERVICES[@]}"; do
    pid_file="$RUN_DIR/$service.pid"
    [[ -f "$pid_file" ]] || continue
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "$service did not stop within 30 s: killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$pid_file"
  done
}

up() {
  deploy/local/kafka.sh start
  $PY -m trellis.common.kafka
  services_up
}

down() {
  services_down
  deploy/local/kafka.sh stop
}

stop_all() {
  # Ctrl-C may have closed the pipe that stdout goes to (`make run | tee ...`): the stop must go on.
  trap '' INT TERM PIPE
  { echo; echo "stopping..."; down 2>&1; } | tee -p "$RUN_DIR/stop.log" || true
  exit 0
}

# A start that fails (a service that never serves, the demo not loaded) stops what it started,
# so nothing is left holding the ports; its logs stay in $RUN_DIR.
stop_after_failed_start() {
  local status=$?
  ((status == 0)) && return
  echo "start failed (exit $status): stopping what started" >&2
  down >&2 || true
}

run() {
  trap stop_all INT TERM
  trap stop_after_failed_start EXIT
  up
  $PY -m trellis.ingest load deploy/local/demo --tenant demo-district --token "$DEV_SERVICE_TOKEN"
  trap - EXIT
  cat <<INFO

Trellis is running (Ctrl-C stops everything):
  Kafka        $TRELLIS_KAFKA__BOOTSTRAP_SERVERS
  ingest       127.0.0.1:$(port_of ingest)
  mastery      127.0.0.1:$(port_of mastery)
  recommender  127.0.0.1:$(port_of recommender)
  reporting    127.0.0.1:$(port_of reporting)
  logs         $RUN_DIR/*.log

Example: the mastery of one demo learner, from the reporting service:
  $PY tools/example_call.py --target 127.0.0.1:$(port_of reporting) --token dev-admin-token stu-001
INFO
  while true; do sleep 1; done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  run) run ;;
  services-up) services_up ;;
  services-down) services_down ;;
  *) echo "usage: $0 up|down|run|services-up|services-down" >&2; exit 2 ;;
esac
