//! Everyday snapshot semantics (issue 15): which earlier snapshot is the parent when the path
//! list changes, optional paths, the modes of a repository and of its copies, and which
//! command creates a repository.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::args;
use crate::util::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A folder of `files` files of `size` random bytes each; returns the bytes written.
fn fill(dir: &Path, seed: u64, files: usize, size: usize) -> u64 {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..files {
        fs::write(dir.join(format!("f{i}")), rng.bytes(size)).unwrap();
    }
    (files * size) as u64
}

fn id_of(report: &serde_json::Value) -> String {
    report["id"].as_str().unwrap().to_owned()
}

fn count(repo: &Path) -> usize {
    cairn_json(repo, args!["list"], 0).as_array().unwrap().len()
}

/// Adding a path to the list no longer reads everything again: with `--group-by host` the
/// newest snapshot of this host is the parent, and only the new path's bytes are read.
#[test]
fn issue15_item6_group_by_host_reads_only_an_added_paths_bytes() {
    let (dir, repo) = new_repo();
    let (etc, opt, srv) = (dir.path().join("etc"), dir.path().join("opt"), dir.path().join("srv"));
    let etc_bytes = fill(&etc, 1, 6, 50_000);
    let opt_bytes = fill(&opt, 2, 3, 40_000);
    let srv_bytes = fill(&srv, 3, 2, 30_000);
    let first = cairn_json(&repo, args!["snapshot", &etc], 0);
    assert_eq!(first["bytes_read"], etc_bytes, "{first}");

    let second = cairn_json(&repo, args!["snapshot", &etc, &opt, "--group-by", "host"], 0);
    assert_eq!(second["parent"], first["id"], "{second}");
    assert_eq!(second["bytes_read"], opt_bytes, "only the added path is read: {second}");
    assert_eq!(second["files_unchanged"], 6, "{second}");
    assert_eq!(second["files_new"], 3, "{second}");

    // The default grouping (host and paths) still wants the same path list: another list has
    // no parent and reads everything, as before.
    let third = cairn_json(&repo, args!["snapshot", &etc, &srv], 0);
    assert!(third["parent"].is_null(), "{third}");
    assert_eq!(third["bytes_read"], etc_bytes + srv_bytes, "{third}");

    // Grouped by tags, the newest snapshot with the same tags is the parent, whatever its paths.
    let tagged = cairn_json(&repo, args!["snapshot", &opt, "--tag", "app"], 0);
    cairn_json(&repo, args!["snapshot", &srv, "--tag", "other"], 0);
    let by_tags = cairn_json(&repo, args!["snapshot", &opt, &srv, "--tag", "app", "--group-by", "tags"], 0);
    assert_eq!(by_tags["parent"], tagged["id"], "{by_tags}");
    assert_eq!(by_tags["bytes_read"], srv_bytes, "{by_tags}");

    let out = cairn(&repo).args(args!["snapshot", &etc, "--group-by", "colour"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "an unknown key is refused: {}", stderr_of(&out));
    assert!(stderr_of(&out).contains("colour"), "{}", stderr_of(&out));
}

/// `--parent` names the snapshot to trust, whatever its paths.
#[test]
fn issue15_item6_parent_names_the_snapshot_to_trust() {
    let (dir, repo) = new_repo();
    let (etc, opt) = (dir.path().join("etc"), dir.path().join("opt"));
    fill(&etc, 4, 5, 20_000);
    let opt_bytes = fill(&opt, 5, 2, 25_000);
    let base = cairn_json(&repo, args!["snapshot", &etc, "--label", "base"], 0);
    // A newer snapshot of other paths is not what the parent must be.
    cairn_json(&repo, args!["snapshot", &opt], 0);
    let r = cairn_json(&repo, args!["snapshot", &etc, &opt, "--parent", "base"], 0);
    assert_eq!(r["parent"], base["id"], "{r}");
    assert_eq!(r["files_unchanged"], 5, "{r}");
    assert_eq!(r["bytes_read"], opt_bytes, "{r}");
    // By ID prefix, and recorded as the parent.
    let prefix = &id_of(&base)[..10];
    let again = cairn_json(&repo, args!["snapshot", &etc, "--parent", prefix], 0);
    assert_eq!(again["parent"], base["id"], "{again}");
    assert_eq!(again["bytes_read"], 0, "{again}");
    let listed = cairn_json(&repo, args!["list"], 0);
    assert_eq!(listed.as_array().unwrap().last().unwrap()["parent"], base["id"]);

    let before = count(&repo);
    for bad in [&["--parent", "no-such-label"][..], &["--parent", "base", "--kind", "full"]] {
        let out = cairn(&repo).args(args!["snapshot", &etc]).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {}", stderr_of(&out));
    }
    assert_eq!(count(&repo), before, "a refused --parent records nothing");
}

/// An optional path that is not there is left out with a warning instead of aborting.
#[test]
fn issue15_item6_ignore_missing_leaves_out_a_missing_path_with_a_warning() {
    let (dir, repo) = new_repo();
    let etc = dir.path().join("etc");
    fill(&etc, 6, 2, 1000);
    let missing = dir.path().join("opt-app");

    // Without the flag the snapshot fails and records nothing, as before.
    cairn(&repo).args(args!["snapshot", &etc, &missing]).assert().code(1);
    assert_eq!(count(&repo), 0);

    let r = cairn_json(&repo, args!["snapshot", &etc, &missing, "--ignore-missing"], 3);
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    assert_eq!(warnings[0]["path"], missing.to_str().unwrap(), "{r}");
    assert!(warnings[0]["message"].as_str().unwrap().contains("does not exist"), "{r}");
    assert_eq!(r["paths"], serde_json::json!([etc.to_str().unwrap()]), "the record holds what was snapshotted");
    assert_eq!(r["files"], 2, "{r}");
    let listed = cairn_json(&repo, args!["list"], 0);
    assert_eq!(listed[0]["warnings"], 1, "{listed}");
    // What is recorded restores without complaint.
    let target = dir.path().join("out");
    cairn_json(&repo, args!["restore", "latest", "--target", &target], 0);
    assert_same(&describe(&etc), &describe(&restored(&target, &etc)), "restored");

    // All of them missing is still an error.
    let out = cairn(&repo).args(args!["snapshot", &missing, dir.path().join("gone"), "--ignore-missing"]).output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("opt-app"), "{}", stderr_of(&out));
    assert_eq!(count(&repo), 1);
}

