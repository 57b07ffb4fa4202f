//! Several processes on one repository, private repository files, restore as a non-root user.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::args;
use crate::util::*;

#[test]
fn concurrent_snapshots_gc_scrub_and_restore_all_succeed_without_lock_errors() {
    let (dir, repo) = new_repo();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    generate(&a, 91, 1);
    generate(&b, 92, 1);
    let base = cairn_json(&repo, args!["snapshot", &a, "--label", "base"], 0);
    let want_a = describe(&a);
    let errors: std::sync::Mutex<Vec<String>> = Default::default();
    fn run(repo: &std::path::Path, errors: &std::sync::Mutex<Vec<String>>, argv: &[&std::ffi::OsStr]) {
        let out = cairn(repo).args(argv).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() || stderr.contains("locked") {
            errors.lock().unwrap().push(format!("{argv:?}: {stderr}"));
        }
    }
    let (repo, errors_ref, a, b) = (&repo, &errors, &a, &b);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(move || run(repo, errors_ref, args!["snapshot", a]));
            s.spawn(move || run(repo, errors_ref, args!["snapshot", b]));
            s.spawn(move || run(repo, errors_ref, args!["gc", "--max-wait", "30s"]));
            s.spawn(move || run(repo, errors_ref, args!["scrub", "--read-data"]));
            s.spawn(move || {
                let t = tempfile::tempdir().unwrap();
                run(repo, errors_ref, args!["restore", "base", "--target", t.path()]);
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    // Two gc runs at once: one refuses cleanly; nothing else may fail.
    let other: Vec<&String> = errors.iter().filter(|e| !e.contains("another gc is running")).collect();
    assert!(other.is_empty(), "{other:#?}");
    let list = cairn_json(repo, args!["list"], 0);
    assert_eq!(list.as_array().unwrap().len(), 7, "base and six concurrent snapshots");
    assert_eq!(cairn_json(repo, args!["scrub", "--read-data"], 0)["clean"], true);
    let t = dir.path().join("out");
    cairn_json(repo, args!["restore", base["id"].as_str().unwrap(), "--target", &t], 0);
    assert_same(&want_a, &describe(&restored(&t, a)), "base after the storm");
}

#[test]
fn repository_files_are_private_or_group_readable_as_chosen_at_init() {
    for group in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let mut init = cairn(&repo);
        init.arg("init");
        if group {
            init.arg("--group-readable");
        }
        init.assert().success();
        let src = dir.path().join("src");
        generate(&src, 93, 1);
        cairn_json(&repo, args!["snapshot", &src], 0);
        cairn_json(&repo, args!["forget", "--keep-last", "1", "--gc"], 0);
        cairn_json(&repo, args!["scrub"], 0);
        let mut seen = 0;
        for e in walkdir::WalkDir::new(&repo).min_depth(1).into_iter().filter_map(Result::ok) {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            let want = match (e.file_type().is_dir(), group) {
                (true, false) => 0o700,
                (false, false) => 0o600,
                (true, true) => 0o750,
                (false, true) => 0o640,
            };
            assert_eq!(mode, want, "{} is {mode:o}, want {want:o}", e.path().display());
            seen += 1;
        }
        assert!(seen > 8);
    }
}

#[test]
fn restore_as_a_non_root_user_skips_owners_with_one_summary_warning() {
    if !is_root() {
        eprintln!("skipped: needs root to make a tree owned by others and to switch user");
        return;
    }
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    generate(&src, 94, 1); // as root: files owned by 4242 and root among them
    cairn_json(&repo, args!["snapshot", &src, "--label", "x"], 0);
    let target = dir.path().join("as-nobody");
    fs::create_dir_all(&target).unwrap();
    for e in walkdir::WalkDir::new(dir.path()) {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(assert_cmd::cargo::cargo_bin("cairn"))
        .env("CAIRN_REPO", &repo)
        .env("HOME", dir.path())
        .args(args!["--json", "restore", "x", "--target", &target])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(out.status.success(), "{} {r}", String::from_utf8_lossy(&out.stderr));
    let owner_warnings: Vec<&serde_json::Value> =
        r["warnings"].as_array().unwrap().iter().filter(|w| w["message"].as_str().unwrap().contains("owner")).collect();
    assert_eq!(owner_warnings.len(), 1, "one summary, not one per file: {r}");
    assert!(owner_warnings[0]["message"].as_str().unwrap().contains("needs root"));
    // The content is all there.
    let mut want = describe(&src);
    let mut got = describe(&restored(&target, &src));
    for d in [&mut want, &mut got] {
        d.retain(|_, v| v.kind == 'f');
        d.values_mut().for_each(|v| {
            v.uid = 0;
            v.gid = 0;
            v.mode &= 0o777; // setuid/setgid are dropped by the kernel for a non-root owner
        });
    }
    assert_same(&want, &got, "content restored as nobody");
}
