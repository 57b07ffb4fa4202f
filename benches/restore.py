#!/usr/bin/env python3
"""Restore and read-data check, side by side: cairn against restic, rustic and `tar -x`.

One tree (the kernel-shaped corpus of gen-corpus, or any folder given with --src, such as an
unpacked kernel source) is stored once by every tool into a new repository of its own (and
once into a tar file): the full snapshot step, one sample a tool. Then, in every run, every
tool takes a no-change snapshot of it, and restores its snapshot:

- into tmpfs (`/dev/shm`): the tool's own cost, without the disk;
- onto the disk (under WORK): what a user waits for;

and checks its repository reading every byte back (`cairn scrub --read-data`, `restic/rustic
check --read-data`). Every step runs under /usr/bin/time -v (wall, CPU, peak RSS) and every
restore goes into a directory made fresh for it. Prints a Markdown table of medians with ratios
and the run-to-run spread, and writes WORK/restore-results.json with every run.

    python3 benches/restore.py --work /var/tmp/cairn-restore-bench --runs 3
    python3 benches/restore.py --work /var/tmp/cairn-restore-bench --src /var/tmp/linux-6.1 --runs 3
    python3 benches/restore.py ... --before /path/to/an/older/cairn   # also that binary, as "before"

On ext4 without a journal, inodes freed in the last minute are skipped when new ones are
allocated, and for six minutes while their inode table blocks are dirty, which a restore
nearby makes them again: a benchmark that deleted its trees between runs (with `sync` and 65 s
of pause) still had `tar -x` take 4 s, 37 s and 25 s in its three runs. So the restored trees
are kept (room for runs x tools trees is needed under WORK); the next benchmark deletes them,
writes that out (`sync`) and starts its first disk restore --pause seconds (370) later; every
disk restore starts after a `sync`, so that none pays for the writeback of another.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import PASSWORD, du, sh, timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands(tool, binary, repo, src, target):
    """(setup commands, restore command, check command) of one tool."""
    if tool.startswith("cairn"):
        return ([[binary, "-q", "init"], [binary, "-q", "snapshot", src]],
                [binary, "-q", "restore", "latest", "--target", target, "--no-safety-snapshot"],
                [binary, "-q", "scrub", "--read-data"])
    if tool == "restic":
        return ([[binary, "-q", "-r", repo, "init"], [binary, "-q", "-r", repo, "backup", src]],
                [binary, "-q", "-r", repo, "restore", "latest", "--target", target],
                [binary, "-q", "-r", repo, "check", "--read-data"])
    if tool == "rustic":
        return ([[binary, "-r", repo, "init"], [binary, "-r", repo, "backup", src]],
                [binary, "-r", repo, "restore", "latest", target],
                [binary, "-r", repo, "check", "--read-data"])
    if tool == "tar":
        return ([["tar", "-C", os.path.dirname(src), "-cf", repo, os.path.basename(src)]],
                ["tar", "-C", target, "-xf", repo],
                None)
    raise ValueError(tool)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/var/tmp/cairn-restore-bench")
    ap.add_argument("--src", help="the tree to store and restore (default: the gen-corpus tree)")
    ap.add_argument("--files", type=int, default=80000)
    ap.add_argument("--bytes", type=int, default=1_300_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="cairn,restic,rustic,tar")
    ap.add_argument("--before", help="another cairn binary, measured as 'before'")
    ap.add_argument("--tmpfs", default="/dev/shm")
    ap.add_argument("--pause", type=float, default=370.0)
    args = ap.parse_args()

    sh(["cargo", "build", "--release", "-q", "-p", "cairn-cli", "-p", "cairn-benches"], env=dict(os.environ))
    cairn = os.path.join(ROOT, "target/release/cairn")
    os.makedirs(args.work, exist_ok=True)
    src = args.src
    if src is None:
        src = os.path.join(args.work, f"corpus-{args.files}-{args.bytes}", "tree")
        if not os.path.isdir(src):
            sh([os.path.join(ROOT, "target/release/gen-corpus"), "tree", src, "--files", str(args.files),
                "--bytes", str(args.bytes), "--seed", "1"])
    src = os.path.abspath(src)

    tools = []
    for name in args.tools.split(","):
        if name not in ("cairn", "tar") and shutil.which(name) is None:
            print(f"note: {name} is not installed; skipped", file=sys.stderr)
            continue
        tools.append(name)
    if args.before:
        tools.insert(1, "before")
    binary = {t: cairn if t == "cairn" else args.before if t == "before" else shutil.which(t) for t in tools}

    # Every tool's repository of the tree, made afresh: its snapshot is the "full snapshot" step
    # (one sample a tool); every run then takes a no-change snapshot too (the latest snapshot
    # stays the same tree).
    key = src.strip("/").replace("/", "_")
    # The tree read once first, so that no tool's full snapshot is the one that reads it cold.
    subprocess.run(f"tar -C '{os.path.dirname(src)}' -cf - '{os.path.basename(src)}' | cat > /dev/null",
                   shell=True, check=True)
    steps = ["full snapshot", "no-change snapshot", "restore into tmpfs", "restore onto disk", "check --read-data"]
    results = {t: {s: [] for s in steps} for t in tools}
    repos, envs = {}, {}
    for t in tools:
        repo = os.path.join(args.work, "repos", key, t + (".tar" if t == "tar" else ""))
        env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, RUSTIC_PASSWORD=PASSWORD, CAIRN_REPO=repo)
        shutil.rmtree(repo, ignore_errors=True)
        if os.path.exists(repo):
            os.remove(repo)
        os.makedirs(os.path.dirname(repo), exist_ok=True)
        setup, _, _ = commands(t if t != "before" else "cairn", binary[t], repo, src, None)
        for i, cmd in enumerate(setup):
            if i == len(setup) - 1:
                results[t]["full snapshot"].append(timed(cmd, env, False))
                continue
            r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                sys.exit(f"setup failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
        results[t]["full snapshot"][-1]["size"] = du(repo)
        repos[t], envs[t] = repo, env

    disk_root = os.path.join(args.work, "restored")
    deleted_at = None
    if os.path.isdir(disk_root):
        shutil.rmtree(disk_root)  # an earlier benchmark's
        subprocess.run(["sync"])
        deleted_at = time.monotonic()
    for run in range(args.runs):
        order = tools[run % len(tools):] + tools[:run % len(tools)]  # each tool goes first once
        for t in order:
            target = os.path.join(args.tmpfs, f"cairn-bench-{t}")
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            _, restore, _ = commands(t if t != "before" else "cairn", binary[t], repos[t], src, target)
            results[t]["restore into tmpfs"].append(timed(restore, envs[t], False))
            shutil.rmtree(target)
        for t in order:
            setup, _, check = commands(t if t != "before" else "cairn", binary[t], repos[t], src, None)
            if check:
                results[t]["check --read-data"].append(timed(check, envs[t], False))
                results[t]["no-change snapshot"].append(timed(setup[-1], envs[t], False))
        if deleted_at is not None:
            # The inodes an earlier benchmark's trees freed must not be met.
            time.sleep(max(0.0, args.pause - (time.monotonic() - deleted_at)))
            deleted_at = None
        for t in order:
            # Kept until the end: a tree deleted between runs makes the next ones find its
            # freed inodes (see the module documentation).
            target = os.path.join(disk_root, f"run{run}", t)
            os.makedirs(target)
            _, restore, _ = commands(t if t != "before" else "cairn", binary[t], repos[t], src, target)
            subprocess.run(["sync"])  # the tree the tool before wrote is not written out meanwhile
            results[t]["restore onto disk"].append(timed(restore, envs[t], False))
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    print(f"note: the restored trees are kept in {disk_root} (the next run deletes them and waits)",
          file=sys.stderr)

    def med(t, s, k):
        v = [r[k] for r in results[t][s]]
        return statistics.median(v) if v else None

    peers = [t for t in tools if t not in ("cairn", "before")]
    cols = tools + [f"cairn/{p}" for p in peers] + ["cairn spread"]
    lines = ["| step | " + " | ".join(cols) + " |", "|" + " --- |" * (1 + len(cols))]
    for s in steps:
        cells = []
        for t in tools:
            w = med(t, s, "wall")
            cells.append("—" if w is None else f"{w:.2f} s (cpu {med(t, s, 'cpu'):.1f} s), {med(t, s, 'rss_mib'):.0f} MiB")
        c = med("cairn", s, "wall")
        for p in peers:
            w = med(p, s, "wall")
            cells.append("—" if w is None or c is None else f"{c / w:.2f}")
        walls = [r["wall"] for r in results["cairn"][s]]
        cells.append(f"{100 * (max(walls) - min(walls)) / statistics.median(walls):.0f}%" if len(walls) > 1 else "—")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    sizes = {t: results[t]["full snapshot"][0]["size"] for t in tools}
    lines.append("| repository (tar file) after the full snapshot | " + " | ".join(
        [f"{sizes[t] / 2**20:.0f} MiB" for t in tools] + [f"{sizes['cairn'] / sizes[p]:.2f}" for p in peers] + ["—"]) + " |")
    versions = {}
    for t in tools:
        argv = [binary[t], "--version"] if t not in ("restic",) else [binary[t], "version"]
        out = sh(argv, check=False).stdout.strip().splitlines()
        versions[t] = out[0] if out else "?"
    print(f"\nTree: {src}; {args.runs} runs, medians (wall, CPU, peak RSS); {time.strftime('%Y-%m-%d')}; " +
          "; ".join(f"{t} {v}" for t, v in versions.items()))
    print("\n".join(lines))
    out = os.path.join(args.work, "restore-results.json")
    with open(out, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "src": src, "runs": args.runs, "versions": versions,
                   "results": results}, f, indent=1)
    print(f"\n(JSON: {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
