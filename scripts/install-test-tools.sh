#!/usr/bin/env bash
# Tools the tests call that cargo does not build: b3sum (the manifest test checks cairn's output
# with the real one), promtool (the metrics test has Prometheus's own checker read cairn's
# textfile metrics and the sample alert rules) and systemd-analyze (the service tests run
# verify and security --offline on the units; no running systemd is needed). Idempotent: installs only what is missing, so a
# warm CI machine spends nothing here. Debian packages: b3sum, prometheus (promtool comes with
# it), systemd.
set -euo pipefail

missing=()
command -v b3sum >/dev/null || missing+=(b3sum)
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "== installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
# --no-install-recommends: promtool is all the tests need, not a running Prometheus.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
