#!/usr/bin/env bash
# Start or stop a local moto DynamoDB server on a free loopback port.
#
#   eval "$(scripts/moto.sh start)"   # prints export lines for the endpoint
#   scripts/moto.sh stop
#
# The pid is kept in $MOTO_PIDFILE (default ./.moto.pid), the server log in
# $MOTO_LOG (default ./.moto.log). Run scripts/setup.sh first.
set -euo pipefail

TOOLS="${AWSFLOCK_TOOLS:-$HOME/.cache/awsflock}"
PIDFILE="${MOTO_PIDFILE:-./.moto.pid}"
LOGFILE="${MOTO_LOG:-./.moto.log}"
PY="$TOOLS/moto/bin/python"
SERVER="$TOOLS/moto/bin/moto_server"
# Serialised requests: see scripts/moto-server.py.
LAUNCHER="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/moto-server.py"

# shellcheck source=scripts/lib/procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"
die() { echo "moto.sh: $*" >&2; exit 1; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
    [ -x "$SERVER" ] || die "$SERVER not found; run scripts/setup.sh"
    if running; then
        die "already running with pid $(cat "$PIDFILE") (see $PIDFILE)"
    fi
    local port pid rc=0
    port="$(free_port "$PY")"
    nohup "$PY" "$LAUNCHER" -H 127.0.0.1 -p "$port" </dev/null >"$LOGFILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
    wait_for_http "$PY" "$pid" "$port" "$LOGFILE" || rc=$?
    if [ "$rc" = 1 ]; then
        rm -f "$PIDFILE"
        die "moto_server exited during start-up"
    elif [ "$rc" = 0 ]; then
        echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$port"
        echo "export DYNAMO_ENDPOINT_URL=http://127.0.0.1:$port"
        echo "export AWS_ACCESS_KEY_ID=test"
        echo "export AWS_SECRET_ACCESS_KEY=test"
        echo "export AWS_REGION=us-east-1"
        echo "export AWS_DEFAULT_REGION=us-east-1"
        echo "moto.sh: moto_server pid $pid on 127.0.0.1:$port" >&2
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "moto_server did not answer within 30 s"
}

stop() {
    [ -f "$PIDFILE" ] || die "no pid file $PIDFILE"
    local pid
    pid="$(cat "$PIDFILE")"
    stop_pid "$pid"
    rm -f "$PIDFILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
