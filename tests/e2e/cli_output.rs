//! Issue 13, what the command line says: output to a reader that has gone away (`| head -c0`,
//! `| true`) never turns finished work into a panic or a false exit code; `forget --gc` while
//! another gc runs reports what it removed and that gc was deferred; `repair index` prints
//! headings only over content.

// A test's unwrap is its assertion: a panic with the line that failed.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;

use crate::args;
use crate::util::*;

/// cairn as a `std::process::Command` (assert_cmd's cannot hand out the child's pipes).
fn cairn_std(repo: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(cairn_bin());
    cmd.env("CAIRN_REPO", repo).env_remove("CAIRN_IO_STATS").env("TZ", "UTC").stdin(Stdio::null());
    cmd
}

/// Runs cairn with stdout a pipe whose read end is closed right after the spawn, long before
/// cairn has opened the repository and has anything to write: every write gets EPIPE.
/// Returns the exit code and stderr.
fn with_stdout_closed(repo: &Path, args: &[&OsStr]) -> (Option<i32>, String) {
    let mut child =
        cairn_std(repo).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn cairn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for cairn");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs cairn with its stdout closed, with and without `--json`; notes in `failures` each run
/// that panicked or did not exit with `code` (all are collected, to see every command at once).
fn check_survives(failures: &mut Vec<String>, repo: &Path, args: &[&OsStr], code: i32) {
    check_once(failures, repo, args, code);
    let mut json = vec![OsStr::new("--json")];
    json.extend_from_slice(args);
    check_once(failures, repo, &json, code);
}

/// One run of [`check_survives`].
fn check_once(failures: &mut Vec<String>, repo: &Path, args: &[&OsStr], code: i32) {
    let (got, stderr) = with_stdout_closed(repo, args);
    if stderr.contains("panicked") || got != Some(code) {
        let first = stderr.lines().next().unwrap_or("");
        failures.push(format!("cairn {args:?}: exit {got:?}, expected {code}: {first}"));
    }
}

fn snapshot_ids(repo: &Path) -> Vec<String> {
    cairn_json(repo, args!["list"], 0)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A repository with two snapshots of a small tree (a file changed between them).
fn two_snapshots() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, Vec<String>) {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), "first version\n").unwrap();
    fs::write(src.join("sub/b.bin"), vec![7u8; 100 << 10]).unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    fs::write(src.join("a.txt"), "second version\n").unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    let ids = snapshot_ids(&repo);
    (dir, repo, src, ids)
}

#[test]
fn issue13_every_command_survives_a_closed_stdout_with_its_own_exit_code() {
    let (dir, repo, src, ids) = two_snapshots();
    let (a, b) = (ids[0].as_str(), ids[1].as_str());
    let mut failures = Vec::new();

    // A snapshot whose report nobody reads is still saved, and says so by its exit code.
    for json in [false, true] {
        let before = snapshot_ids(&repo).len();
        fs::write(src.join(format!("new-{json}.txt")), "more\n").unwrap();
        let mut args: Vec<&OsStr> = vec![OsStr::new("snapshot"), src.as_os_str()];
        if json {
            args.insert(0, OsStr::new("--json"));
        }
        check_once(&mut failures, &repo, &args, 0);
        assert_eq!(snapshot_ids(&repo).len(), before + 1, "the snapshot was committed");
    }

    check_survives(&mut failures, &repo, args!["list"], 0);
    check_survives(&mut failures, &repo, args!["show", a], 0);
    check_survives(&mut failures, &repo, args!["stats"], 0);
    check_survives(&mut failures, &repo, args!["scrub"], 0);
    check_survives(&mut failures, &repo, args!["scrub", "--read-data"], 0);
    check_survives(&mut failures, &repo, args!["ls", b, &src, "--recursive", "--long"], 0);
    // `cat --json` is a usage error since issue 15 item 21: it must still not panic.
    check_once(&mut failures, &repo, args!["cat", b, src.join("sub/b.bin")], 0);
    check_once(&mut failures, &repo, args!["--json", "cat", b, src.join("sub/b.bin")], 2);
    check_survives(&mut failures, &repo, args!["manifest", b], 0);
    check_survives(&mut failures, &repo, args!["diff", a, b], 0);
    check_survives(&mut failures, &repo, args!["find", "*.txt"], 0);
    check_survives(&mut failures, &repo, args!["log", src.join("a.txt")], 0);
    check_survives(&mut failures, &repo, args!["restore", b, "--target", dir.path().join("r1")], 0);
    check_survives(&mut failures, &repo, args!["restore", b, "--target", dir.path().join("r2"), "--dry-run"], 0);
    check_survives(&mut failures, &repo, args!["repair", "config"], 0);
    check_survives(&mut failures, &repo, args!["repair", "index"], 0);
    let offsite = dir.path().join("offsite");
    init_repo(&offsite, None);
    check_survives(&mut failures, &offsite, args!["copy", "--from", &repo], 0);
    assert_eq!(snapshot_ids(&offsite), snapshot_ids(&repo), "the copy was made");

    // forget removes one snapshot each run (text, then JSON); both count.
    let before = snapshot_ids(&repo);
    check_once(&mut failures, &repo, args!["forget", a], 0);
    check_once(&mut failures, &repo, args!["--json", "forget", b], 0);
    assert_eq!(snapshot_ids(&repo).len(), before.len() - 2);
    check_survives(&mut failures, &repo, args!["forget", "--keep-last", "1", "--gc"], 0);
    let of_src = cairn_json(&repo, args!["list", "--path", &src], 0);
    assert_eq!(of_src.as_array().unwrap().len(), 1, "forget --gc removed the others: {of_src}");
    check_survives(&mut failures, &repo, args!["gc"], 0);
    check_survives(&mut failures, &repo, args!["gc", "--dry-run"], 0);
    check_once(&mut failures, &dir.path().join("text"), args!["init"], 0);
    check_once(&mut failures, &dir.path().join("json"), args!["--json", "init"], 0);
    assert!(failures.is_empty(), "with stdout closed:\n{}", failures.join("\n"));
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
}

