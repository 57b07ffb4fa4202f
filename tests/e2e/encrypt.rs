//! Encrypted repositories (issue 16, docs/ENCRYPTION.md): round trips, what the bytes at rest
//! reveal (nothing of a marker), wrong and missing keys, tampering, key management.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::args;
use crate::util::*;

/// A marker that appears in file contents, names, a symlink target and a tag: it must never
/// appear in any file of the repository.
const MARKER: &str = "CAIRN-SECRET-MARKER-7f3a9c";

struct Enc {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    src: PathBuf,
    pass: PathBuf,
}

impl Enc {
    /// `cairn` aimed at the repository, with the passphrase file.
    fn cmd(&self) -> assert_cmd::Command {
        let mut c = cairn(&self.repo);
        c.env("CAIRN_PASSWORD_FILE", &self.pass);
        c
    }

    fn json(&self, args: &[&std::ffi::OsStr], code: i32) -> serde_json::Value {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn write_pass(&self, name: &str, pass: &str) -> PathBuf {
        let p = self.root.join(name);
        fs::write(&p, format!("{pass}\n")).unwrap();
        p
    }
}

/// An encrypted repository (small Argon2 parameters: tests are not the attacker) and a
/// generated tree with the marker in it.
fn enc() -> Enc {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let repo = root.join("repo");
    let src = root.join("src");
    generate(&src, 16, 1);
    fs::write(src.join(format!("{MARKER}.txt")), format!("{MARKER}\n").repeat(50)).unwrap();
    fs::write(src.join("dir0/notes"), format!("a line with {MARKER} inside\n")).unwrap();
    std::os::unix::fs::symlink(format!("../{MARKER}/target"), src.join("dir1/marker-link")).unwrap();
    let pass = root.join("pass");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    let e = Enc { _dir: dir, root, repo, src, pass };
    e.cmd().args(["init", "--encrypt", "--kdf-memory", "8", "--kdf-time", "1"]).assert().success();
    e
}

/// Every file under `dir` with its bytes.
fn all_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), fs::read(e.path()).unwrap()))
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn encrypt_round_trip_is_identical_and_no_marker_or_plain_id_reaches_the_repository() {
    let e = enc();
    let first = e.json(args!["snapshot", &e.src, "--tag", MARKER.to_lowercase()], 0);
    let tree1 = describe(&e.src);
    mutate(&e.src, 16);
    let second = e.json(args!["snapshot", &e.src], 0);
    assert!(second["files_unchanged"].as_u64().unwrap() > 0, "incremental: {second}");
    for (snap, tree) in [(&first, tree1), (&second, describe(&e.src))] {
        let target = e.root.join(format!("out-{}", &snap["id"].as_str().unwrap()[..8]));
        e.json(args!["restore", snap["id"].as_str().unwrap(), "--target", &target], 0);
        assert_same(&tree, &describe(&restored(&target, &e.src)), "encrypted round trip");
    }
    let listed = e.json(args!["list"], 0);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["id"], first["id"]);
    assert_eq!(e.json(args!["scrub", "--read-data"], 0)["clean"], true);

    // Nothing of the marker, in any file of the repository (index included), nor the plain
    // BLAKE3 of a file that is one chunk (IDs are keyed), raw or in hex.
    let one_chunk = fs::read(e.src.join("dir0/notes")).unwrap();
    let plain_id = blake3::hash(&one_chunk);
    let files = all_files(&e.repo);
    assert!(files.len() > 5, "{files:?}");
    for (path, bytes) in &files {
        for needle in [MARKER.as_bytes(), MARKER.to_lowercase().as_bytes(), "marker-link".as_bytes()] {
            assert!(!contains(bytes, needle), "{} holds {}", path.display(), String::from_utf8_lossy(needle));
        }
        assert!(!contains(bytes, plain_id.as_bytes()), "{} holds a plain chunk ID", path.display());
        assert!(!contains(bytes, plain_id.to_hex().as_bytes()), "{} holds a plain chunk ID in hex", path.display());
    }
    // The same marker is there in clear in an unencrypted repository: the test can fail.
    let plain = e.root.join("plain");
    cairn(&plain).arg("init").assert().success();
    cairn(&plain).args(args!["snapshot", &e.src]).assert().success();
    assert!(all_files(&plain).values().any(|b| contains(b, MARKER.as_bytes())));
}

