//! forget and gc: space comes back, kept snapshots stay whole, gc is safe beside running
//! snapshots, against a second gc, and against SIGKILL.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use crate::args;
use crate::util::*;

fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn forget_and_gc_free_what_only_the_forgotten_snapshots_held() {
    let (dir, repo) = new_repo_with_packs(Some("128K"));
    let src = dir.path().join("src");
    generate(&src, 41, 1);
    let mut rng = Rng::new(9);
    let mut states = BTreeMap::new();
    // Eight snapshots; each holds one unique incompressible 256 KiB file of its own.
    for i in 0..8 {
        if i > 0 {
            fs::remove_file(src.join(format!("unique-{}", i - 1))).unwrap();
        }
        fs::write(src.join(format!("unique-{i}")), rng.bytes(256 << 10)).unwrap();
        let r = cairn_json(&repo, args!["snapshot", &src], 0);
        states.insert(r["id"].as_str().unwrap().to_owned(), describe(&src));
    }
    let before = pack_bytes(&repo);
    let dry = cairn_json(&repo, args!["forget", "--keep-last", "2", "--dry-run"], 0);
    assert_eq!(dry["removed"].as_array().unwrap().len(), 0);
    assert_eq!(dry["decisions"].as_array().unwrap().iter().filter(|d| d["keep"] == false).count(), 6);
    assert_eq!(ids(&cairn_json(&repo, args!["list"], 0)).len(), 8, "a dry run removes nothing");

    let out = cairn_json(&repo, args!["forget", "--keep-last", "2", "--gc"], 0);
    assert_eq!(out["removed"].as_array().unwrap().len(), 6);
    let gc = &out["gc"];
    let after = pack_bytes(&repo);
    let unique = 6 * (256 << 10);
    // What the six forgotten snapshots alone held: their unique files, plus their trees.
    assert!(before - after >= unique, "freed {} of at least {unique}: {gc}", before - after);
    assert!(before - after < unique + (200 << 10), "freed {} (more than they held?): {gc}", before - after);
    assert_eq!(gc["bytes_freed"].as_i64().unwrap(), (before - after) as i64);

    let kept = ids(&cairn_json(&repo, args!["list"], 0));
    assert_eq!(kept.len(), 2);
    for id in &kept {
        let target = dir.path().join(format!("r-{}", &id[..8]));
        cairn_json(&repo, args!["restore", id, "--target", &target, "--verify"], 0);
        assert_same(&states[id], &describe(&restored(&target, &src)), "kept snapshot");
    }
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
    // A second gc finds nothing to do.
    let again = cairn_json(&repo, args!["gc"], 0);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["packs_repacked"], 0, "{again}");
    // forget by ID, and a policy that would empty a group is refused.
    cairn_json(&repo, args!["forget", &kept[0][..12]], 0);
    let out = cairn(&repo).args(["forget", "--keep-tag", "nothing-has-this"]).assert().code(1);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("--allow-empty"));
    assert_eq!(ids(&cairn_json(&repo, args!["list"], 0)).len(), 1);
}

#[test]
fn a_second_gc_refuses_and_gc_waits_for_older_sessions() {
    let (dir, repo) = new_repo_with_packs(Some("128K"));
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(3);
    for i in 0..3 {
        fs::write(src.join("data"), rng.bytes(300 << 10)).unwrap();
        cairn_json(&repo, args!["snapshot", &src, "--tag", &format!("t{i}")], 0);
    }
    cairn_json(&repo, args!["forget", "--keep-last", "1"], 0);
    // A session that started before gc (as a long snapshot would be), held by this process.
    let session = repo.join("locks/session-999999-1");
    let file = fs::File::create(&session).unwrap();
    fs::write(&session, "snapshot 999999 1\n").unwrap();
    file.lock().unwrap();

    let first = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"))
        .env("CAIRN_REPO", &repo)
        .args(["--json", "gc", "--max-wait", "3s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let second = cairn(&repo).arg("gc").assert().code(1);
    assert!(String::from_utf8_lossy(&second.get_output().stderr).contains("another gc is running"));
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["packs_pending"].as_u64().unwrap() > 0, "condemned packs wait for the older session: {r}");
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(r["waited_secs"].as_f64().unwrap() >= 2.9);
    assert_eq!(r["waited_for"][0], "snapshot 999999");
    // The session ends (its process would exit): the next gc finishes the job.
    drop(file);
    let r = cairn_json(&repo, args!["gc"], 0);
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
}

/// Index levels of a few rows (`CAIRN_INDEX_LEVEL_ROWS`), so that every snapshot and repack
/// here also merges them, racing gc's condemnations and deletions.
const LEVELS: &str = "CAIRN_INDEX_LEVEL_ROWS";

#[test]
fn snapshots_running_beside_forget_and_gc_never_lose_data() {
    let (dir, repo) = new_repo_with_packs(Some("128K"));
    let src = dir.path().join("src");
    generate(&src, 51, 1);
    // Content toggles between a few variants, so chunks that forget+gc condemn come back in
    // the next snapshots: the race gc must survive.
    let variants: Vec<Vec<u8>> = (0..4).map(|v| Rng::new(100 + v).bytes(400 << 10)).collect();
    let deadline = Instant::now() + Duration::from_secs(12);
    let states: std::sync::Mutex<BTreeMap<String, BTreeMap<Vec<u8>, Desc>>> = Default::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while Instant::now() < deadline {
                fs::write(src.join("toggling.bin"), &variants[(i % 4) as usize]).unwrap();
                fs::write(src.join(format!("dir0/new-{i}")), Rng::new(i).bytes(50 << 10)).unwrap();
                let want = describe(&src);
                let out = cairn(&repo).env(LEVELS, "8").arg("--json").arg("snapshot").arg(&src).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                states.lock().unwrap().insert(r["id"].as_str().unwrap().to_owned(), want);
                i += 1;
            }
        });
        s.spawn(|| {
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(300));
                cairn(&repo).args(["-q", "forget", "--keep-last", "2"]).assert().success();
                let out = cairn(&repo).env(LEVELS, "8").args(["-q", "gc", "--max-wait", "20s"]).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        });
    });
    let states = states.into_inner().unwrap();
    assert!(states.len() >= 5, "only {} snapshots ran", states.len());
    let remaining = ids(&cairn_json(&repo, args!["list"], 0));
    assert!(!remaining.is_empty());
    for id in &remaining {
        let target = dir.path().join(format!("r-{}", &id[..8]));
        cairn_json(&repo, args!["restore", id, "--target", &target, "--verify"], 0);
        assert_same(&states[id], &describe(&restored(&target, &src)), "snapshot taken beside gc");
    }
    let r = cairn_json(&repo, args!["scrub", "--read-data"], 0);
    assert_eq!(r["clean"], true, "{r}");
}

