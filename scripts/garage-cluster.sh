#!/usr/bin/env bash
# A 3-node Garage cluster on 127.0.0.1 for cairn's S3 tests (issue 20).
#
#   scripts/garage-cluster.sh up            start it; prints `export` lines (credentials, region,
#                                           CAIRN_TEST_S3_URL=s3:http://127.0.0.1:PORT/BUCKET)
#   scripts/garage-cluster.sh env           print those lines again
#   scripts/garage-cluster.sh kill-node N   SIGKILL node N (1..3), for fault tests
#   scripts/garage-cluster.sh start-node N  start node N again
#   scripts/garage-cluster.sh down          stop exactly the processes `up` started; remove the state
#
# Typical use:  eval "$(scripts/garage-cluster.sh up)"; cargo test ...; scripts/garage-cluster.sh down
#
# Garage is found in $CAIRN_GARAGE_BIN, else in the test cache
# (${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test/garage-2.5.0/bin/garage), else on PATH; otherwise
# it is built from crates.io into that cache with the smallest feature set that works (about 11
# minutes on 2 cores, once per machine). State (configs, data, logs, pid files) lives in
# $CAIRN_GARAGE_DIR (default /tmp/cairn-garage-$UID); ports start at $CAIRN_GARAGE_PORT
# (default 39400: node N listens for S3 on 39400+10N, RPC +1, admin +3). Loopback only; every
# wait is bounded. Nodes log at RUST_LOG=garage=warn; $CAIRN_GARAGE_LOG replaces that
# (`garage=warn,garage_api_common=info` logs one line per S3 request: benches/s3.py counts them).
# With $CAIRN_GARAGE_OWNER set to a process ID, `up` also leaves a watchdog that
# runs `down` once that process has ended, so a test run that is killed still stops its cluster.
set -euo pipefail

GARAGE_VERSION=2.5.0
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test/garage-$GARAGE_VERSION
DIR=${CAIRN_GARAGE_DIR:-/tmp/cairn-garage-$(id -u)}
PORT0=${CAIRN_GARAGE_PORT:-39400}
BUCKET=${CAIRN_GARAGE_BUCKET:-cairn-test}
REGION=garage
MARK=.cairn-garage-cluster   # marks a state dir as this script's, so `down` removes nothing else

die() { echo "garage-cluster: $*" >&2; exit 1; }
log() { echo "garage-cluster: $*" >&2; }

s3_port() { echo $((PORT0 + 10 * $1)); }
rpc_port() { echo $((PORT0 + 10 * $1 + 1)); }
admin_port() { echo $((PORT0 + 10 * $1 + 3)); }

