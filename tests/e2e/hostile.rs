//! Hostile repositories: a repository crafted by hand (through the public format, as an
//! attacker would write it) holds trees with entry names `..`, `/abs`, names with `/`,
//! duplicate names, a symlink out of the target followed by entries under the same name, and
//! hard-link groups. Restore refuses or neutralises each and never touches anything outside
//! `--target` (a canary beside the target proves it).

use std::fs;
use std::path::Path;

use cairn_store::{
    seal_frame, BlobKind, ChunkId, ChunkRef, Entry, EntryKind, FileHash, PackWriter, SnapshotKind, SnapshotRecord,
    SnapshotTotals, Tree, TreeId,
};

use crate::args;
use crate::util::*;

fn file(name: &[u8], data: &[u8], w: &mut PackWriter) -> Entry {
    let id = ChunkId::of(data);
    w.add(&seal_frame(&[(BlobKind::Chunk, id.into(), data)], 3));
    let mut e = Entry::new(name.to_vec(), EntryKind::File);
    e.mode = 0o644;
    e.size = data.len() as u64;
    e.content = vec![ChunkRef { id, offset: 0, len: data.len() as u32 }];
    e.file_hash = Some(FileHash::of(data));
    e
}

fn dir(name: &[u8], tree: Tree, w: &mut PackWriter) -> (Entry, TreeId) {
    let (id, bytes) = tree.seal();
    w.add(&seal_frame(&[(BlobKind::Tree, id.into(), &bytes)], 3));
    let mut e = Entry::new(name.to_vec(), EntryKind::Dir);
    e.mode = 0o755;
    e.subtree = Some(id);
    (e, id)
}

/// Writes a crafted snapshot of `/evil` into an initialised repository.
fn craft(repo: &Path, outside: &Path) {
    let mut w = PackWriter::new();
    let escaped = file(b"escaped", b"written outside the target!", &mut w);
    let mut entries = vec![file(b"ok.txt", b"harmless\n", &mut w)];
    // `..` and names with `/`, each a directory or file aiming above the target.
    entries.push(dir(b"..", Tree { entries: vec![escaped.clone()] }, &mut w).0);
    entries.push(file(b"/abs", b"absolute", &mut w));
    entries.push(file(b"a/../../b", b"slashes", &mut w));
    entries.push(file(b"nul\0name", b"nul", &mut w));
    // A symlink out of the target, and a directory of the same name with a file under it:
    // whichever comes second must not be written through the first.
    let mut link = Entry::new(b"link".to_vec(), EntryKind::Symlink);
    link.target = outside.as_os_str().as_encoded_bytes().to_vec();
    entries.push(link);
    entries.push(dir(b"link", Tree { entries: vec![escaped.clone()] }, &mut w).0);
    // Duplicate names.
    entries.push(file(b"twice", b"first", &mut w));
    entries.push(file(b"twice", b"second", &mut w));
    // A "hard link" group whose first member is unsafe: the others still restore inside.
    let mut h1 = file(b"..", b"linked", &mut w);
    h1.nlink = 2;
    h1.dev = 7;
    h1.inode = 99;
    let mut h2 = file(b"hard", b"linked", &mut w);
    h2.nlink = 2;
    h2.dev = 7;
    h2.inode = 99;
    entries.push(h1);
    entries.push(h2);
    let (evil_entry, _) = dir(b"evil", Tree { entries }, &mut w);
    let root = Tree { entries: vec![evil_entry] };
    let (root_id, root_bytes) = root.seal();
    w.add(&seal_frame(&[(BlobKind::Tree, root_id.into(), &root_bytes)], 3));
    let (pack_id, bytes, _) = w.finish();
    let name = pack_id.to_hex();
    let pdir = repo.join("packs").join(&name[..2]);
    fs::create_dir_all(&pdir).unwrap();
    fs::write(pdir.join(&name), bytes).unwrap();
    let record = SnapshotRecord {
        time_ns: 1_700_000_000_000_000_000,
        host: "attacker".into(),
        user: "mallory".into(),
        paths: vec![b"/evil".to_vec()],
        kind: SnapshotKind::Full,
        parent: None,
        label: Some("evil".into()),
        tags: vec![],
        excludes: vec![],
        root: root_id,
        totals: SnapshotTotals::default(),
        warnings: 0,
        duration_ms: 0,
        cairn_version: "crafted".into(),
        pinned: false,
        original: None,
        captures: vec![],
    };
    let (id, bytes) = record.seal();
    fs::write(repo.join("snapshots").join(id.to_hex()), bytes).unwrap();
}

#[test]
fn restore_of_a_crafted_repository_never_writes_outside_the_target() {
    let (dir, repo) = new_repo();
    let area = dir.path().join("area");
    let target = area.join("target");
    let outside = area.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(area.join("canary"), b"untouched").unwrap();
    craft(&repo, &outside);
    // The crafted pack is not indexed yet: repair reads packs and records as they are.
    cairn_json(&repo, args!["repair", "index"], 0);
    let before = describe(&area);

    let out = cairn(&repo).args(args!["--json", "restore", "evil", "--target", &target]).output().unwrap();
    assert!(out.status.code() == Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = r["warnings"].as_array().unwrap();
    assert!(warnings.len() >= 5, "each hostile entry is named: {r}");

    // Nothing outside the target changed: the canary, the outside dir, the area itself.
    let mut after = describe(&area);
    after.retain(|k, _| !k.starts_with(b"target"));
    let mut want = before.clone();
    want.retain(|k, _| !k.starts_with(b"target"));
    for d in [&mut after, &mut want] {
        d.remove(&b""[..]); // the area's own mtime changes when target/ is created in it
    }
    assert_same(&want, &after, "outside the target");
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "nothing written through the symlink");
    assert!(!dir.path().join("escaped").exists() && !area.join("escaped").exists());
    // Inside, the harmless entries are there.
    let evil = target.join("evil");
    assert_eq!(fs::read(evil.join("ok.txt")).unwrap(), b"harmless\n");
    assert_eq!(fs::read(evil.join("twice")).unwrap(), b"first", "the first of duplicate names wins");
    assert_eq!(fs::read(evil.join("hard")).unwrap(), b"linked");
    let link = fs::symlink_metadata(evil.join("link")).unwrap();
    assert!(link.file_type().is_symlink() || link.is_dir());
    if link.is_dir() {
        assert!(!outside.join("escaped").exists());
    }
    // In-place style restores over a pre-existing symlink replace it instead of following it.
    let target2 = area.join("target2");
    fs::create_dir_all(&target2).unwrap();
    std::os::unix::fs::symlink(&outside, target2.join("evil")).unwrap();
    let r = cairn_json(&repo, args!["restore", "evil", "--target", &target2], 0);
    assert!(r["files_written"].as_u64().unwrap() >= 3);
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "a symlink in the target is replaced, not followed");
    assert_eq!(fs::read(area.join("canary")).unwrap(), b"untouched");
    // Scrub names nothing as damaged (the data is intact; the names are the problem).
    cairn_json(&repo, args!["scrub", "--read-data"], 0);
}