/// `forget --group-by` takes host or tags without paths: snapshots of different path lists
/// then compete in one group.
#[test]
fn issue15_item6_forget_groups_by_host_or_tags_without_paths() {
    let (dir, repo) = new_repo();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fill(&a, 7, 1, 100);
    fill(&b, 8, 1, 100);
    let s1 = id_of(&cairn_json(&repo, args!["snapshot", &a, "--host", "h1", "--tag", "x"], 0));
    let s2 = id_of(&cairn_json(&repo, args!["snapshot", &a, &b, "--host", "h1", "--tag", "y"], 0));
    let s3 = id_of(&cairn_json(&repo, args!["snapshot", &b, "--host", "h1", "--tag", "x"], 0));
    let s4 = id_of(&cairn_json(&repo, args!["snapshot", &a, "--host", "h2", "--tag", "y"], 0));
    let kept = |r: &serde_json::Value| -> BTreeSet<String> {
        r["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["keep"] == true)
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let set = |ids: &[&String]| ids.iter().map(|s| (*s).clone()).collect::<BTreeSet<_>>();
    let by_host = cairn_json(&repo, args!["forget", "--keep-last", "1", "--group-by", "host", "--dry-run"], 0);
    assert_eq!(kept(&by_host), set(&[&s3, &s4]), "the newest of each host: {by_host}");
    let by_tags = cairn_json(&repo, args!["forget", "--keep-last", "1", "--group-by", "tags", "--dry-run"], 0);
    assert_eq!(kept(&by_tags), set(&[&s3, &s4]), "the newest of each tag set: {by_tags}");
    let by_paths = cairn_json(&repo, args!["forget", "--keep-last", "1", "--dry-run"], 0);
    assert_eq!(kept(&by_paths), set(&[&s1, &s2, &s3, &s4]), "host and paths by default: four groups: {by_paths}");
    assert_eq!(count(&repo), 4, "dry runs remove nothing");
    cairn_json(&repo, args!["forget", "--keep-last", "1", "--group-by", "host"], 0);
    let left: BTreeSet<String> = cairn_json(&repo, args!["list"], 0)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().into())
        .collect();
    assert_eq!(left, set(&[&s3, &s4]));
}

/// An empty folder given to `init` becomes private like a root `init` creates; a folder that
/// is not empty keeps its mode.
#[test]
fn issue15_item18_init_gives_an_empty_folder_the_repository_mode() {
    let dir = tempfile::tempdir().unwrap();
    for (group, want) in [(false, 0o700), (true, 0o750)] {
        let repo = dir.path().join(format!("mkdir-first-{group}"));
        fs::create_dir(&repo).unwrap();
        fs::set_permissions(&repo, fs::Permissions::from_mode(0o755)).unwrap(); // what mkdir gives under umask 022
        let mut init = cairn(&repo);
        init.arg("init");
        if group {
            init.arg("--group-readable");
        }
        init.assert().success();
        assert_eq!(mode_of(&repo), want, "top folder, group_readable={group}");
        assert_eq!(mode_of(&repo.join("config")), want & 0o666, "config, group_readable={group}");
    }
    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("precious"), b"x").unwrap();
    fs::set_permissions(&full, fs::Permissions::from_mode(0o755)).unwrap();
    cairn(&full).arg("init").assert().code(1);
    assert_eq!(mode_of(&full), 0o755, "a folder init refuses is not touched");
}