#[test]
fn issue13_damage_found_by_a_command_whose_stdout_is_closed_still_exits_4() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data.bin"), Rng::new(13).bytes(300 << 10)).unwrap();
    fs::write(src.join("small.txt"), "intact\n").unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    let id = snapshot_ids(&repo).remove(0);
    // One bit flipped in the middle of the data pack: inside a chunk of data.bin.
    let pack = pack_files(&repo).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&pack, &bytes).unwrap();
    // The exit code is the verdict: `cairn scrub | head` must not call a damaged repository
    // healthy (or failed) because its report could not be written.
    let mut failures = Vec::new();
    check_survives(&mut failures, &repo, args!["scrub", "--read-data"], 4);
    check_survives(&mut failures, &repo, args!["restore", &id, "--target", dir.path().join("r")], 4);
    assert!(failures.is_empty(), "with stdout closed:\n{}", failures.join("\n"));
    assert_eq!(fs::read(restored(&dir.path().join("r"), &src.join("small.txt"))).unwrap(), b"intact\n");
}

#[test]
fn issue13_a_closed_stderr_does_not_panic_either() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join(OsStr::from_bytes(b"not-utf8-\xff")), "x").unwrap();
    fs::write(src.join("ok.txt"), "y").unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    let id = snapshot_ids(&repo).remove(0);
    // manifest names the file it leaves out on stderr; with nobody reading stderr it still
    // prints the manifest and exits 0.
    for json in [false, true] {
        let mut cmd = cairn_std(&repo);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd.args(["manifest", &id]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stderr.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "manifest with stderr closed (json {json})");
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok.txt"), "json {json}");
    }
}

