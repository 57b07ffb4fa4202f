//! Issue 13, the snapshot side: what a snapshot reads of its sources. A source given as a
//! symlink, the repository met again under another path, trees deeper than PATH_MAX, totals
//! that add up when a file cannot be read, and the repository root's own mode.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::args;
use crate::util::*;

/// Paths of every entry `ls --recursive` lists below `under` in the newest snapshot.
fn listed(repo: &Path, under: &Path) -> Vec<String> {
    let all = cairn_json(repo, args!["ls", "latest", under, "--recursive"], 0);
    all.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_owned()).collect()
}

fn notes(report: &serde_json::Value) -> Vec<String> {
    report["notes"]
        .as_array()
        .map(|a| {
            a.iter().map(|n| format!("{}: {}", n["path"].as_str().unwrap(), n["message"].as_str().unwrap())).collect()
        })
        .unwrap_or_default()
}

#[test]
fn issue13_a_symlinked_source_root_is_followed_and_restores_as_a_directory() {
    let (dir, repo) = new_repo();
    let real = dir.path().join("srv/app-v2");
    generate(&real, 131, 1); // holds symlinks of its own, which must stay links
    let link = dir.path().join("opt-app");
    symlink(&real, &link).unwrap();

    let r = cairn_json(&repo, args!["snapshot", &link], 0);
    assert!(r["files"].as_u64().unwrap() > 40, "the target's files are stored: {r}");
    assert_eq!(r["warnings"].as_array().unwrap().len(), 0, "{r}");
    let n = notes(&r);
    assert!(
        n.iter().any(|n| n.contains("symlink") && n.contains(&*real.to_string_lossy())),
        "a note names the link's target: {r}"
    );
    // Stored under the path as given, never under the target's path.
    let under_link = listed(&repo, &link);
    assert!(under_link.iter().any(|p| p.ends_with("/dir0/file0.dat")), "{under_link:?}");
    assert!(under_link.contains(&link.join("link-dir").to_string_lossy().into_owned()));

    let target = dir.path().join("out");
    cairn_json(&repo, args!["restore", "latest", "--target", &target, "--verify"], 0);
    let restored_root = restored(&target, &link);
    assert!(fs::symlink_metadata(&restored_root).unwrap().is_dir(), "restored as a real directory");
    assert_same(&describe(&real), &describe(&restored_root), "symlinked source root");
    assert!(!restored(&target, &real).exists(), "nothing restored under the target's own path");

    // The next snapshot of the link finds everything unchanged.
    let again = cairn_json(&repo, args!["snapshot", &link], 0);
    assert_eq!(again["files_unchanged"], r["files"], "{again}");
    assert_eq!(again["files_new"], 0);
}

#[test]
fn issue13_the_repository_reached_through_a_symlinked_source_root_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    fs::create_dir_all(real.join("data")).unwrap();
    fs::write(real.join("data/a.txt"), b"alpha\n").unwrap();
    let repo = real.join("repo");
    init_repo(&repo, None);
    let link = dir.path().join("via-link");
    symlink(&real, &link).unwrap();

    let r = cairn_json(&repo, args!["snapshot", &link], 0);
    let all = listed(&repo, &link);
    assert!(all.iter().any(|p| p.ends_with("/data/a.txt")), "{all:?}");
    assert!(!all.iter().any(|p| p.contains("/repo")), "the repository is not in its own snapshot: {all:?}");
    assert!(notes(&r).iter().any(|n| n.contains("repository")), "a note says it was skipped: {r}");

    // A symlink in the middle of a source path is followed as the kernel follows it.
    let data = link.join("data");
    let r = cairn_json(&repo, args!["snapshot", &data], 0);
    assert_eq!(r["files"], 1, "{r}");
    assert_eq!(listed(&repo, &data), vec![data.join("a.txt").to_string_lossy().into_owned()]);
}

