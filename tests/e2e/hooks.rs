//! Issue 18: a profile's hooks around snapshot and restore, the validated restore with
//! rollback, and the confirmation of an in-place restore. Stand-in services are scripts put
//! first on `PATH`: a fake `systemctl` that appends its arguments and its environment to a log.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::args;
use crate::util::*;

/// A temp dir with `bin/` (first on PATH), a call log, a profile and a source tree.
struct Kit {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    src: PathBuf,
    log: PathBuf,
    profile: PathBuf,
}

impl Kit {
    fn new(hooks: &str) -> Self {
        let (dir, repo) = new_repo();
        let root = dir.path().to_path_buf();
        let bin = root.join("bin");
        fs::create_dir(&bin).unwrap();
        let log = root.join("calls.log");
        // Each call: its arguments and what cairn told it.
        script(
            &bin.join("systemctl"),
            "echo \"systemctl $* phase=$CAIRN_PHASE profile=$CAIRN_PROFILE id=${CAIRN_SNAPSHOT_ID:-none} \
             target=${CAIRN_TARGET:-none} code=${CAIRN_EXIT_CODE:-none}\" >> \"$CALLS\"\n\
             echo \"out from systemctl $1\"\n",
        );
        script(&bin.join("fails"), "echo \"fails phase=$CAIRN_PHASE\" >> \"$CALLS\"\necho broken >&2\nexit 3\n");
        script(
            &bin.join("check"),
            "echo \"check phase=$CAIRN_PHASE\" >> \"$CALLS\"\n[ \"$(cat \"$SRC/conf\")\" = good ]\n",
        );
        script(
            &bin.join("notify"),
            "echo \"notify phase=$CAIRN_PHASE code=$CAIRN_EXIT_CODE error=$CAIRN_ERROR\" >> \"$CALLS\"\n",
        );
        let src = root.join("svc");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("conf"), "good").unwrap();
        fs::write(src.join("sub/data"), "one").unwrap();
        let profile = root.join("svc.toml");
        fs::write(&profile, format!("tags = [\"svc\"]\nsources = [{:?}]\n\n[hooks]\n{hooks}", src.to_str().unwrap()))
            .unwrap();
        Self { _dir: dir, root, repo, src, log, profile }
    }

    fn cairn(&self) -> assert_cmd::Command {
        let mut c = cairn(&self.repo);
        let path = format!("{}:{}", self.root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        c.env("PATH", path).env("CALLS", &self.log).env("SRC", &self.src).arg("--profile").arg(&self.profile);
        c
    }

    fn json(&self, args: &[&std::ffi::OsStr], code: i32) -> serde_json::Value {
        let out = self.cairn().arg("--json").args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn clear_calls(&self) {
        let _ = fs::remove_file(&self.log);
    }
}

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn phases(v: &serde_json::Value) -> Vec<String> {
    v["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{} {}", h["phase"].as_str().unwrap(), h["argv"][0].as_str().unwrap()))
        .collect()
}

