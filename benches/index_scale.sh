#!/usr/bin/env bash
# Snapshot speed and memory as the index grows past ten million chunks.
#   bash benches/index_scale.sh [WORK_DIR] [GENERATIONS] [MIB_PER_GENERATION]
# A repository with 1 KiB average chunks receives GENERATIONS (default 12) generations of
# MIB_PER_GENERATION (default 1024) MiB of fresh random data (1 MiB files, 64 to a directory),
# about 860,000 new chunks a GiB, so the index ends above ten million chunks. The source always
# holds one generation (the previous one is deleted, the repository keeps it), so the work per
# snapshot is the same and only the index grows. Each generation's snapshot stores all of it,
# then a no-change snapshot follows. Prints, per generation: chunks in the index before it, wall
# time, throughput and peak RSS of both snapshots, and the index size.
set -euo pipefail
WORK=${1:-/var/tmp/cairn-index-scale}; GENS=${2:-12}; MIB=${3:-1024}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p cairn-cli --manifest-path "$ROOT/Cargo.toml"
CAIRN="$ROOT/target/release/cairn"
rm -rf "$WORK" && mkdir -p "$WORK/src"
export CAIRN_REPO="$WORK/repo"
"$CAIRN" -q init --chunk-size 1024
chunks() {
  # Every level of the blob map (index schema 2; schema 1 had only `blobs`).
  python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from blobs_all').fetchone()[0])" \
    "$WORK/repo/index/index.sqlite"
}
measure() { /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null; cat "$WORK/time"; }
printf "| generation | chunks before | snapshot wall s | MiB/s | peak RSS MiB | no-change wall s | no-change RSS MiB | index MiB |\n"
printf "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
for gen in $(seq 1 "$GENS"); do
  rm -rf "$WORK/src/gen$((gen - 1))"
  python3 - "$WORK/src/gen$gen" "$MIB" <<'PY'
import os, sys
root, mib = sys.argv[1], int(sys.argv[2])
for i in range(mib):
    d = os.path.join(root, f"d{i // 64}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(os.urandom(1 << 20))
PY
  before=$(chunks)
  read -r wall rss < <(measure "$CAIRN" -q snapshot "$WORK/src")
  read -r nc_wall nc_rss < <(measure "$CAIRN" -q snapshot "$WORK/src")
  index=$(du -sm "$WORK/repo/index" | cut -f1)
  python3 -c "import sys; g,b,w,r,nw,nr,i,m=sys.argv[1:]; print(f'| {g} | {int(b):,} | {float(w):.1f} | {int(m)/float(w):.0f} | {int(r)/1024:.0f} | {float(nw):.2f} | {int(nr)/1024:.0f} | {i} |')" \
    "$gen" "$before" "$wall" "$rss" "$nc_wall" "$nc_rss" "$index" "$MIB"
done
echo "final: $(chunks) chunks in the index; repository $(du -sh "$WORK/repo" | cut -f1)"
