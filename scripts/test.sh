#!/usr/bin/env bash
# The test command: prepare the machine, then run every test target, with
# the etcd store built in (cargo feature `etcd`, which needs protoc).
#
# Tests run side by side under cargo-nextest (.config/nextest.toml) when it
# is installed, else under `cargo test`. Tests that only talk to moto share
# one server, started here on a free loopback port and stopped by pid at
# the end (AWSFLOCK_TEST_MOTO); tests that stop or kill their server start
# their own. Every target runs even when an earlier one fails. Extra
# arguments go to the runner, e.g. `scripts/test.sh -E "test(/^interop_v020::/)"` under nextest.
# TESTING.md has the time each part takes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# phase WHAT: one line with the time since the start, so that a run's log
# shows where its minutes went (TESTING.md).
started=$SECONDS
phase() { echo "test: [$((SECONDS - started)) s] $*" >&2; }

phase "setting up (scripts/setup.sh: packages, Python tools, the build)"
# The build in setup.sh is every target the tests use, examples/ among them
# (tests/examples.rs runs them).
AWSFLOCK_SETUP_BUILD="--lib --bins --tests --examples" scripts/setup.sh
if ! command -v protoc >/dev/null 2>&1 && [ ! -x "${PROTOC:-}" ]; then
    echo "test: the etcd store needs protoc to build; install it with:" >&2
    echo "test:     sudo apt-get update && sudo apt-get install -y protobuf-compiler" >&2
    exit 1
fi
# Tests that need a tool setup.sh installs fail, rather than skip, without it.
export AWSFLOCK_TEST_ALL=1

TOOLS="${AWSFLOCK_TOOLS:-$HOME/.cache/awsflock}"
moto_pid=
moto_log="$(mktemp -t awsflock-moto.XXXXXX)"
stop_moto() {
    if [ -n "$moto_pid" ]; then
        kill "$moto_pid" 2>/dev/null || true
        wait "$moto_pid" 2>/dev/null || true
    fi
    rm -f "$moto_log"
}
trap stop_moto EXIT

# start_moto: the run's shared moto server (serialised: scripts/moto-server.py).
# shellcheck source=scripts/lib/procs.sh
source scripts/lib/procs.sh
start_moto() {
    local py="$TOOLS/moto/bin/python" port rc=0
    port="$(free_port "$py")"
    AWSFLOCK_MOTO_EXIT_WITH_PARENT=1 "$py" scripts/moto-server.py -H 127.0.0.1 -p "$port" </dev/null >"$moto_log" 2>&1 &
    moto_pid=$!
    wait_for_http "$py" "$moto_pid" "$port" "$moto_log" || rc=$?
    case "$rc" in
        0) export AWSFLOCK_TEST_MOTO="http://127.0.0.1:$port" ;;
        1) echo "test: the shared moto server exited during start-up" >&2; exit 1 ;;
        *) echo "test: the shared moto server did not answer on port $port" >&2; exit 1 ;;
    esac
}
start_moto

nextest=
if cargo nextest --version >/dev/null 2>&1; then
    nextest=1
fi

if [ $# -gt 0 ]; then
    if [ -n "$nextest" ]; then
        cargo nextest run --features etcd --lib --bins --tests "$@"
    else
        cargo test --features etcd --lib --bins --tests --no-fail-fast "$@"
    fi
    exit
fi

status=0
# What a library dependent builds: one store, no command line. Checked
# beside the tests, which leave a core idle much of the time, in a target
# directory of its own (no wait on the build lock) and at a lower priority.
check_log="$(mktemp -t awsflock-check.XXXXXX)"
CARGO_TARGET_DIR=target/check-lib nice -n 10 \
    cargo check --lib --no-default-features --features dynamodb >"$check_log" 2>&1 &
check_pid=$!
phase "building and running the tests"
if [ -n "$nextest" ]; then
    cargo nextest run --features etcd --lib --bins --tests || status=$?
else
    cargo test --features etcd --lib --bins --tests --no-fail-fast || status=$?
fi
# The documentation's examples (the same build profile as the tests, so
# only the examples themselves compile). The programs in examples/ are
# built and run by tests/examples.rs.
phase "the documentation's examples"
cargo test --features etcd --doc || status=$?
if wait "$check_pid"; then
    echo "test: the library builds alone with the dynamodb store (cargo check --lib --no-default-features --features dynamodb)"
else
    status=1
    cat "$check_log" >&2
    echo "test: the library does not build alone with the dynamodb store" >&2
fi
rm -f "$check_log"
phase "done (exit $status)"
exit "$status"
