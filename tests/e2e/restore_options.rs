//! Restore by ID, prefix, label, `latest` and `--at`; includes, excludes, dry run, overwrite
//! policies and the safety snapshot.

use std::fs;

use crate::args;
use crate::util::*;

#[test]
fn snapshots_are_found_by_id_prefix_label_latest_and_time() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("v"), b"1").unwrap();
    let a = cairn_json(&repo, args!["snapshot", &src, "--label", "before-upgrade", "--tag", "hourly"], 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = jiff::Timestamp::now().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(src.join("v"), b"2").unwrap();
    let b = cairn_json(&repo, args!["snapshot", &src], 0);
    let a_id = a["id"].as_str().unwrap();
    let b_id = b["id"].as_str().unwrap();
    let restore_v = |spec: &[&std::ffi::OsStr]| {
        let target = tempfile::tempdir_in(dir.path()).unwrap();
        let mut argv: Vec<&std::ffi::OsStr> = vec!["restore".as_ref()];
        argv.extend_from_slice(spec);
        argv.push("--target".as_ref());
        argv.push(target.path().as_os_str());
        cairn_json(&repo, &argv, 0);
        fs::read(restored(target.path(), &src).join("v")).unwrap()
    };
    assert_eq!(restore_v(args![a_id]), b"1");
    assert_eq!(restore_v(args![&a_id[..10]]), b"1");
    assert_eq!(restore_v(args!["before-upgrade"]), b"1");
    assert_eq!(restore_v(args!["latest"]), b"2");
    assert_eq!(restore_v(args![b_id]), b"2");
    assert_eq!(restore_v(args!["--at", &between]), b"1");
    assert_eq!(restore_v(args!["--at", "2999-01-01"]), b"2");
    // Nothing at or before 1999; an unknown label; a bad time.
    cairn(&repo).args(args!["restore", "--at", "1999-01-01T00:00", "--target", dir.path().join("x")]).assert().code(1);
    let out = cairn(&repo).args(args!["restore", "no-such-label", "--target", dir.path().join("x")]).assert().code(1);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("no snapshot matches"));
    cairn(&repo).args(args!["restore", "--at", "yesterday-ish", "--target", dir.path().join("x")]).assert().code(1);
    // `list` filters.
    let hourly = cairn_json(&repo, args!["list", "--tag", "hourly"], 0);
    assert_eq!(hourly.as_array().unwrap().len(), 1);
    let latest = cairn_json(&repo, args!["list", "--latest", "1"], 0);
    assert_eq!(latest[0]["id"], b["id"]);
    let text = cairn(&repo).arg("list").assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    assert!(text.contains(&a_id[..8]) && text.contains("before-upgrade") && text.contains("2 snapshots"), "{text}");
}

#[test]
fn include_exclude_and_dry_run() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    generate(&src, 3, 1);
    cairn_json(&repo, args!["snapshot", &src], 0);
    let target = dir.path().join("part");
    let inc = src.join("dir1");
    cairn_json(&repo, args!["restore", "latest", "--target", &target, "--include", &inc, "--exclude", "file1*.dat"], 0);
    // Links to files outside the included subtree cannot be kept by a partial restore.
    let unlink = |mut d: std::collections::BTreeMap<Vec<u8>, Desc>| {
        d.values_mut().for_each(|v| v.link_group = None);
        d
    };
    let got = describe(&restored(&target, &src));
    assert!(got.keys().all(|k| k.is_empty() || k.starts_with(b"dir1")), "only dir1 restored");
    assert!(got.contains_key(&b"dir1/file2.dat"[..]));
    assert!(!got.contains_key(&b"dir1/file1.dat"[..]), "excluded");
    let mut want = unlink(describe(&inc));
    want.retain(|k, _| !k.starts_with(b"file1"));
    assert_same(&want, &unlink(describe(&restored(&target, &inc))), "included subtree");

    let dry = dir.path().join("dry");
    let r = cairn_json(&repo, args!["restore", "latest", "--target", &dry, "--dry-run"], 0);
    assert!(r["files_written"].as_u64().unwrap() > 40);
    assert!(!dry.exists(), "a dry run writes nothing");
}

