//! `cairn copy`: snapshots copied between repositories keep their IDs and records, restore
//! byte for byte from the destination, send only the blobs the destination lacks, resume after
//! a kill, and refuse bad input clearly. The S3 ones run against the Garage cluster
//! (`scripts/garage-cluster.sh`), and skip without it, as tests/e2e/s3.rs does.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use crate::args;
use crate::s3::{json, s3_repo, s3_url};
use crate::util::*;

/// A tree as `describe` gives it.
type Described = std::collections::BTreeMap<Vec<u8>, Desc>;

/// `cairn copy --from FROM` into `to` with `extra` arguments; checks the exit code and returns
/// the JSON report.
fn copy(from: &Path, to: &Path, extra: &[&OsStr], code: i32) -> serde_json::Value {
    let mut all: Vec<&OsStr> = vec![OsStr::new("copy"), OsStr::new("--from"), from.as_os_str()];
    all.extend_from_slice(extra);
    cairn_json(to, &all, code)
}

fn id_of(report: &serde_json::Value) -> String {
    report["id"].as_str().expect("snapshot id").to_owned()
}

fn ids_listed(repo: &Path) -> Vec<String> {
    let list = cairn_json(repo, args!["list"], 0);
    list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

/// Blobs sent for one snapshot of a report, chunks and trees.
fn sent(s: &serde_json::Value) -> u64 {
    s["chunks_sent"].as_u64().unwrap() + s["trees_sent"].as_u64().unwrap()
}

fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["source_id"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned()))
        .collect()
}

fn restore_equals(repo: &Path, id: &str, src: &Path, want: &Described, what: &str) {
    let target = repo.parent().unwrap().join(format!("restore-{}-{}", &id[..8], rand_suffix()));
    cairn_json(repo, args!["restore", id, "--target", &target], 0);
    assert_same(want, &describe(&restored(&target, src)), what);
    fs::remove_dir_all(&target).unwrap();
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn scrub_clean(repo: &Path, what: &str) {
    let r = cairn_json(repo, args!["scrub", "--read-data"], 0);
    assert_eq!(r["clean"], true, "{what}: {r}");
}

/// A source repository with two snapshots of `src` (the second after `mutate`), one labelled,
/// tagged and pinned, the other of another host name; returns their IDs and trees.
fn two_snapshots(dir: &Path, src: &Path) -> (PathBuf, Vec<(String, Described)>) {
    let source = dir.join("source");
    init_repo(&source, Some("256K"));
    generate(src, 61, 1);
    let a = cairn_json(&source, args!["snapshot", src, "--label", "before-upgrade", "--tag", "hourly", "--pin"], 0);
    let first = (id_of(&a), describe(src));
    mutate(src, 1);
    let b = cairn_json(&source, args!["snapshot", src, "--host", "elsewhere", "--tag", "daily"], 0);
    (source, vec![first, (id_of(&b), describe(src))])
}

#[test]
fn a_copy_keeps_ids_and_records_and_restores_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (source, snaps) = two_snapshots(dir.path(), &src);
    let dest = dir.path().join("dest");
    init_repo(&dest, None);

    let r = copy(&source, &dest, &[], 0);
    assert_eq!((r["copied"].as_u64(), r["skipped"].as_u64(), r["failed"].as_u64()), (Some(2), Some(0), Some(0)), "{r}");
    for (s, (id, _)) in r["snapshots"].as_array().unwrap().iter().zip(&snaps) {
        assert_eq!(s["source_id"], id.as_str(), "{r}");
        assert_eq!(s["destination_id"], id.as_str(), "a copied snapshot keeps its ID: {r}");
        assert!(sent(s) > 0, "{r}");
    }
    // Records are copied byte for byte: `list` says the same of every snapshot in both (tags,
    // label, pin, host, time, paths, parent, totals).
    assert_eq!(cairn_json(&dest, args!["list"], 0), cairn_json(&source, args!["list"], 0));
    for (id, want) in &snaps {
        restore_equals(&dest, id, &src, want, "restored from the destination");
    }
    scrub_clean(&dest, "the destination");
    // The label names the copy in the destination, and `latest` is the newest.
    let shown = cairn_json(&dest, args!["show", "before-upgrade"], 0);
    assert_eq!(shown["id"], snaps[0].0.as_str(), "{shown}");
}

