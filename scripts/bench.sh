#!/usr/bin/env bash
# Measure awsflock and write BENCHMARKS.md.
#
#   scripts/bench.sh
#
# Builds the release binary, starts a private moto server (through
# scripts/moto-server.py, which serialises requests as DynamoDB and S3 apply
# conditional writes atomically) and a private single-member etcd, each on free
# loopback ports, measures everything in one go (so ratios come from the same
# run) and writes BENCHMARKS.md at the top of the repository. The measurements
# live in scripts/bench/bench.py; add new figures there as sections.
#
# Environment:
#   AWSFLOCK_TOOLS  where scripts/setup.sh keeps its venvs (default ~/.cache/awsflock)
#   BENCH_OUT       report path (default BENCHMARKS.md in the repository)
#   BENCH_RUNS      timed runs per tool for the cycle (default 20)
#   BENCH_SAMPLES   samples for the round-trip and spawn figures (default 30)
#   BENCH_HANDOFF_TRIALS       hand-off trials per store (default 7)
#   BENCH_PEER_HANDOFF_TRIALS  hand-off trials for awsflock 0.2.0, ~15 s each (default 3)
#   BENCH_WORKERS              concurrent workers in the contention runs (default 8)
#   BENCH_SECTIONS_PER_WORKER  sections each worker runs in sequence (default 25)
#   BENCH_HOLD_SECONDS         how long the cost run holds a lock (default 65)
#   BENCH_WAIT_SECONDS         how long the cost run's waiter waits (default 30)
#   BENCH_ONLY                 only these sections, e.g. handoff,contention
#                              (a partial report: set BENCH_OUT elsewhere)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

TOOLS="${AWSFLOCK_TOOLS:-$HOME/.cache/awsflock}"
PY="$TOOLS/moto/bin/python"
# No __pycache__ in the repository.
export PYTHONDONTWRITEBYTECODE=1
SERVER="$ROOT/scripts/moto-server.py"
ETCD=/usr/bin/etcd
ETCDCTL=/usr/bin/etcdctl
PEER="$TOOLS/peer/bin/awsflock"

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

log "preparing tools (scripts/setup.sh)"
scripts/setup.sh || die "scripts/setup.sh failed"
[ -x "$PY" ] || die "$PY not found: the moto venv is missing (run scripts/setup.sh)"
[ -f "$SERVER" ] || die "$SERVER not found"
[ -x "$ETCD" ] && [ -x "$ETCDCTL" ] || die "$ETCD or $ETCDCTL not found (scripts/setup.sh installs etcd-server and etcd-client)"
[ -x "$PEER" ] || die "$PEER not found: the awsflock 0.2.0 venv is missing (run scripts/setup.sh)"
"$PY" -c 'import boto3, moto' 2>/dev/null || die "$PY cannot import boto3 and moto (run scripts/setup.sh)"

log "building the release binary"
cargo build --release --features etcd --quiet || die "cargo build --release --features etcd failed"
BIN="$ROOT/target/release/awsflock"
[ -x "$BIN" ] || die "$BIN was not built"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/awsflock-bench.XXXXXX")"
MOTO_PID=""
ETCD_PID=""
# stop PID: only ever a pid this script started.
# shellcheck source=scripts/lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"
stop() { stop_pid "$1"; }
cleanup() {
    stop "$ETCD_PID"
    stop "$MOTO_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Only our own settings reach the tools under test.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(AWSFLOCK_[A-Z_]*\)=.*/\1/p')
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(ETCDCTL_[A-Z_]*\)=.*/\1/p')
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE RUST_LOG \
    HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy ETCD_UNSUPPORTED_ARCH || true

PORT="$(free_port "$PY")"
log "starting moto (scripts/moto-server.py) on 127.0.0.1:$PORT"
"$PY" "$SERVER" -H 127.0.0.1 -p "$PORT" </dev/null >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
wait_for_http "$PY" "$MOTO_PID" "$PORT" "$WORK/moto.log" || case $? in
    1) die "moto exited during start-up" ;;
    *) die "moto did not answer within 30 s" ;;
esac

# etcd: one member, its own data directory, free client and peer ports.
# A port taken between choosing and binding it makes etcd exit: try again.
ETCD_PORT=""
for attempt in 1 2 3; do
    ETCD_PORT="$(free_port "$PY")"
    peer="$(free_port "$PY")"
    while [ "$peer" = "$ETCD_PORT" ]; do peer="$(free_port "$PY")"; done
    log "starting etcd on 127.0.0.1:$ETCD_PORT (peer port $peer)"
    rm -rf "$WORK/etcd"
    "$ETCD" --name default --data-dir "$WORK/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "default=http://127.0.0.1:$peer" \
        --initial-cluster-state new \
        </dev/null >"$WORK/etcd.log" 2>&1 &
    ETCD_PID=$!
    ready=""
    for _ in $(seq 1 300); do
        kill -0 "$ETCD_PID" 2>/dev/null || break
        if ETCDCTL_API=3 "$ETCDCTL" --endpoints "127.0.0.1:$ETCD_PORT" endpoint health \
            --command-timeout 2s >/dev/null 2>&1; then
            ready=1
            break
        fi
        sleep 0.1
    done
    [ -n "$ready" ] && break
    if kill -0 "$ETCD_PID" 2>/dev/null; then
        tail -n 20 "$WORK/etcd.log" >&2 || true
        die "etcd did not become healthy within 30 s"
    fi
    wait "$ETCD_PID" 2>/dev/null || true
    ETCD_PID=""
    log "etcd exited during start-up (attempt $attempt)"
done
[ -n "$ready" ] || { tail -n 20 "$WORK/etcd.log" >&2 || true; die "etcd failed to start three times"; }

export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
export DYNAMO_ENDPOINT_URL="$AWS_ENDPOINT_URL"

export BENCH_AWSFLOCK="$BIN"
export BENCH_PEER="$PEER"
export BENCH_MOTO_PID="$MOTO_PID"
export BENCH_ETCD_PID="$ETCD_PID"
export BENCH_ETCD="127.0.0.1:$ETCD_PORT"
export BENCH_WORK="$WORK"
export BENCH_TABLE="bench-$(date +%s)-$$-$RANDOM"
export BENCH_BUCKET="bench-$(date +%s)-$$-$RANDOM"
export BENCH_OUT="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"

"$PY" "$ROOT/scripts/bench/bench.py" >/dev/null
log "done: $BENCH_OUT"
