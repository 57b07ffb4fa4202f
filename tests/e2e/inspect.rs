//! Looking inside: show, stats, diff, ls, find, log, cat, manifest, each through the binary on
//! snapshots of a changing generated tree, each with its --json parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::args;
use crate::util::*;

struct History {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    src: PathBuf,
    ids: Vec<String>,
    states: Vec<BTreeMap<Vec<u8>, Desc>>,
}

fn history() -> History {
    let (dir, repo) = new_repo_with_packs(Some("64K"));
    let src = dir.path().join("src");
    generate(&src, 61, 1);
    let mut ids = Vec::new();
    let mut states = Vec::new();
    for round in 0..3u64 {
        if round > 0 {
            mutate(&src, round);
        }
        states.push(describe(&src));
        ids.push(cairn_json(&repo, args!["snapshot", &src], 0)["id"].as_str().unwrap().to_owned());
    }
    History { root: dir.path().to_path_buf(), _dir: dir, repo, src, ids, states }
}

/// The changes between two described trees, computed independently of cairn.
fn expected_diff(src: &Path, a: &BTreeMap<Vec<u8>, Desc>, b: &BTreeMap<Vec<u8>, Desc>) -> BTreeSet<(char, String)> {
    let mut out = BTreeSet::new();
    let lossy = |k: &[u8]| src.join(std::ffi::OsStr::from_bytes(k)).to_string_lossy().into_owned();
    for (k, x) in a {
        let path = if k.is_empty() { src.to_string_lossy().into_owned() } else { lossy(k) };
        match b.get(k) {
            None => {
                out.insert(('-', path));
            }
            Some(y) if x.kind != y.kind => {
                out.insert(('-', path.clone()));
                out.insert(('+', path));
            }
            Some(y) => {
                if x.kind == 'f' && (x.content != y.content || x.size != y.size) {
                    out.insert(('M', path));
                } else if x.mode != y.mode
                    || x.uid != y.uid
                    || x.gid != y.gid
                    // A directory's mtime follows its entries, which are listed themselves.
                    || (x.mtime != y.mtime && x.kind != 'd')
                    || x.xattrs != y.xattrs
                    || x.target != y.target
                {
                    out.insert(('T', path));
                }
            }
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.insert(('+', lossy(k)));
        }
    }
    out
}