/// Unmounts a bind mount when dropped, so a failing test leaves no mount behind.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn issue13_the_repository_reached_through_a_bind_mount_is_skipped() {
    if !is_root() {
        eprintln!("skipped: bind mounts need root (the symlinked-root test covers a second path)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&repo, None);
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("data")).unwrap();
    fs::write(src.join("data/a.txt"), b"alpha\n").unwrap();
    let again = src.join("mnt");
    fs::create_dir_all(&again).unwrap();
    let ok =
        std::process::Command::new("mount").arg("--bind").arg(&repo).arg(&again).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: mount --bind is not available here");
        return;
    }
    let _guard = BindMount(again.clone());
    assert!(again.join("config").exists(), "the bind mount shows the repository");

    let r = cairn_json(&repo, args!["snapshot", &src], 0);
    let all = listed(&repo, &src);
    assert!(all.iter().any(|p| p.ends_with("/data/a.txt")), "{all:?}");
    assert!(!all.iter().any(|p| p.starts_with(&*again.to_string_lossy())), "repository under the mount: {all:?}");
    assert!(
        notes(&r).iter().any(|n| n.contains(&*again.to_string_lossy()) && n.contains("repository")),
        "a note says it was skipped: {r}"
    );
    let manifest = cairn(&repo).args(args!["manifest", "latest"]).output().unwrap();
    let manifest = String::from_utf8_lossy(&manifest.stdout);
    assert!(!manifest.contains("/mnt/config"), "{manifest}");
}

/// Makes `depth` nested directories of `name_len`-byte names below `root` (relative to each
/// parent's descriptor: the full path is longer than any path call takes), with `content` in
/// a file at the bottom. Returns the bottom file's full path.
fn deep_chain(root: &Path, depth: usize, name_len: usize, content: &[u8]) -> PathBuf {
    use rustix::fs::{mkdirat, openat, Mode, OFlags};
    let mut dir = openat(rustix::fs::CWD, root, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let mut path = root.to_path_buf();
    for i in 0..depth {
        let name = format!("{i:03}{}", "d".repeat(name_len - 3));
        mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = openat(&dir, name.as_str(), OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        path.push(&name);
    }
    let f = openat(&dir, "bottom.txt", OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC, Mode::from_raw_mode(0o644))
        .unwrap();
    rustix::io::write(&f, content).unwrap();
    path.join("bottom.txt")
}

#[test]
fn issue13_a_tree_deeper_than_path_max_is_snapshotted() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("top.txt"), b"top\n").unwrap();
    let content = b"at the bottom of a path longer than PATH_MAX\n".repeat(100);
    let bottom = deep_chain(&src, 40, 200, &content);
    assert!(bottom.as_os_str().len() > 8000, "{}", bottom.as_os_str().len());

    let r = cairn_json(&repo, args!["snapshot", &src], 0);
    assert_eq!(r["files"], 2, "{r}");
    assert_eq!(r["dirs"], 41, "{r}");
    let all = listed(&repo, &src);
    assert!(all.contains(&bottom.to_string_lossy().into_owned()), "ls shows the bottom file");
    let manifest = cairn(&repo).args(args!["manifest", "latest"]).output().unwrap();
    assert!(manifest.status.success());
    let rel = bottom.strip_prefix("/").unwrap().as_os_str().as_bytes(); // the manifest's paths are relative
    assert!(manifest.stdout.windows(rel.len()).any(|w| w == rel), "the manifest names the bottom file");
    let cat = cairn(&repo).args(args!["cat", "latest", &bottom]).output().unwrap();
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    assert_eq!(cat.stdout, content);

    // A second snapshot walks the same chain and finds it unchanged.
    let again = cairn_json(&repo, args!["snapshot", &src], 0);
    assert_eq!(again["files_unchanged"], 2, "{again}");

    // And the whole chain restores (restore is descriptor-relative too), verified by BLAKE3.
    let target = dir.path().join("target");
    let r = cairn_json(&repo, args!["restore", "latest", "--target", &target, "--verify"], 0);
    assert_eq!(r["files_written"], 2, "{r}");
    assert_eq!(r["files_verified"], 2, "{r}");
    let rel = bottom.strip_prefix(&src).unwrap();
    assert_eq!(crate::restore_safety::read_deep(&restored(&target, &src), rel), content);
}

