//! Review of issues 18 and 19 (kits, service): what a hostile user or a bad day found.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::args;
use crate::util::*;

/// True while the process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Kills what a test left behind on purpose (a process outside cairn's reach).
fn kill(pidfile: &Path) {
    if let Ok(pid) = fs::read_to_string(pidfile) {
        let _ = std::process::Command::new("kill").arg("-9").arg(pid.trim()).status();
    }
}

fn list_len(repo: &Path) -> usize {
    cairn_json(repo, args!["list"], 0).as_array().unwrap().len()
}

#[test]
fn review18_a_capture_whose_pipe_escapes_its_group_still_ends_at_its_timeout() {
    let (dir, repo) = new_repo();
    let pidfile = dir.path().join("escaped.pid");
    // setsid puts the sleep in a session of its own, out of reach of the group kill, and it
    // holds the capture's stdout open: the timeout must still end the capture.
    let spec = format!("x.txt=sh -c 'setsid sleep 40 & echo $! > {}; echo hi; sleep 40'", pidfile.display());
    let started = Instant::now();
    let out = cairn(&repo).args(args!["snapshot", "--capture-timeout", "1s", "--capture", spec]).output().unwrap();
    let took = started.elapsed();
    kill(&pidfile);
    assert!(took < Duration::from_secs(20), "cairn waited {took:?} for a process outside the capture's group");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn review18_a_capture_that_exited_is_not_held_to_its_timeout_by_a_child_it_left() {
    let (dir, repo) = new_repo();
    cairn_json(&repo, args!["snapshot", "--capture", "a.txt=echo a"], 0);
    let pidfile = dir.path().join("child.pid");
    // The command exits at once; a background child in its group keeps stdout open. The
    // module's promise: once the command has exited, what is left of its group is killed.
    let spec = format!("x.txt=sh -c 'sleep 40 & echo $! > {}; echo hi'", pidfile.display());
    let started = Instant::now();
    let out = cairn(&repo).args(args!["snapshot", "--capture-timeout", "30s", "--capture", spec]).output().unwrap();
    let took = started.elapsed();
    let pid: i32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let left = alive(pid);
    kill(&pidfile);
    assert!(took < Duration::from_secs(15), "the snapshot waited {took:?}, near the capture's timeout");
    assert!(!left, "the child the capture left was not killed");
    // Its output may have been cut short when the child was killed: not stored as whole.
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(list_len(&repo), 1, "no half snapshot");
}

/// A repository with one snapshot, its run log path.
fn repo_with_a_run() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    cairn_json(&repo, args!["snapshot", src], 0);
    let log = repo.join("index/runs.jsonl");
    assert!(log.exists());
    (dir, repo, log)
}

#[test]
fn review18_status_reads_a_run_log_that_a_newer_cairn_has_written_to() {
    let (_dir, repo, log) = repo_with_a_run();
    let mut text = fs::read_to_string(&log).unwrap();
    text.push_str("{\"v\":2,\"command\":\"snapshot\",\"shape\":\"new\"}\n");
    fs::write(&log, text).unwrap();
    let v = cairn_json(&repo, args!["status"], 0);
    assert_eq!(v["runs"][0]["command"], "snapshot", "{v}");
    // The next run records as before, and keeps the newer line.
    cairn_json(&repo, args!["gc"], 0);
    assert!(fs::read_to_string(&log).unwrap().contains("\"v\":2"));
}

#[test]
fn review18_status_with_an_unreadable_run_log_alerts_instead_of_failing() {
    let (_dir, repo, log) = repo_with_a_run();
    fs::remove_file(&log).unwrap();
    fs::create_dir(&log).unwrap();
    let v = cairn_json(&repo, args!["status"], 9);
    assert_eq!(v["snapshots"], 1, "{v}");
    assert!(v["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "run_log_unreadable"), "{v}");
}

#[test]
fn review18_a_label_template_that_makes_a_bad_label_stops_no_service() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let calls = dir.path().join("calls");
    let profile = dir.path().join("svc.toml");
    fs::write(
        &profile,
        format!(
            "sources = [{:?}]\nlabel = \"{{profile}} {{utc}}\"\n[hooks]\nbefore_snapshot = [[\"sh\", \"-c\", \"echo stop >> {}\"]]\n",
            src.to_str().unwrap(),
            calls.display()
        ),
    )
    .unwrap();
    let out = cairn(&repo).arg("--profile").arg(&profile).arg("snapshot").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("label"), "{err}");
    assert!(!calls.exists(), "a profile that can never snapshot stopped the service first");
}
