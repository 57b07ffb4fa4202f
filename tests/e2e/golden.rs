//! Golden repository: a repository written by format version 1 is checked in
//! (tests/fixtures/repo-v1: config, packs and snapshot records; the index is a cache and is
//! rebuilt on open). Every later cairn must open, list, restore and scrub it exactly; a format
//! change that breaks old repositories fails here (bump the version and keep reading v1, or
//! refuse it clearly and change this test on purpose).

use std::fs;
use std::path::Path;

use crate::args;
use crate::util::*;

const SNAPSHOT: &str = "deffed37334296b368ebbc29fb63c0bf84003e5647e96d5da1aee7bc3621db34";
const SOURCE: &str = "/tmp/golden/src";

fn copy(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn a_format_v1_repository_opens_lists_restores_and_scrubs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/repo-v1"), &repo);

    let list = cairn_json(&repo, args!["list"], 0);
    let s = &list[0];
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(s["id"], SNAPSHOT);
    assert_eq!(s["label"], "golden");
    assert_eq!(s["tags"][0], "v1");
    assert_eq!(s["host"], "golden-host");
    assert_eq!(s["paths"][0], SOURCE);
    assert_eq!(s["files"], 3);
    // Version 1 kept labelled snapshots from every keep-policy; read now, such a record is
    // pinned, so that promise holds (issue 15 item 5).
    assert_eq!(s["pinned"], true, "{s}");

    let target = dir.path().join("out");
    let r = cairn_json(&repo, args!["restore", "golden", "--target", &target, "--verify"], 0);
    assert_eq!(r["files_verified"], 3);
    let root = target.join(SOURCE.trim_start_matches('/'));
    assert_eq!(fs::read(root.join("etc/app/app.toml")).unwrap(), b"port = 8080\nworkers = 4\n");
    assert_eq!(fs::read(root.join("scripts/run.sh")).unwrap(), b"#!/bin/sh\nexec /opt/app/bin/server \"$@\"\n");
    assert_eq!(
        blake3::hash(&fs::read(root.join("dump.sql")).unwrap()).to_hex().as_str(),
        "93db37bc7da315b7a1d68be755ae58488d0d8acc69773565a85e63111c351f28"
    );
    assert_eq!(fs::read_link(root.join("current.toml")).unwrap(), Path::new("etc/app/app.toml"));
    let meta = describe(&root);
    let run = &meta[&b"scripts/run.sh"[..]];
    assert_eq!(run.mode, 0o755);
    assert_eq!(run.mtime, (1_767_323_045, 123_456_789));

    let m = cairn(&repo).args(args!["manifest", "golden"]).output().unwrap();
    assert!(String::from_utf8_lossy(&m.stdout)
        .contains("0606bd447580aa2c64b8f74a19d280c3f0f9def14e2233b6118a19c2e10e093e  tmp/golden/src/etc/app/app.toml"));
    let scrub = cairn_json(&repo, args!["scrub", "--read-data"], 0);
    assert_eq!(scrub["clean"], true, "{scrub}");
    assert_eq!(scrub["packs_verified"], 2);

    // `tag` writes the record again in the current version, naming the version-1 one.
    let t = cairn_json(&repo, args!["tag", "golden", "--unpin"], 0);
    let new = t[0]["new_id"].as_str().unwrap();
    let shown = cairn_json(&repo, args!["show", "golden"], 0);
    assert_eq!(
        (shown["id"].as_str().unwrap(), &shown["pinned"], &shown["original"]),
        (new, &false.into(), &SNAPSHOT.into())
    );
    assert_eq!(fs::read(repo.join("snapshots").join(new)).unwrap()[8], 2, "version 2 on disk");
}

/// The encrypted golden repository (tests/fixtures/repo-encrypted-v1, issue 16): config 2,
/// pack 2, record 3, one key file of passphrase `golden passphrase` (Argon2id 8 MiB, 1 pass).
/// Made from /tmp/golden-enc/src: etc/app.toml, dump.sql and current.toml -> etc/app.toml.
#[test]
fn an_encrypted_format_v1_repository_opens_lists_restores_and_scrubs_with_its_passphrase() {
    const ENC_SNAPSHOT: &str = "ff1bce3adce97e72c6e466c7b6a2bfacc24ddca81a0f4449fcb76c886839b8ce";
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    copy(&fixtures.join("repo-encrypted-v1"), &repo);
    let pass = fixtures.join("repo-encrypted-v1.pass");
    let run = |args: &[&std::ffi::OsStr], code: i32| {
        let out = cairn(&repo).env("CAIRN_PASSWORD_FILE", &pass).arg("--json").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let list = run(args!["list"], 0);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let s = &list[0];
    assert_eq!(
        (&s["id"], &s["label"], &s["tags"][0], &s["host"]),
        (&ENC_SNAPSHOT.into(), &"golden".into(), &"enc1".into(), &"golden-host".into())
    );
    let target = dir.path().join("out");
    run(args!["restore", "golden", "--target", &target, "--verify"], 0);
    let root = target.join("tmp/golden-enc/src");
    assert_eq!(fs::read(root.join("etc/app.toml")).unwrap(), b"port = 8443\ntls = true\n");
    assert_eq!(fs::read(root.join("dump.sql")).unwrap(), b"CREATE TABLE t(x);\nINSERT INTO t VALUES (42);\n");
    assert_eq!(fs::read_link(root.join("current.toml")).unwrap(), Path::new("etc/app.toml"));
    let scrub = run(args!["scrub", "--read-data"], 0);
    assert_eq!((&scrub["clean"], &scrub["packs_verified"]), (&true.into(), &2.into()), "{scrub}");
    // Without the passphrase, nothing; with another, exit 10.
    assert_eq!(cairn(&repo).arg("list").output().unwrap().status.code(), Some(1));
    let wrong = dir.path().join("wrong");
    fs::write(&wrong, "golden passphrasf\n").unwrap();
    assert_eq!(cairn(&repo).env("CAIRN_PASSWORD_FILE", &wrong).arg("list").output().unwrap().status.code(), Some(10));
}
