//! Every command a user runs on a local repository, run on a repository in a bucket (the
//! Garage cluster; skipped without `CAIRN_TEST_S3_URL`, see s3.rs): what each reports is
//! checked against the tree it was taken from, and after forget, gc, tag and repair index the
//! newest snapshot still restores byte for byte.

use std::ffi::OsStr;
use std::path::Path;

use crate::args;
use crate::s3::s3_repo;
use crate::util::*;

/// Runs cairn on `repo` with its cache under `cache`, expecting `code`; stdout.
fn run(repo: &str, cache: &Path, args: &[&OsStr], code: i32) -> Vec<u8> {
    let out = cairn(Path::new(repo))
        .env("XDG_CACHE_HOME", cache)
        .env("CAIRN_TEST_MIN_CONDEMNED_AGE_SECS", "0")
        .args(args)
        .output()
        .expect("run cairn");
    assert_eq!(
        out.status.code(),
        Some(code),
        "cairn {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(repo: &str, cache: &Path, args: &[&OsStr]) -> serde_json::Value {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
    all.extend_from_slice(args);
    let out = run(repo, cache, &all, 0);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}: {}", String::from_utf8_lossy(&out)))
}

#[test]
fn every_command_works_on_a_bucket() {
    let Some((repo, _cluster)) = s3_repo("commands") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, cache) = (dir.path().join("src"), dir.path().join("cache"));
    generate(&src, 21, 1);
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/app.conf"), b"port = 8080\n").unwrap();
    let conf = src.join("etc/app.conf");
    run(&repo, &cache, args!["init"], 0);
    let first = json(&repo, &cache, args!["snapshot", &src]);
    let first = first["id"].as_str().unwrap().to_owned();
    mutate(&src, 1);
    std::fs::write(&conf, b"port = 9090\n").unwrap();
    let expected = describe(&src);
    let second = json(&repo, &cache, args!["snapshot", &src, "--label", "two", "--tag", "deploy"]);
    let second = second["id"].as_str().unwrap().to_owned();

    // Reading commands.
    let list = json(&repo, &cache, args!["list", "--tag", "deploy"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let show = json(&repo, &cache, args!["show", "two"]);
    assert_eq!(show["id"], second.as_str(), "{show}");
    let stats = json(&repo, &cache, args!["stats"]);
    assert_eq!(stats["snapshots"], 2, "{stats}");
    assert!(stats["packs"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert_eq!(run(&repo, &cache, args!["cat", "two", &conf], 0), b"port = 9090\n");
    assert_eq!(run(&repo, &cache, args!["cat", &first, &conf], 0), b"port = 8080\n");
    let diff = run(&repo, &cache, args!["diff", &first, &second, "--exit-code"], 6);
    assert!(String::from_utf8_lossy(&diff).contains("app.conf"), "{}", String::from_utf8_lossy(&diff));
    let ls = json(&repo, &cache, args!["ls", "two", src.join("etc")]);
    assert_eq!(ls[0]["size"], 12, "{ls}");
    assert_eq!(ls[0]["blake3"], blake3::hash(b"port = 9090\n").to_hex().as_str(), "{ls}");
    let find = json(&repo, &cache, args!["find", "app.conf"]);
    assert_eq!(find.as_array().map(Vec::len), Some(2), "{find}");
    let log = json(&repo, &cache, args!["log", &conf]);
    assert_eq!(log.as_array().map(Vec::len), Some(2), "two versions of the file: {log}");
    let manifest = json(&repo, &cache, args!["manifest", "two"]);
    let files = manifest.as_array().unwrap();
    // Every file but those whose names are not UTF-8 (b3sum cannot check them: left out, with a warning).
    let utf8_files = expected.iter().filter(|(p, d)| d.kind == 'f' && std::str::from_utf8(p).is_ok()).count();
    assert_eq!(files.len(), utf8_files, "{manifest}");
    let conf_rel = conf.strip_prefix("/").unwrap().to_str().unwrap();
    assert!(
        files.iter().any(|f| f["path"] == conf_rel && f["blake3"] == blake3::hash(b"port = 9090\n").to_hex().as_str()),
        "{manifest}"
    );

    // Writing and maintaining.
    let tagged = json(&repo, &cache, args!["tag", "two", "--add", "kept", "--pin"]);
    let second = tagged[0]["new_id"].as_str().unwrap().to_owned();
    json(&repo, &cache, args!["forget", &first]);
    let gc = json(&repo, &cache, args!["gc"]);
    assert!(gc.is_object(), "{gc}");
    let repair = json(&repo, &cache, args!["repair", "index"]);
    assert_eq!(repair["snapshots"], 1, "{repair}");
    assert_eq!(repair["blobs_lost"], 0, "{repair}");
    let scrub = json(&repo, &cache, args!["scrub"]);
    assert_eq!(scrub["clean"], true, "{scrub}");
    let scrub = json(&repo, &cache, args!["scrub", "--read-data"]);
    assert_eq!(scrub["clean"], true, "{scrub}");
    let status = json(&repo, &cache, args!["status"]);
    assert_eq!(status["snapshots"], 1, "{status}");
    assert_eq!(status["scrub"]["damage"], 0, "{status}");

    // Through another cache, after all that: the pinned snapshot restores as it was taken.
    let target = dir.path().join("restore");
    json(&repo, &dir.path().join("fresh"), args!["restore", &second, "--target", &target]);
    assert_same(&expected, &describe(&restored(&target, &src)), "the newest snapshot after forget, gc, repair");
}
