//! `diff` as diff(1), git and restic users expect it (issue 15 item 15): a directory is not
//! listed for what changed inside it, `--exit-code` says whether anything differs, and
//! `--live` compares a snapshot with the files on disk now. Each runs the binary on a real tree.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::args;
use crate::util::*;

/// The (marker, path) pairs of a diff's JSON, paths relative to `src`.
fn changes(report: &serde_json::Value, src: &Path) -> BTreeSet<(String, String)> {
    report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let path = Path::new(c["path"].as_str().unwrap());
            let rel = path.strip_prefix(src).map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
            (c["marker"].as_str().unwrap().to_owned(), rel)
        })
        .collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect()
}

fn snapshot_id(repo: &Path, src: &Path, extra: &[&str]) -> String {
    let mut args: Vec<&std::ffi::OsStr> = vec!["snapshot".as_ref(), src.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    cairn_json(repo, &args, 0)["id"].as_str().unwrap().to_owned()
}

/// A tree with a few levels, a symlink and a file the snapshot excludes.
fn tree(src: &Path) {
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::write(src.join("a/b/c/deep.txt"), b"deep\n").unwrap();
    fs::write(src.join("a/b/conf"), b"port = 80\n").unwrap();
    fs::write(src.join("a/same"), b"unchanged\n").unwrap();
    fs::write(src.join("keep/untouched"), b"untouched\n").unwrap();
    fs::write(src.join("top"), b"top\n").unwrap();
    fs::write(src.join("gone"), b"to be removed\n").unwrap();
    std::os::unix::fs::symlink("top", src.join("link")).unwrap();
}

/// A change deep in the tree no longer lists every directory above it as a metadata change;
/// a directory's own mode change, and a file's metadata-only change, still are.
#[test]
fn issue15_item15_a_directory_is_not_listed_for_what_changed_inside_it() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    tree(&src);
    let before = snapshot_id(&repo, &src, &[]);
    // Each of these changes the mtime of the directory holding it.
    fs::write(src.join("a/b/c/new.txt"), b"new\n").unwrap();
    fs::write(src.join("a/b/conf.tmp"), b"port = 8080\n").unwrap();
    fs::rename(src.join("a/b/conf.tmp"), src.join("a/b/conf")).unwrap(); // as an editor saves
    fs::remove_file(src.join("gone")).unwrap();
    // A directory's own metadata, and a file's metadata alone.
    fs::set_permissions(src.join("keep"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(src.join("top"), fs::Permissions::from_mode(0o600)).unwrap();
    let after = snapshot_id(&repo, &src, &[]);

    let r = cairn_json(&repo, args!["diff", &before, &after], 0);
    let want = set(&[("+", "a/b/c/new.txt"), ("M", "a/b/conf"), ("-", "gone"), ("T", "keep"), ("T", "top")]);
    assert_eq!(changes(&r, &src), want, "{r}");
    assert_eq!((r["added"].as_u64(), r["modified"].as_u64(), r["metadata"].as_u64()), (Some(1), Some(1), Some(2)));
}

/// `--exit-code`: 0 when nothing differs, 6 when something does (1 is cairn's error), 3 when
/// a path given is not there (trouble outranks differences); a plain `diff` still exits 0.
#[test]
fn issue15_item15_diff_exit_code_says_whether_differences_were_found() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    tree(&src);
    let first = snapshot_id(&repo, &src, &[]);
    let same = snapshot_id(&repo, &src, &[]);
    fs::write(src.join("top"), b"top, longer now\n").unwrap();
    let changed = snapshot_id(&repo, &src, &[]);

    cairn(&repo).args(args!["diff", "--exit-code", &first, &same]).assert().code(0);
    let out = cairn(&repo).args(args!["diff", "--exit-code", &first, &changed]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("M  "), "the changes are still printed");
    // Only below a path that did not change: no differences there.
    cairn(&repo).args(args!["diff", "--exit-code", &first, &changed, src.join("a")]).assert().code(0);
    // -q with --exit-code: the status alone, as `git diff --quiet`.
    let quiet = cairn(&repo).args(args!["-q", "diff", "--exit-code", &first, &changed]).output().unwrap();
    assert_eq!(quiet.status.code(), Some(6));
    assert!(quiet.stdout.is_empty(), "{}", String::from_utf8_lossy(&quiet.stdout));
    // Without the flag a diff that found changes succeeded, as before.
    cairn(&repo).args(args!["diff", &first, &changed]).assert().code(0);
    let r = cairn_json(&repo, args!["diff", "--exit-code", &first, &changed], 6);
    assert_eq!(changes(&r, &src), set(&[("M", "top")]));
    // A path that is not there is trouble, whatever else differs.
    cairn(&repo)
        .args(args!["diff", "--exit-code", &first, &changed, src.join("top"), src.join("nope")])
        .assert()
        .code(3);
}

/// `diff SNAP --live` compares a snapshot with the files on disk now: content by size, then by
/// the times and inode a snapshot trusts, then by reading it (so `M` means the bytes differ),
/// metadata as between two snapshots, the snapshot's excludes applied, nothing written.
#[test]
fn issue15_item15_live_diff_compares_a_snapshot_with_the_files_on_disk() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    tree(&src);
    fs::write(src.join("a/debug.log"), b"excluded\n").unwrap();
    snapshot_id(&repo, &src, &["--exclude", "*.log"]);

    // Right after the snapshot nothing differs, and no file is read to say so.
    let r = cairn_json(&repo, args!["diff", "latest", "--live", "--exit-code"], 0);
    assert!(changes(&r, &src).is_empty(), "{r}");
    assert_eq!(r["files_read"], 0, "unchanged metadata vouches for unchanged content");

    // Same size, other bytes, the old mtime put back: only reading it tells.
    let conf = src.join("a/b/conf");
    let mtime = fs::metadata(&conf).unwrap().modified().unwrap();
    fs::write(&conf, b"port = 99\n").unwrap();
    fs::File::options().write(true).open(&conf).unwrap().set_modified(mtime).unwrap();
    // Touched, bytes unchanged: metadata only, not content.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    fs::File::options().write(true).open(src.join("a/same")).unwrap().set_modified(later).unwrap();
    fs::write(src.join("top"), b"top, longer\n").unwrap();
    fs::remove_file(src.join("gone")).unwrap();
    fs::create_dir(src.join("a/b/c/newdir")).unwrap();
    fs::write(src.join("a/b/c/newdir/f"), b"f\n").unwrap();
    fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", src.join("link")).unwrap();
    fs::write(src.join("a/more.log"), b"still excluded\n").unwrap();
    fs::set_permissions(src.join("keep"), fs::Permissions::from_mode(0o700)).unwrap();
    let on_disk = describe(&src);

    let r = cairn_json(&repo, args!["diff", "latest", "--live"], 0);
    let want = set(&[
        ("M", "a/b/conf"),
        ("T", "a/same"),
        ("+", "a/b/c/newdir"),
        ("+", "a/b/c/newdir/f"),
        ("-", "gone"),
        ("T", "keep"),
        ("T", "link"),
        ("M", "top"),
    ]);
    assert_eq!(changes(&r, &src), want, "{r}");
    assert_eq!(r["files_read"], 2, "conf and same were read (size equal, times not); top differs in size: {r}");
    assert!(r.get("warnings").is_none(), "{r}");
    assert_eq!(describe(&src), on_disk, "diff --live changed nothing on disk");

    // Below a path only, and the diff(1) exit status.
    let r = cairn_json(&repo, args!["diff", "latest", "--live", src.join("a/b"), "--exit-code"], 6);
    assert_eq!(changes(&r, &src), set(&[("M", "a/b/conf"), ("+", "a/b/c/newdir"), ("+", "a/b/c/newdir/f")]));
    cairn(&repo).args(args!["diff", "latest", "--live", src.join("keep/untouched"), "--exit-code"]).assert().code(0);
    // A path given that neither the snapshot nor the disk holds is named, as between snapshots.
    let out = cairn(&repo).args(args!["diff", "latest", "--live", src.join("nope")]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope is not in snapshot"));
    let text = cairn(&repo).args(args!["diff", "latest", "--live"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains(&format!("M  {}", src.join("a/b/conf").display())), "{text}");
    assert!(text.contains("2 added, 1 removed, 2 modified, 3 metadata only"), "{text}");
}

/// A live file or directory that cannot be read is a warning (exit 3) naming it, and the rest
/// is still compared.
#[test]
fn issue15_item15_live_diff_warns_of_what_it_cannot_read_and_goes_on() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("closed")).unwrap();
    fs::write(src.join("closed/inside"), b"inside\n").unwrap();
    fs::write(src.join("secret"), b"secret\n").unwrap();
    // Owned by the user the diff runs as, so the snapshot's owners still match.
    let mut snap = cairn_unprivileged(dir.path());
    let out = snap.env("CAIRN_REPO", &repo).env("HOME", dir.path()).args(args!["snapshot", &src]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // Same size, new bytes, and unreadable: the diff must read it to tell, and cannot.
    fs::write(src.join("secret"), b"SECRET\n").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("closed"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::write(src.join("added"), b"added\n").unwrap();
    let mut diff = cairn_unprivileged(dir.path());
    let out = diff
        .env("CAIRN_REPO", &repo)
        .env("HOME", dir.path())
        .args(args!["--json", "diff", "latest", "--live"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warned: BTreeSet<String> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap().trim_start_matches(src.to_str().unwrap()).to_owned())
        .collect();
    assert_eq!(warned, ["/closed", "/secret"].iter().map(|s| (*s).to_owned()).collect(), "{r}");
    let got = changes(&r, &src);
    assert!(got.contains(&("+".to_owned(), "added".to_owned())), "the rest is compared: {r}");
    assert!(!got.iter().any(|(m, _)| m == "M"), "an unreadable file is not called modified: {r}");
}
