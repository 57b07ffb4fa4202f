//! Faults of the store under a running command, on the real cluster: a node killed during a
//! snapshot, the whole cluster stopped during one, and a run suspended past its lease.
//!
//! The nodes are stopped and started with `scripts/garage-cluster.sh kill-node N` /
//! `start-node N`, run with this process's environment: `CAIRN_GARAGE_DIR` and
//! `CAIRN_GARAGE_PORT` say which cluster (as when it was started; a harness that starts the
//! cluster itself sets them for the tests too). A test runs only when that cluster is the one
//! `CAIRN_TEST_S3_URL` names, holds the cluster alone while it stops nodes, and starts every
//! node it stopped again when it ends, failed or not ([`Cluster`]'s drop). A snapshot is
//! caught at a known point with a fail-point that stops the process (`stop@N`), so the fault
//! lands mid-upload, not before or after; every wait is bounded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{PoisonError, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::{json, run, s3_url, CLUSTER};
use crate::args;
use crate::util::*;

/// `scripts/garage-cluster.sh`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage-cluster.sh")
}

/// Runs the cluster script with `args`, in this process's environment.
fn garage(args: &[&str]) -> std::process::Output {
    Command::new("bash").arg(script()).args(args).output().expect("run scripts/garage-cluster.sh")
}

/// The cluster, held alone, with the nodes this test stopped (started again when dropped).
struct Cluster {
    _alone: RwLockWriteGuard<'static, ()>,
    down: Vec<u8>,
}

impl Cluster {
    /// The cluster behind `CAIRN_TEST_S3_URL`, when the script runs it; `None` (a message said
    /// why) otherwise.
    fn take(test: &str) -> Option<Self> {
        let url = std::env::var("CAIRN_TEST_S3_URL").ok()?;
        let env = garage(&["env"]);
        let ours = String::from_utf8_lossy(&env.stdout).lines().any(|l| l == format!("export CAIRN_TEST_S3_URL={url}"));
        if !ours {
            eprintln!(
                "{test}: skipped ({url} is not the cluster scripts/garage-cluster.sh runs in this environment; \
                 set CAIRN_GARAGE_DIR and CAIRN_GARAGE_PORT as when it was started)"
            );
            return None;
        }
        Some(Self { _alone: CLUSTER.write().unwrap_or_else(PoisonError::into_inner), down: Vec::new() })
    }

    fn kill(&mut self, node: u8) {
        let out = garage(&["kill-node", &node.to_string()]);
        assert!(out.status.success(), "kill-node {node}: {}", String::from_utf8_lossy(&out.stderr));
        self.down.push(node);
    }

