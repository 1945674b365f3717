#!/usr/bin/env bash
# The main job on a fresh machine: set up, start a local DynamoDB-compatible
# server (moto) on a free loopback port, create the table, and run two
# competing jobs under the same lock. Only one runs at a time: the second
# waits, then runs with a higher fencing token. Stops the server it started.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
AWSFLOCK="${CARGO_TARGET_DIR:-$PWD/target}/debug/awsflock"

work="$(mktemp -d)"
export MOTO_PIDFILE="$work/moto.pid" MOTO_LOG="$work/moto.log"
eval "$(scripts/moto.sh start)"
trap 'scripts/moto.sh stop; rm -rf "$work"' EXIT
export AWS_EC2_METADATA_DISABLED=true
export AWSFLOCK_TABLE="demo-$$"

echo "== awsflock table-create"
"$AWSFLOCK" table-create

echo "== two jobs start at once; the lock lets one run at a time"
job() {
    "$AWSFLOCK" run nightly-report --owner "$1" --reason "demo job $1" -- \
        sh -c 'echo "[$0] started at $(date +%T.%3N) with fence $AWSFLOCK_FENCE"; sleep 2; echo "[$0] done at $(date +%T.%3N)"' "$1"
}
job job-A & a=$!
job job-B & b=$!
sleep 1
echo "== meanwhile, awsflock status nightly-report"
"$AWSFLOCK" status nightly-report
wait "$a" "$b"

echo "== after both: awsflock status nightly-report"
"$AWSFLOCK" status nightly-report
echo "== done: the two jobs never overlapped"