find_garage() {
  if [ -n "${CAIRN_GARAGE_BIN:-}" ]; then
    [ -x "$CAIRN_GARAGE_BIN" ] || die "CAIRN_GARAGE_BIN=$CAIRN_GARAGE_BIN is not an executable"
    echo "$CAIRN_GARAGE_BIN"; return
  fi
  if [ -x "$CACHE_ROOT/bin/garage" ]; then echo "$CACHE_ROOT/bin/garage"; return; fi
  if command -v garage >/dev/null 2>&1; then command -v garage; return; fi
  log "garage not found: building garage $GARAGE_VERSION into $CACHE_ROOT (about 11 minutes on 2 cores, once)"
  cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
    --features lmdb,bundled-libs --root "$CACHE_ROOT" >&2 || die "cargo install garage failed"
  echo "$CACHE_ROOT/bin/garage"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_node() {
  local i=$1 d="$DIR/n$1"
  [ -f "$d/garage.toml" ] || die "no node $i in $DIR (run up first)"
  if alive "$d/pid"; then log "node $i is already running (pid $(cat "$d/pid"))"; return; fi
  RUST_LOG=${CAIRN_GARAGE_LOG:-garage=warn} setsid "$(cat "$DIR/garage-bin")" -c "$d/garage.toml" server >>"$d/log" 2>&1 </dev/null &
  echo $! >"$d/pid"
}

stop_pid_file() {
  local f=$1 sig=${2:-TERM} pid
  alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  rm -f "$f"
}

g() { "$(cat "$DIR/garage-bin")" -c "$DIR/n1/garage.toml" "$@"; }

# A signed request to the cluster's S3 API (curl signs SigV4 itself).
s3_curl() {
  # shellcheck disable=SC1091
  . "$DIR/env"
  curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 "aws:amz:$REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$@"
}

up() {
  if [ -d "$DIR" ]; then
    for i in 1 2 3; do alive "$DIR/n$i/pid" && die "a cluster is already running in $DIR (run down first)"; done
    [ -f "$DIR/$MARK" ] || die "$DIR exists and is not this script's; set CAIRN_GARAGE_DIR"
    rm -rf "$DIR"
  fi
  for i in 1 2 3; do
    for p in $(s3_port "$i") $(rpc_port "$i") $(admin_port "$i"); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use; set CAIRN_GARAGE_PORT"; fi
    done
  done
  local bin; bin=$(find_garage)
  mkdir -p "$DIR"; touch "$DIR/$MARK"
  echo "$bin" >"$DIR/garage-bin"
  local secret; secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  for i in 1 2 3; do
    local d="$DIR/n$i"; mkdir -p "$d"
    cat >"$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "lmdb"
replication_factor = 3
consistency_mode = "consistent"
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:$(rpc_port "$i")"
rpc_public_addr = "127.0.0.1:$(rpc_port "$i")"
rpc_secret = "$secret"
bootstrap_peers = []

[s3_api]
api_bind_addr = "127.0.0.1:$(s3_port "$i")"
s3_region = "$REGION"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$(admin_port "$i")"
admin_token = "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
EOF
    start_node "$i"
  done
  local ok=
  for _ in $(seq 100); do g status >/dev/null 2>&1 && { ok=1; break; }; sleep 0.2; done
  [ -n "$ok" ] || die "node 1 did not answer in 20 s (see $DIR/n1/log)"
  for i in 2 3; do
    local nid; nid=$("$bin" -c "$DIR/n$i/garage.toml" node id -q 2>/dev/null) || die "node $i has no ID (see $DIR/n$i/log)"
    g node connect "$nid" >/dev/null
  done
  ok=
  for _ in $(seq 100); do
    [ "$(g status 2>/dev/null | grep -cE '^[0-9a-f]{16}')" -ge 3 ] && { ok=1; break; }; sleep 0.2
  done
  [ -n "$ok" ] || die "the three nodes did not see each other in 20 s"
  for nid in $(g status | grep 'NO ROLE ASSIGNED' | grep -oE '^[0-9a-f]{16}'); do
    g layout assign -z dc1 -c 1G "$nid" >/dev/null
  done
  g layout apply --version 1 >/dev/null
  g bucket create "$BUCKET" >/dev/null
  local out key secret_key
  out=$(g key create cairn-test)
  key=$(grep -oE 'GK[0-9a-f]+' <<<"$out" | head -1)
  secret_key=$(awk '/Secret key/ {print $NF}' <<<"$out")
  [ -n "$key" ] && [ -n "$secret_key" ] || die "cannot read the key from: $out"
  g bucket allow --read --write --owner "$BUCKET" --key "$key" >/dev/null
  cat >"$DIR/env" <<EOF
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret_key
export AWS_DEFAULT_REGION=$REGION
export CAIRN_TEST_S3_URL=s3:http://127.0.0.1:$(s3_port 1)/$BUCKET
EOF
  # The layout takes a few seconds to reach every node: wait until a write works.
  local url; url="http://127.0.0.1:$(s3_port 1)/$BUCKET/probe-$$"
  ok=
  for _ in $(seq 60); do
    [ "$(s3_curl -X PUT --data-binary probe "$url" 2>/dev/null)" = 200 ] && { ok=1; break; }; sleep 0.5
  done
  [ -n "$ok" ] || die "a probe PUT did not succeed in 30 s (see $DIR/n*/log)"
  s3_curl -X DELETE "$url" >/dev/null || true
  if [ -n "${CAIRN_GARAGE_OWNER:-}" ]; then
    kill -0 "$CAIRN_GARAGE_OWNER" 2>/dev/null || die "CAIRN_GARAGE_OWNER=$CAIRN_GARAGE_OWNER is not a running process"
    CAIRN_GARAGE_WATCHDOG=1 setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; exec "$2" down' \
      watchdog "$CAIRN_GARAGE_OWNER" "$(realpath "$0")" >>"$DIR/watchdog.log" 2>&1 </dev/null &
    echo $! >"$DIR/watchdog.pid"
  fi
  log "3 nodes up in $DIR; bucket $BUCKET"
  cat "$DIR/env"
}

down() {
  [ -d "$DIR" ] || { log "nothing in $DIR"; return 0; }
  [ -f "$DIR/$MARK" ] || die "$DIR is not this script's; not touching it"
  for i in 1 2 3; do stop_pid_file "$DIR/n$i/pid"; done
  [ -n "${CAIRN_GARAGE_WATCHDOG:-}" ] || stop_pid_file "$DIR/watchdog.pid"
  rm -rf "$DIR"
  log "stopped; $DIR removed"
}

node_arg() {
  case "${1:-}" in 1|2|3) echo "$1" ;; *) die "give a node number, 1 to 3" ;; esac
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) [ -f "$DIR/env" ] || die "no cluster in $DIR"; cat "$DIR/env" ;;
  kill-node) n=$(node_arg "${2:-}"); stop_pid_file "$DIR/n$n/pid" KILL; log "node $n killed" ;;
  start-node) n=$(node_arg "${2:-}"); start_node "$n"; log "node $n started (pid $(cat "$DIR/n$n/pid"))" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