#[test]
fn overwrite_policies_and_the_safety_snapshot_when_restoring_in_place() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("svc");
    fs::create_dir_all(src.join("conf")).unwrap();
    fs::write(src.join("conf/a.conf"), b"good a\n").unwrap();
    fs::write(src.join("conf/b.conf"), b"good b\n").unwrap();
    let good = describe(&src);
    cairn_json(&repo, args!["snapshot", &src, "--label", "good"], 0);

    // A bad deploy: one file edited, one deleted, one added.
    fs::write(src.join("conf/a.conf"), b"broken\n").unwrap();
    fs::remove_file(src.join("conf/b.conf")).unwrap();
    fs::write(src.join("conf/extra.conf"), b"new\n").unwrap();
    let broken = describe(&src);

    // never: existing files stay; the missing one comes back.
    let r = cairn_json(&repo, args!["restore", "good", "--target", "/", "--overwrite", "never"], 0);
    assert_eq!(r["safety_snapshot"], serde_json::Value::Null, "nothing is overwritten, nothing to save");
    assert_eq!(fs::read(src.join("conf/a.conf")).unwrap(), b"broken\n");
    assert_eq!(fs::read(src.join("conf/b.conf")).unwrap(), b"good b\n");
    fs::remove_file(src.join("conf/b.conf")).unwrap();

    // The directory above the source changes mode after the snapshot: an in-place restore of
    // the source must leave it alone (restoring /etc/nginx must not reset /etc).
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o751)).unwrap();

    // if-changed (default) in place: a safety snapshot first, then the good content.
    let r = cairn_json(&repo, args!["restore", "good", "--target", "/"], 0);
    assert_eq!(
        fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777,
        0o751,
        "parent of the source untouched"
    );
    let safety = r["safety_snapshot"].as_str().expect("safety snapshot id").to_owned();
    assert_eq!(r["files_written"], 2, "{r}");
    assert_eq!(r["files_skipped"], 0);
    let mut now = describe(&src);
    assert!(now.remove(&b"conf/extra.conf"[..]).is_some(), "restore does not delete files it does not know");
    let mut want = good.clone();
    // The directories' mtimes follow the snapshot; extra.conf is still there.
    want.retain(|k, _| !k.is_empty() && k.as_slice() != b"conf");
    now.retain(|k, _| !k.is_empty() && k.as_slice() != b"conf");
    assert_same(&want, &now, "restored in place");

    // The safety snapshot holds the broken state of what was overwritten; extra.conf, which
    // the restore leaves alone, is not in it (issue 15 item 20).
    let list = cairn_json(&repo, args!["list", "--tag", "safety"], 0);
    assert_eq!(list[0]["id"].as_str().unwrap(), safety);
    let t = dir.path().join("saved");
    cairn_json(&repo, args!["restore", &safety, "--target", &t], 0);
    let mut saved = describe(&restored(&t, &src));
    let mut broken_files = broken.clone();
    saved.retain(|k, v| v.kind == 'f' && !k.is_empty());
    broken_files.retain(|k, v| v.kind == 'f' && k.as_slice() == b"conf/a.conf");
    assert_same(&broken_files, &saved, "safety snapshot");

    // A second in-place restore finds nothing changed: nothing written.
    let r = cairn_json(&repo, args!["restore", "good", "--target", "/", "--no-safety-snapshot"], 0);
    assert_eq!(r["files_written"], 0, "{r}");
    assert_eq!(r["files_skipped"], 2);
    // always rewrites.
    let r = cairn_json(
        &repo,
        args!["restore", "good", "--target", "/", "--overwrite", "always", "--no-safety-snapshot"],
        0,
    );
    assert_eq!(r["files_written"], 2);
}

/// A path the snapshot does not hold, given to restore, diff or log: a typo must not read as
/// success (issue 15 item 2).
#[test]
fn issue15_paths_the_snapshot_does_not_hold_are_said_not_silently_skipped() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/f"), b"f\n").unwrap();
    fs::write(src.join("g"), b"g\n").unwrap();
    cairn(&repo).args(args!["snapshot", &src]).assert().code(0);
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // The only include is not there: refused, nothing written.
    let target = dir.path().join("out");
    let out = cairn(&repo)
        .args(args!["restore", "latest", "--target", &target, "--include", src.join("nope")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nope is not in snapshot"), "{}", stderr(&out));
    assert!(!target.exists(), "nothing was written");

    // One of two is there: it is restored, the other named, exit 3.
    let out = cairn(&repo)
        .args(args![
            "restore",
            "latest",
            "--target",
            &target,
            "--include",
            src.join("a"),
            "--include",
            src.join("nope")
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("nope is not in snapshot"), "{}", stderr(&out));
    assert_eq!(fs::read(restored(&target, &src).join("a/f")).unwrap(), b"f\n");
    assert!(!restored(&target, &src).join("g").exists());
    let json = cairn_json(
        &repo,
        args![
            "restore",
            "latest",
            "--target",
            dir.path().join("out2"),
            "--include",
            src.join("a"),
            "--include",
            src.join("nope")
        ],
        3,
    );
    assert_eq!(json["not_found"][0], src.join("nope").to_string_lossy().as_ref());

    // diff: every path missing is an error; some missing, a warning and exit 3.
    let out = cairn(&repo).args(args!["diff", "latest", "latest", src.join("nope")]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not in snapshot"), "{}", stderr(&out));
    let out = cairn(&repo).args(args!["diff", "latest", "latest", src.join("a"), src.join("nope")]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // log of a path no snapshot ever held.
    let out = cairn(&repo).args(args!["log", src.join("nope")]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is in no snapshot"), "{}", stderr(&out));
    cairn(&repo).args(args!["log", src.join("g")]).assert().code(0);
}

/// An include whose trees cannot be read is damage the restore reports (exit 4, with its
/// report), not a path "not in the snapshot" and not an abort before anything is restored.
#[test]
fn issue15_an_include_below_a_missing_tree_is_reported_as_damage() {
    let (dir, repo) = new_repo_with_packs(Some("64K"));
    let src = dir.path().join("src");
    let mut rng = Rng::new(152);
    for sub in ["a", "b"] {
        fs::create_dir_all(src.join(sub)).unwrap();
        fs::write(src.join(sub).join("f"), rng.bytes(100_000)).unwrap();
    }
    cairn(&repo).args(args!["snapshot", &src]).assert().code(0);
    // Trees go into packs of their own, far smaller than these data packs.
    let smallest = pack_files(&repo).into_iter().min_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    fs::remove_file(smallest).unwrap();
    let r = cairn_json(
        &repo,
        args![
            "restore",
            "latest",
            "--target",
            dir.path().join("out"),
            "--include",
            src.join("a"),
            "--include",
            src.join("b")
        ],
        4,
    );
    assert!(!r["damaged"].as_array().unwrap().is_empty(), "{r}");
    assert!(r.get("not_found").is_none(), "damage is not absence: {r}");
}