#[test]
fn diff_matches_an_independent_comparison_of_the_trees() {
    let h = history();
    for (i, j) in [(0usize, 1usize), (1, 2), (0, 2)] {
        let r = cairn_json(&h.repo, args!["diff", &h.ids[i], &h.ids[j], &h.src], 0);
        let got: BTreeSet<(char, String)> = r["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["marker"].as_str().unwrap().chars().next().unwrap(), c["path"].as_str().unwrap().to_owned()))
            .collect();
        let want = expected_diff(&h.src, &h.states[i], &h.states[j]);
        assert_eq!(got, want, "diff {i} {j}");
        assert_eq!(r["added"].as_u64().unwrap(), want.iter().filter(|c| c.0 == '+').count() as u64);
        // Cost follows the change: unchanged subtrees (deep/, odd names/, ...) are not walked.
        assert!(r["trees_compared"].as_u64().unwrap() < 12, "{}", r["trees_compared"]);
    }
    let same = cairn_json(&h.repo, args!["diff", &h.ids[1], &h.ids[1]], 0);
    assert!(same["changes"].as_array().unwrap().is_empty());
    let text = cairn(&h.repo).args(args!["diff", &h.ids[0], &h.ids[1], &h.src]).assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    assert!(text.lines().any(|l| l.starts_with("M  ")) && text.contains("added"), "{text}");
}

#[test]
fn ls_find_log_and_cat_see_each_snapshot_as_it_was() {
    let h = history();
    // ls: one level, then recursive with --long fields.
    let top = cairn_json(&h.repo, args!["ls", &h.ids[2], &h.src], 0);
    let names: BTreeSet<String> =
        top.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_owned()).collect();
    let want: BTreeSet<String> =
        fs::read_dir(&h.src).unwrap().map(|e| e.unwrap().path().to_string_lossy().into_owned()).collect();
    assert_eq!(names, want);
    let all = cairn_json(&h.repo, args!["ls", &h.ids[2], &h.src, "--recursive"], 0);
    assert_eq!(all.as_array().unwrap().len(), h.states[2].len() - 1);
    let one = cairn_json(&h.repo, args!["ls", &h.ids[0], h.src.join("dir0/file2.dat")], 0);
    let d = &h.states[0][&b"dir0/file2.dat"[..]];
    assert_eq!(one[0]["size"].as_u64().unwrap(), d.size);
    assert_eq!(one[0]["mode"], format!("{:04o}", d.mode));
    assert_eq!(one[0]["type"], "file");
    assert_eq!(one[0]["mtime"], "2009-02-13T23:31:30.123456789Z");
    let long = cairn(&h.repo).args(args!["ls", "-l", &h.ids[0], &h.src]).assert().success();
    assert!(String::from_utf8_lossy(&long.get_output().stdout).contains("symlink"));

    // find: the log files mutate adds, one per later snapshot.
    let found = cairn_json(&h.repo, args!["find", "new-*.log"], 0);
    let hits: BTreeSet<(String, String)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["snapshot"].as_str().unwrap().to_owned(),
                f["path"].as_str().unwrap().rsplit('/').next().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        (h.ids[1].clone(), "new-1.log".to_owned()),
        (h.ids[2].clone(), "new-1.log".to_owned()),
        (h.ids[2].clone(), "new-2.log".to_owned()),
    ]
    .into();
    assert_eq!(hits, want);
    let newest = cairn_json(&h.repo, args!["find", "new-*.log", "--newest", "1"], 0);
    assert_eq!(newest.as_array().unwrap().len(), 2);
    let by_path = cairn_json(&h.repo, args!["find", format!("{}/dir0/*.log", h.src.display())], 0);
    assert_eq!(by_path.as_array().unwrap().len(), 3);

    // log: big.bin changes every round; deep/.../bottom.txt never; new-2.log appears last.
    let big = cairn_json(&h.repo, args!["log", h.src.join("big.bin")], 0);
    assert_eq!(big.as_array().unwrap().len(), 3);
    let mut bottom = h.src.join("deep");
    for i in 0..40 {
        bottom = bottom.join(format!("level{i:02}"));
    }
    let steady = cairn_json(&h.repo, args!["log", bottom.join("bottom.txt")], 0);
    assert_eq!(steady.as_array().unwrap().len(), 1);
    assert_eq!(steady[0]["snapshots"].as_array().unwrap().len(), 3);
    let born = cairn_json(&h.repo, args!["log", h.src.join("dir0/new-2.log")], 0);
    assert_eq!(born[0]["type"], "absent");
    assert_eq!(born[1]["snapshots"][0].as_str().unwrap(), h.ids[2]);
    assert_eq!(
        born[1]["version"].as_str().unwrap(),
        h.states[2][&b"dir0/new-2.log"[..]].content.unwrap().to_hex().as_str()
    );

    // cat: the bytes of each version, holes as zeros; a closed pipe is not an error.
    for (i, id) in h.ids.iter().enumerate() {
        for rel in ["big.bin", "sparse.img", "dir3/file5.dat"] {
            let out = cairn(&h.repo).args(args!["cat", id, h.src.join(rel)]).output().unwrap();
            assert!(out.status.success());
            assert_eq!(
                Some(blake3::hash(&out.stdout)),
                h.states[i][rel.as_bytes()].content,
                "cat {rel} of snapshot {i}"
            );
        }
    }
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"))
        .env("CAIRN_REPO", &h.repo)
        .args(args!["cat", &h.ids[0], h.src.join("sparse.img")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0), "a broken pipe ends cat quietly");
    cairn(&h.repo).args(args!["cat", &h.ids[0], h.src.join("dir0")]).assert().code(1);
}

