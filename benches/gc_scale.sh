#!/usr/bin/env bash
# gc at scale: a repository of over a million chunks, beside restic prune on the same snapshots.
#   bash benches/gc_scale.sh [WORK_DIR]
# Four snapshots; each holds one generation of 330 MB of random data (the previous generation
# is deleted), chunked at a 1 KiB average so the repository holds over a million chunks. The
# two oldest snapshots are forgotten, then `cairn gc` and `restic prune` run under
# /usr/bin/time -v. Prints wall time, peak RSS and repository size before and after.
set -euo pipefail
WORK=${1:-/var/tmp/cairn-gc-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p cairn-cli --manifest-path "$ROOT/Cargo.toml"
CAIRN="$ROOT/target/release/cairn"
rm -rf "$WORK" && mkdir -p "$WORK/src"
export CAIRN_REPO="$WORK/cairn" RESTIC_REPOSITORY="$WORK/restic" RESTIC_PASSWORD=bench
"$CAIRN" -q init --chunk-size 1024
have_restic=0; command -v restic >/dev/null && have_restic=1
[ $have_restic = 1 ] && restic -q init
for gen in 1 2 3 4; do
  rm -rf "$WORK/src/gen$((gen - 1))"; mkdir -p "$WORK/src/gen$gen"
  for f in $(seq 1 33); do head -c 10000000 /dev/urandom > "$WORK/src/gen$gen/f$f"; done
  "$CAIRN" -q snapshot "$WORK/src"
  [ $have_restic = 1 ] && restic -q backup "$WORK/src" >/dev/null
done
chunks=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from blobs_all').fetchone()[0])" "$WORK/cairn/index/index.sqlite")
echo "cairn: $chunks blobs, $(du -sb "$WORK/cairn/packs" | cut -f1) bytes of packs"
"$CAIRN" -q forget --keep-last 2
[ $have_restic = 1 ] && restic -q forget --keep-last 2 >/dev/null
measure() { /usr/bin/time -f "$1: %e s wall, %M KiB peak RSS" "${@:2}" >/dev/null; }
measure "cairn gc" "$CAIRN" -q gc
echo "cairn after gc: $(du -sb "$WORK/cairn/packs" | cut -f1) bytes of packs"
if [ $have_restic = 1 ]; then
  echo "restic before prune: $(du -sb "$WORK/restic/data" | cut -f1) bytes of data"
  measure "restic prune" restic -q prune
  echo "restic after prune: $(du -sb "$WORK/restic/data" | cut -f1) bytes of data"
fi
"$CAIRN" scrub | tail -1
