#!/usr/bin/env bash
# Reproducible end-to-end benchmark on the local test ground.
#
#   scripts/bench.sh [N] [--big] [--perf] [--passes LIST] [--reps R] [--no-build] [--keep]
#
# Brings up its own broker (tansu, sqlite engine) and S3 server (s3s-fs) on
# ports apart from the test suite's, produces N clickstream events (default
# 1,000,000) to 8 partitions, then reads them all, each pass with a fresh
# consumer group, every process timed with `/usr/bin/time -v`:
#   consume-only   the broker's ceiling: a Python confluent-kafka consumer that reads and drops
#   lakewriter     `lakewriter run --until-caught-up` into s3://lake/lw
#   seed-b100000   the seeds' Python consumer (json.loads + pandas + to_parquet), 100,000-row batches
#   seed-b100      the same as written in the seed, 100-row batches
# and prints the results table with the performance targets (CPU per event, wall rate, peak RSS, ratios to the seed consumer).
#
#   compact        (not in the default list; add it to --passes) compaction, three parts:
#                  1. `lakewriter run --until-caught-up --flush-rows 2000` writes the N events as many
#                     small files into s3://lake/lw-compact (pass compact-write), then
#                     `lakewriter compact --once --min-age 0s --grace 1s` merges them (compact-s3):
#                     input and output files and MB, wall, CPU, MB of input Parquet per CPU-second,
#                     peak RSS (target ≥ 50 MB/s per core);
#                  2. three chdb queries over that lake's s3() glob, best of 3, before and after the
#                     compaction (scripts/bench/compact.py): the full scan, one hour of _event_time,
#                     one (date, event type); their answers must be equal (the run exits 1 otherwise);
#                     target after / before ≤ 1/5 for the first two;
#                  3. `lakewriter compact --target-file-size 256MiB` over one directory of ≥ 2 GiB: the
#                     largest directory of a `lakewriter demo --events 1000000` lake, its files copied under
#                     new names until the size is reached; as a file:// lake (compact-big) and through the
#                     S3 server (compact-big-s3); target peak RSS ≤ 300 MB. Then the same size of
#                     distinct rows (the files' copies shifted in event time, scripts/bench/distinct_dir.py)
#                     as a file:// lake (compact-distinct), where the output is as large as the input.
#                     Needs ~8 GiB free in the stack directory; removed afterwards.
#                  LAKEWRITER_BENCH_COMPACT_FLUSH_ROWS (2000), LAKEWRITER_BENCH_COMPACT_BIG_MIB (2048) change them.
#   --steady       also a steady-load pass: the writer in stream mode (--flush-interval 10s) while
#                  events arrive at 2,000/s for 120 s on 8 partitions; reports files and partitions per
#                  flush (LAKEWRITER_BENCH_STEADY_RATE, LAKEWRITER_BENCH_STEADY_SECS change the load)
#   --big          also catch up a 5,000,000-event backlog (separate topic) for peak RSS (target ≤ 300 MB)
#   --perf         also profile one more lakewriter pass with `perf record` (top functions by self time)
#   --passes LIST  comma-separated subset of the passes above (default: all four)
#   --reps R       run the lakewriter pass R times (fresh group each), taking turns with as many
#                  seed-b100000 passes when that pass is selected; the checks use the means —
#                  one pass varies by about ±10% here, and the host's speed drifts over minutes
#   --no-build     use the existing release binary (default: `cargo build --release` first)
#   --keep         keep the broker's data and the written lake in the stack directory afterwards
#
# Results go to <stack dir>/results/<run id>/ (default .stack-bench/, git-ignored by a
# .gitignore inside it); summary.md there is the table. Environment knobs: LAKEWRITER_BENCH_KAFKA_PORT
# (29092), LAKEWRITER_BENCH_S3_PORT (29000), LAKEWRITER_BENCH_STACK_DIR, CARGO_TARGET_DIR,
# LAKEWRITER_BENCH_WRITER_BIN (the binary the writer passes run, e.g. an older build to compare
# against; events are always produced with this checkout's), LAKEWRITER_BENCH_PERF_ARGS (extra `perf record` arguments, e.g. "--call-graph dwarf,16384 -F 199").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/bench"
export PATH="$HOME/.cargo/bin:$PATH"

