//! Issue 13, data safety: repair, scrub and gc never lose or misjudge what can still be read.
//! Damage in every region of a pack (header, footer, trailer, bytes appended), damaged and
//! vanished snapshot records, files of a newer format, and scrubs racing snapshots and gc.

use std::fs;
use std::path::{Path, PathBuf};

use crate::args;
use crate::integrity::{biggest_pack, fixture, named, Fixture};
use crate::util::*;

/// Every snapshot of the fixture restores byte for byte and metadata for metadata (the first
/// one's tree is the source before its mutation: compared by file content only).
fn assert_restores(f: &Fixture, what: &str) {
    let target = f.root.join(format!("check-{}", what.replace(' ', "-")));
    cairn_json(&f.repo, args!["restore", &f.snaps[1], "--target", &target, "--verify"], 0);
    assert_same(&describe(&f.src), &describe(&restored(&target, &f.src)), what);
    fs::remove_dir_all(&target).unwrap();
    let target = f.root.join(format!("check0-{}", what.replace(' ', "-")));
    cairn_json(&f.repo, args!["restore", &f.snaps[0], "--target", &target, "--verify"], 0);
    fs::remove_dir_all(&target).unwrap();
}

fn damage_kinds(r: &serde_json::Value) -> Vec<String> {
    r["damage"].as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap().to_owned()).collect()
}

/// Position of the trailer's first entry, from the pack's own footer.
fn trailer_start(bytes: &[u8]) -> usize {
    let n = bytes.len();
    let len = u32::from_le_bytes(bytes[n - 44..n - 40].try_into().unwrap()) as usize;
    n - 44 - len
}

/// Flips `mask` in the byte at the position `at` finds in the pack.
fn flip(bytes: &mut [u8], at: impl Fn(&[u8]) -> usize, mask: u8) {
    let i = at(bytes);
    bytes[i] ^= mask;
}

#[test]
fn issue13_damage_to_a_packs_header_footer_or_trailer_loses_no_frame() {
    type Damager = fn(&mut Vec<u8>);
    let cases: Vec<(&str, Damager, bool)> = vec![
        ("end marker", |b| b.last_mut().map_or((), |x| *x ^= 0x01), false),
        ("trailer checksum", |b| flip(b, |b| b.len() - 20, 0x01), false),
        ("trailer length", |b| flip(b, |b| b.len() - 44 + 1, 0x01), false),
        ("entry count", |b| flip(b, trailer_start, 0x02), false),
        ("an entry's offset", |b| flip(b, |b| trailer_start(b) + 8 + 64 + 36, 0x08), false),
        ("bytes appended", |b| b.extend_from_slice(b"\0\0appended by a confused copy tool\n"), false),
        ("header magic", |b| b[1] ^= 0x40, false),
        // The whole trailer and footer overwritten, and the index deleted as well: only a scan
        // of the frames is left to find the blobs by.
        (
            "trailer and footer zeroed, no index",
            |b| {
                let start = trailer_start(b);
                b[start..].iter_mut().for_each(|x| *x = 0);
            },
            true,
        ),
    ];
    for (what, damage, drop_index) in cases {
        let f = fixture();
        let pack = biggest_pack(&f.repo);
        let name = pack.file_name().unwrap().to_string_lossy().into_owned();
        let mut bytes = fs::read(&pack).unwrap();
        damage(&mut bytes);
        fs::write(&pack, &bytes).unwrap();

        if !drop_index {
            // Scrub names the pack, not its blobs: every frame still verifies, and so every
            // snapshot is intact and restores.
            let r = cairn_json(&f.repo, args!["scrub", "--read-data"], 4);
            assert!(damage_kinds(&r).iter().all(|k| k == "damaged pack"), "{what}: {r}");
            assert_eq!(r["damage"][0]["pack"].as_str(), Some(name.as_str()), "{what}");
            assert!(named(&r).1.is_empty(), "{what}: no blob is called bad: {r}");
            for s in r["snapshots"].as_array().unwrap() {
                assert_eq!(s["status"], "intact", "{what}: {s}");
            }
            assert_restores(&f, &format!("{what} before repair"));
        } else {
            for ext in ["", "-wal", "-shm", "-filter"] {
                let _ = fs::remove_file(format!("{}{ext}", f.repo.join("index/index.sqlite").display()));
            }
        }

        let rep = cairn_json(&f.repo, args!["repair", "index"], 0);
        assert_eq!(rep["packs_quarantined"].as_array().unwrap(), &[serde_json::json!(name)], "{what}: {rep}");
        assert!(rep["blobs_salvaged"].as_u64().unwrap() > 0, "{what}: {rep}");
        assert_eq!(rep["blobs_lost"], 0, "{what}: {rep}");
        assert!(rep["lost"].as_array().unwrap().is_empty(), "{what}: {rep}");
        assert!(f.repo.join("quarantine").join(&name).exists(), "{what}: the damaged pack is kept for inspection");
        let r = cairn_json(&f.repo, args!["scrub", "--read-data"], 0);
        assert_eq!(r["clean"], true, "{what}: {r}");
        assert_restores(&f, &format!("{what} after repair"));
    }
}