#[test]
fn encrypt_wrong_passphrase_exits_10_at_once_and_writes_nothing() {
    let e = enc();
    e.json(args!["snapshot", &e.src], 0);
    let before = all_files(&e.repo);
    let bad = e.write_pass("bad", "not the passphrase");
    let src = e.src.as_os_str();
    let cmds: [&[&std::ffi::OsStr]; 5] =
        [args!["snapshot", src], args!["list"], args!["gc"], args!["scrub"], args!["key", "list"]];
    for cmd in cmds {
        let out = cairn(&e.repo).env("CAIRN_PASSWORD_FILE", &bad).args(cmd).output().unwrap();
        assert_eq!(out.status.code(), Some(10), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"), "{cmd:?}");
    }
    let out = cairn(&e.repo).args(["--password-command", &format!("cat {}", bad.display()), "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert_eq!(all_files(&e.repo), before, "no lock, index write, run log or pack");
    // The right one from a command works.
    let ok =
        cairn(&e.repo).args(["--password-command", &format!("cat {}", e.pass.display()), "list"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn encrypt_without_a_passphrase_or_key_files_says_so() {
    let e = enc();
    e.json(args!["snapshot", &e.src], 0);
    // No source and no terminal: exit 1, naming what to give.
    let out = cairn(&e.repo).arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--password-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A passphrase given to an unencrypted repository is refused (its config may have been
    // replaced to make a job write in clear).
    let plain = e.root.join("plain");
    cairn(&plain).arg("init").assert().success();
    let out = cairn(&plain).env("CAIRN_PASSWORD_FILE", &e.pass).args(args!["snapshot", &e.src]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not encrypted"));
    // Key files gone: said so.
    fs::rename(e.repo.join("keys"), e.root.join("keys-away")).unwrap();
    let out = e.cmd().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no usable key file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn encrypt_old_formats_are_refused_by_version() {
    let e = enc();
    e.json(args!["snapshot", &e.src], 0);
    let version = |p: &Path| u32::from_le_bytes(fs::read(p).unwrap()[8..12].try_into().unwrap());
    assert_eq!(version(&e.repo.join("config")), 2, "a build that reads config 1 only refuses it");
    assert!(pack_files(&e.repo).iter().all(|p| version(p) == 2));
    for r in fs::read_dir(e.repo.join("snapshots")).unwrap() {
        assert_eq!(version(&r.unwrap().path()), 3);
    }
    // An unencrypted repository keeps the old versions, so older builds still read it.
    let plain = e.root.join("plain");
    cairn(&plain).arg("init").assert().success();
    cairn(&plain).args(args!["snapshot", &e.src]).assert().success();
    assert_eq!(version(&plain.join("config")), 1);
    assert!(pack_files(&plain).iter().all(|p| version(p) == 1));
}

/// Flips one byte of `path` at `at` (from the end when negative).
fn flip(path: &Path, at: i64) {
    let mut b = fs::read(path).unwrap();
    let i = if at < 0 { (b.len() as i64 + at) as usize } else { at as usize };
    b[i] ^= 0x20;
    fs::write(path, b).unwrap();
}

#[test]
fn encrypt_tampered_frame_record_trailer_and_key_file_are_found_and_named() {
    let e = enc();
    e.json(args!["snapshot", &e.src], 0);
    let target = e.root.join("out");
    // A frame: the largest pack holds file data; a byte in its middle is inside a frame.
    let mut packs = pack_files(&e.repo);
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let data_pack = packs.last().unwrap().clone();
    let saved = fs::read(&data_pack).unwrap();
    flip(&data_pack, saved.len() as i64 / 3);
    let r = e.json(args!["scrub", "--read-data"], 4);
    assert_eq!(r["clean"], false);
    let text = r.to_string();
    let name = data_pack.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(name), "the damaged pack is named: {text}");
    let out = e.cmd().args(args!["restore", "latest", "--target", &target]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    fs::write(&data_pack, &saved).unwrap();
    assert_eq!(e.json(args!["scrub", "--read-data"], 0)["clean"], true);

    // A trailer (just before the 44-byte footer): named by a read-data scrub; `repair index`
    // quarantines the pack and writes again every blob the old index places and that opens.
    flip(&data_pack, -60);
    let r = e.json(args!["scrub", "--read-data"], 4);
    assert!(r.to_string().contains(name) && r.to_string().contains("trailer"), "{r}");
    let repair = e.json(args!["repair", "index"], 0);
    assert!(repair.to_string().contains(name), "{repair}");
    assert!(e.repo.join("quarantine").join(name).exists());
    assert_eq!(e.json(args!["scrub", "--read-data"], 0)["clean"], true);
    e.json(args!["restore", "latest", "--target", &target], 0);
    assert_same(&describe(&e.src), &describe(&restored(&target, &e.src)), "after the repair");

    // A record: named by scrub, and not listed as a snapshot.
    let record = fs::read_dir(e.repo.join("snapshots")).unwrap().next().unwrap().unwrap().path();
    let rec_name = record.file_name().unwrap().to_str().unwrap().to_owned();
    flip(&record, 40);
    let r = e.json(args!["scrub"], 4);
    assert!(r.to_string().contains(&rec_name[..8]), "{r}");

    // A key file: named as damaged, and with no other key the repository cannot be opened.
    let key = fs::read_dir(e.repo.join("keys")).unwrap().next().unwrap().unwrap().path();
    flip(&key, 30);
    let out = e.cmd().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key file") && err.contains("corrupt"), "{err}");
}

#[test]
fn encrypt_keys_are_added_listed_changed_and_the_last_is_never_removed() {
    let e = enc();
    e.json(args!["snapshot", &e.src], 0);
    let second = e.write_pass("second", "another passphrase");
    let added = cairn(&e.repo)
        .env("CAIRN_PASSWORD_FILE", &e.pass)
        .env("CAIRN_NEW_PASSWORD_FILE", &second)
        .args(["--json", "key", "add", "--kdf-memory", "8", "--kdf-time", "1"])
        .output()
        .unwrap();
    assert_eq!(added.status.code(), Some(0), "{}", String::from_utf8_lossy(&added.stderr));
    let added: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    let keys = e.json(args!["key", "list"], 0);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert_eq!(keys.as_array().unwrap().iter().filter(|k| k["current"] == true).count(), 1);
    // The new passphrase opens the same repository.
    let with_second = cairn(&e.repo).env("CAIRN_PASSWORD_FILE", &second).args(["--json", "list"]).output().unwrap();
    assert_eq!(with_second.status.code(), Some(0));
    // Remove the first; then the second is the last and is kept.
    let first_name =
        keys.as_array().unwrap().iter().find(|k| k["current"] == true).unwrap()["name"].as_str().unwrap().to_owned();
    let rm =
        cairn(&e.repo).env("CAIRN_PASSWORD_FILE", &second).args(["key", "remove", &first_name[..10]]).output().unwrap();
    assert_eq!(rm.status.code(), Some(0), "{}", String::from_utf8_lossy(&rm.stderr));
    assert_eq!(
        e.cmd().arg("list").output().unwrap().status.code(),
        Some(10),
        "the removed key's passphrase no longer opens"
    );
    let last = added["key"]["name"].as_str().unwrap();
    let rm = cairn(&e.repo).env("CAIRN_PASSWORD_FILE", &second).args(["key", "remove", last]).output().unwrap();
    assert_eq!(rm.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rm.stderr).contains("last"), "{}", String::from_utf8_lossy(&rm.stderr));
    // passwd: the old passphrase stops working, the new one works, the data is the same.
    let third = e.write_pass("third", "third passphrase");
    cairn(&e.repo)
        .env("CAIRN_PASSWORD_FILE", &second)
        .env("CAIRN_NEW_PASSWORD_FILE", &third)
        .args(["key", "passwd"])
        .assert()
        .success();
    assert_eq!(
        cairn(&e.repo).env("CAIRN_PASSWORD_FILE", &second).arg("list").output().unwrap().status.code(),
        Some(10)
    );
    let target = e.root.join("out");
    cairn(&e.repo)
        .env("CAIRN_PASSWORD_FILE", &third)
        .args(args!["restore", "latest", "--target", &target])
        .assert()
        .success();
    assert_same(&describe(&e.src), &describe(&restored(&target, &e.src)), "after passwd");
}

/// Adds a put-only key with passphrase `put`; returns its passphrase file.
fn add_put_key(e: &Enc) -> PathBuf {
    let put = e.write_pass("put-pass", "the hourly job's passphrase");
    cairn(&e.repo)
        .env("CAIRN_PASSWORD_FILE", &e.pass)
        .env("CAIRN_NEW_PASSWORD_FILE", &put)
        .args(["key", "add", "--put-only", "--kdf-memory", "8", "--kdf-time", "1"])
        .assert()
        .success();
    put
}

fn with_key(e: &Enc, pass: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    cairn(&e.repo).env("CAIRN_PASSWORD_FILE", pass).arg("--json").args(args).output().unwrap()
}

#[test]
fn encrypt_a_put_key_snapshots_incrementally_and_can_read_or_remove_nothing() {
    let e = enc();
    let put = add_put_key(&e);
    let snap = |e: &Enc| {
        let out = with_key(e, &put, args!["snapshot", &e.src]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = snap(&e);
    let tree1 = describe(&e.src);
    mutate(&e.src, 16);
    let second = snap(&e);
    // Incremental from the put cache: unchanged files are not read.
    assert_eq!(second["parent"], first["id"], "{second}");
    assert!(second["files_unchanged"].as_u64().unwrap() > 10, "{second}");
    assert!(second["bytes_read"].as_u64().unwrap() * 4 < second["bytes_total"].as_u64().unwrap(), "{second}");

    // Everything that reads or removes is refused, naming the reason, and changes nothing.
    let before = all_files(&e.repo);
    let id = second["id"].as_str().unwrap();
    let target = e.root.join("out");
    let inside = e.src.join("dir0/notes");
    let (target_os, inside_os, src_os) = (target.as_os_str(), inside.as_os_str(), e.src.as_os_str());
    let refused: [&[&std::ffi::OsStr]; 9] = [
        args!["list"],
        args!["restore", id, "--target", target_os],
        args!["cat", id, inside_os],
        args!["forget", id],
        args!["gc"],
        args!["tag", id, "--add", "x"],
        args!["scrub", "--read-data"],
        args!["repair", "index"],
        args!["snapshot", src_os, "--label", "nope"],
    ];
    for cmd in refused {
        let out = cairn(&e.repo).env("CAIRN_PASSWORD_FILE", &put).args(cmd).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("put-only"),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // It cannot make a full key, nor remove one.
    let other = e.write_pass("other", "other");
    let out = cairn(&e.repo)
        .env("CAIRN_PASSWORD_FILE", &put)
        .env("CAIRN_NEW_PASSWORD_FILE", &other)
        .args(["key", "add", "--kdf-memory", "8", "--kdf-time", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!target.exists());
    let after: BTreeMap<PathBuf, Vec<u8>> =
        all_files(&e.repo).into_iter().filter(|(p, _)| !p.ends_with("runs.jsonl")).collect();
    let before: BTreeMap<PathBuf, Vec<u8>> = before.into_iter().filter(|(p, _)| !p.ends_with("runs.jsonl")).collect();
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "nothing added or removed");

    // The full key reads both snapshots back exactly.
    for (snap, tree) in [(&first, &tree1), (&second, &describe(&e.src))] {
        let t = e.root.join(format!("full-{}", &snap["id"].as_str().unwrap()[..8]));
        e.json(args!["restore", snap["id"].as_str().unwrap(), "--target", &t], 0);
        assert_same(tree, &describe(&restored(&t, &e.src)), "written with a put key, read with the full key");
    }
    assert_eq!(e.json(args!["scrub", "--read-data"], 0)["clean"], true);

    // A lost put cache and a lost index cost a full read, never the snapshot.
    fs::remove_dir_all(e.repo.join("index/putcache")).unwrap();
    let third = snap(&e);
    assert!(third["parent"].is_null(), "{third}");
    assert_eq!(third["files_unchanged"], 0);
    fs::remove_file(e.repo.join("index/index.sqlite")).unwrap();
    let fourth = snap(&e);
    assert_eq!(fourth["parent"], third["id"]);
    let t = e.root.join("full-last");
    e.json(args!["restore", fourth["id"].as_str().unwrap(), "--target", &t], 0);
    assert_same(&describe(&e.src), &describe(&restored(&t, &e.src)), "after a lost index");
}

/// On a bucket (Garage, when `CAIRN_TEST_S3_URL` is set): the hourly job's put key snapshots
/// from its cache, another machine with the full key builds a fresh cache from the sealed
/// trailers and records and restores every snapshot exactly; a put key on a machine with no
/// cache still snapshots (it rebuilds nothing).
#[test]
fn encrypt_on_a_bucket_a_put_key_writes_and_a_fresh_full_key_cache_reads_everything() {
    let Some((repo, _cluster)) = crate::s3::s3_repo("encrypt") else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let src = root.join("src");
    generate(&src, 23, 1);
    let (full, put) = (root.join("full"), root.join("put"));
    fs::write(&full, "full key passphrase\n").unwrap();
    fs::write(&put, "put key passphrase\n").unwrap();
    let run = |cache: &str, pass: &Path, args: &[&std::ffi::OsStr], extra: &[(&str, &Path)]| {
        let mut c = cairn(Path::new(&repo));
        c.env("XDG_CACHE_HOME", root.join(cache)).env("CAIRN_PASSWORD_FILE", pass);
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.arg("--json").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    run("admin", &full, args!["init", "--encrypt", "--kdf-memory", "8", "--kdf-time", "1"], &[]);
    run(
        "admin",
        &full,
        args!["key", "add", "--put-only", "--kdf-memory", "8", "--kdf-time", "1"],
        &[("CAIRN_NEW_PASSWORD_FILE", &put)],
    );
    let mut trees = Vec::new();
    let mut ids = Vec::new();
    for round in 0..2u64 {
        if round > 0 {
            mutate(&src, round);
        }
        trees.push(describe(&src));
        let r = run("job", &put, args!["snapshot", &src], &[]);
        if round > 0 {
            assert!(r["files_unchanged"].as_u64().unwrap() > 0, "incremental with the put key: {r}");
        }
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    // Another machine, the full key, an empty cache: built from the bucket's sealed trailers.
    let list = run("reader", &full, args!["list"], &[]);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    for (i, id) in ids.iter().enumerate() {
        let target = root.join(format!("out{i}"));
        run("reader", &full, args!["restore", id, "--target", &target], &[]);
        assert_same(&trees[i], &describe(&restored(&target, &src)), "put-key snapshot from the bucket");
    }
    assert_eq!(run("reader", &full, args!["scrub", "--read-data"], &[])["clean"], true);
    // The job's machine lost its cache: the put key still snapshots, reading everything.
    let again = run("job-fresh", &put, args!["snapshot", &src], &[]);
    assert_eq!(again["files_unchanged"], 0, "{again}");
    assert_eq!(run("reader", &full, args!["list"], &[]).as_array().map(Vec::len), Some(3));
}

#[test]
fn encrypt_a_profile_carries_the_put_keys_passphrase_file() {
    let e = enc();
    let put = add_put_key(&e);
    let conf = e.root.join("conf");
    fs::create_dir_all(&conf).unwrap();
    fs::write(
        conf.join("job.toml"),
        format!("repo = {:?}\npassword_file = {:?}\nsources = [{:?}]\ntags = [\"hourly\"]\n", e.repo, put, e.src),
    )
    .unwrap();
    let job = |args: &[&str]| {
        let mut c = assert_cmd::Command::new(cairn_bin());
        c.env("CAIRN_CONFIG_DIR", &conf).env_remove("CAIRN_REPO").env_remove("CAIRN_PASSWORD_FILE");
        c.args(["--profile", "job"]).args(args).output().unwrap()
    };
    for _ in 0..2 {
        let out = job(&["snapshot"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The profile's key is the put key: reading is refused; the full key lists both.
    let out = job(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("put-only"));
    let listed = e.json(args!["list"], 0);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["parent"], listed[0]["id"], "the second took the first as its parent: {listed}");
}

#[test]
fn encrypt_copy_moves_snapshots_between_repositories_of_one_key_set_and_refuses_others() {
    let e = enc();
    e.json(args!["snapshot", &e.src], 0);
    // A second repository of the same key set: the first's files, copied before new snapshots.
    let twin = e.root.join("twin");
    let copy = |from: &Path, to: &Path| {
        for f in walkdir::WalkDir::new(from).into_iter().filter_map(Result::ok) {
            let dest = to.join(f.path().strip_prefix(from).unwrap());
            if f.file_type().is_dir() {
                fs::create_dir_all(&dest).unwrap();
            } else if !f.path().starts_with(from.join("index")) {
                fs::copy(f.path(), &dest).unwrap();
            }
        }
    };
    copy(&e.repo, &twin);
    mutate(&e.src, 3);
    let second = e.json(args!["snapshot", &e.src], 0);
    let out = e.cmd().args(args!["--json", "copy", "--from", &e.repo, "--to", &twin]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let target = e.root.join("out");
    cairn(&twin)
        .env("CAIRN_PASSWORD_FILE", &e.pass)
        .args(args!["restore", second["id"].as_str().unwrap(), "--target", &target])
        .assert()
        .success();
    assert_same(&describe(&e.src), &describe(&restored(&target, &e.src)), "copied between twins");
    // Another key set, or no encryption: refused, nothing sent.
    let other = e.root.join("other");
    e.cmd()
        .args(args!["init", "--encrypt", "--kdf-memory", "8", "--kdf-time", "1", "--repo", &other])
        .assert()
        .success();
    let out = e.cmd().args(args!["copy", "--from", &e.repo, "--to", &other]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("differently"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(pack_files(&other).is_empty());
}
