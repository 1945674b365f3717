#!/usr/bin/env bash
# What the release binary is made of: a clean release build with every store
# (timed), its size stripped as shipped, and the code's size by crate.
#
#   scripts/binsize.sh [TOP]
#
# Builds into target/binsize (so the usual target/ is left alone) with the
# release profile but symbols kept, reads the symbols' sizes with `nm`, and
# attributes each to the first crate other than std its name mentions (a
# std generic such as drop_in_place<aws_sdk_s3::...> counts for aws_sdk_s3). Then
# strips a copy and prints that size, which is what `cargo build --release`
# produces. Environment: CLEAN=0 keeps an earlier build (no timing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOP="${1:-20}"
export CARGO_TARGET_DIR="$PWD/target/binsize"
if [ "${CLEAN:-1}" = 1 ]; then rm -rf "$CARGO_TARGET_DIR"; fi
start=$(date +%s)
CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --features etcd --bin awsflock --timings
end=$(date +%s)
bin="$CARGO_TARGET_DIR/release/awsflock"
strip -o "$CARGO_TARGET_DIR/awsflock.stripped" "$bin"
[ "${CLEAN:-1}" = 1 ] && echo "clean release build with every store: $((end - start)) s on $(nproc) cores"
echo "stripped binary: $(stat -c %s "$CARGO_TARGET_DIR/awsflock.stripped") bytes"
nm -C -S --size-sort "$bin" | python3 -c '
import re, sys, collections
top = int(sys.argv[1])
by = collections.Counter()
total = 0
for line in sys.stdin:
    parts = line.split(None, 3)
    if len(parts) < 4 or parts[2] not in "tTrRdDbB":
        continue
    size, name = int(parts[1], 16), parts[3]
    total += size
    paths = re.findall(r"(?<![:\w])([A-Za-z_]\w*)::", name)
    ours = [p for p in paths if p not in ("core", "alloc", "std")]
    if ours:
        crate = ours[0]
    elif paths:
        crate = "(std)"
    else:
        crate = "(C: ring, libc)"
    by[crate] += size
print(f"symbols: {total} bytes in all")
for crate, size in by.most_common(top):
    print(f"{size:>10} {100 * size / total:5.1f}%  {crate}")
' "$TOP"
