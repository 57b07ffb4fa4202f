//! Fault injection through the binary: damaged, truncated and deleted packs, a lost or corrupt
//! index, leftovers of crashed runs. Scrub finds each and names the affected files and
//! snapshots exactly; repair and a new snapshot recover what can be recovered.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use cairn_store::{boundaries, ChunkId, ChunkerParams};

use crate::args;
use crate::util::*;

/// A repository with small packs holding two snapshots of a generated tree.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub src: PathBuf,
    pub snaps: Vec<String>,
}

pub fn fixture() -> Fixture {
    let (dir, repo) = new_repo_with_packs(Some("256K"));
    let src = dir.path().join("src");
    generate(&src, 31, 1);
    let a = cairn_json(&repo, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
    mutate(&src, 1);
    let b = cairn_json(&repo, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
    Fixture { root: dir.path().to_path_buf(), _dir: dir, repo, src, snaps: vec![a, b] }
}

/// The data packs (trees go to their own packs): the ones whose trailer lists kind-0 blobs.
/// Told apart from tree packs by size: tree packs of this fixture are small.
pub fn biggest_pack(repo: &Path) -> PathBuf {
    pack_files(repo).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap()
}

/// The pack and frame offset holding a chunk, found by reading the pack trailers.
fn frame_of(repo: &Path, chunk: ChunkId) -> (PathBuf, u64) {
    for p in pack_files(repo) {
        let bytes = fs::read(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let entries = cairn_store::decode::check_pack(&name, &bytes).unwrap();
        if let Some(e) = entries.iter().find(|e| e.id.as_chunk() == chunk) {
            return (p, e.offset);
        }
    }
    panic!("chunk {chunk} is in no pack")
}

/// Files of the source tree (relative path → chunk IDs), computed with the chunker alone.
fn chunk_map(src: &Path) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(src).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()) {
        let data = fs::read(e.path()).unwrap();
        let mut ids = BTreeSet::new();
        let mut start = 0;
        for end in boundaries(ChunkerParams::default(), &data) {
            ids.insert(ChunkId::of(&data[start..end]).to_hex());
            start = end;
        }
        out.push((e.path().to_string_lossy().into_owned(), ids));
    }
    out
}

/// (snapshot, path) pairs a scrub report names, and the damaged blob IDs.
pub fn named(report: &serde_json::Value) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut paths = BTreeSet::new();
    let mut blobs = BTreeSet::new();
    for d in report["damage"].as_array().unwrap() {
        if let Some(b) = d["blob"].as_str() {
            blobs.insert(b.to_owned());
        }
        for a in d["affected"].as_array().unwrap() {
            paths.insert((a["snapshot"].as_str().unwrap().to_owned(), a["path"].as_str().unwrap().to_owned()));
        }
    }
    (paths, blobs)
}

#[test]
fn a_clean_repository_scrubs_clean_and_leftovers_are_harmless() {
    let f = fixture();
    // A half-written temporary pack of a crashed run.
    fs::write(f.repo.join("tmp/deadbeef.4242.0.tmp"), b"CAIRNPAK half written").unwrap();
    let r = cairn_json(&f.repo, args!["scrub"], 0);
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["leftovers"]["temp_files"].as_array().unwrap().len(), 1);
    assert_eq!(r["snapshots"].as_array().unwrap().iter().filter(|s| s["status"] == "intact").count(), 2);
    let r = cairn_json(&f.repo, args!["scrub", "--read-data"], 0);
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["all_packs_verified_this_run"], true);
    assert_eq!(r["packs_verified"], r["packs_in_scope"]);
    assert!(r["bytes_verified"].as_u64().unwrap() > 1 << 20);
    // --snapshot limits the walk and the packs to what that snapshot needs.
    let one = cairn_json(&f.repo, args!["scrub", "--read-data", "--snapshot", &f.snaps[0][..10]], 0);
    assert_eq!(one["snapshots_checked"], 1);
    assert_eq!(one["snapshots"].as_array().unwrap().len(), 1);
    assert!(one["packs_in_scope"].as_u64().unwrap() < r["packs_in_scope"].as_u64().unwrap(), "{one}");
    let text = cairn(&f.repo).arg("scrub").assert().success();
    assert!(String::from_utf8_lossy(&text.get_output().stdout).contains("no damage found"));
}