    /// Starts every node this test stopped, and waits (bounded) until the cluster takes writes.
    fn start_all(&mut self) {
        for node in std::mem::take(&mut self.down) {
            let out = garage(&["start-node", &node.to_string()]);
            assert!(out.status.success(), "start-node {node}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(writes_work(), "the cluster did not take a write within 90 s of its restart");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Also when the test failed: the tests after it need every node.
        if self.down.is_empty() {
            return;
        }
        for node in std::mem::take(&mut self.down) {
            let _ = garage(&["start-node", &node.to_string()]);
        }
        if !writes_work() {
            eprintln!("the cluster did not take a write within 90 s of its restart");
        }
    }
}

/// Waits (up to 90 s) until a repository can be created in the bucket: the restarted nodes
/// found each other and a write reaches a quorum. False when it never could.
fn writes_work() -> bool {
    let Ok(cache) = tempfile::tempdir() else { return false };
    let started = Instant::now();
    for attempt in 0.. {
        let Some(probe) = s3_url(&format!("probe{attempt}")) else { return false };
        let ok = cairn(Path::new(&probe))
            .env("XDG_CACHE_HOME", cache.path())
            .env("CAIRN_S3_ATTEMPTS", "1")
            .arg("init")
            .timeout(Duration::from_secs(60))
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            eprintln!("the cluster took a write again {:.1} s after the restart", started.elapsed().as_secs_f64());
            return true;
        }
        if started.elapsed() > Duration::from_secs(90) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// A cairn process under test; killed (and reaped) when dropped, so a failing test never
/// leaves one stopped.
struct Spawned {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Spawned {
    /// `cairn --json ARGS` on `repo`, with `failpoints` and more environment, output to files.
    fn new(repo: &str, cache: &Path, dir: &Path, failpoints: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let (out, err) = (dir.join("spawned.out"), dir.join("spawned.err"));
        let mut cmd = cairn_failing(Path::new(repo), failpoints);
        cmd.env("XDG_CACHE_HOME", cache)
            .envs(env.iter().copied())
            .arg("--json")
            .args(args)
            .stdout(Stdio::from(File::create(&out).unwrap()))
            .stderr(Stdio::from(File::create(&err).unwrap()));
        Self { child: cmd.spawn().expect("spawn cairn"), out, err }
    }

    fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits (up to 120 s) until the process stopped itself at its fail-point.
    fn wait_stopped(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let stat = format!("/proc/{}/stat", self.child.id());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("cairn ended ({status}) before its fail-point: {}", self.stderr());
            }
            // The state is the field after the command's name, which is in parentheses.
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            if text.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T')) {
                return;
            }
            assert!(Instant::now() < deadline, "cairn did not reach its fail-point in 120 s: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn resume(&self) {
        rustix::process::kill_process(self.pid(), rustix::process::Signal::CONT).unwrap();
    }

    /// Waits (at most `limit`: a hang fails the test) for the end; exit code, stdout, stderr.
    fn finish(&mut self, limit: Duration) -> (i32, String, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < limit, "cairn still running after {limit:?}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        };
        let code = status.code().unwrap_or_else(|| panic!("cairn ended by a signal ({status}): {}", self.stderr()));
        (code, std::fs::read_to_string(&self.out).unwrap(), self.stderr())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The snapshots the repository lists, through `cache`.
fn listed(repo: &str, cache: &Path) -> Vec<String> {
    let list = json(repo, cache, args!["list"]);
    list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

/// Every listed snapshot is one of `known` and restores byte for byte (through a fresh cache
/// too), and `scrub --read-data` is clean.
fn every_listed_snapshot_restores(repo: &str, dir: &Path, src: &Path, known: &[(String, TreeDesc)]) {
    let (cache, fresh) = (dir.join("cache"), dir.join("fresh-cache"));
    let ids = listed(repo, &cache);
    assert_eq!(listed(repo, &fresh), ids, "a fresh cache lists the same snapshots");
    for id in &ids {
        let (_, want) =
            known.iter().find(|(k, _)| k == id).unwrap_or_else(|| panic!("{id} is listed but was never reported"));
        let target = dir.join(format!("restore-{}", &id[..8]));
        json(repo, &fresh, args!["restore", id, "--target", &target]);
        assert_same(want, &describe(&restored(&target, src)), &format!("snapshot {}", &id[..8]));
    }
    for cache in [&cache, &fresh] {
        let scrub = json(repo, cache, args!["scrub", "--read-data"]);
        assert_eq!(scrub["clean"], true, "{scrub}");
    }
}

type TreeDesc = std::collections::BTreeMap<Vec<u8>, Desc>;

/// A fault test: the cluster held alone, and a repository with one snapshot of a generated
/// tree, the tree since changed so that the next snapshot uploads a few MiB in 256 KiB packs
/// (dozens of them: a fault lands among them).
struct Fault {
    repo: String,
    cluster: Cluster,
    dir: tempfile::TempDir,
    cache: PathBuf,
    src: PathBuf,
    /// The snapshots taken, with the tree each holds.
    known: Vec<(String, TreeDesc)>,
}

impl Fault {
    fn new(test: &str) -> Option<Self> {
        let repo = s3_url(test)?;
        let cluster = Cluster::take(test)?;
        let dir = tempfile::tempdir().unwrap();
        let (src, cache) = (dir.path().join("src"), dir.path().join("cache"));
        generate(&src, 51, 1);
        run(&repo, &cache, args!["init", "--pack-size", "256K"], 0);
        let first = json(&repo, &cache, args!["snapshot", &src])["id"].as_str().unwrap().to_owned();
        let known = vec![(first, describe(&src))];
        let mut rng = Rng::new(52);
        std::fs::create_dir_all(src.join("new")).unwrap();
        for i in 0..24 {
            std::fs::write(src.join(format!("new/part{i:02}")), rng.bytes(256 << 10)).unwrap();
        }
        mutate(&src, 53);
        Some(Self { repo, cluster, dir, cache, src, known })
    }

    /// A snapshot stopped after its third pack is stored, `nodes` killed, then let go on:
    /// its exit code, stdout and stderr, and how long it ran after the kill (at most `limit`).
    fn snapshot_with_nodes_killed(
        &mut self,
        nodes: &[u8],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> (i32, String, String, Duration) {
        let src = self.src.to_str().unwrap();
        let mut snap = Spawned::new(
            &self.repo,
            &self.cache,
            self.dir.path(),
            "snapshot.pack_written=stop@3",
            env,
            &["snapshot", src],
        );
        snap.wait_stopped();
        for &node in nodes {
            self.cluster.kill(node);
        }
        let killed_at = Instant::now();
        snap.resume();
        let (code, stdout, stderr) = snap.finish(limit);
        (code, stdout, stderr, killed_at.elapsed())
    }

    /// Snapshots the tree as it is now, and remembers it.
    fn snapshot(&mut self) {
        let id = json(&self.repo, &self.cache, args!["snapshot", &self.src])["id"].as_str().unwrap().to_owned();
        self.known.push((id, describe(&self.src)));
    }

    fn listed(&self) -> Vec<String> {
        listed(&self.repo, &self.cache)
    }

    /// Once every node is up again: every listed snapshot restores, scrub is clean, and every
    /// snapshot taken is listed.
    fn check(mut self) {
        self.cluster.start_all();
        every_listed_snapshot_restores(&self.repo, self.dir.path(), &self.src, &self.known);
        assert_eq!(self.listed().len(), self.known.len());
    }
}

#[test]
fn a_node_killed_during_a_snapshot_leaves_the_remaining_quorum_to_finish_or_fail_cleanly() {
    let Some(mut t) = Fault::new("node-killed") else { return };
    // Node 2 is not the one cairn talks to: the upload goes on with two of three.
    let (code, stdout, stderr, _) = t.snapshot_with_nodes_killed(&[2], &[], Duration::from_secs(300));
    if code == 0 {
        let id = serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["id"].as_str().unwrap().to_owned();
        t.known.push((id, describe(&t.src)));
    } else {
        // Failing is allowed, cleanly: an error that names the store, and no snapshot.
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("127.0.0.1:"), "the error names the store: {stderr}");
        assert_eq!(t.listed().len(), 1, "a failed snapshot is not listed");
    }
    eprintln!("node-killed: the snapshot with node 2 killed mid-upload exited {code}");

    // The next snapshot succeeds on the two nodes left.
    mutate(&t.src, 54);
    t.snapshot();
    t.check();
}

#[test]
fn the_whole_cluster_stopped_mid_snapshot_is_a_clear_error_in_bounded_time_and_nothing_half_committed() {
    let Some(mut t) = Fault::new("cluster-down") else { return };
    // Four attempts per call (0.5 + 1 + 2 s of waits) keep the test short; the default ten
    // bound it the same way at about two minutes (docs/S3.md, "When the store goes away").
    let (code, _, stderr, took) =
        t.snapshot_with_nodes_killed(&[1, 2, 3], &[("CAIRN_S3_ATTEMPTS", "4")], Duration::from_secs(120));
    assert_eq!(code, 1, "{stderr}");
    assert!(took < Duration::from_secs(60), "one retry budget, not one per object: {took:?}: {stderr}");
    assert!(stderr.contains("snapshot failed; no snapshot was recorded"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:") && stderr.contains("gave up after 4 attempts"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    eprintln!("cluster-down: failed in {took:?}: {}", stderr.lines().last().unwrap_or(""));

    t.cluster.start_all();
    assert_eq!(t.listed().len(), 1, "the failed snapshot is not listed");
    t.snapshot();
    t.check();
}

#[test]
fn a_snapshot_suspended_past_its_lease_stops_with_lease_lost_and_writes_no_record() {
    let Some((repo, _cluster)) = super::s3_repo("lease-lost") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, cache) = (dir.path().join("src"), dir.path().join("cache"));
    generate(&src, 61, 1);
    run(&repo, &cache, args!["init"], 0);

    // Leases renewed every 200 ms and lost after 1.5 s unrenewed (the test hook; 5 and 20
    // minutes otherwise). Stopped just before its record, for 3 s: the lease is lost, whichever
    // of the heartbeat and the snapshot notices first when it goes on.
    let mut snap = Spawned::new(
        &repo,
        &cache,
        dir.path(),
        "snapshot.before_record=stop@1",
        &[("CAIRN_TEST_LEASE_MS", "200,1500,60000")],
        &["snapshot", src.to_str().unwrap()],
    );
    snap.wait_stopped();
    std::thread::sleep(Duration::from_secs(3));
    snap.resume();
    let (code, stdout, stderr) = snap.finish(Duration::from_secs(120));
    assert_eq!(code, 75, "stdout {stdout} stderr {stderr}");
    assert!(stderr.contains("lease lost"), "{stderr}");
    assert!(listed(&repo, &cache).is_empty() && listed(&repo, &dir.path().join("fresh")).is_empty());

    // The next run (leases as usual) stores the snapshot, reusing what the stopped one stored.
    let id = json(&repo, &cache, args!["snapshot", &src])["id"].as_str().unwrap().to_owned();
    let target = dir.path().join("restore");
    json(&repo, &cache, args!["restore", &id, "--target", &target]);
    assert_same(&describe(&src), &describe(&restored(&target, &src)), "the snapshot after the lost lease");
}