/// Runs `cairn --json snapshot src` as `nobody` when this process is root (so that mode 000
/// keeps a file unreadable), else as ourselves; checks the exit code and parses the report.
fn snapshot_unprivileged(repo: &Path, home: &Path, src: &Path, code: i32) -> serde_json::Value {
    let out = if is_root() {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cairn_bin())
            .env("CAIRN_REPO", repo)
            .env("HOME", home)
            .args(args!["--json", "snapshot", src])
            .output()
            .unwrap()
    } else {
        cairn(repo).args(args!["--json", "snapshot", src]).output().unwrap()
    };
    assert_eq!(out.status.code(), Some(code), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_totals_add_up(r: &serde_json::Value, files: u64, bytes: u64, what: &str) {
    let g = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(g("files"), files, "{what}: {r}");
    assert_eq!(g("files_new") + g("files_changed") + g("files_unchanged"), g("files"), "{what}: {r}");
    assert!(g("files_new") <= g("files"), "{what}: {r}");
    assert_eq!(g("bytes_total"), bytes, "{what}: only what was stored: {r}");
}

#[test]
fn issue13_an_unreadable_file_is_a_warning_not_counted_as_new_or_changed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&repo, None);
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"readable\n").unwrap();
    fs::write(src.join("b.txt"), b"readable too\n").unwrap();
    let locked = src.join("locked.txt");
    fs::write(&locked, vec![b'x'; 100_000]).unwrap();
    if is_root() {
        // The repository and the tree belong to nobody, who runs cairn; the locked file to root.
        for e in walkdir::WalkDir::new(dir.path()) {
            std::os::unix::fs::lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
        std::os::unix::fs::lchown(&locked, Some(0), Some(0)).unwrap();
    }
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let r = snapshot_unprivileged(&repo, dir.path(), &src, 3);
    assert!(
        r["warnings"].as_array().unwrap().iter().any(|w| w["path"].as_str().unwrap().ends_with("locked.txt")),
        "{r}"
    );
    assert_totals_add_up(&r, 2, 9 + 13, "a new file unreadable");

    // A file the parent holds that changes and becomes unreadable is not "changed" either.
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).unwrap();
    let r = snapshot_unprivileged(&repo, dir.path(), &src, 0);
    assert_totals_add_up(&r, 3, 9 + 13 + 100_000, "all readable");
    fs::write(&locked, vec![b'y'; 100_001]).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let r = snapshot_unprivileged(&repo, dir.path(), &src, 3);
    assert_totals_add_up(&r, 2, 9 + 13, "a changed file unreadable");
    assert_eq!(r["files_changed"], 0, "{r}");
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn issue13_init_creates_the_repository_root_private_or_group_readable() {
    let dir = tempfile::tempdir().unwrap();
    // What this process's umask gives a new directory: the parents init creates get no more.
    let probe = dir.path().join("probe");
    fs::create_dir(&probe).unwrap();
    let umask_mode = mode_of(&probe);
    for (group, want) in [(false, 0o700), (true, 0o750)] {
        let parent = dir.path().join(format!("new-parent-{group}"));
        let repo = parent.join("below").join("repo");
        let mut init = cairn(&repo);
        init.arg("init");
        if group {
            init.arg("--group-readable");
        }
        init.assert().success();
        assert_eq!(mode_of(&repo), want, "root with group_readable={group}");
        assert_eq!(mode_of(&parent), umask_mode, "a parent init made");
        assert_eq!(mode_of(&parent.join("below")), umask_mode, "a parent init made");
    }
}
