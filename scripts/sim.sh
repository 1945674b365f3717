#!/usr/bin/env bash
# A longer soak of the protocol simulation (src/sim/): SEEDS schedules from
# seed START (default 0), split over one process per core
# (AWSFLOCK_SIM_JOBS to choose), printing schedules per second, the slowest
# seed, and, on a failure, the seed, its trace and how to rerun it.
# By default our clients use DynamoDB; --s3 runs the S3 store's schedules
# and --dir the directory store's (all clients on one host). --slots runs
# the schedules whose clients share the name through its holder table (a
# semaphore, or readers and writers), on the store chosen.
# --crowd prints the crowd figures instead (src/sim/crowd.rs: N waiters on
# a held lock and on a semaphore of 10, on DynamoDB and S3; N = 10, 100,
# 1000 unless a comma-separated list is given); the table takes about a
# minute.
#
#   scripts/sim.sh 1000000          # a million schedules from seed 0
#   scripts/sim.sh 1 29453          # rerun one seed, printing its trace
#   scripts/sim.sh --dir 200000     # the directory store's schedules
#   scripts/sim.sh --slots --s3 50000  # semaphores and shared locks on S3
#   scripts/sim.sh --crowd [10,100]    # the crowd's figures
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

test_name=sim::tests::schedules
threads=1 # threads per process of the test named
store=dynamodb
slots=
crowd=
while [ $# -gt 0 ]; do
    case "$1" in
    --s3) store=s3 ;;
    --dir) store=dir ;;
    --slots) slots=1 ;;
    --crowd) crowd=1 ;;
    *) break ;;
    esac
    shift
done
case "$store$slots" in
s3) test_name=sim::objects::tests::schedules_s3 threads=2 ;;
dir) test_name=sim::dir::tests::schedules_dir threads=2 ;;
*1) test_name=sim::slot_tests::slot_schedules_$store ;;
esac

if [ -n "$crowd" ]; then
    [ $# -le 1 ] || {
        echo "usage: scripts/sim.sh --crowd [N,N,...]" >&2
        exit 2
    }
    case "${1:-10,100,1000}" in
    *[!0-9,]* | "")
        echo "sim.sh: --crowd takes waiter counts separated by commas, e.g. 10,100" >&2
        exit 2
        ;;
    esac
fi
if [ -z "$crowd" ] && { [ $# -lt 1 ] || [ $# -gt 2 ]; }; then
    echo "usage: scripts/sim.sh [--s3|--dir] [--slots] SEEDS [START], or --crowd [N,N,...]" >&2
    exit 2
fi
seeds="${1:-1}"
start="${2:-0}"
[ -n "$crowd" ] && seeds=1
case "$seeds$start" in
*[!0-9]*)
    echo "sim.sh: SEEDS and START are whole numbers" >&2
    exit 2
    ;;
esac
export CARGO_INCREMENTAL=0

# Build once, then run the test binary directly (one process per share).
bin=$(cargo test --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
if [ -z "$bin" ]; then
    cargo test --lib --no-run # show why it did not build
    exit 1
fi

if [ -n "$crowd" ]; then
    AWSFLOCK_SIM_CROWD="${1:-10,100,1000}" \
        exec "$bin" sim::crowd::tests::crowd_table --exact --ignored --nocapture --quiet
fi

if [ "$seeds" -eq 1 ]; then
    # One seed also prints its trace.
    AWSFLOCK_SIM_TRACE=1 AWSFLOCK_SIM_SEEDS=1 AWSFLOCK_SIM_SEED="$start" \
        exec "$bin" "$test_name" --exact --nocapture
fi

# The S3 and directory tests split their share over two threads.
jobs="${AWSFLOCK_SIM_JOBS:-$((($(nproc) + threads - 1) / threads))}"
[ "$jobs" -ge 1 ] || jobs=1
[ "$jobs" -le "$seeds" ] || jobs="$seeds"
share=$(((seeds + jobs - 1) / jobs))
t0=$(date +%s.%N)
pids=()
first="$start"
left="$seeds"
while [ "$left" -gt 0 ]; do
    n=$((left < share ? left : share))
    AWSFLOCK_SIM_SEEDS="$n" AWSFLOCK_SIM_SEED="$first" \
        "$bin" "$test_name" --exact --nocapture --quiet &
    pids+=("$!")
    first=$((first + n))
    left=$((left - n))
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
t1=$(date +%s.%N)
if [ "$status" -ne 0 ]; then
    echo "sim.sh: a schedule failed (above); each process stops at its first failure" >&2
    exit "$status"
fi
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[3]); print(f'sim.sh: {n} schedules from seed {sys.argv[4]} in {s:.1f}s: {n/s:.0f} schedules/s over {sys.argv[5]} processes')" \
    "$t0" "$t1" "$seeds" "$start" "${#pids[@]}"
