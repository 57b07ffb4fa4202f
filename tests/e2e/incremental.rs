//! Change detection: a no-change snapshot reads no file contents, proven by the kernel's count
//! of bytes the process read, not only by cairn's own counters.

use std::path::Path;

use crate::args;
use crate::util::*;

/// Runs a snapshot with `CAIRN_IO_STATS` and returns (report, bytes the process read).
fn snapshot_counting_reads(repo: &Path, kind: &str, src: &Path) -> (serde_json::Value, u64) {
    let out = cairn(repo)
        .env("CAIRN_IO_STATS", "1")
        .args(args!["--json", "snapshot", "--kind", kind, src])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rchar = stderr
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/self/io");
    (serde_json::from_slice(&out.stdout).expect("json"), rchar)
}

#[test]
fn no_change_snapshot_reads_no_file_contents() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    generate(&src, 11, 2);
    // 48 MiB of content, so that reading it would dwarf the index and trees.
    let mut rng = Rng::new(5);
    for i in 0..6 {
        std::fs::write(src.join(format!("dir0/blob{i}.bin")), rng.bytes(8 << 20)).unwrap();
    }
    let (first, first_read) = snapshot_counting_reads(&repo, "full", &src);
    let total = first["bytes_total"].as_u64().unwrap();
    assert!(first_read > 48 << 20, "a full snapshot reads the files ({first_read})");

    for kind in ["incremental", "differential"] {
        let (r, rchar) = snapshot_counting_reads(&repo, kind, &src);
        assert_eq!(r["bytes_read"], 0, "{kind}: {r}");
        assert_eq!(r["files_unchanged"], r["files"], "{kind}: {r}");
        assert_eq!(r["files_changed"], 0);
        // No chunk and no tree of the source is written again. Only the directories above
        // it (/tmp, shared with other tests) may have changed metadata: one small tree each.
        let ancestors = src.components().count() as u64 - 1;
        assert!(r["blobs_new"].as_u64().unwrap() <= ancestors, "{kind}: {r}");
        assert!(r["data_added"].as_u64().unwrap() < 1024 * ancestors, "{kind}: {r}");
        // The process read the index and some trees, far less than one file's worth.
        assert!(rchar < (4 << 20), "{kind}: process read {rchar} bytes of a {total}-byte tree");
    }
    // Full means full: everything is read again, nothing is stored again.
    let (r, rchar) = snapshot_counting_reads(&repo, "full", &src);
    assert_eq!(r["files_unchanged"], 0);
    assert!(rchar > 48 << 20);
    let ancestors = src.components().count() as u64 - 1;
    assert!(r["data_added"].as_u64().unwrap() < 1024 * ancestors, "nothing of the source stored again: {r}");
}

#[test]
fn a_touched_file_is_read_again_and_an_edit_stores_only_its_chunks() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(9);
    let mut dump = rng.text(20 << 20);
    std::fs::write(src.join("db.sql"), &dump).unwrap();
    cairn_json(&repo, args!["snapshot", &src], 0);
    // Change 0.1% of the dump in 20 places: only the chunks around them are new.
    for i in 0..20 {
        let at = (i * dump.len()) / 20 + 777;
        dump[at..at + 1000].copy_from_slice(&rng.text(1000));
    }
    std::fs::write(src.join("db.sql"), &dump).unwrap();
    let r = cairn_json(&repo, args!["snapshot", &src], 0);
    assert_eq!(r["files_changed"], 1);
    assert_eq!(r["bytes_read"].as_u64().unwrap(), dump.len() as u64);
    let added = r["data_added"].as_u64().unwrap();
    assert!(added < (dump.len() as u64) / 20, "a 0.1% edit added {added} bytes of a {}-byte file", dump.len());
}

/// The no-change path reuses the parent's extended attributes and unchanged trees; a change
/// of metadata alone (an attribute set or removed, a mode) must still reach the next snapshot.
#[test]
fn metadata_only_changes_are_seen_by_the_next_snapshot() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    generate(&src, 12, 1);
    cairn_json(&repo, args!["snapshot", &src], 0);
    let victim = src.join("dir0/file1.dat");
    if xattrs_supported(&src) {
        xattr::set(&victim, "user.added-later", b"v2").unwrap();
        xattr::remove(&victim, "user.checksum").unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("dir1"), std::fs::Permissions::from_mode(0o711)).unwrap();
    let want = describe(&src);
    let second = cairn_json(&repo, args!["snapshot", &src], 0);
    // The attribute change moved the file's ctime, so it counts as changed (and is read again).
    let changed = u64::from(xattrs_supported(&src));
    assert_eq!(second["files_changed"], changed, "{second}");
    let target = dir.path().join("out");
    cairn_json(&repo, args!["restore", second["id"].as_str().unwrap(), "--target", &target], 0);
    assert_same(&want, &describe(&restored(&target, &src)), "metadata-only changes");
}