#[test]
fn issue18_hooks_run_in_order_around_a_snapshot_with_their_environment() {
    let kit = Kit::new(
        "before_snapshot = [[\"systemctl\", \"stop\", \"svc\"]]\n\
         after_snapshot = [[\"systemctl\", \"start\", \"svc\"]]\n\
         on_error = [[\"notify\"]]\n",
    );
    let out = kit.cairn().args(["-v", "--json", "snapshot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap();
    assert_eq!(phases(&v), ["before_snapshot systemctl", "after_snapshot systemctl"]);
    assert!(v["hooks"].as_array().unwrap().iter().all(|h| h["ok"] == true && h["exit_code"] == 0), "{v}");
    assert_eq!(
        kit.calls(),
        [
            "systemctl stop svc phase=before_snapshot profile=svc id=none target=none code=none".to_owned(),
            format!("systemctl start svc phase=after_snapshot profile=svc id={id} target=none code=0"),
        ],
        "on_error does not run when nothing failed"
    );
    // The hooks' output is in the log (-v shows info).
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("out from systemctl stop") && err.contains("out from systemctl start"), "{err}");
}

#[test]
fn issue18_hooks_a_failing_before_snapshot_takes_no_snapshot_and_still_starts_the_service() {
    let kit = Kit::new(
        "before_snapshot = [[\"systemctl\", \"stop\", \"svc\"], [\"fails\"], [\"systemctl\", \"never\"]]\n\
         after_snapshot = [[\"systemctl\", \"start\", \"svc\"]]\n\
         on_error = [[\"notify\"]]\n",
    );
    let out = kit.cairn().args(["--json", "snapshot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("before_snapshot") && err.contains("fails") && err.contains("exited 3"), "{err}");
    assert!(err.contains("broken"), "the hook's stderr is in the log: {err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["id"].is_null());
    assert_eq!(
        phases(&v),
        ["before_snapshot systemctl", "before_snapshot fails", "after_snapshot systemctl", "on_error notify"]
    );
    let calls = kit.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[0].starts_with("systemctl stop svc") && calls[1].starts_with("fails"));
    assert!(
        calls[2].starts_with("systemctl start svc phase=after_snapshot") && calls[2].ends_with("code=1"),
        "{calls:?}"
    );
    assert!(
        calls[3].starts_with("notify phase=on_error code=1 error=hook before_snapshot `fails` exited 3"),
        "{calls:?}"
    );
    assert!(cairn_json(&kit.repo, args!["list"], 0).as_array().unwrap().is_empty(), "no snapshot was taken");
    // A hook that cannot be started is a failure with a clear message.
    let kit = Kit::new("before_snapshot = [[\"no-such-command-here\"]]\n");
    let out = kit.cairn().arg("snapshot").assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("no-such-command-here") && err.contains("could not be started"), "{err}");
}

#[test]
fn issue18_hooks_a_hook_past_its_timeout_is_killed_with_its_process_group() {
    let kit = Kit::new(
        "timeout = \"1s\"\n\
         before_snapshot = [[\"sh\", \"-c\", \"sleep 600 & echo $! > \\\"$CALLS.child\\\"; wait\"]]\n\
         after_snapshot = [[\"systemctl\", \"start\", \"svc\"]]\n",
    );
    let started = std::time::Instant::now();
    let v = kit.json(args!["snapshot"], 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(v["hooks"][0]["timed_out"], true, "{v}");
    let child: i32 = fs::read_to_string(kit.root.join("calls.log.child")).unwrap().trim().parse().unwrap();
    // The background sleep was in the hook's group: it is gone too (kill 0 probes).
    wait_until("the hook's child to be gone", || {
        !Path::new(&format!("/proc/{child}")).exists()
            || fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    assert!(kit.calls()[0].starts_with("systemctl start svc"), "after_snapshot ran");
}

/// A snapshot of the kit's tree with conf "good", then a change to "bad" (and a new file),
/// snapshotted; the live tree is put back to the good state and described.
fn two_states(kit: &Kit) -> (String, String) {
    let good = kit.json(args!["snapshot"], 0)["id"].as_str().unwrap().to_owned();
    fs::write(kit.src.join("conf"), "bad").unwrap();
    fs::create_dir(kit.src.join("new")).unwrap();
    fs::write(kit.src.join("new/file"), "created by the restore").unwrap();
    fs::write(kit.src.join("sub/data"), "two, longer").unwrap();
    let bad = kit.json(args!["snapshot"], 0)["id"].as_str().unwrap().to_owned();
    fs::write(kit.src.join("conf"), "good").unwrap();
    fs::remove_dir_all(kit.src.join("new")).unwrap();
    fs::write(kit.src.join("sub/data"), "one").unwrap();
    // An mtime the restore will differ from.
    fs::write(kit.src.join("local-only"), "kept").unwrap();
    kit.clear_calls();
    (good, bad)
}

const RESTORE_HOOKS: &str = "before_restore = [[\"systemctl\", \"stop\", \"svc\"]]\n\
     after_restore = [[\"systemctl\", \"daemon-reload\"], [\"systemctl\", \"start\", \"svc\"]]\n\
     validate = [[\"check\"]]\n\
     on_error = [[\"notify\"]]\n";

#[test]
fn issue18_hooks_a_failed_validation_rolls_the_restore_back() {
    let kit = Kit::new(RESTORE_HOOKS);
    let (_, bad) = two_states(&kit);
    let before = describe(&kit.src);
    let v = kit.json(args!["restore", &bad, "--target", "/"], 7);
    assert_same(&before, &describe(&kit.src), "after the rollback");
    assert_eq!(v["validation"]["passed"], false, "{v}");
    assert_eq!(v["rolled_back"], true);
    assert!(v["safety_snapshot"].is_string());
    assert_eq!(v["rollback"]["complete"], true);
    assert!(v["rollback"]["removed"]["removed"].as_array().unwrap().len() >= 2, "{v}");
    assert_eq!(
        phases(&v),
        [
            "before_restore systemctl",
            "after_restore systemctl",
            "after_restore systemctl",
            "validate check",
            "before_restore systemctl",
            "after_restore systemctl",
            "after_restore systemctl",
            "on_error notify",
        ]
    );
    let calls = kit.calls();
    assert!(calls[0].contains(&format!("id={bad} target=/ ")), "{calls:?}");
    assert!(calls.last().unwrap().starts_with("notify phase=on_error code=7 error=validation failed"), "{calls:?}");
}

#[test]
fn issue18_hooks_no_rollback_keeps_the_failed_state() {
    let kit = Kit::new(RESTORE_HOOKS);
    let (_, bad) = two_states(&kit);
    let v = kit.json(args!["restore", &bad, "--target", "/", "--no-rollback"], 8);
    assert_eq!(fs::read_to_string(kit.src.join("conf")).unwrap(), "bad");
    assert_eq!(fs::read_to_string(kit.src.join("new/file")).unwrap(), "created by the restore");
    assert_eq!(v["rolled_back"], false);
    assert!(v["rollback"].is_null());
    assert!(kit.calls().last().unwrap().starts_with("notify phase=on_error code=8"));
    // Without --no-rollback, a validated restore needs its safety snapshot.
    kit.cairn().args(args!["restore", &bad, "--target", "/", "--no-safety-snapshot"]).assert().code(1);
}

#[test]
fn issue18_hooks_a_passing_validation_keeps_the_restore() {
    let kit = Kit::new(RESTORE_HOOKS);
    let (good, _) = two_states(&kit);
    fs::write(kit.src.join("conf"), "changed since").unwrap();
    let v = kit.json(args!["restore", &good, "--target", "/"], 0);
    assert_eq!(fs::read_to_string(kit.src.join("conf")).unwrap(), "good");
    assert_eq!(v["validation"]["passed"], true);
    assert_eq!(v["rolled_back"], false);
    assert_eq!(
        phases(&v),
        ["before_restore systemctl", "after_restore systemctl", "after_restore systemctl", "validate check"]
    );
    // A restore elsewhere runs no hooks.
    kit.clear_calls();
    let elsewhere = kit.root.join("elsewhere");
    kit.json(args!["restore", &good, "--target", &elsewhere], 0);
    assert!(kit.calls().is_empty(), "{:?}", kit.calls());
}

#[test]
fn issue18_hooks_an_in_place_restore_asks_on_a_terminal_and_not_off_one() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1)");
        return;
    }
    let kit = Kit::new("");
    let (_, bad) = two_states(&kit);
    let before = describe(&kit.src);
    // On a terminal (script(1) gives a pty), "n" changes nothing.
    let repo = kit.repo.display().to_string();
    let line = format!("{} restore {bad} --target /", cairn_bin().display());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf 'n\\n' | script -qec \"$LINE\" /dev/null")
        .env("LINE", &line)
        .env("CAIRN_REPO", &repo)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("proceed? [y/N]") && text.contains("overwrite") && text.contains("conf"), "{text}");
    assert!(text.contains("cancelled"), "{text}");
    assert_same(&before, &describe(&kit.src), "after answering no");
    // "y" restores.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf 'y\\n' | script -qec \"$LINE\" /dev/null")
        .env("LINE", &line)
        .env("CAIRN_REPO", &repo)
        .output()
        .unwrap();
    assert_eq!(fs::read_to_string(kit.src.join("conf")).unwrap(), "bad", "{}", String::from_utf8_lossy(&out.stdout));
    // Off a terminal it proceeds without asking.
    fs::write(kit.src.join("conf"), "good").unwrap();
    let out = cairn(&kit.repo).args(args!["restore", &bad, "--target", "/"]).write_stdin("n\n").assert().success();
    assert!(!String::from_utf8_lossy(&out.get_output().stderr).contains("proceed?"));
    assert_eq!(fs::read_to_string(kit.src.join("conf")).unwrap(), "bad");
}

use std::process::Command;
