#!/usr/bin/env bash
# The project's own single-node Apache Kafka (KRaft) for local runs and tests.
#
#   deploy/local/kafka.sh fetch     resolve the broker jars with Maven into .local/kafka/libs (once per pom.xml)
#   deploy/local/kafka.sh start     fetch if needed, render config, format storage once, start, wait until it answers
#   deploy/local/kafka.sh stop      SIGTERM, up to KAFKA_STOP_TIMEOUT s (30), then SIGKILL
#   deploy/local/kafka.sh status    exit 0 if running and answering, 3 if not running, 1 if running but not answering
#   deploy/local/kafka.sh clean     stop, then remove the instance directory (data, logs, config)
#   deploy/local/kafka.sh logs      print the end of the broker's log
#
# Instance selection (environment):
#   KAFKA_PORT              client port (default 9092)
#   KAFKA_CONTROLLER_PORT   KRaft controller port (default KAFKA_PORT + 1)
#   KAFKA_HOME              instance directory (default .local/kafka/instance-$KAFKA_PORT)
#   KAFKA_HEAP_OPTS         JVM heap (default "-Xms256m -Xmx1g")
#   KAFKA_START_TIMEOUT     seconds to wait for the broker to answer (default 90)
#   KAFKA_STOP_TIMEOUT      seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_EXTRA_CONFIG      a file of server properties appended to the rendered configuration; its
#                           keys override the template's (more listeners, TLS, SASL: see
#                           tests/integration/common/test_kafka_security.py). Keep the PLAINTEXT
#                           listener on KAFKA_PORT: the readiness check uses it.
#   KAFKA_FORMAT_ARGS       more arguments of the storage format (a fresh instance only), split on
#                           spaces, e.g. "--add-scram SCRAM-SHA-512=[name=app,password=secret]"
#   PYTHON                  interpreter with kafka-python, for the readiness check (default .venv/bin/python)
#   JAVA_HOME / JAVA        the Java (>= 17) to run the broker with (default: java on PATH)
#   MVN                     the Maven command for `fetch` (default mvn)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONF_DIR="$ROOT/deploy/local/kafka"
POM="$CONF_DIR/pom.xml"
TEMPLATE="$CONF_DIR/server.properties.template"
LOG4J_CONF="$CONF_DIR/log4j2.properties"
LOCAL_DIR="$ROOT/.local/kafka"
LIBS_DIR="$LOCAL_DIR/libs"
STAMP="$LIBS_DIR/.fetched"

say() { echo "kafka.sh: $*"; }
die() { echo "kafka.sh: error: $*" >&2; exit 1; }