#[test]
fn a_destination_with_another_chunk_size_takes_the_sources_chunks_and_snapshots_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (source, snaps) = two_snapshots(dir.path(), &src);
    let dest = dir.path().join("dest");
    cairn(&dest).args(["init", "--chunk-size", "16384"]).assert().success();
    // Small files are one chunk whatever the chunk size: the destination holds some of the
    // blobs of the source's frames of small files, so those frames are sealed again without.
    let partial = dir.path().join("partial");
    fs::create_dir_all(&partial).unwrap();
    for e in fs::read_dir(src.join("odd names")).unwrap().step_by(2) {
        let e = e.unwrap();
        fs::copy(e.path(), partial.join(e.file_name())).unwrap();
    }
    let own_first = id_of(&cairn_json(&dest, args!["snapshot", &partial], 0));
    let r = copy(&source, &dest, &[], 0);
    assert_eq!(r["copied"], 2, "{r}");
    let notes = r["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n.as_str().unwrap().contains("16384")), "the chunk sizes are named: {r}");
    for (id, want) in &snaps {
        restore_equals(&dest, id, &src, want, "restored from a destination of another chunk size");
    }
    // A snapshot taken into the destination now trusts the copied one as its parent.
    mutate(&src, 2);
    let own = id_of(&cairn_json(&dest, args!["snapshot", &src, "--host", "elsewhere"], 0));
    restore_equals(&dest, &own, &src, &describe(&src), "a snapshot on top of copied ones");
    restore_equals(&dest, &own_first, &partial, &describe(&partial), "the destination's own snapshot");
    scrub_clean(&dest, "mixed chunk sizes");
}

#[test]
fn an_incremental_copy_sends_only_the_new_blobs_and_skips_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (source, snaps) = two_snapshots(dir.path(), &src);
    let dest = dir.path().join("dest");
    init_repo(&dest, Some("256K"));
    let first = copy(&source, &dest, args![&snaps[0].0], 0);
    assert_eq!(first["copied"], 1, "{first}");
    // What the first snapshot needs, it sent all of: every distinct blob, no more.
    let stats = cairn_json(&source, args!["stats", &snaps[0].0], 0);
    assert_eq!(sent(&first["snapshots"][0]), stats["blobs"].as_u64().unwrap(), "{first} {stats}");

    // The second sends exactly what the second snapshot added to the source: the same blobs,
    // framed and compressed the same way.
    let again = copy(&source, &dest, &[], 0);
    assert_eq!(statuses(&again), vec![(snaps[0].0.clone(), "skipped".into()), (snaps[1].0.clone(), "copied".into())]);
    let second = &again["snapshots"][1];
    let record = &cairn_json(&source, args!["list"], 0)[1];
    assert_eq!(sent(second), record["blobs_new"].as_u64().unwrap(), "{again} {record}");
    assert_eq!(second["bytes_sent"], record["data_stored"], "{again} {record}");
    assert!(sent(second) < sent(&first["snapshots"][0]), "{again}");

    // Run again: nothing to send, everything skipped.
    let third = copy(&source, &dest, &[], 0);
    assert_eq!((third["skipped"].as_u64(), third["chunks_sent"].as_u64()), (Some(2), Some(0)), "{third}");

    // A snapshot re-tagged on either side is still the same snapshot: skipped, naming the
    // destination's record, never copied beside itself.
    let retagged = cairn_json(&source, args!["tag", &snaps[1].0, "--add", "kept"], 0);
    let new_id = retagged[0]["new_id"].as_str().unwrap().to_owned();
    cairn_json(&dest, args!["tag", &snaps[0].0, "--add", "offsite"], 0);
    let fourth = copy(&source, &dest, &[], 0);
    assert_eq!(fourth["skipped"], 2, "{fourth}");
    let by_source: Vec<&serde_json::Value> = fourth["snapshots"].as_array().unwrap().iter().collect();
    let moved = by_source.iter().find(|s| s["source_id"] == new_id.as_str()).unwrap();
    assert_eq!(moved["destination_id"], snaps[1].0.as_str(), "{fourth}");
    let listed = ids_listed(&dest);
    assert_eq!(listed.len(), 2, "no snapshot copied twice: {listed:?}");
    assert_eq!(listed[1], snaps[1].0);
    for (id, (_, want)) in listed.iter().zip(&snaps) {
        restore_equals(&dest, id, &src, want, "after the incremental copies");
    }
    scrub_clean(&dest, "after the incremental copies");
}

