//! A repository in an S3 bucket, through the binary, against a real server: the 3-node Garage
//! cluster of `scripts/garage-cluster.sh` (`eval "$(scripts/garage-cluster.sh up)"` sets
//! `CAIRN_TEST_S3_URL` and the AWS variables; `scripts/test.sh`, the README's test command, starts
//! one for the run). Skipped, with a message, when `CAIRN_TEST_S3_URL` is not set.
//!
//! Each test works under its own prefix of the bucket and its own cache folder, so runs never
//! see each other's repositories. The fault tests (faults.rs) stop nodes of the cluster: they
//! take it alone, and the others share it ([`CLUSTER`]).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use crate::args;
use crate::util::*;

#[path = "s3_faults.rs"]
mod faults;

/// Shared by the tests that need the whole cluster up, taken alone by those that stop nodes.
static CLUSTER: RwLock<()> = RwLock::new(());

/// A fresh prefix of the test bucket for `test`, or `None` to skip (a test holds the cluster
/// through `s3_repo`, once: a second share taken while a fault test waits would deadlock).
pub(crate) fn s3_url(test: &str) -> Option<String> {
    let Ok(url) = std::env::var("CAIRN_TEST_S3_URL") else {
        eprintln!("{test}: skipped (set CAIRN_TEST_S3_URL; `scripts/garage-cluster.sh up` prints it)");
        return None;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    Some(format!("{}/{test}-{}-{nanos}", url.trim_end_matches('/'), std::process::id()))
}

/// The test's repository URL, and its share of the cluster (no node is stopped while it is
/// held); `None` to skip.
pub(crate) fn s3_repo(test: &str) -> Option<(String, RwLockReadGuard<'static, ()>)> {
    let url = s3_url(test)?;
    Some((url, CLUSTER.read().unwrap_or_else(PoisonError::into_inner)))
}

/// Runs cairn on `repo` with its cache under `cache`; checks the exit code; returns stdout and
/// stderr.
fn run(repo: &str, cache: &Path, args: &[&OsStr], code: i32) -> (String, String) {
    let out = cairn(Path::new(repo)).env("XDG_CACHE_HOME", cache).args(args).output().expect("run cairn");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_eq!(out.status.code(), Some(code), "cairn {args:?}: stdout {stdout} stderr {stderr}");
    (stdout, stderr)
}

pub(crate) fn json(repo: &str, cache: &Path, args: &[&OsStr]) -> serde_json::Value {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
    all.extend_from_slice(args);
    let (stdout, _) = run(repo, cache, &all, 0);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}: {stdout}"))
}

#[test]
fn a_tree_round_trips_through_a_bucket_and_a_fresh_cache_rebuilds_from_it() {
    let Some((repo, _cluster)) = s3_repo("roundtrip") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, cache) = (dir.path().join("src"), dir.path().join("cache"));
    generate(&src, 11, 1);
    run(&repo, &cache, args!["init"], 0);

    let mut expected = Vec::new();
    let mut ids = Vec::new();
    for round in 0..2u64 {
        if round > 0 {
            mutate(&src, round);
        }
        expected.push(describe(&src));
        let r = json(&repo, &cache, args!["snapshot", &src]);
        ids.push(r["id"].as_str().expect("id").to_owned());
    }
    let list = json(&repo, &cache, args!["list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");

    for (i, id) in ids.iter().enumerate() {
        let target = dir.path().join(format!("restore{i}"));
        json(&repo, &cache, args!["restore", id, "--target", &target]);
        assert_same(&expected[i], &describe(&restored(&target, &src)), &format!("snapshot {i} from the bucket"));
    }
    let scrub = json(&repo, &cache, args!["scrub", "--read-data"]);
    assert_eq!(scrub["clean"], true, "{scrub}");
    assert_eq!(scrub["all_packs_verified_this_run"], true, "{scrub}");

    // Another machine, or this one with its cache lost: the index is rebuilt from the bucket.
    let fresh = dir.path().join("fresh-cache");
    let list = json(&repo, &fresh, args!["list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let target = dir.path().join("restore-fresh");
    json(&repo, &fresh, args!["restore", &ids[1], "--target", &target]);
    assert_same(&expected[1], &describe(&restored(&target, &src)), "the newest snapshot through a fresh cache");
}

/// `cairn` on `repo` with a minimum condemned age of `min_age` seconds (the test hook of
/// `Storage`; 24 hours otherwise).
fn run_aged(repo: &str, cache: &Path, min_age: &str, args: &[&OsStr]) -> serde_json::Value {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
    all.extend_from_slice(args);
    let out = cairn(Path::new(repo))
        .env("XDG_CACHE_HOME", cache)
        .env("CAIRN_TEST_MIN_CONDEMNED_AGE_SECS", min_age)
        .args(&all)
        .output()
        .expect("run cairn");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "cairn {args:?}: stdout {stdout} stderr {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}: {stdout}"))
}