N=1000000
BIG=0
STEADY=0
STEADY_RATE="${LAKEWRITER_BENCH_STEADY_RATE:-2000}"
STEADY_SECS="${LAKEWRITER_BENCH_STEADY_SECS:-120}"
PERF=0
BUILD=1
KEEP=0
PASSES="consume-only,lakewriter,seed-b100000,seed-b100"
BIG_N=5000000
REPS=1
COMPACT_FLUSH_ROWS="${LAKEWRITER_BENCH_COMPACT_FLUSH_ROWS:-2000}"
COMPACT_BIG_MIB="${LAKEWRITER_BENCH_COMPACT_BIG_MIB:-2048}"
COMPACT_FAILED=0
PARTITIONS=8
SEED=7
START_MS=1716000000000 # 2024-05-18T02:40Z; events span 2 days

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
while (($#)); do
  case "$1" in
    --big) BIG=1 ;;
    --steady) STEADY=1 ;;
    --perf) PERF=1 ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --passes) PASSES="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    --passes=*) PASSES="${1#*=}" ;;
    --reps=*) REPS="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    ''|*[!0-9]*) echo "bench: unknown argument $1" >&2; usage >&2; exit 2 ;;
    *) N="$1" ;;
  esac
  shift
done
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --reps needs a positive number" >&2; exit 2; }
want() { [[ ",$PASSES," == *",$1,"* ]]; }

log() { printf '\nbench: %s\n' "$*" >&2; }

# Nothing from the caller's LAKEWRITER_* environment (e.g. a sourced .stack/env or
# LAKEWRITER_FLUSH_ROWS) may change what is measured.
for v in $(compgen -e | grep '^LAKEWRITER_' || true); do
  case "$v" in LAKEWRITER_BENCH_*) ;; *) unset "$v" ;; esac
done
export LAKEWRITER_STACK_DIR="${LAKEWRITER_BENCH_STACK_DIR:-$ROOT/.stack-bench}"
export LAKEWRITER_KAFKA_PORT="${LAKEWRITER_BENCH_KAFKA_PORT:-29092}"
export LAKEWRITER_S3_PORT="${LAKEWRITER_BENCH_S3_PORT:-29000}"
export LAKEWRITER_TEST_BUCKET=lake
STACK="$LAKEWRITER_STACK_DIR"
# The same warm build cache as scripts/test.sh.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakewriter-target}"
BIN="$CARGO_TARGET_DIR/release/lakewriter"
WRITER_BIN="${LAKEWRITER_BENCH_WRITER_BIN:-$BIN}"
PY="${PYTHON:-python3}"

# ---------------------------------------------------------------- prerequisites
if [[ ! -x /usr/bin/time ]]; then
  log "installing GNU time (Debian package 'time')"
  apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }
fi
if ! "$PY" -c 'import confluent_kafka, pandas, pyarrow, boto3' 2>/dev/null; then
  log "installing the Python baseline's packages (confluent-kafka pandas pyarrow boto3)"
  "$PY" -m pip install --quiet confluent-kafka pandas pyarrow boto3
fi
if want compact && ! "$PY" -c 'import chdb' 2>/dev/null; then
  log "installing chdb (the compact pass's queries)"
  "$PY" -m pip install --quiet chdb
fi
if ((BUILD)); then
  log "cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --bin lakewriter)
fi
[[ -x "$BIN" ]] || { echo "bench: no binary at $BIN (run without --no-build)" >&2; exit 1; }