#[test]
fn a_flipped_byte_is_found_by_read_data_named_exactly_and_healed_by_repair_and_a_new_snapshot() {
    let f = fixture();
    // Damage the frame holding a file both snapshots have (the mutation leaves it alone).
    let victim = fs::read(f.src.join("odd names/with space")).unwrap();
    let (pack, offset) = frame_of(&f.repo, ChunkId::of(&victim));
    let mut bytes = fs::read(&pack).unwrap();
    bytes[offset as usize + 3] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();

    // Structure is intact: the data is not read without --read-data.
    cairn_json(&f.repo, args!["scrub"], 0);
    let r = cairn_json(&f.repo, args!["scrub", "--read-data"], 4);
    assert_eq!(r["clean"], false);
    let (paths, blobs) = named(&r);
    assert!(!blobs.is_empty());
    // Exactly the files (in each snapshot) whose content includes a damaged chunk: the second
    // snapshot's files from the tree as it is now, computed independently with the chunker.
    let expected_now: BTreeSet<String> =
        chunk_map(&f.src).into_iter().filter(|(_, ids)| !ids.is_disjoint(&blobs)).map(|(p, _)| p).collect();
    let named_now: BTreeSet<String> = paths.iter().filter(|(s, _)| *s == f.snaps[1]).map(|(_, p)| p.clone()).collect();
    assert_eq!(named_now, expected_now, "scrub names exactly the files that need the damaged chunks");
    let damaged_snaps: Vec<&serde_json::Value> =
        r["snapshots"].as_array().unwrap().iter().filter(|s| s["status"] == "damaged").collect();
    assert!(!damaged_snaps.is_empty());

    // Restore under damage: every other file is correct, each damaged one named, exit 4.
    let want = describe(&f.src);
    let target = f.root.join("out");
    let out = cairn(&f.repo).args(args!["--json", "restore", &f.snaps[1], "--target", &target]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let rr: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged: BTreeSet<String> = rr["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().replacen(target.to_str().unwrap(), "", 1))
        .collect();
    assert_eq!(damaged, expected_now, "restore names the same files");
    let mut got = describe(&restored(&target, &f.src));
    let mut want_rest = want.clone();
    // Names compare lossily: small files share frames, so the damage may reach a non-UTF-8 name.
    let prefix = format!("{}/", f.src.display());
    let damaged_rel: BTreeSet<String> =
        expected_now.iter().map(|p| p.strip_prefix(&prefix).unwrap().to_owned()).collect();
    let lossy = |k: &Vec<u8>| String::from_utf8_lossy(k).into_owned();
    want_rest.retain(|k, _| !damaged_rel.contains(&lossy(k)));
    assert!(got.keys().all(|k| !damaged_rel.contains(&lossy(k))), "a damaged file is not written");
    // Directory mtimes and link groups of the damaged files' neighbours are beside the point.
    for d in [&mut got, &mut want_rest] {
        d.retain(|_, v| v.kind != 'd');
        d.values_mut().for_each(|v| v.link_group = None);
    }
    assert_same(&want_rest, &got, "the undamaged files");

    // repair index salvages the rest of the pack and names what is lost.
    let rep = cairn_json(&f.repo, args!["repair", "index"], 4);
    assert_eq!(rep["packs_quarantined"].as_array().unwrap().len(), 1);
    assert!(rep["blobs_lost"].as_u64().unwrap() >= 1);
    assert!(!rep["lost"].as_array().unwrap().is_empty());
    assert!(f.repo.join("quarantine").read_dir().unwrap().count() == 1);
    // A new snapshot of the same sources stores the lost chunks again: everything still in the
    // sources heals. (Small files share frames, so the damaged frame may also have held chunks
    // that only the first snapshot's version of a since-changed file needs; those stay lost,
    // named, and nothing else.)
    let lost: BTreeSet<String> =
        rep["lost"].as_array().unwrap().iter().map(|d| d["blob"].as_str().unwrap().to_owned()).collect();
    let current: BTreeSet<String> = chunk_map(&f.src).into_iter().flat_map(|(_, ids)| ids).collect();
    let still_lost: BTreeSet<String> = lost.difference(&current).cloned().collect();
    cairn_json(&f.repo, args!["snapshot", &f.src], 0);
    let r = cairn_json(&f.repo, args!["scrub", "--read-data"], if still_lost.is_empty() { 0 } else { 4 });
    assert_eq!(named(&r).1, still_lost, "{r}");
    assert!(named(&r).0.iter().all(|(snap, _)| *snap == f.snaps[0]), "{r}");
    let target = f.root.join("healed");
    cairn_json(&f.repo, args!["restore", &f.snaps[1], "--target", &target, "--verify"], 0);
    assert_same(&want, &describe(&restored(&target, &f.src)), "healed snapshot");
}

#[test]
fn truncated_and_deleted_packs_are_found_by_the_structural_scrub() {
    for how in ["truncate", "delete"] {
        let f = fixture();
        let pack = biggest_pack(&f.repo);
        let name = pack.file_name().unwrap().to_string_lossy().into_owned();
        if how == "truncate" {
            let len = fs::metadata(&pack).unwrap().len();
            fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(len / 2).unwrap();
        } else {
            fs::remove_file(&pack).unwrap();
        }
        let r = cairn_json(&f.repo, args!["scrub"], 4);
        let kinds: Vec<&str> = r["damage"].as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap()).collect();
        let want_kind = if how == "truncate" { "truncated pack" } else { "missing pack" };
        assert!(kinds.contains(&want_kind), "{how}: {kinds:?}");
        let pack_entry = r["damage"].as_array().unwrap().iter().find(|d| d["kind"] == want_kind).unwrap();
        assert_eq!(pack_entry["pack"].as_str().unwrap(), name);
        let (paths, blobs) = named(&r);
        let expected_now: BTreeSet<String> =
            chunk_map(&f.src).into_iter().filter(|(_, ids)| !ids.is_disjoint(&blobs)).map(|(p, _)| p).collect();
        let named_now: BTreeSet<String> =
            paths.iter().filter(|(s, _)| *s == f.snaps[1]).map(|(_, p)| p.clone()).collect();
        // Which files share the damaged pack depends on the order chunks reached the writer;
        // whatever they are, the current ones are named exactly, and something is named.
        assert!(!paths.is_empty(), "{how}: {r}");
        assert_eq!(named_now, expected_now, "{how}: the files that need the lost pack");

        let rep = cairn_json(&f.repo, args!["repair", "index"], 4);
        assert!(!rep["lost"].as_array().unwrap().is_empty(), "{how}: {rep}");
        // A new snapshot stores again every lost chunk the sources still hold: the newer
        // snapshots heal. What stays lost belongs to the first snapshot, and only to file
        // versions the sources no longer have.
        cairn_json(&f.repo, args!["snapshot", &f.src], 0);
        let out = cairn(&f.repo).args(["--json", "scrub", "--read-data"]).output().unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let current = chunk_map(&f.src);
        for s in r["snapshots"].as_array().unwrap() {
            if s["id"] != f.snaps[0].as_str() {
                assert_eq!(s["status"], "intact", "{how}: {s}");
            }
        }
        let (paths, _) = named(&r);
        for (snap, path) in &paths {
            assert_eq!(snap, &f.snaps[0], "{how}: only the first snapshot may still miss data");
            let now = current.iter().find(|(p, _)| p == path);
            assert!(
                now.is_none()
                    || !r["damage"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|d| { d["blob"].as_str().is_some_and(|b| now.unwrap().1.contains(b)) }),
                "{how}: {path} is still in the sources and should have healed"
            );
        }
        assert_eq!(out.status.code(), Some(if paths.is_empty() { 0 } else { 4 }));
    }
}

#[test]
fn a_lost_truncated_or_corrupt_index_loses_nothing() {
    for how in ["delete", "truncate", "garbage"] {
        let f = fixture();
        let want = describe(&f.src);
        let db = f.repo.join("index/index.sqlite");
        match how {
            "delete" => {
                for ext in ["", "-wal", "-shm"] {
                    let _ = fs::remove_file(format!("{}{ext}", db.display()));
                }
            }
            "truncate" => {
                let len = fs::metadata(&db).unwrap().len();
                fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 3).unwrap();
                let _ = fs::remove_file(format!("{}-wal", db.display()));
            }
            _ => {
                let mut bytes = fs::read(&db).unwrap();
                for b in bytes.iter_mut().skip(100).step_by(7) {
                    *b = !*b;
                }
                fs::write(&db, bytes).unwrap();
                let _ = fs::remove_file(format!("{}-wal", db.display()));
            }
        }
        if how == "delete" {
            // A missing index is rebuilt on open, from the packs.
            assert_eq!(cairn_json(&f.repo, args!["list"], 0).as_array().unwrap().len(), 2);
        } else {
            let out = cairn(&f.repo).arg("scrub").output().unwrap();
            assert_ne!(out.status.code(), Some(0), "{how}: a damaged index is not taken for a clean one");
            let rep = cairn_json(&f.repo, args!["repair", "index"], 0);
            assert_eq!(rep["snapshots"], 2, "{how}: {rep}");
        }
        assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true, "{how}");
        let target = f.root.join("out");
        cairn_json(&f.repo, args!["restore", "latest", "--target", &target, "--verify"], 0);
        assert_same(&want, &describe(&restored(&target, &f.src)), how);
    }
}