#[test]
fn gc_runs_on_a_bucket_and_a_snapshot_beside_it_keeps_its_data() {
    let Some((repo, _cluster)) = s3_repo("gc-leases") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (x, y, x_again) = (dir.path().join("x"), dir.path().join("y"), dir.path().join("x-again"));
    let (cache, other) = (dir.path().join("cache"), dir.path().join("other-machine"));
    generate(&x, 5, 1);
    generate(&y, 6, 1);
    generate(&x_again, 5, 1); // the same contents as x: a snapshot of it deduplicates against x's packs
    run(&repo, &cache, args!["init"], 0);
    let a = json(&repo, &cache, args!["snapshot", &x])["id"].as_str().unwrap().to_owned();
    let b = json(&repo, &cache, args!["snapshot", &y])["id"].as_str().unwrap().to_owned();
    run(&repo, &cache, args!["forget", &a], 0);

    // With the default 24-hour minimum age, gc runs on the bucket and condemns without deleting.
    let report = run_aged(&repo, &cache, "86400", args!["gc"]);
    assert_eq!(report["packs_deleted"], 0, "{report}");
    assert!(report["packs_pending"].as_u64().unwrap() > 0, "x's packs are condemned, kept a day: {report}");

    // Now without the minimum age: gc deletes x's packs while another machine snapshots the same
    // data. That snapshot either started before the condemnation (gc waits for its lease) or
    // loaded the published condemnation (it stores fresh copies): it must restore either way.
    let gc = {
        let (repo, cache) = (repo.clone(), cache.clone());
        std::thread::spawn(move || run_aged(&repo, &cache, "0", args!["gc"]))
    };
    let c = run_aged(&repo, &other, "0", args!["snapshot", &x_again])["id"].as_str().unwrap().to_owned();
    let report = gc.join().unwrap();
    assert!(report["packs_deleted"].as_u64().unwrap() + report["packs_pending"].as_u64().unwrap() > 0, "{report}");
    // Whatever the first gc left pending goes now, and c keeps what it needs.
    let report = run_aged(&repo, &cache, "0", args!["gc"]);
    assert_eq!(report["packs_pending"], 0, "{report}");

    for (id, src, name) in [(&c, &x_again, "c"), (&b, &y, "b")] {
        for cache in [&cache, &other] {
            let target = dir.path().join(format!("restore-{name}-{}", cache.file_name().unwrap().to_string_lossy()));
            json(&repo, cache, args!["restore", id, "--target", &target]);
            assert_same(&describe(src), &describe(&restored(&target, src)), &format!("snapshot {name} after gc"));
        }
    }
    // Both caches scrub clean: the other machine's drops the rows of the packs gc deleted,
    // also of one condemned after its session began (the record names them as gone).
    for cache in [&cache, &other] {
        let scrub = json(&repo, cache, args!["scrub", "--read-data"]);
        assert_eq!(scrub["clean"], true, "{scrub}");
    }
}