#[test]
fn issue13_a_flipped_frame_byte_costs_only_that_frames_blobs_when_the_trailer_is_damaged_too() {
    let f = fixture();
    let pack = biggest_pack(&f.repo);
    let mut bytes = fs::read(&pack).unwrap();
    let start = trailer_start(&bytes);
    bytes[start + 8 + 40] ^= 0x01; // the first entry's offset: the trailer checksum fails too
    bytes[300] ^= 0x01; // and a byte inside some frame
    fs::write(&pack, &bytes).unwrap();
    let r = cairn_json(&f.repo, args!["scrub", "--read-data"], 4);
    let bad = named(&r).1;
    assert!(!bad.is_empty() && bad.len() < 40, "only the blobs of the damaged frame: {r}");
    let rep = cairn_json(&f.repo, args!["repair", "index"], 4);
    let lost: std::collections::BTreeSet<String> =
        rep["lost"].as_array().unwrap().iter().map(|d| d["blob"].as_str().unwrap().to_owned()).collect();
    assert!(!lost.is_empty() && lost.is_subset(&bad), "repair loses at most what scrub found bad: {rep}");
    assert!(rep["blobs_salvaged"].as_u64().unwrap() > 10, "{rep}");
}

/// A record file's bytes with another format version, framed and named properly (what a newer
/// cairn would write): `(name, bytes)`.
fn as_newer_record(bytes: &[u8]) -> (String, Vec<u8>) {
    let mut b = bytes.to_vec();
    b[8..12].copy_from_slice(&99u32.to_le_bytes());
    let n = b.len();
    let sum = *blake3::hash(&b[..n - 32]).as_bytes();
    b[n - 32..].copy_from_slice(&sum);
    (blake3::hash(&b).to_hex().to_string(), b)
}

fn record_file(repo: &Path, id: &str) -> PathBuf {
    repo.join("snapshots").join(id)
}

#[test]
fn issue13_a_damaged_record_is_reported_and_written_again_from_the_index() {
    let f = fixture();
    let file = record_file(&f.repo, &f.snaps[0]);
    let mut bytes = fs::read(&file).unwrap();
    bytes[20] ^= 0x01;
    fs::write(&file, &bytes).unwrap();

    let r = cairn_json(&f.repo, args!["scrub"], 4);
    let d = r["damage"].as_array().unwrap().iter().find(|d| d["kind"] == "damaged record").expect("reported");
    assert_eq!(d["snapshot"].as_str(), Some(f.snaps[0].as_str()), "{r}");
    let s0 = r["snapshots"].as_array().unwrap().iter().find(|s| s["id"] == f.snaps[0].as_str()).unwrap();
    assert_eq!((s0["status"].as_str(), s0["record"].as_str()), (Some("damaged"), Some("damaged")), "{r}");

    let rep = cairn_json(&f.repo, args!["repair", "index"], 0);
    assert_eq!(rep["snapshots"], 2, "{rep}");
    assert_eq!(rep["snapshots_rewritten"][0].as_str(), Some(f.snaps[0].as_str()), "{rep}");
    assert_eq!(blake3::hash(&fs::read(&file).unwrap()).to_hex().as_str(), f.snaps[0], "the file is whole again");
    assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true);
    // gc keeps what it needs: forget the other snapshot and collect.
    cairn_json(&f.repo, args!["forget", &f.snaps[1], "--gc"], 0);
    let target = f.root.join("out");
    cairn_json(&f.repo, args!["restore", &f.snaps[0], "--target", &target, "--verify"], 0);
}

