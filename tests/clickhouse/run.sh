#!/usr/bin/env bash
# Build a lake with lakewriter on the local stack (scripts/stack.sh up), then
# prove sql/ and `lakewriter ddl` against it with chdb (tests/clickhouse/*.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck disable=SC1091
source "${LAKEWRITER_STACK_DIR:-$ROOT/.stack}/env"
BIN="${LAKEWRITER_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lakewriter-target}/release/lakewriter}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

id="ch$(date +%s)$RANDOM"
topic="$id"
prefix="$id"
table="clickstream"
partitions=4

"$BIN" produce --brokers "$LAKEWRITER_TEST_BROKERS" --topic "$topic" --events 20000 --partitions "$partitions" \
  --malformed-ratio 0.01 --seed 3 --start-ms 1716000000000 --days 3 --tally "$WORK/tally.json"
"$BIN" run --brokers "$LAKEWRITER_TEST_BROKERS" --topics "$topic" --group "$id" --table "$table" \
  --lake "s3://$LAKEWRITER_TEST_BUCKET/$prefix" --s3-path-style --admin-addr off \
  --event-type-pointer /event_params/event_type --event-time-pointer /event_timestamp_ms/ts_ms \
  --until-caught-up --log-format json 2>"$WORK/run.log" || { cat "$WORK/run.log"; exit 1; }

# The same events again, in small flushes: the lake test_compaction.py compacts while it queries.
"$BIN" run --brokers "$LAKEWRITER_TEST_BROKERS" --topics "$topic" --group "${id}c" --table "$table" \
  --lake "s3://$LAKEWRITER_TEST_BUCKET/${prefix}c" --s3-path-style --admin-addr off \
  --event-type-pointer /event_params/event_type --event-time-pointer /event_timestamp_ms/ts_ms \
  --flush-rows 100 --until-caught-up --log-format json 2>"$WORK/run-c.log" || { cat "$WORK/run-c.log"; exit 1; }

# The producer's tally → what the SQL tests expect.
python3 - "$WORK/tally.json" "$WORK/expected.json" "$topic" "$partitions" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
topic, parts = sys.argv[3], int(sys.argv[4])
sample = dict(t["sample"])
i = t["sample_index"]
# One producer into a fresh topic, round-robin: message i is offset i // parts of partition i % parts.
sample.update({"_topic": topic, "_partition": i % parts, "_offset": i // parts})
json.dump({"total": t["good"], "by_partition": t["by_partition"], "sample": sample}, open(sys.argv[2], "w"))
PY

"$BIN" ddl --lake "s3://$LAKEWRITER_TEST_BUCKET/$prefix" --table "$table" --s3-path-style > "$WORK/ddl.sql"

export LW_S3_ENDPOINT="$LAKEWRITER_TEST_S3_ENDPOINT" LW_BUCKET="$LAKEWRITER_TEST_BUCKET" LW_PREFIX="$prefix" \
  LW_TABLE="$table" LW_EXPECTED="$WORK/expected.json" LW_DDL="$WORK/ddl.sql" \
  LW_COMPACT_PREFIX="${prefix}c" LW_BIN="$BIN"
cd "$ROOT"
python3 -m pytest -q -p no:cacheprovider tests/clickhouse
