//! A hostile review of issue 15's features (`tag`, selection, `restore --delete`, `diff`,
//! snapshot options): each test failed on the build it was written against.

use std::fs;
use std::path::Path;

use crate::args;
use crate::util::*;

/// Bind-mounts `from` at `at` (root only); unmounted when dropped. `None` when that cannot be done.
fn bind_mount(from: &Path, at: &Path) -> Option<Mounted> {
    let ok = std::process::Command::new("mount").arg("--bind").arg(from).arg(at).status().is_ok_and(|s| s.success());
    ok.then(|| Mounted::new(at))
}

/// `--delete` removes nothing on another mount, and a bind mount is one even when it shows the
/// same file system (same `st_dev`): its files live elsewhere (here, a folder beside the tree),
/// and deleting them through the mount point would empty that folder. Both where the snapshot
/// has no such directory and where it has one.
#[test]
fn delete_never_empties_a_bind_mount() {
    if !is_root() {
        eprintln!("skipped: bind mounts need root");
        return;
    }
    let (dir, repo) = new_repo();
    let src = dir.path().join("srv");
    fs::create_dir_all(src.join("known")).unwrap();
    fs::write(src.join("a.conf"), b"a\n").unwrap();
    fs::write(src.join("known/k"), b"k\n").unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);

    let elsewhere = dir.path().join("elsewhere");
    let elsewhere2 = dir.path().join("elsewhere2");
    for e in [&elsewhere, &elsewhere2] {
        fs::create_dir_all(e.join("inner")).unwrap();
        fs::write(e.join("precious"), b"keep me\n").unwrap();
        fs::write(e.join("inner/also"), b"keep me too\n").unwrap();
    }
    let before = describe(&elsewhere);
    fs::create_dir(src.join("mnt")).unwrap();
    let Some(_m1) = bind_mount(&elsewhere, &src.join("mnt")) else {
        eprintln!("skipped: cannot bind-mount here");
        return;
    };
    let Some(_m2) = bind_mount(&elsewhere2, &src.join("known")) else {
        eprintln!("skipped: cannot bind-mount here");
        return;
    };
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete", "--dry-run", "-v"], 0);
    let listed: Vec<&str> = r["changes"].as_array().unwrap().iter().filter_map(|c| c["path"].as_str()).collect();
    assert!(!listed.iter().any(|p| p.contains("precious") || p.contains("inner")), "{r}");
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete"], 0);
    assert_same(&before, &describe(&elsewhere), "the source of a bind mount the snapshot does not have");
    // The snapshot's file is restored into the mounted folder; what it held stays.
    assert_eq!(fs::read(elsewhere2.join("precious")).unwrap(), b"keep me\n");
    assert_eq!(fs::read(elsewhere2.join("inner/also")).unwrap(), b"keep me too\n");
    let warned = r["warnings"].as_array().unwrap();
    assert!(warned.iter().any(|w| w["path"].as_str().is_some_and(|p| p.ends_with("srv/known"))), "{r}");
}

/// A restore's safety snapshot stays one through `tag`: taking its `safety` tag off (`--set`,
/// `--remove`) or giving it a label (which makes a tagged snapshot an ordinary one) would make
/// it `latest`, so that the next `restore latest` put back what the last one replaced: refused,
/// and nothing changes. Pinning it is how to keep it.
#[test]
fn tag_keeps_a_safety_snapshot_a_safety_snapshot() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("app");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("conf"), b"good\n").unwrap();
    let good = cairn_json(&repo, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
    fs::write(src.join("conf"), b"broken\n").unwrap();
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/"], 0);
    let safety = r["safety_snapshot"].as_str().expect("a safety snapshot").to_owned();
    for change in [&["--set", "mine"][..], &["--remove", "safety"], &["--label", "keep-it"]] {
        let out = cairn(&repo).args(["tag", &safety[..12]]).args(change).output().unwrap();
        assert!(!out.status.success(), "tag {change:?} was accepted: {}", String::from_utf8_lossy(&out.stdout));
        let out = cairn(&repo).args(["tag", "--tag", "safety"]).args(change).output().unwrap();
        assert!(!out.status.success(), "tag --tag safety {change:?} was accepted");
    }
    let latest = cairn_json(&repo, args!["show", "latest"], 0);
    assert_eq!(latest["id"], good.as_str(), "latest is still the snapshot, not the safety one");
    // Pinning keeps it a safety snapshot (and keeps it).
    let r = cairn_json(&repo, args!["tag", &safety[..12], "--pin"], 0);
    let pinned = r[0]["new_id"].as_str().unwrap().to_owned();
    assert_eq!(cairn_json(&repo, args!["show", "latest"], 0)["id"], good.as_str());
    assert_eq!(cairn_json(&repo, args!["show", "latest", "--tag", "safety"], 0)["id"], pinned.as_str());
}

