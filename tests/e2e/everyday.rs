//! Issue 15, everyday semantics: what the commands print in ordinary use (times, ages, ratios,
//! quiet listings, hints for other tools' command names), each through the binary on a real tree.

// A test's unwrap is its assertion: a panic with the line that failed.
#![allow(clippy::unwrap_used)]

use std::fs;

use crate::args;
use crate::util::*;

/// A repository with one snapshot of a small tree; returns (tempdir, repo, source, snapshot ID).
fn one_snapshot() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, String) {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("app.conf"), b"listen 8080;\n").unwrap();
    let report = cairn_json(&repo, args!["snapshot", &src], 0);
    let id = report["id"].as_str().unwrap().to_owned();
    (dir, repo, src, id)
}

#[test]
fn issue15_item10_find_json_time_is_utc_rfc3339_like_list() {
    let (_dir, repo, _src, id) = one_snapshot();
    // A zone far from UTC, with a half-hour offset: a local time would differ from list's.
    let out = cairn(&repo).env("TZ", "Asia/Kolkata").args(["--json", "find", "app.conf"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["snapshot"], id.as_str());
    let time = found[0]["time"].as_str().unwrap();
    // jiff's Timestamp parses RFC 3339 only when it carries an offset or `Z`.
    let parsed: jiff::Timestamp = time.parse().unwrap_or_else(|e| panic!("{time:?} is not RFC 3339 with a zone: {e}"));

    let list = cairn(&repo).env("TZ", "Asia/Kolkata").args(["--json", "list"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let listed = list.as_array().unwrap().iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(time, listed["time"].as_str().unwrap(), "find and list print the same time the same way");
    assert_eq!(parsed.as_nanosecond(), i128::from(listed["time_ns"].as_i64().unwrap()));
}

#[test]
fn issue15_item14_stats_reads_age_as_a_duration_and_dedup_over_file_content() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    // One small file kept under two names: the content is stored once and restored twice.
    // Small on purpose: the trees that describe it are as big as the content, so a ratio that
    // counted them would be far from 2.
    let content = Rng::new(15).bytes(300);
    fs::write(src.join("a/first.dat"), &content).unwrap();
    fs::write(src.join("a/b/second-name-for-the-same.dat"), &content).unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);

    let stats = cairn_json(&repo, args!["stats"], 0);
    assert_eq!(stats["logical_size"], 600);
    let ratio = stats["dedup_ratio"].as_f64().unwrap();
    assert!((ratio - 2.0).abs() < 1e-9, "one file under two names dedups 2.0x: {stats}");
    // JSON keeps the age in seconds.
    assert!(stats["newest_snapshot_age_secs"].as_u64().unwrap() < 600, "{stats}");

    let text = cairn(&repo).arg("stats").assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    let age = text.lines().find(|l| l.starts_with("newest snapshot")).unwrap_or_else(|| panic!("{text}"));
    assert!(!age.contains(" s old"), "the age is a human duration, not raw seconds: {age:?}");
    let value = age.trim_start_matches("newest snapshot").trim().trim_end_matches(" old");
    assert!(
        value.split(' ').all(|part| part.len() > 1
            && part[..part.len() - 1].parse::<u64>().is_ok()
            && ["d", "h", "m", "s"].contains(&&part[part.len() - 1..])),
        "{age:?}"
    );
    assert!(text.contains("dedup ratio        2.00x"), "{text}");
}

#[test]
fn issue15_item16_list_quiet_prints_the_full_ids_one_per_line() {
    let (dir, repo, src, first) = one_snapshot();
    fs::write(src.join("more.conf"), b"timeout 5\n").unwrap();
    let second = cairn_json(&repo, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned();
    let out = cairn(&repo).args(["list", "-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{first}\n{second}\n"), "oldest first, like list");
    assert!(out.stderr.is_empty());
    // Filters apply as to the table.
    let out = cairn(&repo).args(["-q", "list", "--latest", "1"]).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{second}\n"));
    // The IDs are usable as they are.
    cairn(&repo).args(["show", &first]).assert().success();
    // --json is unchanged by -q.
    let json = cairn_json(&repo, args!["-q", "list"], 0);
    assert_eq!(json.as_array().unwrap().len(), 2);
    drop(dir);
}

#[test]
fn issue15_item21_cat_json_is_refused_and_other_tools_names_get_a_hint() {
    let (_dir, repo, src, id) = one_snapshot();
    let file = src.join("app.conf");
    for args in [args!["--json", "cat", &id, &file], args!["cat", &id, &file, "--json"]] {
        let out = cairn(&repo).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
        assert!(out.stdout.is_empty(), "nothing printed as if it were JSON");
        assert!(stderr.contains("`cat` prints file contents; --json does not apply"), "{stderr}");
    }
    // Without --json, cat is as before.
    cairn(&repo).args(args!["cat", &id, &file]).assert().success().stdout("listen 8080;\n");

    for (theirs, ours) in
        [("check", "`scrub`"), ("backup", "`snapshot`"), ("prune", "`forget --gc` or `gc`"), ("version", "`--version`")]
    {
        let out = cairn(&repo).arg(theirs).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{theirs}: {stderr}");
        assert!(stderr.contains(&format!("unrecognized subcommand '{theirs}'")), "{stderr}");
        assert!(stderr.contains(&format!("cairn's command for this is {ours}")), "{theirs}: {stderr}");
    }
    // A name no other tool uses gets clap's message alone.
    let out = cairn(&repo).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cairn's command"));
}
