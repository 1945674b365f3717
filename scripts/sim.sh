#!/usr/bin/env bash
# A longer soak of the protocol simulation (src/sim/): SEEDS schedules from
# seed START (default 0), printing schedules per second, the slowest seed,
# and, on a failure, the seed, its trace and how to rerun it.
#
#   scripts/sim.sh 1000000          # a million schedules from seed 0
#   scripts/sim.sh 1 29453          # rerun one seed, with its trace
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: scripts/sim.sh SEEDS [START]" >&2
    exit 2
fi
export CARGO_INCREMENTAL=0
AWSFLOCK_SIM_SEEDS="$1" AWSFLOCK_SIM_SEED="${2:-0}" \
    exec cargo test --lib sim::tests::schedules -- --exact --nocapture
