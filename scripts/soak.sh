#!/usr/bin/env bash
# The long variant of the contention test in tests/faults.rs (e2e binary): six workers
# (four of ours, two awsflock 0.2.0 clients) take turns at one lock for
# SECTIONS critical sections in all, a holder is SIGKILLed mid-section about
# once every 150 sections, and the log is checked for overlapping sections.
#
#   scripts/soak.sh            # 2000 sections
#   scripts/soak.sh 10000      # more
#
# Prints the `figures:` line (sections, overlaps, kills, reclaim times).
# Expect roughly 0.3-0.5 s per section plus about 5 s per kill.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

sections="${1:-${AWSFLOCK_SOAK_SECTIONS:-2000}}"
case "$sections" in
  '' | *[!0-9]*) echo "usage: $0 [SECTIONS]" >&2; exit 2 ;;
esac

scripts/setup.sh
AWSFLOCK_SOAK_SECTIONS="$sections" \
  cargo test --release --test e2e faults::contention -- --nocapture 2>&1 \
  | tee "${TMPDIR:-/tmp}/awsflock-soak-$$.log" \
  | grep -E '^(figures:|test |test result:)|panicked|overlap'
echo "full output: ${TMPDIR:-/tmp}/awsflock-soak-$$.log"