check_port() {
  local name="$1" value="$2"
  if [[ ! "$value" =~ ^[0-9]+$ ]] || ((10#$value < 1 || 10#$value > 65535)); then
    die "$name must be a port number (1-65535), got '$value'"
  fi
}

KAFKA_PORT="${KAFKA_PORT:-9092}"
check_port KAFKA_PORT "$KAFKA_PORT"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((10#$KAFKA_PORT + 1))}"
check_port KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
KAFKA_PORT=$((10#$KAFKA_PORT)) KAFKA_CONTROLLER_PORT=$((10#$KAFKA_CONTROLLER_PORT))
KAFKA_HOME="${KAFKA_HOME:-$LOCAL_DIR/instance-$KAFKA_PORT}"
case "$KAFKA_HOME" in /*) ;; *) KAFKA_HOME="$PWD/$KAFKA_HOME" ;; esac
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MVN="${MVN:-mvn}"
if [[ -n "${JAVA:-}" ]]; then :
elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"
else JAVA=java
fi

CONFIG="$KAFKA_HOME/server.properties"
DATA_DIR="$KAFKA_HOME/data"
LOG_DIR="$KAFKA_HOME/logs"
OUT_FILE="$LOG_DIR/kafka.out"
PID_FILE="$KAFKA_HOME/kafka.pid"
PORTS_FILE="$KAFKA_HOME/ports"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

# --- Java -------------------------------------------------------------------------------------------

require_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (need Java 17 or newer for Kafka 4.x: install a JDK/JRE 17+, e.g. 'apt-get install openjdk-17-jre-headless', or set JAVA_HOME)"
  local line version major
  line="$("$JAVA" -version 2>&1 | grep -m1 -E 'version "' || true)"
  version="$(sed -E 's/.*version "([^"]+)".*/\1/' <<<"$line")"
  if [[ "$version" == 1.* ]]; then major="$(cut -d. -f2 <<<"$version")"; else major="${version%%[.+-]*}"; fi
  [[ "$major" =~ ^[0-9]+$ ]] || die "cannot tell the version of '$JAVA' (output: ${line:-none}); Kafka 4.x needs Java 17 or newer"
  ((major >= 17)) || die "Kafka 4.x needs Java 17 or newer, but '$JAVA' is Java $version (set JAVA_HOME to a JDK 17+)"
}

# --- fetch ------------------------------------------------------------------------------------------

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

fetched() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(pom_hash)" ]]; }

cmd_fetch() {
  mkdir -p "$LOCAL_DIR"
  # One fetch at a time (make test and a developer's shell may race); the loser then finds the stamp.
  exec 8>"$LOCAL_DIR/.fetch.lock"
  flock 8
  if fetched; then
    say "broker jars up to date in ${LIBS_DIR#"$ROOT"/}"
    exec 8>&-
    return 0
  fi
  command -v "$MVN" >/dev/null 2>&1 || die "Maven ('$MVN') not found: it resolves the Kafka jars from Maven Central (install maven, or set MVN)"
  say "fetching Apache Kafka jars with Maven (${POM#"$ROOT"/})..."
  local tmp="$LOCAL_DIR/libs.tmp.$$"
  rm -rf "$tmp"
  # Maven 3.8 prints stray ANSI resets even in batch mode: strip them (pipefail keeps its exit status).
  if ! "$MVN" -q -B -Dstyle.color=never -f "$POM" package "-Dkafka.libs.dir=$tmp" 2>&1 | sed -u $'s/\x1b\\[[0-9;]*m//g'; then
    rm -rf "$tmp"
    die "Maven could not resolve the Kafka jars (see its output above)"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "Maven ran but no kafka_2.13 jar landed in $tmp"; }
  pom_hash >"$tmp/.fetched"
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  rm -rf "$CONF_DIR/target"  # Maven's build directory of the pom: nothing in it is needed
  say "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars into ${LIBS_DIR#"$ROOT"/}"
  exec 8>&-
}

# --- process helpers --------------------------------------------------------------------------------

# The pid of this instance's broker if it is alive: the pid file's, checked against the process's
# command line (a reused pid is not ours); without a pid file, the process whose command line names
# this instance's server.properties (so a lost pid file never leaves an unstoppable broker).
is_our_broker() {
  [[ -r "/proc/$1/cmdline" ]] || return 1
  tr '\0' '\n' <"/proc/$1/cmdline" | grep -qxF -- "$CONFIG"
}

running_pid() {
  local pid=""
  if [[ -f "$PID_FILE" ]]; then
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && is_our_broker "$pid"; then
      echo "$pid"
      return 0
    fi
  fi
  local file
  while read -r file; do
    pid="$(cut -d/ -f3 <<<"$file")"
    if is_our_broker "$pid" && tr '\0' '\n' <"$file" 2>/dev/null | grep -qx 'kafka\.Kafka'; then
      [[ ! -d "$KAFKA_HOME" ]] || echo "$pid" >"$PID_FILE"
      echo "$pid"
      return 0
    fi
  done < <(grep -laF -- "$CONFIG" /proc/[0-9]*/cmdline 2>/dev/null || true)
  return 1
}

# One start/stop/clean at a time per instance. The broker must not inherit the lock's descriptor.
lock_instance() {
  if [[ "${1:-}" != --create && ! -d "$KAFKA_HOME" ]]; then return 0; fi
  mkdir -p "$KAFKA_HOME"
  exec 9>"$KAFKA_HOME/.lock"
  flock 9
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when the broker answers a metadata request (kafka-python admin client), or, without a usable
# Python, when its port accepts connections and the log says the server started.
answering() {
  port_open "$KAFKA_PORT" || return 1
  if [[ -x "$PYTHON" ]] && "$PYTHON" -c 'import kafka' 2>/dev/null; then
    timeout 20 "$PYTHON" - "$BOOTSTRAP" >/dev/null 2>"$KAFKA_HOME/ready-check.err" <<'PY'
import sys
from kafka import KafkaAdminClient

admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000)
try:
    admin.list_topics()
finally:
    admin.close()
PY
  else
    grep -q "Kafka Server started" "$LOG_DIR/server.log" 2>/dev/null
  fi
}

# The end of what this start wrote: the console output (JVM errors, WARN and above) and the log.
SERVER_LOG_FROM=1
log_tail() {
  local lines="${1:-40}"
  if [[ -s "$OUT_FILE" ]]; then
    echo "----- last lines of $OUT_FILE -----" >&2
    tail -n "$lines" "$OUT_FILE" >&2
  fi
  if [[ -s "$LOG_DIR/server.log" ]]; then
    echo "----- last lines of $LOG_DIR/server.log -----" >&2
    tail -n "+$SERVER_LOG_FROM" "$LOG_DIR/server.log" | tail -n "$lines" >&2
  fi
  if [[ -s "$KAFKA_HOME/ready-check.err" ]]; then
    echo "----- last readiness check ($BOOTSTRAP) -----" >&2
    tail -n 5 "$KAFKA_HOME/ready-check.err" >&2
  fi
}

# --- start ------------------------------------------------------------------------------------------

render_config() {
  mkdir -p "$KAFKA_HOME" "$DATA_DIR" "$LOG_DIR"
  [[ "$DATA_DIR" != *'|'* && "$DATA_DIR" != *'&'* ]] || die "KAFKA_HOME must not contain '|' or '&': $KAFKA_HOME"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@KAFKA_DATA_DIR@|$DATA_DIR|g" \
      "$TEMPLATE" >"$CONFIG.tmp"
  if [[ -n "${KAFKA_EXTRA_CONFIG:-}" ]]; then
    [[ -r "$KAFKA_EXTRA_CONFIG" ]] || die "KAFKA_EXTRA_CONFIG is not a readable file: $KAFKA_EXTRA_CONFIG"
    printf '\n# From KAFKA_EXTRA_CONFIG (%s)\n' "$KAFKA_EXTRA_CONFIG" >>"$CONFIG.tmp"
    cat "$KAFKA_EXTRA_CONFIG" >>"$CONFIG.tmp"
  fi
  mv "$CONFIG.tmp" "$CONFIG"
}

# A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'
# (the same rule as org.apache.kafka.common.Uuid.randomUuid, without starting a JVM for it).
cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* && "$id" != AAAAAAAAAAAAAAAAAAAAA[AB] ]] && break
  done
  echo "$id"
}

format_storage() {
  local want="$KAFKA_PORT $KAFKA_CONTROLLER_PORT"
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    # --standalone writes the controller's endpoint into the metadata log: another port needs a fresh format.
    if [[ -f "$PORTS_FILE" && "$(cat "$PORTS_FILE")" != "$want" ]]; then
      die "$KAFKA_HOME was formatted for ports $(cat "$PORTS_FILE"), not $want: run 'KAFKA_HOME=$KAFKA_HOME $0 clean' or use another KAFKA_HOME"
    fi
    return 0
  fi
  local id format_args
  id="$(cluster_id)"
  read -ra format_args <<<"${KAFKA_FORMAT_ARGS:-}"
  say "formatting storage in $DATA_DIR (cluster id $id)"
  if ! "$JAVA" -Xmx256m -cp "$LIBS_DIR/*" "-Dlog4j2.configurationFile=$LOG4J_CONF" "-Dkafka.logs.dir=$LOG_DIR" \
      kafka.tools.StorageTool format -t "$id" -c "$CONFIG" --standalone "${format_args[@]}" \
      >"$LOG_DIR/format.out" 2>&1; then
    cat "$LOG_DIR/format.out" >&2
    die "formatting the storage failed"
  fi
  echo "$want" >"$PORTS_FILE"
}

cmd_start() {
  [[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
  local pid
  if pid="$(running_pid)"; then
    if answering; then
      say "already running on $BOOTSTRAP (pid $pid, $KAFKA_HOME)"
      return 0
    fi
    say "pid $pid is running but not answering yet; waiting for it"
  else
    require_java
    fetched || cmd_fetch
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
      ! port_open "$p" || die "port $p on 127.0.0.1 is already in use by another process (not this instance: $KAFKA_HOME); choose other ports with KAFKA_PORT / KAFKA_CONTROLLER_PORT"
    done
    rm -f "$PID_FILE"
    render_config
    format_storage
    say "starting Kafka on $BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, instance $KAFKA_HOME)"
    echo "===== $(date -u +%FT%TZ) start =====" >>"$OUT_FILE"
    rm -f "$KAFKA_HOME/ready-check.err"
    SERVER_LOG_FROM=$(($(wc -l <"$LOG_DIR/server.log" 2>/dev/null || echo 0) + 1))
    # setsid: its own session, so a Ctrl-C in the shell (or make) that started it does not reach it.
    # The inner shell writes its pid and execs the JVM, so the pid file names the broker itself.
    # shellcheck disable=SC2086,SC2016  # KAFKA_HEAP_OPTS is a list of options; $$ is the inner shell's
    nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
      "$JAVA" $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      "-Dlog4j2.configurationFile=$LOG4J_CONF" "-Dkafka.logs.dir=$LOG_DIR" \
      -cp "$LIBS_DIR/*" kafka.Kafka "$CONFIG" \
      </dev/null >>"$OUT_FILE" 2>&1 9>&- 8>&- &
    for _ in $(seq 50); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ -n "$pid" ]] || { log_tail; die "the broker process did not start"; }
  fi

  local start=$SECONDS
  while ((SECONDS - start < KAFKA_START_TIMEOUT)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      log_tail 60
      die "the broker (pid $pid) exited during startup; see the log above"
    fi
    if answering; then
      say "ready on $BOOTSTRAP (pid $pid) after $((SECONDS - start)) s"
      return 0
    fi
    sleep 0.5
  done
  log_tail 60
  die "the broker (pid $pid) did not answer on $BOOTSTRAP within ${KAFKA_START_TIMEOUT}s; it is still running: '$0 stop' ends it"
}

# --- stop, status, clean ----------------------------------------------------------------------------

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    say "not running ($KAFKA_HOME)"
    return 0
  fi
  say "stopping Kafka on $BOOTSTRAP (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local start=$SECONDS
  while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < KAFKA_STOP_TIMEOUT)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    say "still running after ${KAFKA_STOP_TIMEOUT}s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$PID_FILE"
  say "stopped after $((SECONDS - start)) s"
}

cmd_status() {
  local pid
  if ! pid="$(running_pid)"; then
    say "not running ($KAFKA_HOME)"
    return 3
  fi
  if answering; then
    say "running on $BOOTSTRAP (pid $pid, $KAFKA_HOME)"
    return 0
  fi
  say "pid $pid is running but does not answer on $BOOTSTRAP ($KAFKA_HOME)"
  return 1
}

cmd_clean() {
  cmd_stop
  if [[ -d "$KAFKA_HOME" ]]; then
    rm -rf "$KAFKA_HOME"
    say "removed $KAFKA_HOME"
  fi
}

cmd_logs() { tail -n "${1:-100}" "$LOG_DIR/server.log"; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

case "${1:-}" in
  fetch) require_java; cmd_fetch ;;
  start) lock_instance --create; cmd_start ;;
  stop) lock_instance; cmd_stop ;;
  status) cmd_status ;;
  clean) lock_instance; cmd_clean ;;
  logs) shift; cmd_logs "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
