#!/usr/bin/env bash
# Runs every fuzz target for a bounded time on its checked-in corpus (fuzz/corpus/<target>).
#   bash fuzz/run.sh [SECONDS_PER_TARGET]     (default 20; CI uses this)
# Built with libFuzzer's coverage instrumentation through plain RUSTFLAGS, which works on the
# stable toolchain (cargo-fuzz's address sanitizer would need nightly). A crash leaves its input
# in fuzz/artifacts/<target>/ and fails the run; it then becomes a regression test.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-20}
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts, which do not link libFuzzer.
HOST=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --target "$HOST" --target-dir target/instrumented
for t in config pack tree snapshot_record chunker salvage key_file sealed_frame sealed_record; do
  mkdir -p "corpus/$t" "artifacts/$t"
  work=$(mktemp -d)   # new inputs go to a scratch dir; the checked-in corpus stays as it is
  echo "== fuzz $t for ${SECS}s"
  "./target/instrumented/$HOST/release/$t" -max_total_time="$SECS" -max_len=1048576 \
    -artifact_prefix="artifacts/$t/" "$work" "corpus/$t" 2>&1 | tail -n 3
  rm -rf "$work"
done
