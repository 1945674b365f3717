#!/usr/bin/env bash
# The main job on a fresh machine: set up, start a local DynamoDB-compatible
# server (moto) on a free loopback port, create the table, and run two
# competing jobs under the same lock. Only one runs at a time: the second
# waits, then runs with a higher fencing token. Stops the server it started.
#
# Safe on any machine: every request goes to the local server, with fake
# credentials. Nothing from the caller's AWS setup (profiles, keys, endpoint
# variables, instance metadata) is used, and if the server does not start
# the script stops before running awsflock.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "demo: $*" >&2; exit 1; }

scripts/setup.sh
AWSFLOCK="${CARGO_TARGET_DIR:-$PWD/target}/debug/awsflock"

# Forget the caller's AWS and awsflock settings before anything else.
for var in $(compgen -e); do
    case "$var" in
        AWS_* | AWSFLOCK_* | DYNAMO_ENDPOINT_URL) unset "$var" ;;
    esac
done
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
# No configuration or credential files: no profile can supply anything.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

work="$(mktemp -d)"
export MOTO_PIDFILE="$work/moto.pid" MOTO_LOG="$work/moto.log"
cleanup() {
    if [ -f "$MOTO_PIDFILE" ]; then scripts/moto.sh stop || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# Not `eval "$(scripts/moto.sh start)"`: that hides a failed start.
if ! exports="$(scripts/moto.sh start)"; then
    die "the local server did not start; nothing was run (see the messages above)"
fi
eval "$exports"

# Every endpoint must be this machine's loopback server, whatever moto.sh said.
endpoint="${AWS_ENDPOINT_URL:-}"
[[ "$endpoint" =~ ^http://(127\.0\.0\.1|localhost|\[::1\]):[0-9]+/?$ ]] \
    || die "refusing to run: the endpoint '${endpoint}' is not a local server"
for var in DYNAMO_ENDPOINT_URL AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_S3; do
    if [ -n "${!var:-}" ] && [ "${!var}" != "$endpoint" ]; then
        die "refusing to run: $var=${!var} is not the local server $endpoint"
    fi
done
export AWSFLOCK_ENDPOINT_URL="$endpoint"
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
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
