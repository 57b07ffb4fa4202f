#!/usr/bin/env python3
"""Real database dumps, side by side: a PostgreSQL 15 cluster this script makes and fills.

It starts its own cluster (initdb under WORK, a Unix socket only, run as the `postgres` user
when started by root), fills it with `pgbench -i -s SCALE` and an events table of SCALE x
100,000 rows (random accounts, kinds, hex digests, times), dumps it with `pg_dump` (dump 1),
then makes an hour of traffic (`pgbench -t TX`: each transaction updates an account, a teller
and a branch and inserts a history row; 0.1% of events updated, 0.05% deleted, TX inserted)
and dumps it again (dump 2).
Then, for every run and every tool (cairn, restic, rustic when installed), into an empty
repository: a snapshot of a folder holding dump 1 as `db.sql`, then of the same folder with
dump 2 in its place. Every step runs under /usr/bin/time -v; the repository size after each
snapshot gives what the second dump added. Prints a Markdown table of medians and writes
WORK/pgdump-results.json.

    apt-get install postgresql-15 restic
    python3 benches/pgdump.py --work /var/tmp/cairn-pgdump-bench --runs 3
"""
import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import PASSWORD, du, sh, timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG = "/usr/lib/postgresql/15/bin"


def as_postgres(cmd, **kw):
    """Runs cmd as the postgres user when root (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def make_dumps(work, scale, tx):
    """dump1.sql and dump2.sql under WORK/dumps-SCALE-TX, made once."""
    out = os.path.join(work, f"dumps-{scale}-{tx}")
    d1, d2 = os.path.join(out, "dump1.sql"), os.path.join(out, "dump2.sql")
    if os.path.isfile(d2):
        return d1, d2
    shutil.rmtree(out, ignore_errors=True)
    data, sock = os.path.join(out, "pgdata"), os.path.join(out, "sock")
    os.makedirs(sock)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (out, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    as_postgres([f"{PG}/initdb", "-D", data, "-A", "trust", "-U", "postgres"])
    as_postgres([f"{PG}/pg_ctl", "-D", data, "-w", "-l", os.path.join(out, "pg.log"), "start",
                 "-o", f"-c listen_addresses='' -c unix_socket_directories={sock} -c fsync=off"])
    try:
        conn = ["-h", sock, "-U", "postgres"]
        sql = lambda q: as_postgres([f"{PG}/psql", *conn, "-q", "-v", "ON_ERROR_STOP=1", "-c", q, "postgres"])
        # pgbench's own tables (their filler columns are blank, so they compress to nothing) and
        # an events table of realistic rows: random IDs, hex digests, times.
        as_postgres([f"{PG}/pgbench", *conn, "-i", "-s", str(scale), "postgres"])
        sql("CREATE TABLE events (id bigserial PRIMARY KEY, account int NOT NULL, kind text NOT NULL, "
            "payload text NOT NULL, created timestamptz NOT NULL)")
        sql(f"INSERT INTO events (account, kind, payload, created) SELECT (random() * 100000)::int, "
            f"(ARRAY['login','logout','purchase','refund','view'])[1 + floor(random() * 5)::int], "
            f"md5(random()::text) || ' ' || md5(random()::text), now() - random() * interval '365 days' "
            f"FROM generate_series(1, {scale * 100000})")
        sql("VACUUM ANALYZE")
        as_postgres([f"{PG}/pg_dump", *conn, "-f", d1, "postgres"])
        # An hour of traffic: pgbench's transactions, and 0.1% of events updated, 0.05% deleted,
        # new ones inserted.
        as_postgres([f"{PG}/pgbench", *conn, "-c", "2", "-t", str(tx // 2), "postgres"])
        sql("UPDATE events SET kind = 'refund', payload = md5(payload) WHERE random() < 0.001")
        sql("DELETE FROM events WHERE random() < 0.0005")
        sql(f"INSERT INTO events (account, kind, payload, created) SELECT (random() * 100000)::int, 'view', "
            f"md5(random()::text), now() FROM generate_series(1, {tx})")
        as_postgres([f"{PG}/pg_dump", *conn, "-f", d2, "postgres"])
    finally:
        as_postgres([f"{PG}/pg_ctl", "-D", data, "-w", "stop", "-m", "fast"])
        shutil.rmtree(data, ignore_errors=True)
    return d1, d2


def snapshot_cmd(tool, binary, repo, src):
    if tool == "cairn":
        return [binary, "-q", "snapshot", src]
    if tool == "restic":
        return [binary, "-q", "-r", repo, "backup", src]
    return [binary, "-r", repo, "backup", src]


def init_cmd(tool, binary, repo):
    if tool == "cairn":
        return [binary, "-q", "init"]
    if tool == "restic":
        return [binary, "-q", "-r", repo, "init"]
    return [binary, "-r", repo, "init"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/var/tmp/cairn-pgdump-bench")
    ap.add_argument("--scale", type=int, default=30, help="pgbench scale (100,000 accounts each)")
    ap.add_argument("--tx", type=int, default=3000, help="pgbench transactions between the dumps")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="cairn,restic,rustic")
    args = ap.parse_args()

    sh(["cargo", "build", "--release", "-q", "-p", "cairn-cli"], env=dict(os.environ))
    cairn = os.path.join(ROOT, "target/release/cairn")
    os.makedirs(args.work, exist_ok=True)
    d1, d2 = make_dumps(args.work, args.scale, args.tx)
    tools = [t for t in args.tools.split(",") if t == "cairn" or shutil.which(t)]
    binary = {t: cairn if t == "cairn" else shutil.which(t) for t in tools}
    steps = ["dump 1 snapshot", "dump 2 snapshot"]
    results = {t: {s: [] for s in steps} for t in tools}
    src = os.path.join(args.work, "src")
    for run in range(args.runs):
        for t in tools:
            repo = os.path.join(args.work, f"repo-{t}")
            shutil.rmtree(repo, ignore_errors=True)
            shutil.rmtree(src, ignore_errors=True)
            os.makedirs(src)
            env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, RUSTIC_PASSWORD=PASSWORD, CAIRN_REPO=repo)
            subprocess.run(init_cmd(t, binary[t], repo), env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            before = du(repo)
            for step, dump in zip(steps, (d1, d2)):
                shutil.copyfile(dump, os.path.join(src, "db.sql"))
                r = timed(snapshot_cmd(t, binary[t], repo, src), env, False)
                size = du(repo)
                r["added"], before = size - before, size
                results[t][step].append(r)
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr)

    def med(t, s, k):
        return statistics.median(r[k] for r in results[t][s])

    lines = ["| | " + " | ".join(tools) + " |", "|" + " --- |" * (1 + len(tools))]
    for s in steps:
        lines.append(f"| {s} | " + " | ".join(
            f"{med(t, s, 'wall'):.2f} s (cpu {med(t, s, 'cpu'):.1f} s), {med(t, s, 'rss_mib'):.0f} MiB, "
            f"+{med(t, s, 'added') / 2**20:.1f} MiB" for t in tools) + " |")
    lines.append("| dump 2 added, % of dump 1 | " + " | ".join(
        f"{100 * med(t, steps[1], 'added') / med(t, steps[0], 'added'):.1f}%" for t in tools) + " |")
    print(f"\npgbench scale {args.scale}, {args.tx} transactions between the dumps; dump 1 "
          f"{os.path.getsize(d1) / 1e6:.0f} MB, dump 2 {os.path.getsize(d2) / 1e6:.0f} MB; {args.runs} runs, "
          f"medians; {time.strftime('%Y-%m-%d')}")
    print("\n".join(lines))
    out = os.path.join(args.work, "pgdump-results.json")
    with open(out, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "scale": args.scale, "tx": args.tx, "runs": args.runs,
                   "dump_bytes": [os.path.getsize(d1), os.path.getsize(d2)], "results": results}, f, indent=1)
    print(f"\n(JSON: {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
