#!/usr/bin/env bash
# Measure a crowd on one lock and write the "Crowd on one lock" section of
# BENCHMARKS.md (the rest of the file is scripts/bench.sh's, which keeps
# this section when it rewrites the file).
#
#   scripts/bench/crowd.sh
#
# Builds the release binary, starts a private moto server on a free loopback
# port through scripts/bench/moto-counting.py (which loads
# scripts/moto-server.py, so requests are serialised as DynamoDB and S3
# apply conditional writes atomically, and logs every request's operation,
# outcome and item size), then runs scripts/bench/crowd.py: for DynamoDB and
# S3, a lock and a semaphore, N waiters behind holders that hold for
# CROWD_HOLD seconds. Crowds above 100 run as tasks of one process
# (examples/crowd.rs), not as processes. About 20 minutes with the
# defaults.
#
# Environment (see scripts/bench/crowd.py):
#   AWSFLOCK_TOOLS  where scripts/setup.sh keeps its venvs (default ~/.cache/awsflock)
#   BENCH_OUT       report path (default BENCHMARKS.md in the repository)
#   CROWD_HOLD      seconds the holders hold (default 20)
#   CROWD_SIZES     crowd sizes (default 1,10,100,1000)
#   CROWD_PROCESS_MAX  larger crowds run as tasks of one process, examples/crowd.rs (default 100)
#   CROWD_SLOTS     the semaphore's --max-holders (default 10)
#   CROWD_BUDGET    seconds each run's crowd may take, also its --wait-time (default 150)
#   CROWD_BUDGET_LARGE  the same for crowds of tasks (default 60)
#   CROWD_STORES    stores (default DynamoDB,S3)
#   CROWD_JSON      also write every run's figures there (JSON)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"

TOOLS="${AWSFLOCK_TOOLS:-$HOME/.cache/awsflock}"
PY="$TOOLS/moto/bin/python"
# No __pycache__ in the repository.
export PYTHONDONTWRITEBYTECODE=1
SERVER="$ROOT/scripts/bench/moto-counting.py"

die() { echo "crowd: $*" >&2; exit 1; }
log() { echo "crowd: $*" >&2; }

[ -x "$PY" ] || die "$PY not found: the moto venv is missing (run scripts/setup.sh)"
"$PY" -c 'import boto3, moto' 2>/dev/null || die "$PY cannot import boto3 and moto (run scripts/setup.sh)"

log "building the release binary"
# Two builds: one command would unify the example's dev-dependency features
# into the binary's build and compile the whole tree again.
cargo build --release --quiet || die "cargo build --release failed"
cargo build --release --quiet --example crowd || die "cargo build --release --example crowd failed"
BIN="$ROOT/target/release/awsflock"
EXAMPLE="$ROOT/target/release/examples/crowd"
[ -x "$BIN" ] && [ -x "$EXAMPLE" ] || die "$BIN or $EXAMPLE was not built"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/awsflock-crowd.XXXXXX")"
MOTO_PID=""
# stop PID: only ever a pid this script started.
# shellcheck source=scripts/lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"
stop() { stop_pid "$1"; }
cleanup() {
    stop "$MOTO_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Only our own settings reach the tools under test.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(AWSFLOCK_[A-Z_]*\)=.*/\1/p')
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE RUST_LOG \
    HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy || true

export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true

PORT="$(free_port "$PY")"
log "starting moto (scripts/bench/moto-counting.py) on 127.0.0.1:$PORT"
"$PY" "$SERVER" "$WORK/requests.jsonl" -H 127.0.0.1 -p "$PORT" </dev/null >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
wait_for_http "$PY" "$MOTO_PID" "$PORT" "$WORK/moto.log" || case $? in
    1) die "moto exited during start-up" ;;
    *) die "moto did not answer within 30 s" ;;
esac

export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
export DYNAMO_ENDPOINT_URL="$AWS_ENDPOINT_URL"
export CROWD_AWSFLOCK="$BIN"
export CROWD_EXAMPLE="$EXAMPLE"
export CROWD_REQLOG="$WORK/requests.jsonl"
export CROWD_MOTO_PID="$MOTO_PID"
export CROWD_WORK="$WORK"
export CROWD_TABLE="crowd-$(date +%s)-$$-$RANDOM"
export CROWD_BUCKET="crowd-$(date +%s)-$$-$RANDOM"
export BENCH_OUT="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"

log "uptime: $(uptime)"
"$PY" "$ROOT/scripts/bench/crowd.py"
log "uptime: $(uptime)"
log "done: $BENCH_OUT"
