#!/usr/bin/env bash
# The test command: prepare the machine, then run every test target, with
# the etcd store built in (cargo feature `etcd`, which needs protoc).
# Every target runs even when an earlier one fails. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh --test interop_v020`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
if ! command -v protoc >/dev/null 2>&1 && [ ! -x "${PROTOC:-}" ]; then
    echo "test: the etcd store needs protoc to build; install it with:" >&2
    echo "test:     sudo apt-get update && sudo apt-get install -y protobuf-compiler" >&2
    exit 1
fi
# Tests that need a tool setup.sh installs fail, rather than skip, without it.
export AWSFLOCK_TEST_ALL=1
if [ $# -gt 0 ]; then
    exec cargo test --features etcd --all-targets --no-fail-fast "$@"
fi
# `--all-targets` leaves out the documentation's examples: run them too.
status=0
cargo test --features etcd --all-targets --no-fail-fast || status=$?
cargo test --features etcd --doc || status=$?
# What a library dependent builds: one store, no command line.
cargo check --lib --no-default-features --features dynamodb || status=$?
exit "$status"
