//! Issue 15 items 3, 5 and 22: which snapshot a name picks (`latest`, `--at`, labels, the
//! `--tag/--host/--path` filters on every command that names one), what keeps a snapshot from
//! a keep-policy (pins, not labels), how safety snapshots expire, and `cairn tag`.

// A test's unwrap is its assertion: a panic with the line that failed.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use crate::args;
use crate::util::*;

fn snap(repo: &Path, extra: &[&std::ffi::OsStr]) -> String {
    let mut a: Vec<&std::ffi::OsStr> = vec!["snapshot".as_ref()];
    a.extend_from_slice(extra);
    cairn_json(repo, &a, 0)["id"].as_str().unwrap().to_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Two trees: `svc` (a service's config) and `other`, each snapshotted; `other` is newer.
struct TwoTrees {
    dir: tempfile::TempDir,
    repo: PathBuf,
    svc: PathBuf,
    other: PathBuf,
    svc_id: String,
    other_id: String,
}

fn two_trees() -> TwoTrees {
    let (dir, repo) = new_repo();
    let svc = dir.path().join("svc");
    let other = dir.path().join("other");
    fs::create_dir_all(svc.join("conf.d")).unwrap();
    fs::create_dir_all(&other).unwrap();
    fs::write(svc.join("conf.d/app.conf"), b"listen 8080;\n").unwrap();
    fs::write(other.join("notes.txt"), b"unrelated\n").unwrap();
    let svc_id = snap(&repo, args![&svc, "--tag", "hourly", "--host", "web1"]);
    let other_id = snap(&repo, args![&other, "--tag", "daily", "--host", "db1"]);
    TwoTrees { dir, repo, svc, other, svc_id, other_id }
}

#[test]
fn issue15_item3_latest_and_at_take_the_filters_on_every_command_that_names_a_snapshot() {
    let t = two_trees();
    let file = t.svc.join("conf.d/app.conf");
    // Unfiltered, `latest` is the other tree's snapshot, which does not hold the file.
    assert_eq!(cairn_json(&t.repo, args!["show", "latest"], 0)["id"], t.other_id.as_str());

    // restore: by --path, and --at with --path, pick the service's snapshot.
    let target = t.dir.path().join("restored");
    let r = cairn_json(&t.repo, args!["restore", "latest", "--path", &t.svc, "--target", &target], 0);
    assert_eq!(r["snapshot"], t.svc_id.as_str(), "{r}");
    assert_eq!(fs::read(restored(&target, &file)).unwrap(), b"listen 8080;\n");
    assert!(!restored(&target, &t.other).exists(), "the other tree is not restored");
    let r = cairn_json(
        &t.repo,
        args!["restore", "--at", "2100-01-01T00:00:00Z", "--path", &t.svc, "--target", &target, "--dry-run"],
        0,
    );
    assert_eq!(r["snapshot"], t.svc_id.as_str(), "--at among the service's snapshots: {r}");

    // show / ls / cat / diff / manifest: the same flags.
    assert_eq!(cairn_json(&t.repo, args!["show", "latest", "--tag", "hourly"], 0)["id"], t.svc_id.as_str());
    assert_eq!(cairn_json(&t.repo, args!["show", "latest", "--host", "web1"], 0)["id"], t.svc_id.as_str());
    let cat = cairn(&t.repo).args(args!["cat", "latest", &file, "--path", &t.svc]).output().unwrap();
    assert!(cat.status.success(), "{}", stderr_of(&cat));
    assert_eq!(cat.stdout, b"listen 8080;\n");
    let ls = cairn_json(&t.repo, args!["ls", "latest", &t.svc, "--tag", "hourly", "-R"], 0);
    assert!(ls.to_string().contains("app.conf"), "{ls}");
    let m = cairn(&t.repo).args(args!["manifest", "latest", "--host", "web1"]).output().unwrap();
    assert!(m.status.success(), "{}", stderr_of(&m));
    assert!(String::from_utf8_lossy(&m.stdout).contains("conf.d/app.conf"), "{}", String::from_utf8_lossy(&m.stdout));
    fs::write(&file, b"listen 9090;\n").unwrap();
    let newer = snap(&t.repo, args![&t.svc, "--tag", "hourly", "--host", "web1"]);
    snap(&t.repo, args![&t.other, "--tag", "daily", "--host", "db1"]); // `latest` is the other tree again
    let d = cairn_json(&t.repo, args!["diff", &t.svc_id, "latest", "--tag", "hourly"], 0);
    assert!(d.to_string().contains("app.conf"), "diff against the service's latest ({newer}): {d}");

    // A path below a source selects its snapshots too (not only the exact source path).
    let listed = cairn_json(&t.repo, args!["list", "--path", t.svc.join("conf.d")], 0);
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![t.svc_id.as_str(), newer.as_str()]);
    // `..` is taken lexically, as for snapshot sources.
    let dotted = cairn_json(&t.repo, args!["list", "--path", t.svc.join("conf.d/../conf.d")], 0);
    assert_eq!(dotted, listed);

    // No match names the filter.
    let out = cairn(&t.repo).args(["show", "latest", "--tag", "weekly"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("tagged weekly"), "{}", stderr_of(&out));
}

#[test]
fn issue15_item3_safety_snapshots_are_left_out_of_latest_unless_their_tag_is_asked_for() {
    let t = two_trees();
    let file = t.svc.join("conf.d/app.conf");
    fs::write(&file, b"broken\n").unwrap();
    let r = cairn_json(&t.repo, args!["restore", &t.svc_id, "--target", "/"], 0);
    let safety = r["safety_snapshot"].as_str().unwrap().to_owned();
    assert_eq!(fs::read(&file).unwrap(), b"listen 8080;\n");

    assert_eq!(cairn_json(&t.repo, args!["show", "latest"], 0)["id"], t.other_id.as_str());
    let shown = cairn_json(&t.repo, args!["show", "latest", "--tag", "safety"], 0);
    assert_eq!(shown["id"], safety.as_str());
    assert_eq!(shown["safety"], true);
    assert_eq!(shown["label"], serde_json::Value::Null, "safety snapshots carry no label (labels are unique)");
    let cat = cairn(&t.repo).args(args!["cat", "latest", &file, "--tag", "safety"]).output().unwrap();
    assert_eq!(cat.stdout, b"broken\n", "the safety snapshot holds what the restore replaced");
}

#[test]
fn issue15_item5_a_label_names_one_snapshot_and_cannot_read_as_something_else() {
    let t = two_trees();
    snap(&t.repo, args![&t.svc, "--label", "before-upgrade"]);
    for (label, why) in [("before-upgrade", "already the label"), ("latest", "reserved"), ("c3ed", "hex digits")] {
        let out = cairn(&t.repo).args(args!["snapshot", &t.svc, "--label", label]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "--label {label} must be refused");
        assert!(stderr_of(&out).contains(why), "--label {label}: {}", stderr_of(&out));
    }
    let out = cairn(&t.repo).args(args!["snapshot", &t.svc, "--tag", "safety"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the safety tag is the restore's");
    assert!(stderr_of(&out).contains("reserved"), "{}", stderr_of(&out));
    assert_eq!(cairn_json(&t.repo, args!["list"], 0).as_array().unwrap().len(), 3, "nothing was made");
}

#[test]
fn issue15_item5_labels_do_not_escape_retention_pins_do() {
    let t = two_trees();
    let labelled = snap(&t.repo, args![&t.svc, "--label", "release-7"]);
    let pinned = snap(&t.repo, args![&t.svc, "--pin"]);
    let newest = snap(&t.repo, args![&t.svc]);
    let f = cairn_json(&t.repo, args!["forget", "--keep-last", "1", "--path", &t.svc, "--group-by", "paths"], 0);
    let verdict = |id: &str| f["decisions"].as_array().unwrap().iter().find(|d| d["id"] == id).unwrap().clone();
    assert_eq!(verdict(&labelled)["keep"], false, "a label alone keeps nothing: {f}");
    assert_eq!(verdict(&pinned)["reasons"], serde_json::json!(["pinned"]), "{f}");
    assert_eq!(verdict(&newest)["keep"], true);
    let left: Vec<String> = cairn_json(&t.repo, args!["list"], 0)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(left.contains(&t.other_id), "--path kept the policy off the other tree: {left:?}");
    assert!(!left.contains(&labelled) && !left.contains(&t.svc_id), "{left:?}");

    // Forgetting a pinned snapshot by name needs --include-pinned.
    let out = cairn(&t.repo).args(["forget", &pinned[..8]]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("pinned"), "{}", stderr_of(&out));
    cairn_json(&t.repo, args!["show", &pinned], 0);
    cairn(&t.repo).args(["forget", &pinned[..8], "--include-pinned"]).assert().success();
    cairn(&t.repo).args(["show", &pinned]).assert().code(1);
}

#[test]
fn issue15_item5_safety_snapshots_expire_by_their_own_policy() {
    let t = two_trees();
    let file = t.svc.join("conf.d/app.conf");
    let mut safety = Vec::new();
    for i in 0..4 {
        fs::write(&file, format!("broken {i}\n")).unwrap();
        let r = cairn_json(&t.repo, args!["restore", &t.svc_id, "--target", "/"], 0);
        safety.push(r["safety_snapshot"].as_str().unwrap().to_owned());
    }
    let listed = cairn_json(&t.repo, args!["list", "--tag", "safety"], 0);
    assert_eq!(listed.as_array().unwrap().len(), 4, "four restores, four safety snapshots (no label clash)");

    // Only a safety rule: ordinary snapshots are not judged at all.
    let f = cairn_json(&t.repo, args!["forget", "--keep-safety-last", "2"], 0);
    let removed: Vec<&str> = f["removed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(removed.len(), 2, "{f}");
    assert!(removed.contains(&safety[0].as_str()) && removed.contains(&safety[1].as_str()), "the oldest two go: {f}");
    let left = cairn_json(&t.repo, args!["list"], 0);
    let ids: Vec<&str> = left.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    for kept in [&t.svc_id, &t.other_id, &safety[2], &safety[3]] {
        assert!(ids.contains(&kept.as_str()), "{kept} kept: {left}");
    }
    // An ordinary policy judges safety snapshots by theirs, never by its own count: with
    // --keep-last 1 per tree, both recent safety snapshots stay (the default keeps a week).
    let f = cairn_json(&t.repo, args!["forget", "--keep-last", "1"], 0);
    assert_eq!(f["removed"].as_array().unwrap().len(), 0, "{f}");
}

#[test]
fn issue15_item22_tag_changes_tags_labels_and_pins_after_the_fact() {
    let t = two_trees();
    let file = t.svc.join("conf.d/app.conf");
    let r =
        cairn_json(&t.repo, args!["tag", &t.svc_id[..8], "--add", "keep", "--remove", "hourly", "--label", "good"], 0);
    let new = r[0]["new_id"].as_str().unwrap().to_owned();
    assert_ne!(new, t.svc_id, "a changed record has a new ID");
    let shown = cairn_json(&t.repo, args!["show", "good"], 0);
    assert_eq!(shown["id"], new.as_str());
    assert_eq!(shown["tags"], serde_json::json!(["keep"]));
    assert_eq!(shown["original"], t.svc_id.as_str());
    cairn(&t.repo).args(["show", &t.svc_id]).assert().code(1); // the old record is forgotten
    let cat = cairn(&t.repo).args(args!["cat", "good", &file]).output().unwrap();
    assert_eq!(cat.stdout, b"listen 8080;\n", "the data is the same");

    // A dry run changes nothing; a label another snapshot has is refused.
    let before = cairn_json(&t.repo, args!["list"], 0);
    let d = cairn_json(&t.repo, args!["tag", "good", "--pin", "--dry-run"], 0);
    assert_eq!((d[0]["changed"].as_bool(), &d[0]["new_id"]), (Some(true), &serde_json::Value::Null));
    let out = cairn(&t.repo).args(["tag", &t.other_id, "--label", "good"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(cairn_json(&t.repo, args!["list"], 0), before, "nothing changed");

    // By filter: every snapshot tagged daily gets pinned; the other keeps its state.
    snap(&t.repo, args![&t.other, "--tag", "daily"]);
    let r = cairn_json(&t.repo, args!["tag", "--tag", "daily", "--pin"], 0);
    assert_eq!(r.as_array().unwrap().len(), 2, "{r}");
    for s in cairn_json(&t.repo, args!["list"], 0).as_array().unwrap() {
        let daily = s["tags"].as_array().unwrap().iter().any(|x| x == "daily");
        assert_eq!(s["pinned"], daily, "{s}");
    }
    // --set '' clears the tags; --unlabel takes the label off.
    let r = cairn_json(&t.repo, args!["tag", "good", "--set", "", "--unlabel"], 0);
    assert_eq!((&r[0]["tags"], &r[0]["label"]), (&serde_json::json!([]), &serde_json::Value::Null));
}

#[test]
fn issue15_item22_a_tag_killed_between_writing_and_forgetting_leaves_both_records_and_loses_nothing() {
    let t = two_trees();
    let file = t.svc.join("conf.d/app.conf");
    let out = cairn_failing(&t.repo, "tag.new_record_written=kill@1")
        .args(["tag", &t.svc_id, "--label", "good", "--pin"])
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "killed at the point: {}", stderr_of(&out));
    let list = cairn_json(&t.repo, args!["list", "--tag", "hourly"], 0);
    assert_eq!(list.as_array().unwrap().len(), 2, "old and new record both there: {list}");
    let new = list.as_array().unwrap().iter().find(|s| s["id"] != t.svc_id.as_str()).unwrap();
    assert_eq!(
        (&new["label"], &new["pinned"], &new["original"]),
        (&"good".into(), &true.into(), &t.svc_id.as_str().into())
    );
    // Running the tag again finishes it: the label is the same snapshot's, not another's.
    let again = cairn_json(&t.repo, args!["tag", &t.svc_id, "--label", "good", "--pin"], 0);
    assert_eq!(again[0]["new_id"], new["id"], "the same record, written once");
    assert_eq!(cairn_json(&t.repo, args!["list", "--tag", "hourly"], 0).as_array().unwrap().len(), 1);
    for s in [new["id"].as_str().unwrap(), "good"] {
        let cat = cairn(&t.repo).args(args!["cat", s, &file]).output().unwrap();
        assert_eq!(cat.stdout, b"listen 8080;\n", "{s}: {}", stderr_of(&cat));
    }
    let scrub = cairn_json(&t.repo, args!["scrub", "--read-data"], 0);
    assert_eq!(scrub["clean"], true, "{scrub}");
}