#[test]
fn manifest_is_checked_by_the_real_b3sum_in_a_restored_tree() {
    let h = history();
    let b3sum = std::process::Command::new("b3sum").arg("--version").output();
    assert!(b3sum.is_ok(), "this test needs b3sum (apt-get install b3sum; .ci/run installs it)");
    let target = h.root.join("restored");
    cairn_json(&h.repo, args!["restore", &h.ids[1], "--target", &target], 0);
    let out = cairn(&h.repo).args(args!["manifest", &h.ids[1]]).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not UTF-8"), "the non-UTF-8 name is reported: {stderr}");
    let manifest = h.root.join("MANIFEST");
    fs::write(&manifest, &out.stdout).unwrap();
    let lines = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    let files = h.states[1].values().filter(|d| d.kind == 'f').count();
    assert_eq!(lines, files - 1, "every file but the one with a non-UTF-8 name");
    let check =
        std::process::Command::new("b3sum").arg("--check").arg(&manifest).current_dir(&target).output().unwrap();
    assert!(
        check.status.success(),
        "b3sum --check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // And it notices a change.
    let victim = restored(&target, &h.src).join("dir0/file0.dat");
    fs::write(&victim, b"tampered").unwrap();
    let check =
        std::process::Command::new("b3sum").arg("--check").arg(&manifest).current_dir(&target).output().unwrap();
    assert!(!check.status.success());
    // The JSON form, and a manifest of one subtree.
    let json = cairn_json(&h.repo, args!["manifest", &h.ids[1], h.src.join("dir1")], 0);
    assert!(json.as_array().unwrap().iter().all(|l| l["path"].as_str().unwrap().contains("/dir1/")));
}

#[test]
fn show_exclusive_size_is_what_forget_and_gc_free_and_stats_add_up() {
    let (dir, repo) = new_repo_with_packs(Some("64K"));
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(71);
    fs::write(src.join("shared"), rng.bytes(1 << 20)).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        fs::write(src.join("own"), rng.bytes((300 + 100 * i) << 10)).unwrap();
        ids.push(
            cairn_json(&repo, args!["snapshot", &src, "--label", &format!("v{i}")], 0)["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let show = cairn_json(&repo, args!["show", "v1"], 0);
    assert_eq!(show["id"].as_str().unwrap(), ids[1]);
    assert_eq!(show["label"], "v1");
    assert_eq!(show["files"], 2);
    let exclusive = show["exclusive_size"].as_u64().unwrap();
    assert!(exclusive >= 400 << 10, "its own 400 KiB file at least: {exclusive}");

    let stats = cairn_json(&repo, args!["stats"], 0);
    assert_eq!(stats["snapshots"], 3);
    let logical: u64 = cairn_json(&repo, args!["list"], 0)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes_total"].as_u64().unwrap())
        .sum();
    assert_eq!(stats["logical_size"].as_u64().unwrap(), logical);
    assert!(stats["dedup_ratio"].as_f64().unwrap() > 1.5, "the shared MiB is stored once: {stats}");
    assert!(stats["stored_size"].as_u64().unwrap() <= stats["packs_size"].as_u64().unwrap());
    assert!(stats["newest_snapshot_age_secs"].as_u64().unwrap() < 600);
    let one = cairn_json(&repo, args!["stats", "v0"], 0);
    assert_eq!(one["snapshots"], 1);

    // Forget v1 alone and collect: what comes back is what show said, within pack rounding.
    let before = pack_bytes(&repo);
    cairn_json(&repo, args!["forget", "v1"], 0);
    cairn_json(&repo, args!["gc", "--max-unused", "0"], 0);
    let freed = before - pack_bytes(&repo);
    let slack = exclusive / 10 + (64 << 10);
    assert!(freed.abs_diff(exclusive) <= slack, "show said {exclusive}, gc freed {freed}");
}

/// `log PATH` speaks only of snapshots that covered the path, and says when (issue 15 item 11).
#[test]
fn issue15_log_leaves_out_snapshots_of_other_trees_and_shows_dates() {
    let (dir, repo) = new_repo();
    let (etc, opt) = (dir.path().join("etc"), dir.path().join("opt"));
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir_all(&opt).unwrap();
    fs::write(etc.join("app.conf"), b"v1\n").unwrap();
    fs::write(opt.join("other"), b"x\n").unwrap();
    cairn(&repo).args(args!["snapshot", &opt]).assert().code(0); // another tree
    cairn(&repo).args(args!["snapshot", &etc]).assert().code(0);
    fs::write(etc.join("app.conf"), b"v2\n").unwrap();
    cairn(&repo).args(args!["snapshot", &etc]).assert().code(0);

    let log = cairn_json(&repo, args!["log", etc.join("app.conf")], 0);
    let versions = log.as_array().unwrap();
    assert_eq!(versions.len(), 2, "two versions, no 'absent' row for the snapshot of opt: {log}");
    assert!(versions.iter().all(|v| v["type"] == "file"), "{log}");
    let list = cairn_json(&repo, args!["list"], 0);
    assert_eq!(versions[0]["first_time"], list[1]["time"], "{log} {list}");
    assert_eq!(versions[1]["last_time"], list[2]["time"]);
    let text = cairn(&repo).args(args!["log", etc.join("app.conf")]).output().unwrap();
    let today = jiff::Timestamp::now().strftime("%Y-%m-").to_string();
    assert!(String::from_utf8_lossy(&text.stdout).lines().all(|l| l.contains(&today)), "dates shown");
}
