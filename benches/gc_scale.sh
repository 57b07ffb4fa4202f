#!/usr/bin/env bash
# gc at scale: a repository of over a million chunks, beside restic prune on the same snapshots.
#   bash benches/gc_scale.sh [--runs N] [--reuse] [WORK_DIR]
# Four snapshots; each holds one generation of 330 MB of random data (the previous generation
# is deleted), chunked at a 1 KiB average so the repository holds over a million chunks. The
# prepared repositories are kept in WORK_DIR/prepared; each of N runs (default 1) copies them
# (`cp -a`), forgets the two oldest snapshots, then runs `cairn gc` and `restic prune` under
# /usr/bin/time. `--reuse` skips making the data when WORK_DIR/prepared is there already (the
# slow part). Prints each run's wall time, CPU time and peak RSS, then the medians.
set -euo pipefail
RUNS=1 REUSE=0
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --reuse) REUSE=1; shift ;;
    *) break ;;
  esac
done
WORK=${1:-/var/tmp/cairn-gc-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p cairn-cli --manifest-path "$ROOT/Cargo.toml"
CAIRN=${CAIRN:-$ROOT/target/release/cairn}
export RESTIC_PASSWORD=bench
have_restic=0; command -v restic >/dev/null && have_restic=1
PREP="$WORK/prepared"
if [ $REUSE = 0 ] || [ ! -f "$PREP/done" ]; then
  rm -rf "$WORK" && mkdir -p "$WORK/src" "$PREP"
  export CAIRN_REPO="$PREP/cairn" RESTIC_REPOSITORY="$PREP/restic"
  "$CAIRN" -q init --chunk-size 1024
  [ $have_restic = 1 ] && restic -q init
  for gen in 1 2 3 4; do
    rm -rf "$WORK/src/gen$((gen - 1))"; mkdir -p "$WORK/src/gen$gen"
    for f in $(seq 1 33); do head -c 10000000 /dev/urandom > "$WORK/src/gen$gen/f$f"; done
    "$CAIRN" -q snapshot "$WORK/src"
    [ $have_restic = 1 ] && restic -q backup "$WORK/src" >/dev/null
  done
  rm -rf "$WORK/src"
  touch "$PREP/done"
fi
chunks=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from blobs_all').fetchone()[0])" "$PREP/cairn/index/index.sqlite")
echo "cairn: $chunks blobs, $(du -sb "$PREP/cairn/packs" | cut -f1) bytes of packs"
# measure NAME CMD...: appends "NAME wall user+sys peak_kib" to $WORK/times.
measure() {
  local out; out=$(mktemp)
  /usr/bin/time -o "$out" -f "%e %U %S %M" "${@:2}" >/dev/null
  read -r wall user sys rss <"$out"; rm -f "$out"
  cpu=$(python3 -c "print(round($user + $sys, 2))")
  echo "$1 $wall $cpu $rss" >>"$WORK/times"
  echo "  $1: $wall s wall, $cpu s CPU, $((rss / 1024)) MiB peak RSS"
}
rm -f "$WORK/times"
for run in $(seq 1 "$RUNS"); do
  echo "run $run"
  rm -rf "$WORK/run" && cp -a "$PREP" "$WORK/run"
  export CAIRN_REPO="$WORK/run/cairn" RESTIC_REPOSITORY="$WORK/run/restic"
  measure "cairn-forget" "$CAIRN" -q forget --keep-last 2
  measure "cairn-gc" "$CAIRN" -q gc
  echo "  cairn after gc: $(du -sb "$WORK/run/cairn/packs" | cut -f1) bytes of packs"
  if [ $have_restic = 1 ]; then
    measure "restic-forget" restic -q forget --keep-last 2
    measure "restic-prune" restic -q prune
    echo "  restic after prune: $(du -sb "$WORK/run/restic/data" | cut -f1) bytes of data"
  fi
  [ "$run" = 1 ] && "$CAIRN" scrub | tail -1
done
echo "medians of $RUNS run(s): wall s, CPU s, peak RSS MiB"
python3 - "$WORK/times" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *vals = line.split()
    rows.setdefault(name, []).append([float(v) for v in vals])
for name, runs in rows.items():
    wall, cpu, rss = (statistics.median(r[i] for r in runs) for i in range(3))
    print(f"  {name:14} {wall:8.2f} {cpu:8.2f} {rss / 1024:8.1f}")
if "cairn-gc" in rows and "restic-prune" in rows:
    med = lambda n, i: statistics.median(r[i] for r in rows[n])
    both = lambda n: statistics.median(r[0] for r in rows[n + "-forget"]) + med(n + ("-gc" if n == "cairn" else "-prune"), 0)
    print(f"  cairn gc / restic prune (wall): {med('cairn-gc', 0) / med('restic-prune', 0):.2f}x")
    print(f"  forget+gc / forget+prune (wall): {both('cairn') / both('restic'):.2f}x")
EOF