#[test]
fn budgeted_scrubs_cover_every_pack_in_turn() {
    let f = fixture();
    let total: u64 = pack_files(&f.repo).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    let npacks = pack_files(&f.repo).len() as u64;
    assert!(npacks >= 6, "the fixture has {npacks} packs");
    // Each run may read 40% of the repository: three runs cover it all, oldest first.
    let budget = (total * 2 / 5).to_string();
    let mut verified = 0;
    let mut last = serde_json::Value::Null;
    for run in 0..3 {
        let r = cairn_json(&f.repo, args!["scrub", "--read-data", "--max-bytes", &budget], 0);
        let n = r["packs_verified"].as_u64().unwrap();
        assert!(n > 0 && n < npacks, "run {run}: {n} of {npacks} packs");
        verified += n;
        if run < 2 {
            assert_eq!(r["all_packs_verified_this_run"], false);
            assert!(r["oldest_verification_age_secs"].is_null(), "run {run}: some packs are still unverified");
            std::thread::sleep(std::time::Duration::from_millis(2100));
        }
        last = r;
    }
    assert!(verified >= npacks, "{verified} verifications for {npacks} packs");
    assert_eq!(last["packs_never_verified"], 0, "{last}");
    let age = last["oldest_verification_age_secs"].as_u64().expect("age once every pack is verified");
    assert!((4..60).contains(&age), "the oldest verification is from the first run: {age} s");
}
