#!/usr/bin/env python3
"""Side-by-side benchmark: cairn against restic (and borg, rustic when installed).

Generates a deterministic corpus with gen-corpus, then for every tool and every run: init,
full snapshot, no-change snapshot, hourly-change snapshot, full restore, and read-data check,
each under /usr/bin/time -v (wall, CPU, peak RSS), with the repository size after each step.
Prints a Markdown table of medians with cairn/peer ratios and writes a JSON file.

    python3 benches/compare.py --work /var/tmp/cairn-bench --files 40000 --bytes 1073741824 --runs 3

Warm page cache by default; --cold drops caches before every step (root only).
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
PASSWORD = "cairn-bench"


def sh(cmd, env=None, check=True):
    return subprocess.run(cmd, env=env, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def timed(cmd, env, cold):
    """Runs cmd under /usr/bin/time -v; returns wall s, cpu s, peak RSS MiB."""
    if cold:
        subprocess.run(["sync"])
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    start = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - start
    if p.returncode not in (0, 3):
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", p.stderr).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", p.stderr).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
    return {"wall": wall, "cpu": user + system, "rss_mib": rss}


def du(path):
    return int(sh(["du", "-sb", path]).stdout.split()[0])


class Tool:
    def __init__(self, name, binary, repo):
        self.name, self.binary, self.repo = name, binary, repo
        self.env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, BORG_PASSPHRASE=PASSWORD, CAIRN_REPO=repo,
                        RUSTIC_PASSWORD=PASSWORD, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def commands(self, step, tree, target):
        b, r = self.binary, self.repo
        if self.name == "cairn":
            return {
                "init": [b, "-q", "init"],
                "snapshot": [b, "-q", "snapshot", tree],
                "restore": [b, "-q", "restore", "latest", "--target", target, "--no-safety-snapshot"],
                "check": [b, "-q", "scrub", "--read-data"],
            }[step]
        if self.name == "restic":
            return {
                "init": [b, "-q", "-r", r, "init"],
                "snapshot": [b, "-q", "-r", r, "backup", tree],
                "restore": [b, "-q", "-r", r, "restore", "latest", "--target", target],
                "check": [b, "-q", "-r", r, "check", "--read-data"],
            }[step]
        if self.name == "borg":
            return {
                "init": [b, "init", "-e", "none", r],
                "snapshot": [b, "create", "--compression", "zstd,3", f"{r}::{{now:%Y%m%dT%H%M%S.%f}}", tree],
                "restore": ["sh", "-c", f'cd "{target}" && {b} extract "{r}::$({b} list --last 1 --short {r})"'],
                "check": [b, "check", "--verify-data", r],
            }[step]
        if self.name == "rustic":
            return {
                "init": [b, "-r", r, "init"],
                "snapshot": [b, "-r", r, "backup", tree],
                "restore": [b, "-r", r, "restore", "latest", target],
                "check": [b, "-r", r, "check", "--read-data"],
            }[step]
        raise ValueError(self.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/var/tmp/cairn-bench")
    ap.add_argument("--files", type=int, default=40000)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="cairn,restic,borg,rustic")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--json", default=None, help="where to write results (default WORK/results.json)")
    args = ap.parse_args()

    sh(["cargo", "build", "--release", "-q", "-p", "cairn-cli", "-p", "cairn-benches"], env=dict(os.environ), check=True)
    gen = os.path.join(ROOT, "target/release/gen-corpus")
    cairn = os.path.join(ROOT, "target/release/cairn")
    os.makedirs(args.work, exist_ok=True)
    base = os.path.join(args.work, "tree-base")
    if not os.path.isdir(base):
        sh([gen, "tree", base, "--files", str(args.files), "--bytes", str(args.bytes), "--seed", "1"])
    tree = os.path.join(args.work, "tree")

    tools = []
    for name in args.tools.split(","):
        binary = cairn if name == "cairn" else shutil.which(name)
        if binary is None:
            print(f"note: {name} is not installed; skipped", file=sys.stderr)
            continue
        tools.append(name)
    def version(t):
        argv = [cairn, "--version"] if t == "cairn" else [t, "version"] if t in ("restic",) else [t, "--version"]
        out = sh(argv, check=False).stdout.strip().splitlines()
        return out[0] if out else "?"
    versions = {t: version(t) for t in tools}

    steps = ["init", "full snapshot", "no-change snapshot", "hourly-change snapshot", "restore", "check --read-data"]
    results = {t: {s: [] for s in steps} for t in tools}
    sizes = {t: [] for t in tools}
    for run in range(args.runs):
        for name in tools:
            # Every run starts from the same tree and an empty repository.
            if os.path.exists(tree):
                shutil.rmtree(tree)
            sh(["cp", "-a", base, tree])
            repo = os.path.join(args.work, f"repo-{name}")
            target = os.path.join(args.work, f"restore-{name}")
            for p in (repo, target):
                if os.path.exists(p):
                    shutil.rmtree(p)
            tool = Tool(name, cairn if name == "cairn" else shutil.which(name), repo)
            if name == "borg":
                os.makedirs(os.path.dirname(repo), exist_ok=True)
            for step, cmd_step in [("init", "init"), ("full snapshot", "snapshot"), ("no-change snapshot", "snapshot")]:
                results[name][step].append(timed(tool.commands(cmd_step, tree, target), tool.env, args.cold))
            sh([gen, "hourly", tree, "--seed", "7"])
            results[name]["hourly-change snapshot"].append(timed(tool.commands("snapshot", tree, target), tool.env, args.cold))
            sizes[name].append(du(repo))
            os.makedirs(target)
            results[name]["restore"].append(timed(tool.commands("restore", tree, target), tool.env, args.cold))
            check = tool.commands("check", tree, target)
            if check:
                results[name]["check --read-data"].append(timed(check, tool.env, args.cold))
            print(f"run {run + 1}/{args.runs} {name} done", file=sys.stderr)

    def med(t, s, k):
        v = [r[k] for r in results[t][s]]
        return statistics.median(v) if v else None

    peers = [t for t in tools if t != "cairn"]
    header = "| step | " + " | ".join(tools) + " | " + " | ".join(f"cairn/{p}" for p in peers) + " |"
    lines = [header, "|" + " --- |" * (1 + len(tools) + len(peers))]
    for s in steps:
        cells = []
        for t in tools:
            w, rss = med(t, s, "wall"), med(t, s, "rss_mib")
            cells.append("n/a" if w is None else f"{w:.2f} s, {rss:.0f} MiB")
        ratios = []
        for p in peers:
            a, b = med("cairn", s, "wall") if "cairn" in tools else None, med(p, s, "wall")
            ratios.append("n/a" if not a or not b else f"{a / b:.2f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    lines.append("| repository size | " + " | ".join(f"{statistics.median(sizes[t]) / 2**20:.0f} MiB" for t in tools) + " | " +
                 " | ".join(f"{statistics.median(sizes['cairn']) / statistics.median(sizes[p]):.2f}" if 'cairn' in tools else "n/a" for p in peers) + " |")
    table = "\n".join(lines)
    print(f"\nCorpus: {args.files} files, {args.bytes / 2**30:.2f} GiB; {args.runs} runs, medians of wall time and peak RSS; "
          f"{'cold' if args.cold else 'warm'} cache; {time.strftime('%Y-%m-%d')}; " + "; ".join(f"{t} {v}" for t, v in versions.items()))
    print(table)
    out = args.json or os.path.join(args.work, "results.json")
    with open(out, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "files": args.files, "bytes": args.bytes, "runs": args.runs,
                   "cold": args.cold, "versions": versions, "results": results, "repo_sizes": sizes}, f, indent=1)
    print(f"\n(JSON: {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
