#!/usr/bin/env bash
# The local test ground: a Kafka-protocol broker (tansu, sqlite engine) and an
# S3 server (s3s-fs) on loopback. Installs them once (cached in ~/.cargo/bin).
#   scripts/stack.sh install|up|down|status|restart-kafka|stop-s3|start-s3
# `up` writes .stack/env with the endpoints and credentials for the tests.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${LAKEWRITER_STACK_DIR:-$ROOT/.stack}"
KAFKA_PORT="${LAKEWRITER_KAFKA_PORT:-19092}"
S3_PORT="${LAKEWRITER_S3_PORT:-19000}"
BUCKET="${LAKEWRITER_TEST_BUCKET:-lake}"
ACCESS_KEY="lakewriter"
SECRET_KEY="lakewriter-secret"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf 'stack: %s\n' "$*" >&2; }

install() {
  if ! command -v tansu >/dev/null 2>&1; then
    log "installing tansu 0.6.0 (first time only, ~12 min on 2 cores)"
    cargo install tansu@0.6.0 --locked --features dynostore,libsql
  fi
  if ! command -v s3s-fs >/dev/null 2>&1; then
    log "installing s3s-fs 0.14.1 (first time only, ~2 min)"
    cargo install s3s-fs@0.14.1 --locked --features binary
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port, seconds, name
  local deadline=$((SECONDS + $2))
  until port_open "$1"; do
    if (( SECONDS >= deadline )); then log "$3 did not open port $1 within $2 s"; return 1; fi
    sleep 0.2
  done
}

wait_port_closed() {
  local deadline=$((SECONDS + $2))
  while port_open "$1"; do
    if (( SECONDS >= deadline )); then log "port $1 still open after $2 s"; return 1; fi
    sleep 0.2
  done
}

running() { [[ -f "$STACK/$1.pid" ]] && kill -0 "$(cat "$STACK/$1.pid")" 2>/dev/null; }

start_kafka() {
  mkdir -p "$STACK/kafka"
  if port_open "$KAFKA_PORT"; then log "port $KAFKA_PORT is taken by something else"; return 1; fi
  (cd "$STACK/kafka" && exec tansu broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://kafka.db" >>"$STACK/kafka.log" 2>&1) &
  echo $! >"$STACK/kafka.pid"
  wait_port "$KAFKA_PORT" 60 tansu
  log "tansu listening on 127.0.0.1:$KAFKA_PORT (pid $(cat "$STACK/kafka.pid"))"
}

start_s3() {
  mkdir -p "$STACK/s3/$BUCKET"
  if port_open "$S3_PORT"; then log "port $S3_PORT is taken by something else"; return 1; fi
  s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
      "$STACK/s3" >>"$STACK/s3.log" 2>&1 &
  echo $! >"$STACK/s3.pid"
  wait_port "$S3_PORT" 30 s3s-fs
  log "s3s-fs listening on 127.0.0.1:$S3_PORT (pid $(cat "$STACK/s3.pid")), bucket $BUCKET"
}

stop() { # name port
  if running "$1"; then
    kill "$(cat "$STACK/$1.pid")" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while running "$1" && (( SECONDS < deadline )); do sleep 0.2; done
    running "$1" && kill -9 "$(cat "$STACK/$1.pid")" 2>/dev/null || true
    wait_port_closed "$2" 20 || true
  fi
  rm -f "$STACK/$1.pid"
}

write_env() {
  cat >"$STACK/env" <<ENV
export LAKEWRITER_TEST_BROKERS=127.0.0.1:$KAFKA_PORT
export LAKEWRITER_TEST_BUCKET=$BUCKET
export LAKEWRITER_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export LAKEWRITER_TEST_STACK=$STACK
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
ENV
}

case "${1:-}" in
  install) install ;;
  up)
    install
    mkdir -p "$STACK"
    # Fresh data each time: tests must not depend on an earlier run's leftovers.
    if ! running kafka; then rm -rf "$STACK/kafka"; start_kafka; fi
    if ! running s3; then rm -rf "$STACK/s3"; start_s3; fi
    write_env
    log "ready: source $STACK/env"
    ;;
  down) stop kafka "$KAFKA_PORT"; stop s3 "$S3_PORT"; log "stopped" ;;
  restart-kafka) stop kafka "$KAFKA_PORT"; start_kafka ;;
  ensure) # start whatever of the two is not running (after a failed fault test)
    running kafka || start_kafka
    running s3 || start_s3
    ;;
  stop-s3) stop s3 "$S3_PORT" ;;
  start-s3) start_s3 ;;
  status)
    running kafka && log "tansu up (pid $(cat "$STACK/kafka.pid"))" || log "tansu down"
    running s3 && log "s3s-fs up (pid $(cat "$STACK/s3.pid"))" || log "s3s-fs down"
    ;;
  *) echo "usage: $0 install|up|down|status|ensure|restart-kafka|stop-s3|start-s3" >&2; exit 2 ;;
esac
