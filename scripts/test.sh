#!/usr/bin/env bash
# The test command: prepare the machine, then run every test target.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test interop_v020`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
exec cargo test --all-targets "$@"
