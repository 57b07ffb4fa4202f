#!/usr/bin/env bash
# diff and log on a long history: SNAPS (default 500) snapshots of a FILES-file tree (default
# 50,000) where a few files change between snapshots. Prints median times of several runs.
#   bash benches/history_scale.sh [WORK_DIR] [FILES] [SNAPS]
set -euo pipefail
WORK=${1:-/var/tmp/cairn-history-bench}; FILES=${2:-50000}; SNAPS=${3:-500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p cairn-cli -p cairn-benches --manifest-path "$ROOT/Cargo.toml"
CAIRN="$ROOT/target/release/cairn"; GEN="$ROOT/target/release/gen-corpus"
rm -rf "$WORK" && mkdir -p "$WORK"
export CAIRN_REPO="$WORK/repo"
"$CAIRN" -q init
"$GEN" tree "$WORK/tree" --files "$FILES" --bytes $((FILES * 4000)) --seed 3
mapfile -t files < <(find "$WORK/tree" -type f | sort | head -n 200)
start=$(date +%s)
for i in $(seq 1 "$SNAPS"); do
  for k in 0 1 2; do echo "change $i" >> "${files[$(( (i * 7 + k * 13) % ${#files[@]} ))]}"; done
  "$CAIRN" -q snapshot "$WORK/tree"
done
echo "$SNAPS snapshots of $FILES files in $(( $(date +%s) - start )) s; repository $(du -sh "$WORK/repo" | cut -f1)"
ids=($("$CAIRN" --json list | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))'))
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() { for r in 1 2 3 4 5; do /usr/bin/time -f "%e" "$@" >/dev/null 2>>"$WORK/t"; done; tail -n 5 "$WORK/t" | median; }
changed="${files[7]}"; steady="${files[199]}"
echo "diff of neighbours:        $(timeit "$CAIRN" diff "${ids[249]}" "${ids[250]}") s"
echo "diff first..last:          $(timeit "$CAIRN" diff "${ids[0]}" "${ids[$((SNAPS - 1))]}") s"
echo "log of a changing file:    $(timeit "$CAIRN" log "$changed") s ($("$CAIRN" --json log "$changed" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') versions)"
echo "log of an unchanged file:  $(timeit "$CAIRN" log "$steady") s"
/usr/bin/time -f "peak RSS of log: %M KiB" "$CAIRN" log "$changed" >/dev/null