#[test]
fn a_killed_copy_leaves_nothing_broken_and_the_rerun_sends_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    generate(&src, 71, 2);
    let source = dir.path().join("source");
    init_repo(&source, None);
    let id = id_of(&cairn_json(&source, args!["snapshot", &src], 0));
    let want = describe(&src);
    // The reference: everything the snapshot needs, sent into an empty repository.
    let reference = dir.path().join("reference");
    init_repo(&reference, Some("64K"));
    let full = sent(&copy(&source, &reference, &[], 0)["snapshots"][0]);

    for (point, n) in [("copy.pack_indexed", 3), ("copy.before_record", 1), ("copy.record_written", 1)] {
        let case = format!("killed at {point}@{n}");
        let dest = dir.path().join(format!("dest-{point}"));
        init_repo(&dest, Some("64K"));
        let out =
            cairn_failing(&dest, &format!("{point}=kill@{n}")).args(["copy", "--from"]).arg(&source).output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{case}: {}", String::from_utf8_lossy(&out.stderr));
        // Whatever the kill left scrubs clean, and a snapshot it shows restores.
        scrub_clean(&dest, &case);
        let listed = ids_listed(&dest);
        assert_eq!(listed.len(), usize::from(point == "copy.record_written"), "{case}: {listed:?}");
        for l in &listed {
            restore_equals(&dest, l, &src, &want, &case);
        }
        // The blobs the killed run made durable, counted independently: an index rebuilt from
        // a copy of the destination's packs.
        let counted = dir.path().join(format!("counted-{point}"));
        assert!(std::process::Command::new("cp").arg("-a").arg(&dest).arg(&counted).status().unwrap().success());
        fs::remove_dir_all(counted.join("index")).unwrap();
        let rebuilt = cairn_json(&counted, args!["repair", "index"], 0);
        let kept = rebuilt["blobs_indexed"].as_u64().unwrap();
        assert!(kept > 0, "{case}: the killed run made something durable: {rebuilt}");

        let rerun = copy(&source, &dest, &[], 0);
        let s = &rerun["snapshots"][0];
        assert_eq!(sent(s), full - kept, "{case}: the rerun sends exactly what is missing: {rerun}");
        if point == "copy.pack_indexed" {
            assert!(kept < full, "{case}: the kill came before the end: {rebuilt}");
        }
        let want_status = if point == "copy.record_written" { "skipped" } else { "copied" };
        assert_eq!(s["status"], want_status, "{case}: {rerun}");
        assert_eq!(ids_listed(&dest), vec![id.clone()], "{case}");
        restore_equals(&dest, &id, &src, &want, &format!("{case}, after the rerun"));
        scrub_clean(&dest, &format!("{case}, after the rerun"));
    }
}

