//! A full disk: the repository on a small tmpfs (mounted by the test, as root).

use std::fs;

use crate::args;
use crate::util::*;

#[test]
fn a_snapshot_that_runs_out_of_space_fails_clearly_and_the_next_one_succeeds() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir_all(&mnt).unwrap();
    let Some(_mounted) = mount_tmpfs(&mnt, "24m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let repo = mnt.join("repo");
    cairn(&repo).arg("init").assert().success();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(5);
    fs::write(src.join("small.txt"), rng.text(10_000)).unwrap();
    let first = cairn_json(&repo, args!["snapshot", &src], 0);
    let want = describe(&src);

    // 40 MiB of incompressible data into a 24 MiB filesystem.
    for i in 0..4 {
        fs::write(src.join(format!("big{i}")), rng.bytes(10 << 20)).unwrap();
    }
    let out = cairn(&repo).args(args!["snapshot", &src]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device") && stderr.contains("no snapshot was recorded"), "{stderr}");
    // No half snapshot: the list is what it was, and the repository scrubs clean.
    let list = cairn_json(&repo, args!["list"], 0);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], first["id"]);
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
    let target = dir.path().join("out");
    cairn_json(&repo, args!["restore", "latest", "--target", &target], 0);
    assert_same(&want, &describe(&restored(&target, &src)), "the earlier snapshot");

    // Space is freed (the big files go, gc clears what the failed run left): the next run works.
    for i in 0..4 {
        fs::remove_file(src.join(format!("big{i}"))).unwrap();
    }
    fs::write(src.join("medium"), rng.bytes(2 << 20)).unwrap();
    cairn_json(&repo, args!["gc"], 0);
    let next = cairn_json(&repo, args!["snapshot", &src], 0);
    assert!(next["id"].is_string());
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
}
