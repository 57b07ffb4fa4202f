//! Snapshot, change, snapshot again (each kind), restore each snapshot, compare.

use crate::args;
use crate::util::*;

#[test]
fn every_kind_round_trips_byte_for_byte_and_metadata_for_metadata() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    generate(&src, 7, 1);
    let mut expected = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (round, kind) in ["full", "incremental", "differential", "full", "incremental"].iter().enumerate() {
        if round > 0 {
            mutate(&src, round as u64);
        }
        expected.push(describe(&src));
        let r = cairn_json(&repo, args!["snapshot", "--kind", kind, &src], 0);
        assert_eq!(r["kind"], *kind);
        let parent = r["parent"].as_str().map(str::to_owned);
        match (round, *kind) {
            (0, _) | (_, "full") => assert_eq!(parent, None, "a full snapshot trusts nothing"),
            (_, "differential") => {
                assert_eq!(parent.as_deref(), Some(ids[0].as_str()), "differential trusts the newest full")
            }
            _ => assert_eq!(parent.as_deref(), Some(ids[round - 1].as_str()), "incremental trusts the newest"),
        }
        if *kind == "full" {
            assert_eq!(r["files_unchanged"], 0);
        } else {
            assert!(r["files_unchanged"].as_u64().unwrap() > 40, "{r}");
            // An hour of edits stores kilobytes, not the tree again.
            assert!(r["data_added"].as_u64().unwrap() < 400_000, "{r}");
        }
        ids.push(r["id"].as_str().expect("id").to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        let target = dir.path().join(format!("restore{i}"));
        let r = cairn_json(&repo, args!["restore", id, "--target", &target, "--verify"], 0);
        assert!(r["damaged"].as_array().unwrap().is_empty());
        assert!(r["files_verified"].as_u64().unwrap() > 40);
        assert_same(&expected[i], &describe(&restored(&target, &src)), &format!("snapshot {i}"));
    }
}

#[test]
fn several_source_paths_and_a_single_file_are_restored_where_they_were() {
    let (dir, repo) = new_repo();
    let a = dir.path().join("etc/app");
    let b = dir.path().join("opt/svc/run.sh");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::write(a.join("app.conf"), b"key = value\n").unwrap();
    std::fs::write(&b, b"#!/bin/sh\nexec svc\n").unwrap();
    let want_a = describe(&a);
    let want_b = describe(&b);
    let r = cairn_json(&repo, args!["snapshot", &a, &b, "--label", "two-paths"], 0);
    assert_eq!(r["paths"].as_array().unwrap().len(), 2);
    let target = dir.path().join("out");
    cairn_json(&repo, args!["restore", "two-paths", "--target", &target], 0);
    assert_same(&want_a, &describe(&restored(&target, &a)), "dir source");
    assert_same(&want_b, &describe(&restored(&target, &b)), "file source");
}
