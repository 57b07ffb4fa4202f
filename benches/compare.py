#!/usr/bin/env python3
"""Side-by-side benchmark: cairn against restic (and borg, rustic when installed).

Generates a deterministic corpus with gen-corpus (a source tree, its hourly change, its next
version, a SQL dump and the next hour's dump), then for every tool and every run, into an empty
repository: init, full snapshot, no-change snapshot, hourly-change snapshot, upgrade snapshot,
full restore of the newest snapshot, read-data check, dump 1 snapshot, dump 2 snapshot. Every
step runs under /usr/bin/time -v (wall, CPU, peak RSS); the repository size is taken after every
step, so each step's new data is known. Prints a Markdown table of medians with cairn/peer
ratios and the issue's targets, and writes a JSON file with every run.

    python3 benches/compare.py --work /var/tmp/cairn-bench --runs 3

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
# Seconds between the last mass deletion and a restore (see the comment where it is used).
RESTORE_PAUSE = 65


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


STEPS = [
    # (step, what runs, target for cairn/fastest peer)
    ("init", "init", None),
    ("full snapshot", "snapshot", 1 / 3),
    ("no-change snapshot", "snapshot", 1 / 10),
    ("hourly-change snapshot", "snapshot", 1 / 6),
    ("upgrade snapshot", "snapshot", 1 / 3),
    ("full restore", "restore", 1 / 5),
    ("check --read-data", "check", 1 / 2.5),
    ("dump 1 snapshot", "dump", None),
    ("dump 2 snapshot", "dump", None),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/var/tmp/cairn-bench")
    ap.add_argument("--files", type=int, default=80000)
    ap.add_argument("--bytes", type=int, default=1_300_000_000)
    ap.add_argument("--dump-bytes", type=int, default=600_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="cairn,restic,borg,rustic")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every step (root)")
    ap.add_argument("--json", default=None, help="where to write results (default WORK/results.json)")
    args = ap.parse_args()

    sh(["cargo", "build", "--release", "-q", "-p", "cairn-cli", "-p", "cairn-benches"], env=dict(os.environ), check=True)
    gen = os.path.join(ROOT, "target/release/gen-corpus")
    cairn = os.path.join(ROOT, "target/release/cairn")
    os.makedirs(args.work, exist_ok=True)
    # The corpus is made once per parameter set and kept; every run copies it.
    corpus = os.path.join(args.work, f"corpus-{args.files}-{args.bytes}-{args.dump_bytes}")
    base, dump1, dump2 = (os.path.join(corpus, n) for n in ("tree", "dump1.sql", "dump2.sql"))
    if not os.path.isfile(dump2):
        shutil.rmtree(corpus, ignore_errors=True)
        os.makedirs(corpus)
        sh([gen, "tree", base, "--files", str(args.files), "--bytes", str(args.bytes), "--seed", "1"])
        sh([gen, "dump", dump1, "--bytes", str(args.dump_bytes), "--seed", "5"])
        sh([gen, "dump2", dump1, dump2, "--seed", "6"])
    tree = os.path.join(args.work, "src", "tree")
    dump_dir = os.path.join(args.work, "src", "db")

    tools = []
    for name in args.tools.split(","):
        if name != "cairn" and shutil.which(name) is None:
            print(f"note: {name} is not installed; skipped", file=sys.stderr)
            continue
        tools.append(name)

    def version(t):
        argv = [cairn, "--version"] if t == "cairn" else [t, "version"] if t == "restic" else [t, "--version"]
        out = sh(argv, check=False).stdout.strip().splitlines()
        return out[0] if out else "?"

    versions = {t: version(t) for t in tools}
    steps = [s for s, _, _ in STEPS]
    # results[tool][step] = list over runs of {wall, cpu, rss_mib, size, added}
    results = {t: {s: [] for s in steps} for t in tools}
    for run in range(args.runs):
        for name in tools:
            # Every run starts from the same tree and an empty repository.
            shutil.rmtree(os.path.join(args.work, "src"), ignore_errors=True)
            os.makedirs(dump_dir)
            sh(["cp", "-a", base, tree])
            repo = os.path.join(args.work, f"repo-{name}")
            target = os.path.join(args.work, f"restore-{name}")
            for p in (repo, target):
                shutil.rmtree(p, ignore_errors=True)
            # ext4 without a journal skips inodes freed in the last 60 s (300 s more while their
            # inode table block is dirty) when it allocates new ones (find_inode_bit ->
            # recently_deleted): a restore 31 s after the rmtree above still spent 40% of its
            # time there in perf. The restore starts 65 s after it, when writeback (30 s) has
            # cleaned those blocks and the 60 s have passed, for every tool alike.
            deleted_at = time.monotonic()
            tool = Tool(name, cairn if name == "cairn" else shutil.which(name), repo)
            before = 0
            for step, kind, _ in STEPS:
                src = tree
                if step == "hourly-change snapshot":
                    sh([gen, "hourly", tree, "--seed", "7"])
                elif step == "upgrade snapshot":
                    sh([gen, "upgrade", tree, "--seed", "8"])
                elif step == "full restore":
                    time.sleep(max(0.0, RESTORE_PAUSE - (time.monotonic() - deleted_at)))
                    os.makedirs(target)
                elif step.startswith("dump"):
                    shutil.copyfile(dump1 if step.startswith("dump 1") else dump2, os.path.join(dump_dir, "db.sql"))
                    src = dump_dir
                cmd = tool.commands("snapshot" if kind == "dump" else kind, src, target)
                r = timed(cmd, tool.env, args.cold)
                r["size"] = du(repo)
                r["added"] = r["size"] - before
                before = r["size"]
                results[name][step].append(r)
                if step == "full restore":
                    shutil.rmtree(target)
            print(f"run {run + 1}/{args.runs} {name} done", file=sys.stderr)

    def med(t, s, k):
        v = [r[k] for r in results[t][s]]
        return statistics.median(v) if v else None

    peers = [t for t in tools if t != "cairn"]
    has_cairn = "cairn" in tools
    cols = tools + [f"cairn/{p}" for p in peers] + (["cairn/fastest peer", "target"] if peers and has_cairn else [])
    lines = ["| step | " + " | ".join(cols) + " |", "|" + " --- |" * (1 + len(cols))]

    def ratio_cells(values, target, fmt="{:.2f}"):
        cells = [fmt.format(values["cairn"] / values[p]) if has_cairn and values.get(p) else "n/a" for p in peers]
        if peers and has_cairn:
            best = min(values[p] for p in peers)
            r = values["cairn"] / best if best else None
            ok = "" if target is None or r is None else (" met" if r <= target else " missed")
            cells += ["n/a" if r is None else fmt.format(r), "—" if target is None else f"≤ {target:.2f}{ok}"]
        return cells

    for s, _, target in STEPS:
        cells = [f"{med(t, s, 'wall'):.2f} s (cpu {med(t, s, 'cpu'):.1f} s), {med(t, s, 'rss_mib'):.0f} MiB" for t in tools]
        walls = {t: med(t, s, "wall") for t in tools}
        lines.append(f"| {s} | " + " | ".join(cells + ratio_cells(walls, target)) + " |")
    tree_size = {t: med(t, "check --read-data", "size") for t in tools}
    lines.append("| repository after the four tree snapshots | " +
                 " | ".join([f"{tree_size[t] / 2**20:.0f} MiB" for t in tools] + ratio_cells(tree_size, 1.0)) + " |")
    d1 = {t: med(t, "dump 1 snapshot", "added") for t in tools}
    d2 = {t: med(t, "dump 2 snapshot", "added") for t in tools}
    lines.append("| dump 2 stored, % of dump 1 | " + " | ".join(
        [f"{d2[t] / 2**20:.1f} of {d1[t] / 2**20:.1f} MiB = {100 * d2[t] / d1[t]:.1f}%" for t in tools]) +
        (" | " + " | ".join(["—"] * len(peers) + [f"{100 * d2['cairn'] / d1['cairn']:.1f}%", "≤ 15%" +
         (" met" if d2["cairn"] <= 0.15 * d1["cairn"] else " missed")]) if peers and has_cairn else "") + " |")
    peak = {t: max(r["rss_mib"] for s in steps for r in results[t][s]) for t in tools}
    lines.append("| peak RSS, any step | " + " | ".join([f"{peak[t]:.0f} MiB" for t in tools] + ["—"] * len(peers)) +
                 (f" | — | ≤ 100 MiB{' met' if peak['cairn'] <= 100 else ' missed'}" if peers and has_cairn else "") + " |")
    table = "\n".join(lines)
    when = time.strftime("%Y-%m-%d")
    print(f"\nCorpus: {args.files} files, {args.bytes / 1e9:.2f} GB; dump {args.dump_bytes / 1e6:.0f} MB; "
          f"{args.runs} runs, medians (wall, CPU, peak RSS); {'cold' if args.cold else 'warm'} cache; {when}; " +
          "; ".join(f"{t} {v}" for t, v in versions.items()))
    print(table)
    out = args.json or os.path.join(args.work, "results.json")
    with open(out, "w") as f:
        json.dump({"date": when, "files": args.files, "bytes": args.bytes, "dump_bytes": args.dump_bytes,
                   "runs": args.runs, "cold": args.cold, "versions": versions, "results": results}, f, indent=1)
    print(f"\n(JSON: {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
