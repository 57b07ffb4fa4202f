//! Everyday semantics of restoring in place (issue 15): `--delete` makes a tree equal to the
//! snapshot (item 4), `-v` says exactly what a restore changes (item 7), and the safety
//! snapshot holds only what it changes (item 20).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::args;
use crate::util::*;

/// The `changes` of a restore report as (action, path) pairs.
fn changes(r: &Value) -> Vec<(String, String)> {
    r["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes in {r}"))
        .iter()
        .map(|c| (c["action"].as_str().unwrap().to_owned(), c["path"].as_str().unwrap().to_owned()))
        .collect()
}

fn pairs(list: &[(&str, &Path)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> =
        list.iter().map(|(a, p)| ((*a).to_owned(), p.to_string_lossy().into_owned())).collect();
    v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    v
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    v
}

/// The safety snapshot a restore report names, restored into a fresh directory: what it holds
/// of `src` (described), and the paths its record names.
fn safety_contents(repo: &Path, dir: &Path, r: &Value, src: &Path) -> (BTreeMap<Vec<u8>, Desc>, Vec<String>) {
    let id = r["safety_snapshot"].as_str().unwrap_or_else(|| panic!("no safety snapshot in {r}")).to_owned();
    let list = cairn_json(repo, args!["list", "--tag", "safety"], 0);
    let rec = list.as_array().unwrap().iter().find(|s| s["id"] == id.as_str()).expect("the safety snapshot is listed");
    let paths = rec["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    let t = tempfile::tempdir_in(dir).unwrap();
    cairn_json(repo, args!["restore", &id, "--target", t.path()], 0);
    let at = restored(t.path(), src);
    let got = if at.exists() { describe(&at) } else { BTreeMap::new() };
    (got, paths)
}

/// Files only (directories' times and the root are not what a safety snapshot is about).
fn files_of(mut d: BTreeMap<Vec<u8>, Desc>) -> BTreeMap<Vec<u8>, Desc> {
    d.retain(|k, v| !k.is_empty() && v.kind != 'd');
    d
}

/// A rollback with `--delete` leaves exactly the snapshot: what was added since (a drop-in
/// directory, a new file, a symlink) is gone, everything else is as it was, byte for byte and
/// in its metadata. The safety snapshot holds what was deleted, so it can come back.
#[test]
fn issue15_item4_delete_makes_the_tree_equal_to_the_snapshot() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("svc");
    generate(&src, 41, 1);
    let good = describe(&src);
    cairn_json(&repo, args!["snapshot", &src, "--label", "good"], 0);

    mutate(&src, 7); // edits, a new file, a deletion, a rename
    fs::create_dir_all(src.join("unit.service.d")).unwrap();
    fs::write(src.join("unit.service.d/override.conf"), b"[Service]\nExecStart=/bin/false\n").unwrap();
    fs::write(src.join("dir2/added.conf"), b"added after the snapshot\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("dir3/added-link")).unwrap();
    assert_ne!(describe(&src).len(), good.len());

    // Without --delete the additions survive (the issue's complaint).
    let r = cairn_json(&repo, args!["restore", "good", "--target", "/", "--no-safety-snapshot"], 0);
    assert_eq!(r["deleted"].as_u64().unwrap_or(0), 0);
    assert!(src.join("unit.service.d/override.conf").exists());

    let r = cairn_json(&repo, args!["restore", "good", "--target", "/", "--delete"], 0);
    assert!(r["deleted"].as_u64().unwrap() >= 5, "{r}"); // the drop-in dir and file, added.conf, link, new-7.log, renamed-7.dat
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    assert_same(&good, &describe(&src), "after restore --delete");

    // The safety snapshot has what --delete removed: the drop-in comes back from it.
    let (saved, _) = safety_contents(&repo, dir.path(), &r, &src);
    let drop_in =
        saved.get(&b"unit.service.d/override.conf"[..]).expect("the deleted drop-in is in the safety snapshot");
    assert_eq!(drop_in.content, Some(blake3::hash(b"[Service]\nExecStart=/bin/false\n")));
    assert!(saved.contains_key(&b"dir2/added.conf"[..]) && saved.contains_key(&b"dir3/added-link"[..]));

    // Nothing left to delete: a second run deletes nothing and changes nothing.
    let r = cairn_json(&repo, args!["restore", "good", "--target", "/", "--delete"], 0);
    assert_eq!(r["deleted"], 0, "{r}");
    assert_same(&good, &describe(&src), "after a second restore --delete");
}

/// `--dry-run --delete` names what would be deleted and deletes nothing.
#[test]
fn issue15_item4_dry_run_delete_lists_and_deletes_nothing() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("etc");
    fs::create_dir_all(src.join("app")).unwrap();
    fs::write(src.join("app/a.conf"), b"a\n").unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    fs::create_dir_all(src.join("app/conf.d/deeper")).unwrap();
    fs::write(src.join("app/conf.d/deeper/x.conf"), b"x\n").unwrap();
    fs::write(src.join("extra"), b"e\n").unwrap();
    let before = describe(&src);

    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete", "--dry-run", "-v"], 0);
    assert_eq!(r["deleted"], 4, "{r}");
    assert_eq!(
        changes(&r),
        pairs(&[
            ("delete", &src.join("app/conf.d")),
            ("delete", &src.join("app/conf.d/deeper")),
            ("delete", &src.join("app/conf.d/deeper/x.conf")),
            ("delete", &src.join("extra")),
        ])
    );
    assert_same(&before, &describe(&src), "a dry run deletes nothing");
    let out =
        cairn(&repo).args(args!["restore", "latest", "--target", "/", "--delete", "--dry-run"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("would delete: 4 entries"), "{text}");
    assert_same(&before, &describe(&src), "a dry run deletes nothing");
}

/// `--delete` only ever removes below the restored paths, through nothing: a symlink in the
/// tree pointing outside is removed, not followed; a symlink where the snapshot has a directory
/// is replaced by the directory, and what it pointed at is untouched; nothing outside an
/// `--include` goes; excluded names are kept; and `--overwrite never` is refused.
#[test]
fn issue15_item4_delete_never_leaves_the_restored_paths() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("srv");
    fs::create_dir_all(src.join("conf/sub")).unwrap();
    fs::create_dir_all(src.join("data")).unwrap();
    fs::write(src.join("conf/a.conf"), b"a\n").unwrap();
    fs::write(src.join("conf/sub/s.conf"), b"s\n").unwrap();
    fs::write(src.join("data/d"), b"d\n").unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);

    // Outside: precious files, reachable from the tree only through symlinks.
    let outside = dir.path().join("outside");
    let outside2 = dir.path().join("outside2");
    for o in [&outside, &outside2] {
        fs::create_dir_all(o.join("inner")).unwrap();
        fs::write(o.join("precious"), b"keep me\n").unwrap();
        fs::write(o.join("inner/also"), b"keep me too\n").unwrap();
    }
    let outside_before = (describe(&outside), describe(&outside2));
    std::os::unix::fs::symlink(&outside, src.join("conf/evil")).unwrap();
    fs::remove_dir_all(src.join("conf/sub")).unwrap();
    std::os::unix::fs::symlink(&outside2, src.join("conf/sub")).unwrap();
    fs::write(src.join("conf/keep.local"), b"local\n").unwrap();
    fs::write(src.join("data/extra"), b"outside the include\n").unwrap();
    fs::write(src.join("conf/extra"), b"inside the include\n").unwrap();

    // `never` keeps every existing file; `--delete` would not: refused, nothing touched.
    let out = cairn(&repo)
        .args(args!["restore", "latest", "--target", "/", "--delete", "--overwrite", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--overwrite never"));
    assert!(src.join("conf/extra").exists() && src.join("conf/evil").exists());

    let r = cairn_json(
        &repo,
        args!["restore", "latest", "--target", "/", "--delete", "--include", src.join("conf"), "--exclude", "*.local"],
        0,
    );
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    assert_same(&outside_before.0, &describe(&outside), "the target of a deleted symlink");
    assert_same(&outside_before.1, &describe(&outside2), "the target of a replaced symlink");
    assert!(fs::symlink_metadata(src.join("conf/evil")).is_err(), "the symlink itself is deleted");
    assert!(fs::symlink_metadata(src.join("conf/sub")).unwrap().is_dir(), "the snapshot's directory is back");
    assert_eq!(fs::read(src.join("conf/sub/s.conf")).unwrap(), b"s\n");
    assert!(!src.join("conf/extra").exists(), "below the include: deleted");
    assert_eq!(fs::read(src.join("conf/keep.local")).unwrap(), b"local\n", "excluded: kept");
    assert_eq!(fs::read(src.join("data/extra")).unwrap(), b"outside the include\n", "outside the include: kept");

    // Into another target: the same, below that target only.
    let target = dir.path().join("t");
    let r = cairn_json(&repo, args!["restore", "latest", "--target", &target], 0);
    assert_eq!(r["deleted"], 0);
    let there = restored(&target, &src);
    std::os::unix::fs::symlink(&outside, there.join("escape")).unwrap();
    fs::write(dir.path().join("beside-the-target"), b"b\n").unwrap();
    cairn_json(&repo, args!["restore", "latest", "--target", &target, "--delete"], 0);
    assert!(fs::symlink_metadata(there.join("escape")).is_err());
    assert_same(&outside_before.0, &describe(&outside), "the target of a deleted symlink");
    assert!(dir.path().join("beside-the-target").exists());
}

/// `--dry-run -v` says exactly which paths an in-place restore overwrites, creates, resets the
/// metadata of and deletes, in text and in `--json`; unchanged paths are not listed; and the
/// real run with `-v` lists the same.
#[test]
fn issue15_item7_verbose_lists_exactly_what_a_restore_changes() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("etc");
    fs::create_dir_all(src.join("nginx/sites")).unwrap();
    for (name, body) in [("nginx/nginx.conf", "main\n"), ("nginx/mime", "types\n"), ("nginx/sites/a", "site a\n")] {
        fs::write(src.join(name), body).unwrap();
    }
    fs::set_permissions(src.join("nginx/mime"), fs::Permissions::from_mode(0o644)).unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    fs::write(src.join("nginx/nginx.conf"), b"edited\n").unwrap(); // overwrite
    fs::remove_dir_all(src.join("nginx/sites")).unwrap(); // create (dir and file)
    fs::set_permissions(src.join("nginx/mime"), fs::Permissions::from_mode(0o600)).unwrap(); // metadata
    fs::write(src.join("nginx/new"), b"new\n").unwrap(); // delete (with --delete)
    let before = describe(&src);

    let without_delete = pairs(&[
        ("metadata", &src.join("nginx/mime")),
        ("overwrite", &src.join("nginx/nginx.conf")),
        ("create", &src.join("nginx/sites")),
        ("create", &src.join("nginx/sites/a")),
    ]);
    let mut want = without_delete.clone();
    want.extend(pairs(&[("delete", &src.join("nginx/new"))]));
    let want = sorted(want);
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--dry-run", "-v"], 0);
    assert_eq!(sorted(changes(&r)), without_delete, "{r}");
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--dry-run", "--delete", "-v"], 0);
    assert_eq!(sorted(changes(&r)), want, "{r}");
    // Text: one line per path, the action first.
    let listed = |extra: &[&str]| {
        let out = cairn(&repo)
            .args(args!["restore", "latest", "--target", "/", "--dry-run", "-v"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| {
                let (word, path) = l.split_once(' ')?;
                ["create", "overwrite", "metadata", "delete"]
                    .contains(&word)
                    .then(|| (word.to_owned(), path.trim_start().to_owned()))
            })
            .collect();
        (sorted(lines), text)
    };
    let (lines, text) = listed(&[]);
    assert_eq!(lines, without_delete, "{text}");
    let (lines, text) = listed(&["--delete"]);
    assert_eq!(lines, want, "{text}");
    assert_same(&before, &describe(&src), "the dry run changed nothing");
    // Without -v the report carries no list.
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--dry-run"], 0);
    assert!(r.get("changes").is_none(), "{r}");

    // The real run does what the dry run said.
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete", "-v"], 0);
    assert_eq!(sorted(changes(&r)), want, "{r}");
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete", "--dry-run", "-v"], 0);
    assert_eq!(changes(&r), Vec::<(String, String)>::new(), "nothing left to change: {r}");
}

/// The safety snapshot holds what the restore overwrites or deletes, not the untouched rest
/// of the source; when nothing is overwritten or deleted there is none.
#[test]
fn issue15_item20_the_safety_snapshot_holds_only_what_the_restore_changes() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("app");
    fs::create_dir_all(src.join("conf")).unwrap();
    fs::create_dir_all(src.join("lib")).unwrap();
    fs::write(src.join("conf/a.conf"), b"good a\n").unwrap();
    fs::write(src.join("conf/b.conf"), b"good b\n").unwrap();
    let mut rng = Rng::new(20);
    for i in 0..30 {
        fs::write(src.join(format!("lib/m{i}.so")), rng.bytes(5000)).unwrap();
    }
    cairn_json(&repo, args!["snapshot", &src, "--label", "good"], 0);

    // Restoring onto an unchanged tree overwrites nothing: no safety snapshot.
    let r = cairn_json(&repo, args!["restore", "good", "--target", "/"], 0);
    assert_eq!(r["safety_snapshot"], Value::Null, "nothing to save: {r}");
    let out = cairn(&repo).args(args!["restore", "good", "--target", "/"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no safety snapshot"));

    // One file edited, one deleted (it comes back: nothing to save of it), one added.
    fs::write(src.join("conf/a.conf"), b"broken a\n").unwrap();
    fs::remove_file(src.join("conf/b.conf")).unwrap();
    fs::write(src.join("conf/c.conf"), b"added c\n").unwrap();
    let r = cairn_json(&repo, args!["restore", "good", "--target", "/"], 0);
    let (saved, paths) = safety_contents(&repo, dir.path(), &r, &src);
    assert_eq!(paths, [src.join("conf/a.conf").to_string_lossy()], "{r}");
    let saved = files_of(saved);
    assert_eq!(saved.keys().cloned().collect::<Vec<_>>(), [b"conf/a.conf".to_vec()], "only what was overwritten");
    assert_eq!(saved[&b"conf/a.conf"[..]].content, Some(blake3::hash(b"broken a\n")), "as it was before");

    // With --delete the added files are saved too (a name that is not UTF-8 as well), still
    // nothing of lib/.
    fs::write(src.join("conf/a.conf"), b"broken again\n").unwrap();
    let odd = src.join("conf").join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"odd-\xff"));
    fs::write(&odd, b"odd\n").unwrap();
    let r = cairn_json(&repo, args!["restore", "good", "--target", "/", "--delete"], 0);
    let (saved, paths) = safety_contents(&repo, dir.path(), &r, &src);
    let mut want_paths: Vec<PathBuf> = vec![src.join("conf/a.conf"), src.join("conf/c.conf"), odd.clone()];
    want_paths.sort();
    assert_eq!(paths, want_paths.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>());
    let saved = files_of(saved);
    assert_eq!(
        saved.keys().cloned().collect::<Vec<_>>(),
        [b"conf/a.conf".to_vec(), b"conf/c.conf".to_vec(), b"conf/odd-\xff".to_vec()]
    );
    assert_eq!(saved[&b"conf/c.conf"[..]].content, Some(blake3::hash(b"added c\n")));
    assert!(!src.join("conf/c.conf").exists() && !odd.exists());
}

/// `--delete` stays on the file system of the restored directory: a file system mounted below
/// it (as `/dev` or `/proc` are below `/`) loses nothing, whether the snapshot holds its mount
/// point as a directory or not; each is named in a warning.
#[test]
fn issue15_item4_delete_does_not_cross_into_mounted_file_systems() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("root");
    fs::create_dir_all(src.join("held")).unwrap();
    fs::write(src.join("f"), b"f\n").unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    fs::create_dir_all(src.join("unknown")).unwrap();
    let Some(_held) = mount_tmpfs(&src.join("held"), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let Some(_unknown) = mount_tmpfs(&src.join("unknown"), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    fs::write(src.join("held/live"), b"live\n").unwrap();
    fs::write(src.join("unknown/live"), b"live\n").unwrap();
    fs::write(src.join("extra"), b"goes\n").unwrap();

    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--delete", "--no-safety-snapshot"], 0);
    assert!(!src.join("extra").exists(), "on the same file system: deleted");
    assert_eq!(fs::read(src.join("held/live")).unwrap(), b"live\n", "below a mount point the snapshot holds");
    assert_eq!(fs::read(src.join("unknown/live")).unwrap(), b"live\n", "a mount point the snapshot does not hold");
    let warned: Vec<&str> = r["warnings"].as_array().unwrap().iter().map(|w| w["path"].as_str().unwrap()).collect();
    for p in [src.join("held"), src.join("unknown")] {
        assert!(warned.contains(&p.to_str().unwrap()), "{p:?} named in {r}");
    }
}

/// A dry run changes nothing, directories' modes included: a restore's planning pass (the dry
/// run that finds what the safety snapshot must hold) runs before that snapshot is taken, and
/// `--dry-run -v` must show a directory's mode as it is. (As root a dry run used to set an
/// existing directory's owner and mode.)
#[test]
fn issue15_item7_a_dry_run_leaves_directory_modes_alone() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("app");
    fs::create_dir_all(src.join("conf")).unwrap();
    fs::write(src.join("conf/a"), b"a\n").unwrap();
    fs::set_permissions(src.join("conf"), fs::Permissions::from_mode(0o755)).unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    fs::set_permissions(src.join("conf"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(src.join("conf/a"), b"changed\n").unwrap();
    let before = describe(&src);
    cairn_json(&repo, args!["restore", "latest", "--target", "/", "--dry-run", "-v"], 0);
    assert_same(&before, &describe(&src), "after a dry run");
    // The real restore resets it, and its safety snapshot saw the mode as it was.
    let r = cairn_json(&repo, args!["restore", "latest", "--target", "/"], 0);
    assert_eq!(fs::metadata(src.join("conf")).unwrap().permissions().mode() & 0o7777, 0o755);
    let (saved, _) = safety_contents(&repo, dir.path(), &r, &src);
    assert_eq!(saved[&b"conf"[..]].mode, 0o700, "the safety snapshot holds the directory as it was");
}
