#!/usr/bin/env bash
# The test command: installs what is missing, brings the local stack up,
# runs every test (Rust unit + integration against real tansu and s3s-fs,
# ClickHouse SQL through chdb, deploy manifests), brings the stack down.
# Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
# The machine's Python lives under pyenv; Debian's python3 refuses pip installs.
if [[ -d "$HOME/.pyenv/shims" ]]; then export PATH="$HOME/.pyenv/shims:$PATH"; fi
# Keep build artefacts between runs and clones: a cold build takes ~12 min here.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakewriter-target}"
export LAKEWRITER_BIN="$CARGO_TARGET_DIR/release/lakewriter"

step() { printf '\n=== %s\n' "$*"; }

step "install prerequisites"
if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
  (apt-get install -y libssl-dev pkg-config || (apt-get update && apt-get install -y libssl-dev pkg-config))
fi
python3 -c "import chdb, pytest, pyarrow" 2>/dev/null || python3 -m pip install --quiet chdb pytest pyarrow boto3
scripts/stack.sh install

step "build"
cargo build --release --locked

step "module graph (src/ modules import one another without a cycle)"
python3 scripts/module-graph.py "$ROOT" >/dev/null || python3 scripts/module-graph.py "$ROOT"

step "stack up"
scripts/stack.sh up
trap 'scripts/stack.sh down' EXIT
# shellcheck disable=SC1091
source "${LAKEWRITER_STACK_DIR:-$ROOT/.stack}/env"

LOGS="$(mktemp -d)"
step "cargo test (unit + integration)"
cargo test --release --locked --lib --bins --tests -- --test-threads=2 2>&1 | tee "$LOGS/cargo.log"

if [[ -x tests/clickhouse/run.sh ]]; then
  step "ClickHouse (chdb) over a lake written by lakewriter"
  tests/clickhouse/run.sh 2>&1 | tee "$LOGS/chdb.log"
fi

if [[ -x tests/deploy/validate.sh ]]; then
  step "deploy manifests"
  tests/deploy/validate.sh 2>&1 | tee "$LOGS/deploy.log"
fi

# One closing line over all three runners (pipefail has already stopped us on any failure).
total=$(cat "$LOGS"/*.log | grep -oE '(test result: ok\. [0-9]+ passed|^[0-9]+ passed in|^deploy: [0-9]+ passed)' \
  | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
step "all tests passed"
echo "lakewriter: $total passed, 0 failed"
