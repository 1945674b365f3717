#!/usr/bin/env bash
# The test command: prepare the machine, then run every test target.
# Every target runs even when an earlier one fails. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh --test interop_v020`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
exec cargo test --all-targets --no-fail-fast "$@"