#[test]
fn filters_and_names_select_what_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    generate(&a, 1, 1);
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("only-b"), b"b's file\n").unwrap();
    let source = dir.path().join("source");
    init_repo(&source, None);
    let snap = |args: &[&OsStr]| id_of(&cairn_json(&source, args, 0));
    let a1 = snap(args!["snapshot", &a, "--host", "web", "--tag", "hourly"]);
    let b1 = snap(args!["snapshot", &b, "--host", "db", "--tag", "daily", "--label", "db-first"]);
    let a2 = snap(args!["snapshot", &a, "--host", "web", "--tag", "daily"]);
    let b2 = snap(args!["snapshot", &b, "--host", "db"]);

    let dest = dir.path().join("dest");
    init_repo(&dest, None);
    let by_host = copy(&source, &dest, args!["--host", "web"], 0);
    assert_eq!(statuses(&by_host), vec![(a1.clone(), "copied".into()), (a2.clone(), "copied".into())]);
    let by_tag = copy(&source, &dest, args!["--tag", "daily"], 0);
    assert_eq!(statuses(&by_tag), vec![(b1.clone(), "copied".into()), (a2.clone(), "skipped".into())]);
    let by_path = copy(&source, &dest, args!["--path", &b], 0);
    assert_eq!(statuses(&by_path), vec![(b1.clone(), "skipped".into()), (b2.clone(), "copied".into())]);
    let mut all = vec![a1.clone(), b1.clone(), a2.clone(), b2.clone()];
    assert_eq!(ids_listed(&dest), all);

    // Names as the source knows them: a prefix, a label, `latest`.
    let dest2 = dir.path().join("dest2");
    init_repo(&dest2, None);
    let named = copy(&source, &dest2, args![&a1[..10], "db-first", "latest"], 0);
    assert_eq!(
        statuses(&named),
        vec![(a1.clone(), "copied".into()), (b1.clone(), "copied".into()), (b2.clone(), "copied".into())]
    );
    all.retain(|i| *i != a2);
    assert_eq!(ids_listed(&dest2), all);
    // A name the source does not have changes nothing.
    let out = cairn(&dest2).args(["copy", "--from"]).arg(&source).arg("no-such-label").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no snapshot matches"), "{out:?}");
    assert_eq!(ids_listed(&dest2).len(), 3);
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (source, snaps) = two_snapshots(dir.path(), &src);
    let dest = dir.path().join("dest");
    init_repo(&dest, None);
    let refused = |args: &[&OsStr], repo: &Path, says: &str| {
        let out = cairn(repo).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    // A source that is no repository: a folder with something else in it, and no folder at
    // all (neither is created or written).
    let stranger = dir.path().join("stranger");
    fs::create_dir_all(&stranger).unwrap();
    fs::write(stranger.join("notes.txt"), b"not a repository").unwrap();
    refused(args!["copy", "--from", &stranger], &dest, "not a cairn repository");
    assert_eq!(fs::read_dir(&stranger).unwrap().count(), 1);
    let nowhere = dir.path().join("nowhere");
    refused(args!["copy", "--from", &nowhere], &dest, "not a cairn repository");
    assert!(!nowhere.exists());
    // A destination that is no repository.
    refused(args!["copy", "--from", &source, "--to", &nowhere], &dest, "not a cairn repository");
    assert!(!nowhere.exists());
    // The same repository at both ends, also spelt differently.
    refused(args!["copy", "--from", &dest], &dest, "both the source and the destination");
    let spelt = dir.path().join(".").join("dest").join("");
    refused(args!["copy", "--from", &spelt], &dest, "both the source and the destination");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&dest, &link).unwrap();
    refused(args!["copy", "--from", &link], &dest, "both the source and the destination");
    assert!(ids_listed(&dest).is_empty());

    // A label another snapshot has in the destination: that snapshot fails alone, the other
    // is copied, and the destination's label stays where it was.
    let other = dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("f"), b"something else\n").unwrap();
    let holder = id_of(&cairn_json(&dest, args!["snapshot", &other, "--label", "before-upgrade"], 0));
    let r = copy(&source, &dest, &[], 1);
    assert_eq!(statuses(&r), vec![(snaps[0].0.clone(), "failed".into()), (snaps[1].0.clone(), "copied".into())]);
    let reason = r["snapshots"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("before-upgrade") && reason.contains(&holder[..8]), "{reason}");
    assert_eq!(r["snapshots"][0]["damaged"], false);
    assert_eq!(cairn_json(&dest, args!["show", "before-upgrade"], 0)["id"], holder.as_str());
    restore_equals(&dest, &snaps[1].0, &src, &snaps[1].1, "copied beside a failed one");
    scrub_clean(&dest, "after a label conflict");
}

#[test]
fn damaged_source_data_fails_that_snapshot_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    generate(&a, 5, 1);
    generate(&b, 6, 1);
    let source = dir.path().join("source");
    init_repo(&source, Some("64K"));
    let id_a = id_of(&cairn_json(&source, args!["snapshot", &a], 0));
    let before: std::collections::BTreeSet<PathBuf> = pack_files(&source).into_iter().collect();
    let id_b = id_of(&cairn_json(&source, args!["snapshot", &b], 0));
    // The biggest pack only b's snapshot wrote, damaged inside its first frames.
    let pack = pack_files(&source)
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[1000] ^= 0x55;
    fs::write(&pack, bytes).unwrap();

    let dest = dir.path().join("dest");
    init_repo(&dest, None);
    for round in ["first", "again"] {
        let r = copy(&source, &dest, &[], 4);
        let want_a = if round == "first" { "copied" } else { "skipped" };
        assert_eq!(statuses(&r), vec![(id_a.clone(), want_a.into()), (id_b.clone(), "failed".into())], "{r}");
        assert_eq!(r["snapshots"][1]["damaged"], true, "{r}");
        assert_eq!(ids_listed(&dest), vec![id_a.clone()], "{round}");
        scrub_clean(&dest, round);
    }
    restore_equals(&dest, &id_a, &a, &describe(&a), "the intact snapshot");
}

#[test]
fn gc_beside_a_copy_keeps_what_the_copy_deduplicated_against() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    generate(&src, 91, 1);
    let source = dir.path().join("source");
    init_repo(&source, None);
    let wanted = id_of(&cairn_json(&source, args!["snapshot", &src, "--tag", "a"], 0));
    // The destination holds the same data under another snapshot, forgotten: its packs are
    // garbage to a gc, except to the copy that deduplicates against them.
    let dest = dir.path().join("dest");
    init_repo(&dest, None);
    let old = id_of(&cairn_json(&dest, args!["snapshot", &src, "--tag", "b"], 0));
    cairn_json(&dest, args!["forget", &old], 0);
    let copying = cairn_failing(&dest, "copy.before_record=pause@4000")
        .args(["--json", "copy", "--from"])
        .arg(&source)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500)); // the copy is in its pause
    let gc = cairn_json(&dest, args!["gc"], 0);
    let out = copying.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["chunks_sent"], 0, "the copy found every chunk in the destination: {r}");
    assert_eq!(ids_listed(&dest), vec![wanted.clone()], "{gc}");
    restore_equals(&dest, &wanted, &src, &describe(&src), "copied while gc ran");
    scrub_clean(&dest, "copied while gc ran");
}

