#!/usr/bin/env python3
"""cairn against restic's S3 backend on the same 3-node Garage cluster, in the same run (issue 20).

Starts the cluster of scripts/garage-cluster.sh (or uses a running one, --keep-cluster), with the
nodes logging one line per S3 request, then for every run and every tool, into a fresh prefix
of the bucket and with a fresh local cache: init, snapshot of the corpus, no-change snapshot,
restore of it into an empty folder, read-data check (cairn scrub --read-data, restic check
--read-data). Both tools run at their defaults. Every step runs under /usr/bin/time -v (wall,
CPU, peak RSS); the requests it made are counted from the Garage nodes' logs (what the server
saw, retries included), and the CPU the three Garage processes spent during it is read from
/proc. cairn also runs the same steps into a local repository, for the peak RSS it is compared
with (the S3 figure must stay within the local one plus a fixed budget).

    python3 benches/s3.py --src /var/tmp/rb/src --work /var/tmp/cairn-s3-bench --runs 3
    python3 benches/s3.py ... --node-down 3     # the same with node 3 killed after init

Prints a Markdown table of medians and writes WORK/s3-results.json with every run.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "scripts", "garage-cluster.sh")
PASSWORD = "cairn-bench"
# Restores go to new folders, never removed between runs: ext4 without a journal skips inodes
# freed in the last 60 s when it allocates new ones, 360 s while their inode table block is
# dirty (benches/README.md, compare.py); restores a minute after 90,000 files were deleted took
# four times the CPU, mostly in the kernel. The restored trees of an earlier call of this
# script are removed when it starts, and the first restore then waits this long.
RESTORE_PAUSE = 370
STEPS = ["init", "snapshot", "no-change snapshot", "restore", "check --read-data"]
# One line per request; a request that fails gets a second line ("error 404 ... in response
# to ADDR HEAD /key"), which is not counted again.
ANSI = re.compile(r"\x1b\[[0-9;]*m")
REQUEST = re.compile(r"generic_server: [0-9.:\[\]]+ (?:\(key \w+\) )?(GET|PUT|HEAD|POST|DELETE) /")


def sh(cmd, env=None, check=True):
    return subprocess.run(cmd, env=env, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Cluster:
    """The Garage cluster: its environment, request counts and CPU from its nodes."""

    def __init__(self, keep):
        self.dir = os.environ.setdefault("CAIRN_GARAGE_DIR", f"/tmp/cairn-garage-bench-{os.getuid()}")
        os.environ.setdefault("CAIRN_GARAGE_PORT", "39600")
        self.keep = keep
        if not keep:
            env = dict(os.environ, CAIRN_GARAGE_LOG="garage=warn,garage_api_common=info")
            sh([CLUSTER, "down"], env=env, check=False)
            out = sh([CLUSTER, "up"], env=env).stdout
        else:
            out = sh([CLUSTER, "env"]).stdout
        self.env = {}
        for line in out.splitlines():
            m = re.match(r"export (\w+)=(.*)", line)
            if m:
                self.env[m.group(1)] = m.group(2)
        self.url = self.env["CAIRN_TEST_S3_URL"]  # s3:http://127.0.0.1:PORT/BUCKET

    def down(self):
        if not self.keep:
            sh([CLUSTER, "down"], check=False)

    def node(self, action, n):
        sh([CLUSTER, action, str(n)])

    def requests(self):
        """Requests logged so far, by method."""
        counts = {}
        for n in (1, 2, 3):
            try:
                with open(os.path.join(self.dir, f"n{n}", "log"), errors="replace") as f:
                    for line in f:
                        m = REQUEST.search(ANSI.sub("", line))
                        if m:
                            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
            except FileNotFoundError:
                pass
        return counts

    def cpu(self):
        """CPU seconds the running nodes have used."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for n in (1, 2, 3):
            try:
                with open(os.path.join(self.dir, f"n{n}", "pid")) as f:
                    pid = f.read().strip()
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
        return total


def timed(cmd, env, cluster):
    """Runs cmd under /usr/bin/time -v: wall s, cpu s, peak RSS MiB, requests, Garage CPU s."""
    before, gcpu = (cluster.requests(), cluster.cpu()) if cluster else ({}, 0.0)
    start = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", p.stderr).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", p.stderr).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
    r = {"wall": wall, "cpu": user + system, "rss_mib": rss}
    if cluster:
        time.sleep(0.5)  # the last request's log line
        after = cluster.requests()
        r["requests"] = {m: after.get(m, 0) - before.get(m, 0) for m in after if after.get(m, 0) > before.get(m, 0)}
        r["garage_cpu"] = cluster.cpu() - gcpu
    return r