# ---------------------------------------------------------------- the stack
mkdir -p "$STACK"
printf '*\n' >"$STACK/.gitignore"
cleanup() {
  "$ROOT/scripts/stack.sh" down >/dev/null 2>&1 || true
  # The broker's log and the lake can reach gigabytes (--big); keep only the results.
  ((KEEP)) || rm -rf "${STACK:?}/kafka" "${STACK:?}/s3"
  rm -rf "${STACK:?}/compact-big" "${STACK:?}/compact-work" "${STACK:?}/s3/${LAKEWRITER_TEST_BUCKET:-lake}/lw-compact-big"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$ROOT/scripts/stack.sh" down >/dev/null 2>&1 || true # a previous run killed mid-way
# s3s-fs logs one "resolved route, op: …" line per request at this level: the S3 requests of
# each pass are counted from its log.
RUST_LOG=s3s::ops=debug "$ROOT/scripts/stack.sh" up
# shellcheck disable=SC1091
source "$STACK/env"
BROKERS="$LAKEWRITER_TEST_BROKERS"
KAFKA_PID="$(cat "$STACK/kafka.pid")"
CLK_TCK="$(getconf CLK_TCK)"

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
RUN="$STACK/results/$RUN_ID"
mkdir -p "$RUN"
TOPIC=clickstream

# s3_mark / s3_count NAME MARK: the S3 requests since the mark, by operation, into NAME.s3ops.
s3_mark() { wc -l <"$STACK/s3.log"; }
s3_count() {
  tail -n "+$(($2 + 1))" "$STACK/s3.log" | grep -o 'resolved route, op: [A-Za-z0-9]*' | awk '{print $4}' \
    | sort | uniq -c >"$RUN/$1.s3ops" || true
}

broker_ticks() { awk '{print $14 + $15}' "/proc/$KAFKA_PID/stat" 2>/dev/null || echo 0; }

# run_pass NAME TIMEOUT_S CMD...: time one consumer process; never aborts the run.
run_pass() {
  local name="$1" limit="$2"; shift 2
  local b0 b1 s0 rc=0
  log "pass $name (timeout ${limit}s)"
  b0="$(broker_ticks)"
  s0="$(s3_mark)"
  /usr/bin/time -v -o "$RUN/$name.time" timeout -k 10 "$limit" "$@" >"$RUN/$name.out" 2>"$RUN/$name.log" || rc=$?
  b1="$(broker_ticks)"
  s3_count "$name" "$s0"
  awk -v a="$b0" -v b="$b1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f\n", (b - a) / t }' >"$RUN/$name.broker"
  if ((rc != 0)); then
    log "pass $name exited $rc; last lines of its log:"
    tail -n 5 "$RUN/$name.log" >&2 || true
  fi
  grep -E 'Elapsed|Maximum resident|User time|System time' "$RUN/$name.time" | sed 's/^\s*/  /' >&2 || true
}

# lakewriter_cmd GROUP PREFIX TOPIC: sets LW_CMD to the writer's command line.
lakewriter_cmd() {
  LW_CMD=(env LAKEWRITER_LOG_FORMAT=json "$WRITER_BIN" run --brokers "$BROKERS" --topics "$3" --group "$1"
    --lake "s3://$LAKEWRITER_TEST_BUCKET/$2" --s3-path-style
    --event-type-pointer /event_params/event_type --event-time-pointer /event_timestamp_ms/ts_ms
    --until-caught-up)
}

# A pass should take N / (a few thousand per second) at worst; bound each one.
limit_for() { echo $((180 + $1 / 2000)); }

