//! A snapshot killed with SIGKILL at many moments leaves a repository whose earlier snapshots
//! list and restore intact, and the next run reuses what the killed runs made durable.

use std::time::{Duration, Instant};

use crate::args;
use crate::util::*;

#[test]
fn sigkill_during_snapshot_loses_nothing_committed_and_the_rerun_reuses_durable_packs() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    generate(&src, 21, 1);
    let first = cairn_json(&repo, args!["snapshot", &src], 0);
    let first_id = first["id"].as_str().unwrap().to_owned();
    let want = describe(&src);

    // New data the next snapshot must store: 96 MiB in 384 files, incompressible.
    let mut rng = Rng::new(77);
    let bulk = src.join("bulk");
    std::fs::create_dir_all(&bulk).unwrap();
    for i in 0..384 {
        std::fs::write(bulk.join(format!("part{i:03}")), rng.bytes(256 << 10)).unwrap();
    }
    let new_bytes: u64 = 96 << 20;

    let packs_before = pack_files(&repo).len();
    let mut kills = 0;
    let mut completed = 0;
    let mut durable_before_completion = 0;
    let mut completed_report: Option<serde_json::Value> = None;
    for delay_ms in [15u64, 40, 80, 120, 180, 250, 330, 420] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"))
            .env("CAIRN_REPO", &repo)
            .args(args!["--json", "snapshot", &src])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        } else {
            completed += 1;
            durable_before_completion = pack_files(&repo).len() - packs_before;
        }
        let out = child.wait_with_output().expect("reap");
        if out.status.success() {
            completed_report = Some(serde_json::from_slice(&out.stdout).expect("json"));
        }

        // After every kill the repository opens, lists, and restores the committed snapshot.
        let list = cairn_json(&repo, args!["list"], 0);
        let ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids[0], first_id);
        if kills % 3 == 1 {
            let target = dir.path().join(format!("after-kill-{delay_ms}"));
            cairn_json(&repo, args!["restore", &first_id, "--target", &target], 0);
            assert_same(&want, &describe(&restored(&target, &src)), "first snapshot after a kill");
            std::fs::remove_dir_all(&target).unwrap();
        }
        if completed > 0 {
            break; // the machine was fast enough to finish; later delays prove nothing more
        }
    }
    assert!(kills >= 3, "only {kills} runs were killed mid-way");
    // The run after the kills (the one that completed in the loop, or the next one) stores
    // again only what the killed runs had not made durable.
    let durable_from_killed_runs =
        if completed > 0 { durable_before_completion } else { pack_files(&repo).len() - packs_before };
    assert!(durable_from_killed_runs > 0, "no killed run got as far as one durable pack");
    let done = match completed_report {
        Some(r) => r,
        None => cairn_json(&repo, args!["snapshot", &src], 0),
    };
    let added = done["data_added"].as_u64().unwrap();
    assert!(added < new_bytes, "rerun stored {added} bytes although killed runs left {durable_from_killed_runs} packs");
    eprintln!("crash test: {kills} kills, {completed} completed, {durable_from_killed_runs} packs kept, rerun added {added} of {new_bytes} bytes");
    let with_bulk = describe(&src);
    let target = dir.path().join("final");
    cairn_json(&repo, args!["restore", "latest", "--target", &target, "--verify"], 0);
    assert_same(&with_bulk, &describe(&restored(&target, &src)), "snapshot after the kills");
}