/// Every file and folder below `root`, relative.
fn entries(root: &Path) -> BTreeSet<PathBuf> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

/// Copies `from` to `to` with `cp -r` under umask 022, keeping modes or not.
fn copy_repo(from: &Path, to: &Path, keep_modes: bool) {
    let no_preserve = if keep_modes { "" } else { "--no-preserve=mode" };
    let script = format!("umask 022 && cp -r {no_preserve} \"$0\" \"$1\"");
    let ok = std::process::Command::new("sh").args(["-c", &script]).arg(from).arg(to).status().unwrap();
    assert!(ok.success());
}

/// A repository copied by a tool that did not keep the modes (`config` 0644, folders 0755) was
/// taken for group-readable, so new files of a private repository became 0640. What init
/// made decides now: the copy of a private repository stays private, that of a group-readable
/// one group-readable, and nothing new is readable by everyone.
#[test]
fn issue15_item18_a_copy_of_a_repository_keeps_the_mode_init_chose() {
    for group in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let mut init = cairn(&repo);
        init.arg("init");
        if group {
            init.arg("--group-readable");
        }
        init.assert().success();
        let src = dir.path().join("src");
        fill(&src, 9, 3, 10_000);
        cairn_json(&repo, args!["snapshot", &src], 0);
        for keep_modes in [false, true] {
            let copy = dir.path().join(format!("copy-{keep_modes}"));
            copy_repo(&repo, &copy, keep_modes);
            let config_mode = mode_of(&copy.join("config"));
            if !keep_modes {
                assert_eq!(config_mode, 0o644, "the copy lost its modes (the case under test)");
            }
            let before = entries(&copy);
            fill(&src.join("more"), 10 + u64::from(keep_modes), 2, 10_000);
            cairn_json(&copy, args!["snapshot", &src], 0);
            let new: Vec<PathBuf> = entries(&copy).difference(&before).cloned().collect();
            assert!(new.iter().any(|p| p.starts_with("packs")), "the snapshot wrote packs: {new:?}");
            // Group-readable only when init made it so and the copy kept that.
            let group_kept = group && keep_modes;
            for rel in &new {
                let path = copy.join(rel);
                let is_dir = path.is_dir();
                let want = match (is_dir, group_kept) {
                    (true, false) => 0o700,
                    (false, false) => 0o600,
                    (true, true) => 0o750,
                    (false, true) => 0o640,
                };
                assert_eq!(
                    mode_of(&path),
                    want,
                    "{} in a copy (group-readable {group}, modes kept {keep_modes}, config {config_mode:o})",
                    rel.display()
                );
            }
        }
    }
}

/// A `cairn` command with no repository in its environment and this HOME.
fn bare(home: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(cairn_bin());
    c.env_remove("CAIRN_REPO").env_remove("XDG_DATA_HOME").env("HOME", home).env("TZ", "UTC");
    c
}

