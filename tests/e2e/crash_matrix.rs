//! The crash-consistency matrix: every mutating command killed with SIGKILL at every fail-point
//! of the store (several hit counts each), on a copy of one repository. After each kill:
//! `scrub --read-data` is clean, every snapshot still listed restores byte-identical, the
//! command run again completes, and the repository scrubs clean after it.
//!
//! Longer version: `CAIRN_CRASH_HITS=1,2,3,5,8,13 cargo test --release crash_matrix`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::args;
use crate::util::*;

type States = BTreeMap<String, BTreeMap<Vec<u8>, Desc>>;

fn copy_dir(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(ok.success());
}

fn check(repo: &Path, src: &Path, states: &States, scratch: &Path, what: &str) {
    let out = cairn(repo).args(["--json", "scrub", "--read-data"]).output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(out.status.success() && r["clean"] == true, "{what}: {r} {}", String::from_utf8_lossy(&out.stderr));
    let listed = cairn_json(repo, args!["list"], 0);
    for s in listed.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let Some(want) = states.get(id) else { continue }; // made by the command under test
        let target = scratch.join(format!("check-{}", &id[..8]));
        cairn_json(repo, args!["restore", id, "--target", &target], 0);
        assert_same(want, &describe(&restored(&target, src)), what);
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn every_mutating_command_killed_at_every_fail_point_leaves_a_consistent_repository() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    init_repo(&base, Some("64K"));
    let src = dir.path().join("src");
    generate(&src, 81, 1);
    let mut states = States::new();
    let mut last = String::new();
    for round in 0..3 {
        if round > 0 {
            mutate(&src, round);
        }
        last = cairn_json(&base, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
        states.insert(last.clone(), describe(&src));
    }
    mutate(&src, 9); // the next snapshot has new data to write
                     // A second repository holding a snapshot of that state, for `copy` to bring over.
    let other = dir.path().join("other");
    init_repo(&other, Some("64K"));
    let copied = cairn_json(&other, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
    states.insert(copied, describe(&src));
    let hits: Vec<u64> = std::env::var("CAIRN_CRASH_HITS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);

    // (command, fail-points it passes, setup run on the copy first)
    type Case<'a> = (Vec<String>, &'a [&'a str], Option<&'a [&'a str]>);
    let forget = ["forget", "--keep-last", "1"];
    let cases: Vec<Case> = vec![
        (
            vec!["snapshot".into(), src.to_string_lossy().into()],
            &[
                "snapshot.pack_written",
                "snapshot.pack_indexed",
                "index.merge_slice",
                "snapshot.before_record",
                "snapshot.record_written",
            ],
            None,
        ),
        (
            forget.iter().map(|s| (*s).to_owned()).collect(),
            &["forget.tombstone_written", "forget.record_removed"],
            None,
        ),
        (
            vec!["gc".into(), "--max-unused".into(), "1".into()],
            &["gc.marked", "gc.condemned", "gc.repack_written", "gc.rows_deleted"],
            Some(&forget),
        ),
        (vec!["repair".into(), "index".into()], &["repair.pack_indexed", "repair.before_swap"], None),
        (
            vec!["copy".into(), "--from".into(), other.to_string_lossy().into()],
            &["copy.pack_written", "copy.pack_indexed", "copy.before_record", "copy.record_written"],
            None,
        ),
        (
            vec![
                "restore".into(),
                last.clone(),
                "--target".into(),
                "TARGET".into(),
                "--overwrite".into(),
                "always".into(),
            ],
            &["restore.dir_created", "restore.temp_written", "restore.file_written"],
            None,
        ),
    ];
    let mut exercised = 0;
    let mut killed = 0;
    let mut killed_at = std::collections::BTreeSet::new();
    for (command, points, setup) in &cases {
        for point in *points {
            for n in &hits {
                let case = format!("{} killed at {point}@{n}", command[0]);
                let work = dir.path().join(format!("case-{exercised}"));
                fs::create_dir_all(&work).unwrap();
                let repo = work.join("repo");
                copy_dir(&base, &repo);
                if let Some(setup) = setup {
                    cairn(&repo).args(*setup).assert().success();
                }
                let target = work.join("target");
                if command[0] == "restore" {
                    // Restore over an existing, different tree (as in place over a bad deploy).
                    copy_dir(&src, &work.join("pre"));
                    fs::create_dir_all(restored(&target, &src).parent().unwrap()).unwrap();
                    fs::rename(work.join("pre"), restored(&target, &src)).unwrap();
                }
                let argv: Vec<String> = command
                    .iter()
                    .map(|a| if a == "TARGET" { target.to_string_lossy().into_owned() } else { a.clone() })
                    .collect();
                let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"))
                    .env("CAIRN_REPO", &repo)
                    .env("CAIRN_FAILPOINTS", format!("{point}=kill@{n}"))
                    // Index levels of a few rows, so that a small snapshot merges them.
                    .env("CAIRN_INDEX_LEVEL_ROWS", if point.starts_with("index.") { "4" } else { "" })
                    .args(["-q", "--json"])
                    .args(&argv)
                    .output()
                    .unwrap();
                exercised += 1;
                use std::os::unix::process::ExitStatusExt;
                if out.status.signal() == Some(9) {
                    killed += 1;
                    killed_at.insert(*point);
                } else {
                    // The point was passed fewer than n times: the run must simply have worked.
                    assert!(out.status.success(), "{case}: {}", String::from_utf8_lossy(&out.stderr));
                }
                check(&repo, &src, &states, &work, &format!("{case}, after the kill"));
                // The command run again completes.
                let again = cairn(&repo).arg("-q").args(&argv).output().unwrap();
                assert!(again.status.success(), "{case}, rerun: {}", String::from_utf8_lossy(&again.stderr));
                check(&repo, &src, &states, &work, &format!("{case}, after the rerun"));
                if command[0] == "restore" {
                    // The rerun removed the killed run's temporary files (issue 13 item 13).
                    let left: Vec<_> = walkdir::WalkDir::new(&target)
                        .into_iter()
                        .filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with(".cairn-restore."))
                        .map(|e| e.path().to_path_buf())
                        .collect();
                    assert!(left.is_empty(), "{case}: leftovers after the rerun: {left:?}");
                    // Every entry of the snapshot is back; files it does not know stay (restore
                    // never deletes), and so do the directories' mtimes they changed.
                    let mut got = describe(&restored(&target, &src));
                    got.retain(|k, _| states[&last].contains_key(k));
                    let mut want = states[&last].clone();
                    for d in [&mut got, &mut want] {
                        d.retain(|_, v| v.kind != 'd');
                    }
                    assert_same(&want, &got, &case);
                }
                fs::remove_dir_all(&work).unwrap();
            }
        }
    }
    eprintln!("crash matrix: {exercised} runs, {killed} killed at a fail-point");
    assert!(killed >= exercised * 3 / 4, "most points must be reached: {killed} of {exercised}");
    assert!(killed_at.contains("index.merge_slice"), "a merge of index levels was killed: {killed_at:?}");
    assert!(
        ["copy.pack_indexed", "copy.record_written"].iter().all(|p| killed_at.contains(p)),
        "a copy was killed while it wrote packs and records: {killed_at:?}"
    );
}

/// Every snapshot in `states` restores byte-identical (by ID, whether or not it is listed).
fn restores_all(repo: &Path, src: &Path, states: &States, scratch: &Path, what: &str) {
    for (id, want) in states {
        let target = scratch.join(format!("all-{}", &id[..8]));
        let out = cairn(repo).args(["-q", "restore", id, "--target"]).arg(&target).output().unwrap();
        assert!(out.status.success(), "{what}: restore {id}: {}", String::from_utf8_lossy(&out.stderr));
        assert_same(want, &describe(&restored(&target, src)), what);
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn a_repair_of_a_damaged_repository_killed_at_every_fail_point_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    init_repo(&base, Some("64K"));
    let src = dir.path().join("src");
    generate(&src, 83, 1);
    let mut states = States::new();
    for round in 0..2 {
        if round > 0 {
            mutate(&src, round);
        }
        let id = cairn_json(&base, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
        states.insert(id, describe(&src));
    }
    // The biggest pack's end marker flipped (every frame intact), and one record file damaged
    // (the index holds its verified copy).
    let pack = pack_files(&base).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&pack, bytes).unwrap();
    let record = base.join("snapshots").join(states.keys().next().unwrap());
    let mut bytes = fs::read(&record).unwrap();
    bytes[40] ^= 1;
    fs::write(&record, bytes).unwrap();

    let points = [
        "repair.pack_indexed",
        "repair.salvage_written",
        "repair.record_rewritten",
        "repair.before_swap",
        "repair.pack_quarantined",
    ];
    let mut killed_at = std::collections::BTreeSet::new();
    for point in points {
        for n in [1, 2] {
            let case = format!("repair killed at {point}@{n}");
            let work = dir.path().join(format!("repair-{point}-{n}"));
            fs::create_dir_all(&work).unwrap();
            let repo = work.join("repo");
            copy_dir(&base, &repo);
            let out = std::process::Command::new(cairn_bin())
                .env("CAIRN_REPO", &repo)
                .env("CAIRN_FAILPOINTS", format!("{point}=kill@{n}"))
                .args(["-q", "repair", "index"])
                .output()
                .unwrap();
            use std::os::unix::process::ExitStatusExt;
            if out.status.signal() == Some(9) {
                killed_at.insert(point);
            } else {
                assert!(out.status.success(), "{case}: {}", String::from_utf8_lossy(&out.stderr));
            }
            restores_all(&repo, &src, &states, &work, &format!("{case}, after the kill"));
            let again = cairn(&repo).args(["-q", "repair", "index"]).output().unwrap();
            assert!(again.status.success(), "{case}, rerun: {}", String::from_utf8_lossy(&again.stderr));
            let r = cairn_json(&repo, args!["scrub", "--read-data"], 0);
            assert_eq!(r["clean"], true, "{case}: {r}");
            assert_eq!(cairn_json(&repo, args!["list"], 0).as_array().unwrap().len(), states.len(), "{case}");
            restores_all(&repo, &src, &states, &work, &format!("{case}, after the rerun"));
            fs::remove_dir_all(&work).unwrap();
        }
    }
    assert_eq!(killed_at.len(), points.len(), "every point was reached: {killed_at:?}");
}
