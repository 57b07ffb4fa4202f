//! Issue 13: restore picks what the user meant and never writes outside its target.
//! `latest` after an in-place restore, labels that look like IDs, directories swapped for
//! symlinks while a restore runs, paths longer than PATH_MAX, failures that must not stop
//! the rest of a restore, and leftovers of an interrupted one.

use std::fs;
use std::path::Path;

use crate::args;
use crate::util::*;

fn snapshot_id(repo: &Path, src: &Path, extra: &[&std::ffi::OsStr]) -> String {
    let mut a: Vec<&std::ffi::OsStr> = vec!["snapshot".as_ref(), src.as_os_str()];
    a.extend_from_slice(extra);
    cairn_json(repo, &a, 0)["id"].as_str().expect("snapshot id").to_owned()
}

#[test]
fn issue13_restore_latest_in_place_twice_puts_back_the_snapshot_not_the_broken_state() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("app");
    fs::create_dir_all(src.join("conf")).unwrap();
    fs::write(src.join("conf/app.conf"), "port = 8080\n").unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\nexec app\n").unwrap();
    let good = snapshot_id(&repo, &src, args![]);
    let good_tree = describe(&src);

    for round in 0..2 {
        // Somebody breaks the service; the operator rolls back to the latest snapshot.
        fs::write(src.join("conf/app.conf"), format!("port = broken {round}\n")).unwrap();
        let r = cairn_json(&repo, args!["restore", "latest", "--target", "/", "--include", &src], 0);
        assert_eq!(r["snapshot"].as_str().unwrap(), good, "round {round}: latest must be the real snapshot");
        assert!(r["safety_snapshot"].is_string(), "round {round}: a safety snapshot was taken");
        assert_same(&good_tree, &describe(&src), &format!("in-place restore of latest, round {round}"));
    }
    // The safety snapshots are there, and still restorable by ID.
    let list = cairn_json(&repo, args!["list"], 0);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    // `--at` now does not pick the safety snapshot either.
    let r = cairn_json(
        &repo,
        args!["restore", "--at", "2100-01-01T00:00:00Z", "--target", dir.path().join("at"), "--dry-run"],
        0,
    );
    assert_eq!(r["snapshot"].as_str().unwrap(), good);
}

#[test]
fn issue13_a_label_that_is_also_an_id_prefix_is_refused_and_nothing_is_forgotten() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "one").unwrap();
    let first = snapshot_id(&repo, &src, args![]);
    let prefix = first[..6].to_owned();
    fs::write(src.join("a"), "two").unwrap();
    let second = snapshot_id(&repo, &src, args!["--label", &prefix]);
    assert!(!second.starts_with(&prefix), "the test needs two different prefixes");

    let out = cairn(&repo).args(["forget", &prefix]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "forget of an ambiguous reference must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&first[..8]) && err.contains(&second[..8]), "the error names both: {err}");
    let list = cairn_json(&repo, args!["list"], 0);
    assert_eq!(list.as_array().unwrap().len(), 2, "nothing forgotten: {list}");

    // The full ID still selects the one meant, and a label that is no ID prefix still works.
    cairn_json(&repo, args!["show", &first], 0);
    let r = cairn_json(&repo, args!["show", &second[..12]], 0);
    assert_eq!(r["id"].as_str().unwrap(), second);
}