/// One rule wherever the repository is named: `snapshot` creates it when nothing (or an empty
/// folder) is there, and says so; every other command refuses and names `cairn init`.
#[test]
fn issue15_item19_snapshot_creates_the_repository_wherever_it_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fill(&src, 11, 2, 1000);
    let explicit = dir.path().join("backups/by-flag");
    let by_env = dir.path().join("by-env");
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    for (repo, how) in [(&explicit, "--repo"), (&by_env, "CAIRN_REPO"), (&empty, "--repo, empty folder")] {
        let run = || {
            let mut c = bare(dir.path());
            if how == "CAIRN_REPO" {
                c.env("CAIRN_REPO", repo);
            } else {
                c.arg("--repo").arg(repo);
            }
            c.args(args!["--json", "snapshot", &src]);
            c.output().unwrap()
        };
        let out = run();
        assert_eq!(out.status.code(), Some(0), "{how}: {}", stderr_of(&out));
        let text = stderr_of(&out);
        assert!(text.contains("created") && text.contains(repo.to_str().unwrap()), "{how}: {text}");
        assert!(repo.join("config").exists(), "{how}");
        let out = run();
        assert_eq!(out.status.code(), Some(0), "{how}: {}", stderr_of(&out));
        assert!(!stderr_of(&out).contains("created"), "{how}: the second run uses it silently");
        assert_eq!(count(repo), 2, "{how}");
    }
    assert_eq!(mode_of(&explicit), 0o700, "created as init creates it");

    // Every other command refuses a place without a repository, names `cairn init`, and makes
    // nothing there.
    let nowhere = dir.path().join("nowhere");
    let target = dir.path().join("target");
    let commands: [&[&std::ffi::OsStr]; 4] =
        [args!["list"], args!["scrub"], args!["restore", "latest", "--target", target], args!["stats"]];
    for command in commands {
        let out = bare(dir.path()).arg("--repo").arg(&nowhere).args(command).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{command:?}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains("cairn init"), "{command:?}: {}", stderr_of(&out));
        assert!(!nowhere.exists(), "{command:?} made nothing");
    }

    // A folder that holds something else is never filled.
    let occupied = dir.path().join("occupied");
    fs::create_dir(&occupied).unwrap();
    fs::write(occupied.join("notes.txt"), b"mine").unwrap();
    let out = bare(dir.path()).arg("--repo").arg(&occupied).args(args!["snapshot", &src]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("not empty"), "{}", stderr_of(&out));
    assert_eq!(entries(&occupied), BTreeSet::from([PathBuf::from("notes.txt")]));

    // A snapshot that fails for want of its sources creates nothing.
    let out = bare(dir.path()).arg("--repo").arg(&nowhere).args(args!["snapshot", dir.path().join("gone")]).output();
    assert_eq!(out.unwrap().status.code(), Some(1));
    assert!(!nowhere.exists(), "no repository for a snapshot that could not be taken");
}

/// A restore's safety snapshot holds only what the restore overwrote: it is not the automatic
/// parent of the next ordinary snapshot, which would otherwise, grouped by host, trust a
/// snapshot missing most of its paths.
#[test]
fn issue15_item6_a_safety_snapshot_is_not_the_automatic_parent() {
    let (dir, repo) = new_repo();
    let (etc, opt) = (dir.path().join("etc"), dir.path().join("opt"));
    fill(&etc, 12, 2, 1000);
    fill(&opt, 13, 2, 1000);
    cairn_json(&repo, args!["snapshot", &etc, &opt], 0);
    let etc_only = cairn_json(&repo, args!["snapshot", &etc], 0);
    fs::write(etc.join("f0"), b"edited").unwrap();
    let restore = cairn_json(&repo, args!["restore", id_of(&etc_only), "--target", "/"], 0);
    let safety = restore["safety_snapshot"].as_str().expect("a safety snapshot was taken").to_owned();
    let next = cairn_json(&repo, args!["snapshot", &etc, &opt, "--group-by", "host"], 0);
    assert_ne!(next["parent"].as_str(), Some(safety.as_str()), "{next}");
    assert_eq!(next["parent"], etc_only["id"], "the newest ordinary snapshot of this host: {next}");
    let same_paths = cairn_json(&repo, args!["snapshot", &etc], 0);
    assert_eq!(same_paths["parent"], next["parent"], "nor with the default grouping: {same_paths}");
}