#[test]
fn issue13_a_vanished_record_is_kept_reported_and_written_again() {
    let f = fixture();
    let file = record_file(&f.repo, &f.snaps[0]);
    let original = fs::read(&file).unwrap();
    fs::remove_file(&file).unwrap();

    // Not reconciled away on open: still listed, with a notice.
    let out = cairn(&f.repo).args(["--json", "list"]).output().unwrap();
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"), "{}", String::from_utf8_lossy(&out.stderr));
    let r = cairn_json(&f.repo, args!["scrub"], 4);
    assert!(damage_kinds(&r).contains(&"missing record".to_owned()), "{r}");
    // gc keeps its data (a snapshot of the other one's sources, then a gc that repacks).
    cairn_json(&f.repo, args!["forget", &f.snaps[1]], 0);
    cairn_json(&f.repo, args!["gc", "--max-unused", "0"], 0);
    let rep = cairn_json(&f.repo, args!["repair", "index"], 0);
    assert_eq!(rep["snapshots_rewritten"][0].as_str(), Some(f.snaps[0].as_str()), "{rep}");
    assert_eq!(fs::read(&file).unwrap(), original);
    assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true);
    let target = f.root.join("out");
    cairn_json(&f.repo, args!["restore", &f.snaps[0], "--target", &target, "--verify"], 0);
}

#[test]
fn issue13_a_forget_killed_after_its_tombstone_is_finished_not_reported() {
    let f = fixture();
    let out =
        cairn_failing(&f.repo, "forget.record_removed=kill@1").args(["-q", "forget", &f.snaps[0]]).output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9));
    let listed = cairn_json(&f.repo, args!["list"], 0);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(cairn_json(&f.repo, args!["scrub"], 0)["clean"], true);
    assert!(f.repo.join("forgotten").read_dir().map_or(0, Iterator::count) == 0, "the tombstone is cleared");
}