# ---------------------------------------------------------------- the run
{
  echo "# lakewriter benchmark run $RUN_ID"
  echo
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM; $(uname -r)"
  echo "- lakewriter $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted changes'); $(rustc --version 2>/dev/null || echo 'rustc ?')"
  [[ "$WRITER_BIN" == "$BIN" ]] || echo "- writer passes run $WRITER_BIN (LAKEWRITER_BENCH_WRITER_BIN)"
  echo "- broker: tansu (sqlite engine) on $BROKERS; S3: s3s-fs on $LAKEWRITER_TEST_S3_ENDPOINT"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RUN/header.md"
if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
  log "WARNING: the machine is busy (load $(cut -d' ' -f1 /proc/loadavg)); wall-clock figures will suffer"
  ps -eo pid,pcpu,comm --sort=-pcpu | head -6 >&2
fi

log "producing $N events to $TOPIC ($PARTITIONS partitions)"
timeout -k 10 "$(limit_for "$N")" "$BIN" produce --brokers "$BROKERS" --topic "$TOPIC" --events "$N" \
  --partitions "$PARTITIONS" --seed "$SEED" --start-ms "$START_MS" | tee "$RUN/produce.out"
echo "- produce: $(cat "$RUN/produce.out")" >>"$RUN/header.md"

LIMIT="$(limit_for "$N")"
if want consume-only; then
  run_pass consume-only "$LIMIT" "$PY" "$HERE/consume_only.py" --brokers "$BROKERS" --topic "$TOPIC" \
    --group "bench-co-$RUN_ID" --timeout "$LIMIT" --stats "$RUN/consume-only.json"
fi
# With --reps R the writer and the big-batch seed take turns (writer, seed, writer, seed, ...),
# so that both sample the same phases of the host, whose speed drifts by 10-20% over minutes;
# the ratio is taken between their means.
seed_pass() { # seed_pass NAME
  run_pass "$1" "$LIMIT" "$PY" "$HERE/seed_consumer.py" --brokers "$BROKERS" --topic "$TOPIC" \
    --group "$1-$RUN_ID" --bucket "$LAKEWRITER_TEST_BUCKET" --prefix "$1" --batch-size 100000 \
    --timeout "$LIMIT" --stats "$RUN/$1.json"
}
for ((r = 1; r <= REPS; r++)); do
  suffix=""
  ((r > 1)) && suffix="-r$r"
  if want lakewriter; then
    lakewriter_cmd "lw-$RUN_ID$suffix" "lw$suffix" "$TOPIC"
    run_pass "lakewriter$suffix" "$LIMIT" "${LW_CMD[@]}"
  fi
  if want seed-b100000; then
    seed_pass "seed-b100000$suffix"
  fi
done
if want seed-b100; then
  run_pass seed-b100 "$((LIMIT * 2))" "$PY" "$HERE/seed_consumer.py" --brokers "$BROKERS" --topic "$TOPIC" \
    --group "seed-b100-$RUN_ID" --bucket "$LAKEWRITER_TEST_BUCKET" --prefix seed-b100 --batch-size 100 \
    --timeout "$((LIMIT * 2))" --stats "$RUN/seed-b100.json"
fi

if ((PERF)); then
  if command -v perf >/dev/null 2>&1 && perf record -e cpu-clock -o "$RUN/perf-probe.data" -- true >/dev/null 2>&1; then
    rm -f "$RUN/perf-probe.data"
    log "profiling one more lakewriter pass (perf record -e cpu-clock, flat)"
    lakewriter_cmd "lw-perf-$RUN_ID" lw-perf "$TOPIC"
    # shellcheck disable=SC2086 # word splitting of the extra perf arguments is intended
    timeout -k 10 "$LIMIT" perf record -e cpu-clock -F 999 ${LAKEWRITER_BENCH_PERF_ARGS:-} -o "$RUN/perf.data" -- "${LW_CMD[@]}" \
      >"$RUN/perf.out" 2>"$RUN/perf.log" || log "perf pass exited $?"
    perf report -i "$RUN/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' \
      | sed 's/[ -]*$//' | head -40 >"$RUN/perf-symbols.txt" || true
    perf report -i "$RUN/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
      | "$PY" "$HERE/perf_breakdown.py" >"$RUN/perf-components.md" || true
  else
    log "perf is not usable here (apt-get install linux-perf); skipping --perf"
  fi
fi

if ((STEADY)); then
  steady_n=$((STEADY_RATE * STEADY_SECS))
  log "steady load: $STEADY_RATE events/s for ${STEADY_SECS}s to $TOPIC-steady ($PARTITIONS partitions), writer with --flush-interval 10s"
  # The producer creates the topic; the writer joins as it starts and reads from the beginning.
  "$BIN" produce --brokers "$BROKERS" --topic "$TOPIC-steady" --events "$steady_n" --partitions "$PARTITIONS" \
    --seed "$SEED" --start-ms "$(date +%s%3N)" --days 1 --rate "$STEADY_RATE" >"$RUN/produce-steady.out" 2>&1 &
  producer=$!
  s0="$(s3_mark)"
  env LAKEWRITER_LOG_FORMAT=json "$WRITER_BIN" run --brokers "$BROKERS" --topics "$TOPIC-steady" --group "lw-steady-$RUN_ID" \
    --lake "s3://$LAKEWRITER_TEST_BUCKET/lw-steady" --s3-path-style --flush-interval 10s \
    --event-type-pointer /event_params/event_type --event-time-pointer /event_timestamp_ms/ts_ms \
    >"$RUN/steady.out" 2>"$RUN/steady.log" &
  writer=$!
  wait "$producer" || log "steady producer exited $?"
  # Every event written (the flush lines' rows add up), then a clean stop.
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    written="$( (grep -o '"rows":[0-9]*' "$RUN/steady.log" || true) | awk -F: '{s += $2} END {print s + 0}')"
    ((written >= steady_n)) && break
    sleep 1
  done
  kill -TERM "$writer" 2>/dev/null || true
  wait "$writer" || log "steady writer exited $?"
  s3_count steady "$s0"
fi

if ((BIG)); then
  BIG_LIMIT="$(limit_for "$BIG_N")"
  log "producing $BIG_N events to $TOPIC-big for the RSS run"
  timeout -k 10 "$BIG_LIMIT" "$BIN" produce --brokers "$BROKERS" --topic "$TOPIC-big" --events "$BIG_N" \
    --partitions "$PARTITIONS" --seed "$SEED" --start-ms "$START_MS" | tee "$RUN/produce-big.out"
  lakewriter_cmd "lw-big-$RUN_ID" lw-big "$TOPIC-big"
  run_pass lakewriter-big "$BIG_LIMIT" "${LW_CMD[@]}"
fi

if want compact; then
  # 1. A lake of small files through the bench's S3 server, then one compaction of it.
  lakewriter_cmd "lw-compact-$RUN_ID" lw-compact "$TOPIC"
  run_pass compact-write "$LIMIT" "${LW_CMD[@]}" --flush-rows "$COMPACT_FLUSH_ROWS"
  # 2. The queries before, the compaction, the queries after (same answers, or the pass fails).
  glob="$LAKEWRITER_TEST_S3_ENDPOINT/$LAKEWRITER_TEST_BUCKET/lw-compact/$TOPIC/date=*/event_type=*/*.parquet"
  compact_queries() { # compact_queries NAME [--before FILE]
    local name="$1" rc=0; shift
    log "compact: queries $name compaction (chdb, best of 3)"
    "$PY" "$HERE/compact.py" queries --url "$glob" --access-key "$AWS_ACCESS_KEY_ID" \
      --secret-key "$AWS_SECRET_ACCESS_KEY" --start-ms "$START_MS" --out "$RUN/compact-$name.json" "$@" \
      2>"$RUN/compact-$name.err" || rc=$?
    cat "$RUN/compact-$name.err" >&2
    return "$rc"
  }
  # compact_run NAME LAKE [ARGS]: one timed `lakewriter compact --once` of LAKE.
  compact_run() {
    local name="$1" lake="$2"; shift 2
    mkdir -p "$STACK/compact-work"
    run_pass "$name" 1800 env LAKEWRITER_LOG_FORMAT=json "$WRITER_BIN" compact --lake "$lake" \
      --once --min-age 0s --grace 1s --work-dir "$STACK/compact-work" "$@"
    cat "$RUN/$name.out" >&2
    grep -q 'Exit status: 0$' "$RUN/$name.time" || { log "compact: $name failed"; COMPACT_FAILED=1; }
  }
  compact_queries before || { log "compact: the queries before compaction failed"; COMPACT_FAILED=1; }
  on_disk="$STACK/s3/$LAKEWRITER_TEST_BUCKET/lw-compact" # s3s-fs keeps each object as a file
  "$PY" "$HERE/compact.py" dir "$on_disk" --json "$RUN/compact-s3.before.json"
  compact_run compact-s3 "s3://$LAKEWRITER_TEST_BUCKET/lw-compact" --s3-path-style
  "$PY" "$HERE/compact.py" dir "$on_disk" --json "$RUN/compact-s3.after.json"
  compact_queries after --before "$RUN/compact-before.json" || { log "compact: the answers after compaction differ"; COMPACT_FAILED=1; }

  # 3. Peak RSS over one big directory: a demo lake's largest directory, copied under new names
  # until it holds COMPACT_BIG_MIB (every copy sorted by _event_time like the original; its
  # offsets repeat, which the merge does not look at). Compacted once as a file:// lake and
  # once through the S3 server (hard links of the same files placed on its disk).
  big="$STACK/compact-big"
  rm -rf "$big"
  need_kib=$((COMPACT_BIG_MIB * 1024 * 4))
  free_kib="$(df -Pk "$STACK" | awk 'NR == 2 {print $4}')"
  if ((free_kib < need_kib)); then
    log "compact: only $((free_kib / 1024)) MiB free under $STACK, the big directory needs $((need_kib / 1024)); skipping it"
  else
    log "compact: building a directory of $COMPACT_BIG_MIB MiB from a demo lake ($(df -h "$STACK" | awk 'NR == 2 {print $4}') free)"
    timeout -k 10 600 "$BIN" demo --events 1000000 --partitions "$PARTITIONS" --lake "$big/demo" >"$RUN/compact-demo.out" 2>&1
    src="$(for d in "$big"/demo/*/date=*/event_type=*/; do echo "$(du -sb "$d" | cut -f1) $d"; done | sort -n | tail -1 | cut -d' ' -f2-)"
    rel="${src#"$big/demo/"}"
    mkdir -p "$big/src/$rel"
    i=0
    while (($(du -sb "$big/src/$rel" | cut -f1) < COMPACT_BIG_MIB * 1048576)); do
      for f in "$src"*.parquet; do cp "$f" "$big/src/$rel/rep$i-$(basename "$f")"; done
      i=$((i + 1))
    done
    "$PY" "$HERE/compact.py" dir "$big/src" --json "$RUN/compact-big.before.json" \
      --source "$i copies of the $(ls "$src" | grep -c '\.parquet$') files of ${rel%/} of \`lakewriter demo --events 1000000\`"
    cp -r "$src" "$big/distinct-src"
    rm -rf "$big/demo"
    s3big="$STACK/s3/$LAKEWRITER_TEST_BUCKET/lw-compact-big"
    cp -al "$big/src" "$big/lake"
    rm -rf "$s3big" && cp -al "$big/src" "$s3big"
    compact_run compact-big "file://$big/lake" --target-file-size 256MiB
    "$PY" "$HERE/compact.py" dir "$big/lake" --json "$RUN/compact-big.after.json"
    compact_run compact-big-s3 "s3://$LAKEWRITER_TEST_BUCKET/lw-compact-big" --s3-path-style --target-file-size 256MiB
    "$PY" "$HERE/compact.py" dir "$s3big" --json "$RUN/compact-big-s3.after.json"
    rm -rf "$s3big" "$big/lake"
    # 4. Distinct rows: the same files copied with event times shifted past each other (the
    # copies above become neighbours once sorted and compress ~100×): the output side at full size.
    copies="$("$PY" "$HERE/distinct_dir.py" "$big/distinct-src" "$big/distinct/$rel" "$COMPACT_BIG_MIB")"
    "$PY" "$HERE/compact.py" dir "$big/distinct" --json "$RUN/compact-distinct.before.json" \
      --source "$copies time-shifted copies of the files of ${rel%/} (scripts/bench/distinct_dir.py)"
    compact_run compact-distinct "file://$big/distinct" --target-file-size 256MiB
    "$PY" "$HERE/compact.py" dir "$big/distinct" --json "$RUN/compact-distinct.after.json"
    rm -rf "$big"
  fi
fi

# ---------------------------------------------------------------- the report
{
  cat "$RUN/header.md"
  echo
  # report.py covers every pass but compact's (which it has no rows for when it ran alone).
  if ls "$RUN" | grep -qE '^(consume-only|lakewriter|seed-b|steady)'; then
    "$PY" "$HERE/report.py" "$RUN" --lake-dir "$STACK/s3/$LAKEWRITER_TEST_BUCKET/lw" \
      --big-lake-dir "$STACK/s3/$LAKEWRITER_TEST_BUCKET/lw-big" \
      --steady-lake-dir "$STACK/s3/$LAKEWRITER_TEST_BUCKET/lw-steady"
  fi
  if want compact; then
    echo
    "$PY" "$HERE/compact.py" report "$RUN" --flush-rows "$COMPACT_FLUSH_ROWS"
  fi
  if [[ -s "$RUN/perf-symbols.txt" ]]; then
    echo
    echo "Top functions of lakewriter by self CPU time (perf record -e cpu-clock, whole process):"
    echo
    echo '```'
    head -30 "$RUN/perf-symbols.txt"
    echo '```'
    echo
    cat "$RUN/perf-components.md"
  fi
} >"$RUN/summary.md"
cp "$RUN/summary.md" "$STACK/results/latest.md"
echo
cat "$RUN/summary.md"
echo
echo "bench: results in $RUN (summary.md)"
if ((COMPACT_FAILED)); then
  echo "bench: the compact pass FAILED (see above and $RUN/compact-*.err)" >&2
  exit 1
fi