/// The gc lock's file names its holder's pid once the holder has taken it.
fn wait_for_gc_lock(repo: &Path, holder: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !fs::read_to_string(repo.join("locks/gc")).is_ok_and(|s| s.trim() == format!("{holder} gc")) {
        assert!(std::time::Instant::now() < deadline, "the other gc never took the gc lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn issue13_forget_gc_while_another_gc_runs_reports_the_removal_and_exits_5() {
    let (dir, repo) = new_repo_with_packs(Some("128K"));
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(10);
    for _ in 0..4 {
        fs::write(src.join("data"), rng.bytes(300 << 10)).unwrap();
        cairn_json(&repo, args!["snapshot", &src], 0);
    }
    let ids = snapshot_ids(&repo);
    // Another gc holds the gc lock: paused after its mark, long enough for both forgets.
    let other = cairn_std(&repo)
        .args(["--json", "gc"])
        .env("CAIRN_FAILPOINTS", "gc.marked=pause@8000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_gc_lock(&repo, other.id());

    let text = cairn(&repo).args(args!["forget", &ids[0], "--gc"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(5), "stdout {stdout} stderr {}", String::from_utf8_lossy(&text.stderr));
    assert!(stdout.contains("removed 1 snapshots"), "{stdout}");
    assert!(stdout.contains("gc deferred: another gc is running"), "{stdout}");

    let json = cairn_json(&repo, args!["forget", "--keep-last", "1", "--gc"], 5);
    let mut removed: Vec<&str> = json["removed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    removed.sort_unstable();
    let mut expected = vec![ids[1].as_str(), ids[2].as_str()];
    expected.sort_unstable();
    assert_eq!(removed, expected, "{json}");
    assert_eq!(json["gc_deferred"], true, "{json}");
    assert!(json["gc"].is_null(), "{json}");
    assert_eq!(snapshot_ids(&repo), vec![ids[3].clone()], "list shows only the kept snapshot");

    // The other gc finishes undisturbed; then the deferred gc runs and frees the space.
    let out = other.wait_with_output().unwrap();
    assert!(out.status.success(), "the other gc: {}", String::from_utf8_lossy(&out.stderr));
    let gc = cairn_json(&repo, args!["gc"], 0);
    assert!(gc["packs_deleted"].as_u64().unwrap() > 0, "{gc}");
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
}

/// `repair index` in text, asserting its exit code; returns stdout.
fn repair_text(repo: &Path, code: i32) -> String {
    let out = cairn(repo).args(["repair", "index"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(code), "stdout {stdout} stderr {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Every heading (a line ending in `:`) has something under it: the next line is indented.
fn assert_headings_have_content(stdout: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.ends_with(':') {
            let next = lines.get(i + 1).copied().unwrap_or("");
            assert!(next.starts_with("  "), "heading {line:?} with nothing under it:\n{stdout}");
        }
    }
}

fn remove_index(repo: &Path) {
    for ext in ["", "-wal", "-shm", "-filter"] {
        let _ = fs::remove_file(format!("{}{ext}", repo.join("index/index.sqlite").display()));
    }
}

#[test]
fn issue13_repair_prints_the_lost_heading_only_over_what_was_lost() {
    // Healthy: nothing lost, no LOST heading.
    let (_dir, repo, _src, ids) = two_snapshots();
    let healthy = repair_text(&repo, 0);
    assert!(!healthy.contains("LOST"), "{healthy}");
    assert!(healthy.contains("nothing any snapshot needs is lost"), "{healthy}");

    // A snapshot record damaged with no verified copy left (the index is gone too): that
    // snapshot is lost, but no data any remaining snapshot needs.
    let record = repo.join("snapshots").join(&ids[1]);
    let mut bytes = fs::read(&record).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&record, &bytes).unwrap();
    remove_index(&repo);
    let record_lost = repair_text(&repo, 4);
    assert_headings_have_content(&record_lost);
    assert!(record_lost.contains(&format!("LOST: snapshot {}", &ids[1][..8])), "{record_lost}");
    assert!(!record_lost.contains("nothing any snapshot needs is lost"), "{record_lost}");

    // Data lost: the heading, with what is lost under it.
    let (_dir, repo, _src, _ids) = two_snapshots();
    let biggest = pack_files(&repo).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    fs::remove_file(biggest).unwrap();
    let data_lost = repair_text(&repo, 4);
    assert_headings_have_content(&data_lost);
    assert!(data_lost.contains("LOST: data that snapshots need"), "{data_lost}");
    assert!(data_lost.contains("needed by"), "{data_lost}");
}

#[test]
fn issue13_a_pack_with_bytes_appended_is_not_called_truncated() {
    let (_dir, repo, _src, _ids) = two_snapshots();
    let pack = pack_files(&repo).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes.extend_from_slice(b"\0\0appended by a confused copy tool\n");
    fs::write(&pack, &bytes).unwrap();
    let out = cairn(&repo).args(["scrub", "--read-data"]).output().unwrap();
    let scrub = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{scrub}");
    assert!(scrub.contains("bytes were appended"), "{scrub}");
    assert!(!scrub.contains("truncat"), "appended bytes are not a truncation:\n{scrub}");
    // One finding for the one damaged pack, not one from the size check and one from the read.
    let r = cairn_json(&repo, args!["scrub", "--read-data"], 4);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let about: Vec<_> = r["damage"].as_array().unwrap().iter().filter(|d| d["pack"] == name.as_str()).collect();
    assert_eq!(about.len(), 1, "{r}");
    let repair = repair_text(&repo, 0);
    assert!(!repair.contains("truncat"), "{repair}");
    assert_eq!(cairn_json(&repo, args!["scrub", "--read-data"], 0)["clean"], true);
}

#[test]
fn issue13_a_read_data_scrub_without_a_budget_does_not_speak_of_one() {
    let (_dir, repo, _src, _ids) = two_snapshots();
    let pack = pack_files(&repo).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    // And four bytes of the first frame overwritten (a frame that no longer decodes whole).
    bytes[200..204].copy_from_slice(b"XXXX");
    fs::write(&pack, &bytes).unwrap();
    let out = cairn(&repo).args(["scrub", "--read-data"]).output().unwrap();
    let scrub = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{scrub}");
    // Every pack was read; one did not verify. No budget was given, and another read-data
    // scrub would find the same.
    assert!(!scrub.contains("budget"), "{scrub}");
    // Each finding says what is wrong once, not wrapped in itself.
    assert!(!scrub.contains("blob blob"), "{scrub}");
    assert!(scrub.lines().all(|l| l.matches("fails its hash check").count() <= 1), "{scrub}");
    assert!(!scrub.contains("run `cairn scrub --read-data`"), "{scrub}");
    let packs = pack_files(&repo).len();
    assert!(scrub.contains(&format!("read back all {packs} packs in scope")), "{scrub}");
}

/// Every command's help puts the flags all commands take under their own heading, after the
/// command's own (issue 15 item 17: they were interleaved).
#[test]
fn issue15_global_flags_have_their_own_heading_in_every_help() {
    let dir = tempfile::tempdir().unwrap();
    for command in
        ["init", "snapshot", "list", "restore", "scrub", "forget", "gc", "show", "ls", "diff", "log", "cat", "copy"]
    {
        let out = cairn(dir.path()).args([command, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let (own, global) = help.split_once("Global options:").unwrap_or_else(|| panic!("{command}: {help}"));
        for flag in ["--repo", "--json", "--quiet", "--verbose"] {
            assert!(
                global.contains(flag) && !own.contains(flag),
                "{command}: {flag} belongs under the heading\n{help}"
            );
        }
    }
}