#[test]
fn issue13_a_newer_record_or_pack_stops_gc_and_repair_and_is_never_called_clean() {
    let f = fixture();
    let (name, newer) = as_newer_record(&fs::read(record_file(&f.repo, &f.snaps[1])).unwrap());
    fs::write(record_file(&f.repo, &name), &newer).unwrap();
    let packs_before = pack_files(&f.repo);

    let out = cairn(&f.repo).args(["--json", "list"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be read by this cairn"), "list says so");
    let out = cairn(&f.repo).args(["--json", "scrub"]).output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert_eq!(r["clean"], false);
    assert!(r["unreadable"].as_array().unwrap().iter().any(|u| u.as_str().unwrap().contains(&name)), "{r}");

    cairn(&f.repo).args(["forget", &f.snaps[0]]).assert().success();
    let out = cairn(&f.repo).args(["gc", "--max-unused", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upgrade cairn") && err.contains("nothing was changed"), "{err}");
    assert_eq!(pack_files(&f.repo), packs_before, "gc deleted nothing");

    let out = cairn(&f.repo).args(["repair", "index"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upgrade cairn"));
    assert_eq!(pack_files(&f.repo), packs_before, "repair moved nothing");
    assert!(!f.repo.join("quarantine").exists());
    assert!(!f.repo.join("index/index.sqlite.rebuild").exists(), "no half-built index is left");

    // A pack of a newer format, intact (named by its hash), that the index does not know.
    fs::remove_file(record_file(&f.repo, &name)).unwrap();
    let mut pack = fs::read(&packs_before[0]).unwrap();
    pack[8..12].copy_from_slice(&2u32.to_le_bytes());
    let pname = blake3::hash(&pack).to_hex().to_string();
    fs::create_dir_all(f.repo.join("packs").join(&pname[..2])).unwrap();
    fs::write(f.repo.join("packs").join(&pname[..2]).join(&pname), &pack).unwrap();
    let all_packs = pack_files(&f.repo);
    let out = cairn(&f.repo).args(["gc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upgrade cairn"));
    let out = cairn(&f.repo).args(["repair", "index"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pack_files(&f.repo), all_packs, "nothing was deleted or moved");
}

/// Runs `cairn ARGS` in a loop until `stop`, returning every failure's output.
fn scrub_loop(repo: &Path, read_data: bool, stop: &std::sync::atomic::AtomicBool) -> (u32, Vec<String>) {
    let mut runs = 0;
    let mut failures = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut cmd = cairn(repo);
        cmd.args(["--json", "scrub"]);
        if read_data {
            cmd.arg("--read-data");
        }
        let out = cmd.output().unwrap();
        runs += 1;
        if !out.status.success() {
            failures.push(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
        }
    }
    (runs, failures)
}

#[test]
fn issue17_a_snapshot_committed_while_scrub_reads_the_records_is_not_a_missing_record() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    generate(&src, 3, 1);
    cairn_json(&repo, args!["snapshot", &src], 0);
    // The scrub stops itself right after it listed the record files.
    let scrub = cairn_failing(&repo, "scrub.records_listed=stop@1")
        .args(["--json", "scrub"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stat = format!("/proc/{}/stat", scrub.id());
    wait_until("the scrub stopped after listing the records", || {
        let text = fs::read_to_string(&stat).unwrap_or_default();
        let state = text.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        assert_ne!(state, Some('Z'), "the scrub ended before its fail-point");
        state == Some('T')
    });
    // Meanwhile a snapshot commits: its record file, then its row.
    mutate(&src, 2);
    let new = cairn_json(&repo, args!["snapshot", &src], 0);
    let pid = rustix::process::Pid::from_raw(i32::try_from(scrub.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let out = scrub.wait_with_output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "a record written beside the scrub is not damage: {r}");
    assert!(r["damage"].as_array().unwrap().is_empty(), "{r}");
    assert!(new["id"].is_string(), "{new}");
}

#[test]
fn issue13_a_scrub_beside_snapshots_forgets_and_gc_finds_no_damage_that_is_not_there() {
    let (dir, repo) = new_repo_with_packs(Some("64K"));
    let src = dir.path().join("src");
    generate(&src, 5, 1);
    cairn_json(&repo, args!["snapshot", &src], 0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rounds = std::env::var("CAIRN_RACE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(14u64);
    let (structural, reading) = std::thread::scope(|s| {
        let a = s.spawn(|| scrub_loop(&repo, false, &stop));
        let b = s.spawn(|| scrub_loop(&repo, true, &stop));
        for round in 0..rounds {
            mutate(&src, round + 10);
            cairn(&repo).args(["-q", "snapshot"]).arg(&src).assert().code(0);
            cairn(&repo).args(["-q", "forget", "--keep-last", "2", "--gc"]).assert().code(0);
            cairn(&repo).args(["-q", "gc", "--max-unused", "0"]).assert().code(0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(structural.0 >= 3 && reading.0 >= 3, "the scrubs ran beside the writers: {structural:?} {reading:?}");
    assert!(
        structural.1.is_empty(),
        "{} of {} structural scrubs saw damage: {}",
        structural.1.len(),
        structural.0,
        structural.1[0]
    );
    assert!(reading.1.is_empty(), "{} of {} read-data scrubs saw damage: {}", reading.1.len(), reading.0, reading.1[0]);
    // And the repository really is clean.
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
}

#[test]
fn issue13_a_damaged_config_is_mended_from_its_copy_and_a_lost_one_rebuilt() {
    let f = fixture();
    let config = f.repo.join("config");
    let copy = f.repo.join("config.copy");
    assert_eq!(fs::read(&config).unwrap(), fs::read(&copy).unwrap(), "init writes two copies");
    let good = fs::read(&config).unwrap();
    let mut bad = good.clone();
    bad[30] ^= 0x01;

    // One copy damaged: the repository opens, says so, and mends it.
    fs::write(&config, &bad).unwrap();
    let out = cairn(&f.repo).args(["--json", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config"), "the user is told");
    assert_eq!(fs::read(&config).unwrap(), good, "mended from the copy");
    fs::write(&copy, &bad).unwrap();
    cairn(&f.repo).arg("list").assert().success();
    assert_eq!(fs::read(&copy).unwrap(), good, "and the other way round");

    // Both lost: every command says what to do, and `repair config` makes a new one.
    fs::write(&config, &bad).unwrap();
    fs::remove_file(&copy).unwrap();
    let out = cairn(&f.repo).arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(4), "damaged data");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cairn repair config"));
    let rep = cairn_json(&f.repo, args!["repair", "config"], 0);
    assert_eq!(rep["action"], "rebuilt", "{rep}");
    assert_eq!(rep["chunker"]["avg_size"], 4096, "the chunk size is inferred from the packs: {rep}");
    assert_eq!(rep["chunk_size_inferred"], true);
    assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true);
    assert_restores(&f, "config rebuilt");
    // The same chunker as before: a full snapshot of the same tree stores (almost) nothing.
    let r = cairn_json(&f.repo, args!["snapshot", &f.src, "--kind", "full"], 0);
    assert!(r["data_added"].as_u64().unwrap() < 64 * 1024, "deduplicated against the old data: {r}");
}

/// Runs SQL on the index with Python's sqlite3 (independent of cairn's own SQLite).
fn sql(repo: &Path, statement: &str) {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"])
        .arg(repo.join("index/index.sqlite"))
        .arg(statement)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn issue13_an_emptied_index_or_lost_rows_are_never_taken_for_lost_data() {
    let f = fixture();
    let db = f.repo.join("index/index.sqlite");
    fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(0).unwrap();
    for ext in ["-wal", "-shm", "-filter"] {
        let _ = fs::remove_file(format!("{}{ext}", db.display()));
    }
    let out = cairn(&f.repo).args(["--json", "list"]).output().unwrap();
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "a 0-byte index is rebuilt, not taken as empty");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rebuilt"));
    assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true);

    // The rows of one pack lost from an index that is otherwise sound.
    let pack = biggest_pack(&f.repo);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let mut script = String::new();
    for level in ["blobs_l0", "blobs_l1", "blobs_l2", "blobs"] {
        script.push_str(&format!(
            "DELETE FROM {level} WHERE pid = (SELECT pid FROM packs WHERE hex(id) = upper('{name}'));"
        ));
    }
    sql(&f.repo, &script);
    let r = cairn_json(&f.repo, args!["scrub"], 4);
    let kinds = damage_kinds(&r);
    assert!(!kinds.is_empty() && kinds.iter().all(|k| k == "unindexed blob"), "the index is blamed, not the data: {r}");
    assert!(r["damage"][0]["detail"].as_str().unwrap().contains("repair index"), "{r}");
    cairn_json(&f.repo, args!["repair", "index"], 0);
    assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true);
}

/// Every file under `dir` with its size and modification time: what "nothing was written" means.
fn state_of(dir: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| {
            let m = e.metadata().unwrap();
            (e.path().to_path_buf(), m.len(), m.mtime(), m.mtime_nsec())
        })
        .collect();
    out.sort();
    out
}

/// The commands that only read, run against `repo`, each expected to succeed.
fn reading_commands(
    repo: &Path,
    src: &Path,
    snaps: &[String],
    target: &Path,
    run: &dyn Fn(&[&std::ffi::OsStr]) -> std::process::Output,
) {
    let (src, target) = (src.to_string_lossy().into_owned(), target.to_string_lossy().into_owned());
    let file = format!("{src}/dir0/file1.dat");
    let cases: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["show", "latest"],
        vec!["stats"],
        vec!["ls", "latest", &src],
        vec!["diff", &snaps[0], &snaps[1]],
        vec!["find", "file1.dat"],
        vec!["log", &file],
        vec!["cat", "latest", &file],
        vec!["manifest", "latest"],
        vec!["scrub"],
        vec!["scrub", "--read-data"],
        vec!["restore", "latest", "--target", &target, "--verify"],
    ];
    for argv in cases {
        let argv: Vec<&std::ffi::OsStr> = argv.iter().map(std::ffi::OsStr::new).collect();
        let out = run(&argv);
        assert!(
            out.status.success(),
            "{argv:?} on a read-only repository {}: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&[std::ffi::OsStr::new("snapshot"), std::ffi::OsStr::new(&src)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn issue13_a_read_only_repository_is_read_without_writing() {
    if !is_root() {
        eprintln!("skipped: a read-only mount and another user need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let repo = dir.path().join("repo");
    cairn(&repo).args(["init", "--group-readable", "--pack-size", "256K"]).assert().success();
    let src = dir.path().join("src");
    generate(&src, 41, 1);
    let a = cairn_json(&repo, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
    mutate(&src, 2);
    let b = cairn_json(&repo, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
    let snaps = vec![a, b];

    // Read by the group: another user, in the repository's group, who may not write.
    let ok = std::process::Command::new("chgrp").args(["-R", "65534"]).arg(&repo).status().unwrap();
    assert!(ok.success());
    let before = state_of(&repo);
    let target = dir.path().join("as-group");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
    let as_group = |argv: &[&std::ffi::OsStr]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cairn_bin())
            .env("CAIRN_REPO", &repo)
            .env("TZ", "UTC")
            .args(argv)
            .output()
            .unwrap()
    };
    reading_commands(&repo, &src, &snaps, &target, &as_group);
    assert_eq!(state_of(&repo), before, "the group's reads wrote nothing");
    let mut want = describe(&src);
    want.retain(|_, v| !matches!(v.kind, 'b' | 'c')); // device nodes need root to make
    assert_same(
        &want,
        &{
            let mut d = describe(&restored(&target, &src));
            // Restored by another user: owners are that user's.
            let want = describe(&src);
            for (k, v) in d.iter_mut() {
                if let Some(w) = want.get(k) {
                    v.uid = w.uid;
                    v.gid = w.gid;
                    v.mode = if v.kind == 'l' { 0 } else { v.mode | (w.mode & 0o6000) };
                }
            }
            d
        },
        "restored by the group",
    );

    // On a read-only mount, as root.
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let mounted = std::process::Command::new("mount").args(["--bind"]).arg(&repo).arg(&ro).status().unwrap().success()
        && std::process::Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&ro).status().unwrap().success();
    let _guard = Mounted::new(&ro);
    if !mounted {
        eprintln!("skipped the read-only mount: cannot bind-mount here");
        return;
    }
    let target = dir.path().join("from-ro");
    let as_root = |argv: &[&std::ffi::OsStr]| {
        std::process::Command::new(cairn_bin()).env("CAIRN_REPO", &ro).env("TZ", "UTC").args(argv).output().unwrap()
    };
    reading_commands(&ro, &src, &snaps, &target, &as_root);
    assert_same(&describe(&src), &describe(&restored(&target, &src)), "restored from a read-only mount");
    assert_eq!(state_of(&repo), before);
}

/// Fills the filesystem holding `dir` until fewer than 30 KB are free.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join(format!("filler-{}", fs::read_dir(dir).unwrap().count()));
    let mut f = fs::File::create(&filler).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    for n in [4096usize, 512, 1] {
        while f.write_all(&block[..n]).is_ok() {}
    }
    drop(f);
    let len = fs::metadata(&filler).unwrap().len();
    fs::OpenOptions::new().write(true).open(&filler).unwrap().set_len(len.saturating_sub(20_000)).unwrap();
    assert!(free_bytes(dir) < 30_000, "{} bytes free", free_bytes(dir));
    filler
}

fn free_bytes(dir: &Path) -> u64 {
    let s = rustix::fs::statvfs(dir).unwrap();
    s.f_bavail * s.f_frsize
}

#[test]
fn issue13_on_a_full_disk_list_forget_and_gc_still_run() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir_all(&mnt).unwrap();
    let Some(_mounted) = mount_tmpfs(&mnt, "40m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let repo = mnt.join("repo");
    cairn(&repo).args(["init", "--pack-size", "256K"]).assert().success();
    let src = dir.path().join("src");
    generate(&src, 9, 1);
    for round in 0..3 {
        if round > 0 {
            mutate(&src, round);
            fs::write(src.join(format!("new-{round}.bin")), Rng::new(round).bytes(2 << 20)).unwrap();
        }
        cairn_json(&repo, args!["snapshot", &src], 0);
    }
    let want = describe(&src);
    fill(&mnt);

    let listed = cairn_json(&repo, args!["list"], 0);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let before = free_bytes(&mnt);
    let r = cairn_json(&repo, args!["forget", "--keep-last", "1", "--gc"], 0);
    assert_eq!(r["removed"].as_array().unwrap().len(), 2, "{r}");
    assert!(free_bytes(&mnt) > before + (1 << 20), "gc gave space back");
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
    let target = dir.path().join("out");
    cairn_json(&repo, args!["restore", "latest", "--target", &target, "--verify"], 0);
    assert_same(&want, &describe(&restored(&target, &src)), "restored after gc on a full disk");

    // A repair on a full disk either completes or leaves no half-built index behind.
    fill(&mnt);
    let out = cairn(&repo).args(["repair", "index"]).output().unwrap();
    let leftovers: Vec<_> = fs::read_dir(repo.join("index"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("rebuild"))
        .collect();
    assert!(leftovers.is_empty(), "repair left {leftovers:?} ({})", String::from_utf8_lossy(&out.stderr));
    cairn_json(&repo, args!["list"], 0);
}

#[test]
fn issue13_a_tree_pack_with_no_trailer_and_no_index_is_found_again_by_its_frames() {
    let f = fixture();
    // The largest pack of trees (trees go to packs of their own).
    let tree_pack = pack_files(&f.repo)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let entries = cairn_store::decode::check_pack(&name, &fs::read(p).unwrap()).unwrap();
            entries.iter().all(|e| e.kind == cairn_store::BlobKind::Tree)
        })
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a tree pack");
    let mut bytes = fs::read(&tree_pack).unwrap();
    let start = trailer_start(&bytes);
    bytes[start..].iter_mut().for_each(|b| *b = 0);
    fs::write(&tree_pack, &bytes).unwrap();
    for ext in ["", "-wal", "-shm", "-filter"] {
        let _ = fs::remove_file(format!("{}{ext}", f.repo.join("index/index.sqlite").display()));
    }
    let rep = cairn_json(&f.repo, args!["repair", "index"], 0);
    assert!(rep["lost"].as_array().unwrap().is_empty(), "every tree was found again: {rep}");
    assert!(rep["blobs_salvaged"].as_u64().unwrap() > 1, "{rep}");
    assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true);
    assert_restores(&f, "tree pack scanned");
}

#[test]
fn issue13_repair_index_runs_alone_and_nothing_opens_the_index_it_is_replacing() {
    let f = fixture();
    // A snapshot in progress: repair refuses, changing nothing.
    let snap = cairn_failing(&f.repo, "snapshot.file_read=pause@150")
        .args(["-q", "snapshot", "--kind", "full"])
        .arg(&f.src)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sessions = || {
        fs::read_dir(f.repo.join("locks"))
            .map(|d| d.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().starts_with("session-")))
            .unwrap_or(false)
    };
    wait_until("the snapshot's session", sessions);
    let out = cairn(&f.repo).args(["repair", "index"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("snapshot (pid") && err.contains("nothing was changed"), "{err}");
    assert!(snap.wait_with_output().unwrap().status.success());

    // A repair in progress: everything else waits for nothing and says why; nothing forgotten
    // meanwhile can come back.
    let repair = cairn_failing(&f.repo, "repair.before_swap=pause@3000")
        .args(["-q", "repair", "index"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the rebuild file", || f.repo.join("index/index.sqlite.rebuild").exists());
    for argv in [vec!["list"], vec!["forget", "--keep-last", "1"], vec!["scrub"]] {
        let out = cairn(&f.repo).args(&argv).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{argv:?} beside a repair");
        assert!(String::from_utf8_lossy(&out.stderr).contains("repair index` is rebuilding"), "{argv:?}");
    }
    let done = repair.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let list = cairn_json(&f.repo, args!["list"], 0);
    assert_eq!(list.as_array().unwrap().len(), 3, "the two snapshots and the one taken above: {list}");
    assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true);
    assert_restores(&f, "after repair beside other commands");
}

#[test]
fn issue13_a_flipped_version_byte_in_the_config_copy_is_damage_not_a_newer_format() {
    let f = fixture();
    let copy = f.repo.join("config.copy");
    let good = fs::read(&copy).unwrap();
    for bad in [3u8, 0u8] {
        let mut bytes = good.clone();
        bytes[8] = bad;
        fs::write(&copy, &bytes).unwrap();
        let out = cairn(&f.repo).args(["--json", "list"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("config.copy"), "the user is told");
        assert_eq!(fs::read(&copy).unwrap(), good, "the copy is written again from the config");
    }
    assert_restores(&f, "after the config copy was mended");
}

#[test]
fn issue13_a_garbled_file_in_forgotten_never_forgets_a_snapshot_whose_record_verifies() {
    let f = fixture();
    fs::create_dir_all(f.repo.join("forgotten")).unwrap();
    for garbage in [&b""[..], b"not a tombstone at all\n"] {
        fs::write(f.repo.join("forgotten").join(&f.snaps[0]), garbage).unwrap();
        let out = cairn(&f.repo).args(["--json", "list"]).output().unwrap();
        assert!(out.status.success());
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 2, "the snapshot is kept: {list}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not a tombstone"), "and the user told");
        cairn_json(&f.repo, args!["gc", "--max-unused", "0"], 0);
        assert_restores(&f, "after gc beside a garbled tombstone");
    }
}

#[test]
fn issue13_what_repair_could_not_salvage_is_called_lost_not_unindexed() {
    let f = fixture();
    let pack = biggest_pack(&f.repo);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[200..204].copy_from_slice(b"XXXX"); // inside the first frame; trailer intact
    fs::write(&pack, &bytes).unwrap();
    let rep = cairn_json(&f.repo, args!["repair", "index"], 4);
    let lost = rep["lost"].as_array().unwrap();
    assert!(!lost.is_empty(), "{rep}");
    for d in lost {
        assert_ne!(d["kind"], "unindexed blob", "the repair just indexed everything that verifies: {d}");
        assert!(!d["detail"].as_str().unwrap().contains("repair index"), "no advice to run what just ran: {d}");
    }
    let scrub = cairn_json(&f.repo, args!["scrub"], 4);
    let kinds = damage_kinds(&scrub);
    assert!(kinds.iter().all(|k| k == "missing blob"), "{kinds:?}");
}

#[test]
fn issue13_an_index_copied_from_another_repository_is_no_evidence_for_repair() {
    let f = fixture();
    let other = fixture();
    for ext in ["", "-wal", "-shm", "-filter"] {
        let _ = fs::remove_file(format!("{}{ext}", f.repo.join("index/index.sqlite").display()));
    }
    for ext in ["", "-filter"] {
        let from = format!("{}{ext}", other.repo.join("index/index.sqlite").display());
        let _ = fs::copy(&from, format!("{}{ext}", f.repo.join("index/index.sqlite").display()));
    }
    let records = |r: &Path| fs::read_dir(r.join("snapshots")).unwrap().count();
    let before = records(&f.repo);
    cairn_json(&f.repo, args!["repair", "index"], 0);
    assert_eq!(records(&f.repo), before, "no record of the other repository is written here");
    let list = cairn_json(&f.repo, args!["list"], 0);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(f.snaps.iter().all(|s| ids.contains(&s.as_str())), "{list}");
    assert_eq!(cairn_json(&f.repo, args!["scrub", "--read-data"], 0)["clean"], true);
    assert_restores(&f, "after repair with a foreign index");
}

#[test]
fn issue13_a_missing_tree_pack_is_damage_named_by_restore_not_an_abort() {
    let f = fixture();
    let tree_packs: Vec<_> = pack_files(&f.repo)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let entries = cairn_store::decode::check_pack(&name, &fs::read(p).unwrap()).unwrap();
            entries.iter().all(|e| e.kind == cairn_store::BlobKind::Tree)
        })
        .collect();
    assert!(!tree_packs.is_empty());
    for p in &tree_packs {
        fs::remove_file(p).unwrap();
    }
    let target = f.root.join("lost-trees");
    let r = cairn_json(&f.repo, args!["restore", &f.snaps[1], "--target", &target], 4);
    let damaged = r["damaged"].as_array().unwrap();
    assert!(!damaged.is_empty(), "{r}");
    assert!(damaged.iter().all(|d| d["message"].as_str().unwrap().contains("missing")), "{r}");
}