/// A snapshot named twice (by its ID and a prefix of it, or by a label and its ID) is one
/// snapshot: `forget` and `tag` report it once, in text and in `--json`.
#[test]
fn a_snapshot_named_twice_is_counted_once() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("app");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("conf"), b"1\n").unwrap();
    let a = cairn_json(&repo, args!["snapshot", &src, "--label", "first"], 0)["id"].as_str().unwrap().to_owned();
    fs::write(src.join("conf"), b"2\n").unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);

    let r = cairn_json(&repo, args!["tag", &a, &a[..10], "first", "--add", "x"], 0);
    assert_eq!(r.as_array().unwrap().len(), 1, "{r}");
    let out = cairn(&repo).args(["tag", "first", "--add", "y", "--dry-run"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("of 1 snapshots"));
    let out = cairn(&repo).args(["tag", "first", "first", "--add", "y"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("changed 1 of 1 snapshots"), "{text}");

    let id = cairn_json(&repo, args!["show", "first"], 0)["id"].as_str().unwrap().to_owned();
    let r = cairn_json(&repo, args!["forget", &id, &id[..9], "first", "--dry-run"], 0);
    assert_eq!(r["removed"].as_array().unwrap().len(), 0);
    let r = cairn_json(&repo, args!["forget", &id, &id[..9], "first"], 0);
    assert_eq!(r["removed"].as_array().unwrap(), &[serde_json::Value::from(id.as_str())], "{r}");
    assert_eq!(cairn_json(&repo, args!["list"], 0).as_array().unwrap().len(), 1);
}

/// `restore --delete` in place of a tree that holds the repository: a snapshot always leaves
/// its own repository out, so the snapshot never has it, and `--delete` removed the whole
/// repository (the snapshot being restored and the safety snapshot with it). It is kept.
#[test]
fn delete_never_removes_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("srv");
    fs::create_dir_all(src.join("data")).unwrap();
    fs::write(src.join("data/f"), b"f\n").unwrap();
    for repo in [src.join("backup"), src.join("data/deeper/repo")] {
        init_repo(&repo, None);
        cairn_json(&repo, args!["snapshot", &src], 0);
        fs::write(src.join("data/new"), b"new\n").unwrap();
        let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete", "--dry-run", "-v"], 0);
        let listed: Vec<&str> = r["changes"].as_array().unwrap().iter().filter_map(|c| c["path"].as_str()).collect();
        assert!(!listed.iter().any(|p| p.starts_with(repo.to_str().unwrap())), "{r}");
        let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete"], 0);
        assert!(!src.join("data/new").exists(), "{r}");
        assert_eq!(cairn_json(&repo, args!["list"], 0).as_array().unwrap().len(), 2, "the snapshot and its safety one");
        cairn_json(&repo, args!["scrub", "--read-data"], 0);
    }
}

/// What the snapshot itself left out (`snapshot --exclude '*.log'`) is not "what the snapshot
/// does not have": `--delete` keeps it, as it keeps names matching the restore's `--exclude`;
/// both also below a directory that `--delete` removes (which then stays, holding them).
#[test]
fn delete_keeps_what_the_snapshot_or_the_restore_excludes() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("app");
    fs::create_dir_all(src.join("var")).unwrap();
    fs::write(src.join("conf"), b"c\n").unwrap();
    fs::write(src.join("var/app.log"), b"log\n").unwrap();
    fs::write(src.join("var/state"), b"s\n").unwrap();
    cairn_json(&repo, args!["snapshot", &src, "--exclude", "*.log"], 0);
    fs::create_dir_all(src.join("newdir/sub")).unwrap();
    fs::write(src.join("newdir/sub/other.log"), b"log2\n").unwrap();
    fs::write(src.join("newdir/sub/x.keep"), b"k\n").unwrap();
    fs::write(src.join("newdir/gone"), b"g\n").unwrap();
    fs::write(src.join("added"), b"a\n").unwrap();
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete", "--exclude", "*.keep"], 0);
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(fs::read(src.join("var/app.log")).unwrap(), b"log\n", "left out by the snapshot: kept");
    assert_eq!(fs::read(src.join("newdir/sub/other.log")).unwrap(), b"log2\n", "left out by the snapshot, deeper");
    assert_eq!(fs::read(src.join("newdir/sub/x.keep")).unwrap(), b"k\n", "excluded by the restore, deeper");
    assert!(!src.join("newdir/gone").exists() && !src.join("added").exists(), "{r}");
}