def commands(tool, binary, repo, step, src, target):
    if tool == "restic":
        return {
            "init": [binary, "-q", "-r", repo, "init"],
            "snapshot": [binary, "-q", "-r", repo, "backup", src],
            "no-change snapshot": [binary, "-q", "-r", repo, "backup", src],
            "restore": [binary, "-q", "-r", repo, "restore", "latest", "--target", target],
            "check --read-data": [binary, "-q", "-r", repo, "check", "--read-data"],
        }[step]
    return {
        "init": [binary, "-q", "--repo", repo, "init"],
        "snapshot": [binary, "-q", "--repo", repo, "snapshot", src],
        "no-change snapshot": [binary, "-q", "--repo", repo, "snapshot", src],
        "restore": [binary, "-q", "--repo", repo, "restore", "latest", "--target", target, "--no-safety-snapshot"],
        "check --read-data": [binary, "-q", "--repo", repo, "scrub", "--read-data"],
    }[step]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="/var/tmp/rb/src", help="the corpus (copied, never changed)")
    ap.add_argument("--work", default="/var/tmp/cairn-s3-bench")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cairn", default=None, help="cairn binary (default: build target/release/cairn)")
    ap.add_argument("--node-down", type=int, choices=(2, 3), help="kill this node after init (node 1 is the gateway)")
    ap.add_argument("--keep-cluster", action="store_true", help="use the running cluster (CAIRN_GARAGE_DIR)")
    ap.add_argument("--no-local", action="store_true", help="skip cairn's local-repository reference")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    cairn = args.cairn
    if cairn is None:
        sh(["cargo", "build", "--release", "-q", "-p", "cairn-cli"], env=dict(os.environ))
        cairn = os.path.join(ROOT, "target/release/cairn")
    restic = shutil.which("restic")
    if restic is None:
        sys.exit("restic is not installed (apt-get install restic)")
    os.makedirs(args.work, exist_ok=True)
    src = os.path.join(args.work, "src")
    if not os.path.isdir(src):
        sh(["cp", "-a", args.src, src])
    versions = {"cairn": sh([cairn, "--version"]).stdout.strip(), "restic": sh([restic, "version"]).stdout.strip(),
                "garage": "2.5.0"}

    cluster = Cluster(args.keep_cluster)
    tools = ["cairn", "restic"] + ([] if args.no_local else ["cairn-local"])
    results = {t: {s: [] for s in STEPS} for t in tools}
    deleted_at = time.monotonic() - RESTORE_PAUSE
    for old in os.listdir(args.work):
        if old.startswith("restore-"):
            shutil.rmtree(os.path.join(args.work, old))
            deleted_at = time.monotonic()
    restored = []
    try:
        for run in range(args.runs):
            stamp = f"{int(time.time())}-{run}"
            downed = False
            # The caches and the local repository of the last run go (a few dozen files).
            local_repo = os.path.join(args.work, "repo-local")
            for p in [local_repo] + [os.path.join(args.work, f"cache-{t}") for t in tools]:
                if os.path.exists(p):
                    shutil.rmtree(p)
            for tool in tools:
                cache = os.path.join(args.work, f"cache-{tool}")
                target = os.path.join(args.work, f"restore-{stamp}-{tool}")
                restored.append(target)
                env = dict(os.environ, **cluster.env, RESTIC_PASSWORD=PASSWORD, XDG_CACHE_HOME=cache,
                           RESTIC_CACHE_DIR=os.path.join(cache, "restic"))
                if tool == "cairn-local":
                    repo, binary, on = local_repo, cairn, None
                else:
                    repo = f"{cluster.url}/{tool}-{stamp}"
                    binary, on = (restic, cluster) if tool == "restic" else (cairn, cluster)
                for step in STEPS:
                    if step == "restore":
                        time.sleep(max(0.0, RESTORE_PAUSE - (time.monotonic() - deleted_at)))
                    cmd = commands("restic" if tool == "restic" else "cairn", binary, repo, step, src, target)
                    results[tool][step].append(timed(cmd, env, on))
                    if step == "init" and args.node_down and not downed and tool != "cairn-local":
                        cluster.node("kill-node", args.node_down)
                        downed = True
                if downed:
                    cluster.node("start-node", args.node_down)
                    downed = False
                    time.sleep(3)
                print(f"run {run + 1}/{args.runs} {tool} done", file=sys.stderr)
    finally:
        cluster.down()
        if restored:
            print(f"(the restored trees stay in {args.work}/restore-*; the next call removes them)", file=sys.stderr)

    def med(t, s, k):
        return statistics.median(r[k] for r in results[t][s])

    def reqs(t, s):
        runs = results[t][s]
        total = [sum(r.get("requests", {}).values()) for r in runs]
        by = {}
        for r in runs:
            for m, n in r.get("requests", {}).items():
                by.setdefault(m, []).append(n)
        detail = ", ".join(f"{m} {statistics.median(v):.0f}" for m, v in sorted(by.items()))
        return f"{statistics.median(total):.0f} ({detail})" if total else "—"

    down = f", node {args.node_down} down after init" if args.node_down else ""
    print(f"\nCorpus {args.src}; {args.runs} runs, medians; 3-node Garage on loopback{down}; "
          f"{time.strftime('%Y-%m-%d')}; " + "; ".join(f"{k} {v.splitlines()[0]}" for k, v in versions.items()))
    print("| step | cairn (S3) | restic (S3) | restic/cairn | cairn requests | restic requests | Garage CPU cairn / restic |"
          + (" cairn (local) |" if "cairn-local" in tools else ""))
    print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if "cairn-local" in tools else ""))
    for s in STEPS:
        cell = lambda t: f"{med(t, s, 'wall'):.2f} s (cpu {med(t, s, 'cpu'):.1f} s), {med(t, s, 'rss_mib'):.0f} MiB"
        ratio = med("restic", s, "wall") / med("cairn", s, "wall")
        line = (f"| {s} | {cell('cairn')} | {cell('restic')} | {ratio:.2f} | {reqs('cairn', s)} | {reqs('restic', s)} | "
                f"{med('cairn', s, 'garage_cpu'):.1f} / {med('restic', s, 'garage_cpu'):.1f} s |")
        if "cairn-local" in tools:
            line += f" {cell('cairn-local')} |"
        print(line)
    out = args.json or os.path.join(args.work, "s3-results.json")
    with open(out, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "src": args.src, "runs": args.runs, "node_down": args.node_down,
                   "versions": versions, "results": results}, f, indent=1)
    print(f"\n(JSON: {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