#[test]
fn local_to_a_bucket_and_back_to_a_fresh_local_repository() {
    let Some((bucket, _cluster)) = s3_repo("copy-offsite") else { return };
    let Some(bucket2) = s3_url("copy-offsite-2") else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (source, mut snaps) = two_snapshots(dir.path(), &src);
    let cache = dir.path().join("cache");
    json(&bucket, &cache, args!["init"]);

    // The off-site copy: local to the bucket, then an incremental one.
    let r = json(&bucket, &cache, args!["copy", "--from", &source]);
    assert_eq!(r["copied"], 2, "{r}");
    mutate(&src, 3);
    snaps.push((id_of(&cairn_json(&source, args!["snapshot", &src], 0)), describe(&src)));
    let r = json(&bucket, &cache, args!["copy", "--from", &source]);
    assert_eq!(r["copied"], 1, "{r}");
    let record = &cairn_json(&source, args!["list"], 0)[2];
    assert_eq!(sent(&r["snapshots"][2]), record["blobs_new"].as_u64().unwrap(), "{r}");
    for (id, want) in &snaps {
        let target = dir.path().join(format!("from-bucket-{}", &id[..8]));
        json(&bucket, &cache, args!["restore", id, "--target", &target]);
        assert_same(want, &describe(&restored(&target, &src)), "restored from the bucket");
    }
    assert_eq!(json(&bucket, &cache, args!["scrub", "--read-data"])["clean"], true);

    // Bringing them back: the bucket (through an empty cache, as on a new machine) into a
    // fresh local repository, and into a second bucket.
    let fresh = dir.path().join("fresh");
    init_repo(&fresh, None);
    let empty_cache = dir.path().join("empty-cache");
    let back = json(fresh.to_str().unwrap(), &empty_cache, args!["copy", "--from", &bucket]);
    assert_eq!(back["copied"], 3, "{back}");
    json(&bucket2, &cache, args!["init"]);
    let across = json(&bucket2, &cache, args!["copy", "--from", &bucket, "latest"]);
    assert_eq!(across["copied"], 1, "{across}");
    assert_eq!(cairn_json(&fresh, args!["list"], 0), cairn_json(&source, args!["list"], 0));
    for (id, want) in &snaps {
        restore_equals(&fresh, id, &src, want, "restored from the fresh local repository");
    }
    scrub_clean(&fresh, "the fresh local repository");
    let newest = &snaps[2];
    let target = dir.path().join("from-bucket2");
    json(&bucket2, &cache, args!["restore", &newest.0, "--target", &target]);
    assert_same(&newest.1, &describe(&restored(&target, &src)), "restored from the second bucket");
    assert_eq!(json(&bucket2, &cache, args!["scrub", "--read-data"])["clean"], true);
}

#[test]
fn a_copy_into_a_bucket_killed_midway_finishes_on_the_rerun() {
    let Some((bucket, _cluster)) = s3_repo("copy-killed") else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    generate(&src, 73, 1);
    let source = dir.path().join("source");
    init_repo(&source, None);
    let id = id_of(&cairn_json(&source, args!["snapshot", &src], 0));
    let cache = dir.path().join("cache");
    json(&bucket, &cache, args!["init", "--pack-size", "64K"]);
    let out = cairn_failing(Path::new(&bucket), "copy.pack_indexed=kill@2")
        .env("XDG_CACHE_HOME", &cache)
        .args(["copy", "--from"])
        .arg(&source)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&bucket, &cache, args!["list"]), serde_json::json!([]), "nothing visible after the kill");
    let rerun = json(&bucket, &cache, args!["copy", "--from", &source]);
    let full = cairn_json(&source, args!["stats", &id], 0)["blobs"].as_u64().unwrap();
    let resent = sent(&rerun["snapshots"][0]);
    assert!(resent < full, "the rerun sends only what the killed run did not store: {rerun}");
    let target = dir.path().join("restored");
    json(&bucket, &cache, args!["restore", &id, "--target", &target]);
    assert_same(&describe(&src), &describe(&restored(&target, &src)), "copied into a bucket after a kill");
    assert_eq!(json(&bucket, &cache, args!["scrub", "--read-data"])["clean"], true);
}
