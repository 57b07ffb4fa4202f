//! Snapshot options: excludes and exclude files, dry run, one filesystem, the default
//! repository, and a file that changes while it is read.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::args;
use crate::util::*;

#[test]
fn excludes_from_flags_and_files_leave_out_names_and_paths() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("app");
    fs::create_dir_all(src.join("cache/deep")).unwrap();
    fs::create_dir_all(src.join("conf")).unwrap();
    fs::write(src.join("conf/app.conf"), b"x").unwrap();
    fs::write(src.join("conf/app.conf.tmp"), b"x").unwrap();
    fs::write(src.join("cache/deep/blob"), b"x").unwrap();
    fs::write(src.join("debug.log"), b"x").unwrap();
    let list = dir.path().join("excludes");
    fs::write(&list, format!("# comment\n\n{}\n*.log\n", src.join("cache").display())).unwrap();
    let r = cairn_json(&repo, args!["snapshot", &src, "--exclude", "*.tmp", "--exclude-file", &list], 0);
    assert_eq!(r["files"], 1, "{r}");
    let target = dir.path().join("out");
    cairn_json(&repo, args!["restore", "latest", "--target", &target], 0);
    let got = describe(&restored(&target, &src));
    let names: Vec<String> = got.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    assert_eq!(names, ["", "conf", "conf/app.conf"]);
    cairn(&repo).args(args!["snapshot", &src, "--exclude-file", dir.path().join("missing")]).assert().code(1);
}

#[test]
fn a_dry_run_stores_nothing_but_reports_what_it_would() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    generate(&src, 5, 1);
    let r = cairn_json(&repo, args!["snapshot", &src, "--dry-run"], 0);
    assert_eq!(r["dry_run"], true);
    assert!(r["id"].is_null());
    assert!(r["data_added"].as_u64().unwrap() > 1_000_000, "{r}");
    assert_eq!(pack_files(&repo).len(), 0);
    assert_eq!(cairn_json(&repo, args!["list"], 0).as_array().unwrap().len(), 0);
    let real = cairn_json(&repo, args!["snapshot", &src], 0);
    assert_eq!(real["data_added"], r["data_added"], "the dry run predicted what was stored");
}

#[test]
fn one_file_system_keeps_the_mount_point_but_not_what_is_mounted() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("mnt")).unwrap();
    fs::write(src.join("local.txt"), b"here").unwrap();
    let Some(_mounted) = mount_tmpfs(&src.join("mnt"), "4m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    fs::write(src.join("mnt/elsewhere.txt"), b"other fs").unwrap();
    let crossing = cairn_json(&repo, args!["snapshot", &src], 0);
    assert_eq!(crossing["files"], 2);
    let staying = cairn_json(&repo, args!["snapshot", &src, "--one-file-system"], 0);
    assert_eq!(staying["files"], 1);
    let target = dir.path().join("out");
    cairn_json(&repo, args!["restore", staying["id"].as_str().unwrap(), "--target", &target], 0);
    let root = restored(&target, &src);
    assert!(root.join("mnt").is_dir(), "the mount point itself is kept");
    assert!(!root.join("mnt/elsewhere.txt").exists());
    assert!(root.join("local.txt").exists());
}

#[test]
fn the_default_repository_is_created_on_first_snapshot_with_a_notice() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("conf");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"1").unwrap();
    let run = || {
        let mut c = assert_cmd::Command::cargo_bin("cairn").unwrap();
        c.env_remove("CAIRN_REPO").env_remove("XDG_DATA_HOME").env("HOME", home.path());
        c
    };
    let out = run().args(args!["snapshot", &src]).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let repo = home.path().join(".local/share/cairn/repo");
    assert!(stderr.contains("created the default repository") && stderr.contains(repo.to_str().unwrap()), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("created")).count(), 1, "one line: {stderr}");
    assert!(repo.join("config").exists());
    // The second run uses it silently.
    let out = run().args(args!["snapshot", &src]).assert().success();
    assert!(!String::from_utf8_lossy(&out.get_output().stderr).contains("created"));
    let out = run().args(args!["--json", "list"]).assert().success();
    let list: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[test]
fn a_file_that_keeps_changing_while_read_is_reported_and_stored_consistently() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let log = src.join("busy.log");
    fs::write(&log, Rng::new(1).bytes(64 << 20)).unwrap();
    fs::write(src.join("quiet.txt"), b"calm").unwrap();
    // A writer appends to the log for as long as the snapshot runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (Arc::clone(&stop), log.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"log line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = cairn(&repo).args(args!["--json", "snapshot", &src]).output().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &r["warnings"][0];
    assert!(
        w["path"].as_str().unwrap().ends_with("busy.log")
            && w["message"].as_str().unwrap().contains("changed while being read"),
        "{r}"
    );
    // What was stored matches its stored hash: a verified restore proves it.
    let target = dir.path().join("out");
    let restored_report = cairn_json(&repo, args!["restore", "latest", "--target", &target, "--verify"], 0);
    assert_eq!(restored_report["files_verified"], 2);
    let len = fs::metadata(restored(&target, &src).join("busy.log")).unwrap().len();
    assert!(len >= 64 << 20, "at least what was there when the read began");
}

/// The first snapshot of some paths reads everything: it says so rather than "(incremental)"
/// with no parent (issue 15 item 12).
#[test]
fn issue15_the_first_snapshot_of_its_paths_says_it_read_everything() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a\n").unwrap();
    let first = cairn(&repo).args(args!["snapshot", &src]).output().unwrap();
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(text.lines().next().unwrap().contains("the first of these paths: every file read"), "{text}");
    let second = cairn(&repo).args(args!["snapshot", &src]).output().unwrap();
    let text = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(text.lines().next().unwrap().ends_with("(incremental)") && text.contains("parent:"), "{text}");
}