#[test]
fn a_bucket_that_cannot_be_reached_is_a_clear_error() {
    // A port nothing listens on, with retries cut short: an error naming the place, not a hang.
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(Path::new("s3:http://127.0.0.1:9/nobucket"))
        .env("XDG_CACHE_HOME", dir.path())
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("CAIRN_S3_ATTEMPTS", "1")
        .arg("list")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("run cairn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
}

#[test]
fn two_machines_writing_one_bucket_see_and_restore_each_others_snapshots() {
    let Some((repo, _cluster)) = s3_repo("two-hosts") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (cache_a, cache_b) = (dir.path().join("cache-a"), dir.path().join("cache-b"));
    generate(&a, 21, 1);
    generate(&b, 22, 1);
    run(&repo, &cache_a, args!["init"], 0);
    run(&repo, &cache_b, args!["list"], 0); // b's cache exists (and is empty) before a writes
    let id_a = json(&repo, &cache_a, args!["snapshot", &a])["id"].as_str().unwrap().to_owned();
    let id_b = json(&repo, &cache_b, args!["snapshot", &b])["id"].as_str().unwrap().to_owned();
    // Each cache catches up with the other's packs when it opens the repository.
    for (cache, id, src, name) in [(&cache_a, &id_b, &b, "a restores b's"), (&cache_b, &id_a, &a, "b restores a's")] {
        let target = dir.path().join(format!("restore-{name}"));
        json(&repo, cache, args!["restore", id, "--target", &target]);
        assert_same(&describe(src), &describe(&restored(&target, src)), name);
        let scrub = json(&repo, cache, args!["scrub"]);
        assert_eq!(scrub["clean"], true, "{name}: {scrub}");
    }
}

/// A profile's `[s3]` table reaches the bucket with no AWS variable set: the key ID and region
/// inline, the secret from a file; a profile that holds the secret inline and can be read by
/// others gets a warning.
#[test]
fn a_profile_carries_the_bucket_credentials() {
    let Some((repo, _cluster)) = s3_repo("profile") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, cache) = (dir.path().join("src"), dir.path().join("cache"));
    generate(&src, 5, 1);
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set with CAIRN_TEST_S3_URL"));
    let (id, secret) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"));
    let region = std::env::var("AWS_DEFAULT_REGION").unwrap_or_else(|_| "garage".into());
    let secret_file = dir.path().join("s3-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let profile = dir.path().join("offsite.toml");
    std::fs::write(
        &profile,
        format!(
            "repo = {repo:?}\nsources = [{:?}]\n[s3]\naccess_key_id = {id:?}\nsecret_access_key_file = {:?}\nregion = {region:?}\n",
            src.display().to_string(),
            secret_file.display().to_string()
        ),
    )
    .unwrap();
    let bare = |args: &[&OsStr]| {
        let mut cmd = std::process::Command::new(cairn_bin());
        cmd.env("XDG_CACHE_HOME", &cache).env("TZ", "UTC").env_remove("CAIRN_REPO");
        for v in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION", "CAIRN_S3_REGION"] {
            cmd.env_remove(v);
        }
        cmd.args(args).output().expect("run cairn")
    };
    // Without the profile there are no credentials: a clear error.
    let out = bare(args!["--repo", &repo, "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_ACCESS_KEY_ID"), "{out:?}");

    let out = bare(args!["--profile", &profile, "--json", "snapshot"]);
    assert!(out.status.success(), "{out:?}");
    let target = dir.path().join("restore");
    let out = bare(args!["--profile", &profile, "restore", "latest", "--target", &target]);
    assert!(out.status.success(), "{out:?}");
    assert_same(&describe(&src), &describe(&restored(&target, &src)), "restored through the profile's credentials");

    // The secret inline in a profile others can read: it works, with a warning.
    let inline = dir.path().join("inline.toml");
    std::fs::write(
        &inline,
        format!("repo = {repo:?}\n[s3]\naccess_key_id = {id:?}\nsecret_access_key = {secret:?}\nregion = {region:?}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&inline, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bare(args!["--profile", &inline, "--json", "list"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("can be read by other users"), "{stderr}");
}

#[test]
fn a_snapshot_reports_its_requests_and_a_snapshot_of_nothing_new_puts_far_fewer() {
    let Some((repo, _cluster)) = s3_repo("requests") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, cache) = (dir.path().join("src"), dir.path().join("cache"));
    generate(&src, 31, 1);
    run(&repo, &cache, args!["init", "--pack-size", "256K"], 0);
    let first = json(&repo, &cache, args!["snapshot", &src])["s3_requests"].clone();
    let second = json(&repo, &cache, args!["snapshot", &src])["s3_requests"].clone();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"));
    // The tree is a few MiB in 256 KiB packs: more than ten pack PUTs, and their bytes.
    assert!(n(&first, "put") > 10, "{first}");
    assert!(n(&first, "bytes_up") > 1 << 20, "{first}");
    let kinds = ["get", "ranged_get", "put", "head", "list", "delete"].iter().map(|k| n(&first, k)).sum::<u64>();
    assert_eq!(n(&first, "requests"), kinds, "{first}");
    // Nothing new: the record and a lease, no pack.
    assert!(n(&second, "put") > 0 && n(&second, "put") * 4 < n(&first, "put"), "{first} then {second}");
    assert!(n(&second, "bytes_up") * 20 < n(&first, "bytes_up"), "{first} then {second}");

    // -v says it in one line on stderr, for a command whose JSON is an array too.
    let (_, stderr) = run(&repo, &cache, args!["-v", "list"], 0);
    let line = stderr.lines().find(|l| l.contains("s3: ")).unwrap_or_else(|| panic!("no s3 line: {stderr}"));
    assert!(line.contains(" requests (") && line.contains("LIST ") && line.contains(" down"), "{line}");
    let listed = json(&repo, &cache, args!["list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "list stays an array: {listed}");

    // A local repository has no requests to count.
    let local = dir.path().join("local");
    let report = cairn_json(&local, args!["snapshot", &src], 0);
    assert!(report.get("s3_requests").is_none(), "{report}");
    let (_, stderr) = run(local.to_str().unwrap(), &cache, args!["-v", "list"], 0);
    assert!(!stderr.contains("s3: "), "{stderr}");
}

#[test]
fn a_tree_larger_than_a_batch_restores_from_the_bucket_with_its_data_packs_in_the_class_asked() {
    let Some((repo, _cluster)) = s3_repo("batches") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, cache) = (dir.path().join("src"), dir.path().join("cache"));
    generate(&src, 31, 3);
    // 20 MiB that do not compress: a restore writes it in pieces, several workers at once.
    std::fs::write(src.join("huge.bin"), Rng::new(32).bytes(20 << 20)).unwrap();
    run(&repo, &cache, args!["init"], 0);
    let (_, stderr) = run(&repo, &cache, args!["snapshot", "--s3-storage-class", "freezer", &src], 2);
    assert!(stderr.contains("\"freezer\" is not an S3 storage class"), "{stderr}");
    // Garage takes any class and keeps serving the packs (docs/S3.md says what AWS does).
    let r = json(&repo, &cache, args!["snapshot", "--s3-storage-class", "glacier_ir", &src]);
    let id = r["id"].as_str().expect("id").to_owned();
    let target = dir.path().join("restore");
    json(&repo, &cache, args!["restore", &id, "--target", &target]);
    assert_same(&describe(&src), &describe(&restored(&target, &src)), "a tree of several batches from the bucket");
    let scrub = json(&repo, &cache, args!["scrub", "--read-data"]);
    assert_eq!(scrub["clean"], true, "{scrub}");
}

#[test]
fn a_storage_class_for_a_local_repository_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let out = cairn(&repo).arg("init").output().expect("run cairn");
    assert_eq!(out.status.code(), Some(0));
    let out = cairn(&repo).args(["snapshot", "--s3-storage-class", "glacier"]).arg(dir.path()).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("is a local repository, which has no storage classes"), "{stderr}");
}