#[test]
fn gc_killed_at_random_moments_leaves_a_consistent_repository_and_a_rerun_finishes() {
    let (dir, repo) = new_repo_with_packs(Some("64K"));
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(17);
    let mut states = BTreeMap::new();
    // Twelve snapshots sharing a base and each holding unique data: gc has much to delete and,
    // with the keep-every-third policy, much to repack.
    fs::write(src.join("base"), rng.bytes(2 << 20)).unwrap();
    for i in 0..12 {
        for f in 0..6 {
            fs::write(src.join(format!("f{f}")), rng.bytes(120 << 10)).unwrap();
        }
        fs::write(src.join(format!("log-{i}")), rng.text(200 << 10)).unwrap();
        let r = cairn_json(&repo, args!["snapshot", &src, "--tag", if i % 3 == 0 { "keep" } else { "drop" }], 0);
        states.insert(r["id"].as_str().unwrap().to_owned(), describe(&src));
    }
    cairn_json(&repo, args!["forget", "--keep-tag", "keep"], 0);
    let kept = ids(&cairn_json(&repo, args!["list"], 0));
    assert_eq!(kept.len(), 4);
    let mut kills = 0;
    for delay_ms in [3u64, 8, 15, 25, 40, 60, 90, 130] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"))
            .env("CAIRN_REPO", &repo)
            .args(["-q", "gc"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // Consistent after every kill: everything kept reads back and restores.
        let r = cairn_json(&repo, args!["scrub", "--read-data"], 0);
        assert_eq!(r["clean"], true, "after a kill at {delay_ms} ms: {r}");
        let id = &kept[kills % kept.len()];
        let target = dir.path().join(format!("k{delay_ms}"));
        cairn_json(&repo, args!["restore", id, "--target", &target], 0);
        assert_same(&states[id], &describe(&restored(&target, &src)), "kept snapshot after a gc kill");
        fs::remove_dir_all(&target).unwrap();
    }
    assert!(kills >= 3, "only {kills} gc runs were killed mid-way");
    // The rerun finishes the job: nothing left to delete, no leftovers.
    let r = cairn_json(&repo, args!["gc"], 0);
    assert_eq!(r["packs_pending"], 0, "{r}");
    let again = cairn_json(&repo, args!["gc"], 0);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["leftovers_removed"], 0, "{again}");
    let s = cairn_json(&repo, args!["scrub", "--read-data"], 0);
    assert_eq!(s["leftovers"]["unindexed_packs"].as_array().unwrap().len(), 0, "{s}");
    for id in &kept {
        let target = dir.path().join(format!("final-{}", &id[..8]));
        cairn_json(&repo, args!["restore", id, "--target", &target, "--verify"], 0);
        assert_same(&states[id], &describe(&restored(&target, &src)), "kept snapshot after gc");
    }
}

/// `forget --dry-run --gc` estimates what the real run frees (issue 15 item 8): it used to run
/// gc against the repository as it is, with the snapshots still there, and say 0 B.
#[test]
fn issue15_a_dry_run_of_forget_gc_estimates_what_the_real_run_frees() {
    let (dir, repo) = new_repo_with_packs(Some("64K"));
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(15);
    fs::write(src.join("old.bin"), rng.bytes(400_000)).unwrap();
    cairn(&repo).args(args!["snapshot", &src]).assert().code(0);
    fs::remove_file(src.join("old.bin")).unwrap();
    fs::write(src.join("new.bin"), rng.bytes(100_000)).unwrap();
    cairn(&repo).args(args!["snapshot", &src]).assert().code(0);

    let dry = cairn_json(&repo, args!["forget", "--keep-last", "1", "--dry-run", "--gc"], 0);
    let estimate = dry["gc"]["bytes_freeable"].as_u64().unwrap();
    assert!(estimate >= 300_000, "the old file's data would go: {dry}");
    let real = cairn_json(&repo, args!["forget", "--keep-last", "1", "--gc"], 0);
    let freed = real["gc"]["bytes_freed"].as_i64().unwrap();
    assert!(freed > 0 && (estimate as i64 - freed).abs() < 64 << 10, "estimate {estimate}, freed {freed}: {real}");
}
