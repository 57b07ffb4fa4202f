//! Tree objects: one per directory, naming each entry's metadata and its content (chunks for a
//! file, a subtree for a directory). A tree's ID is the BLAKE3 of its encoding, so an unchanged
//! directory keeps its ID and is shared between snapshots (a Merkle tree).
//!
//! Encoding: `version u8 (= 1) ‖ bincode(Tree)`. Entries are sorted by name bytes.

use serde::{Deserialize, Serialize};

use std::path::{Component, Path, PathBuf};

use crate::codec;
use crate::error::{Error, Result};
use crate::id::{ChunkId, FileHash, TreeId};

/// Newest tree encoding this build reads and the one it writes.
pub const TREE_VERSION: u8 = 1;

/// What kind of file an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds (negative before 1970).
    pub sec: i64,
    /// Nanoseconds, 0..1e9.
    pub nsec: u32,
}

/// A piece of a file's content: the chunk that holds bytes `offset .. offset + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk.
    pub id: ChunkId,
    /// Where it starts in the file. Gaps between chunks are holes (sparse files).
    pub offset: u64,
    /// Its length.
    pub len: u32,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The name, raw bytes (any byte but `/` and NUL on Unix).
    pub name: Vec<u8>,
    /// File type.
    pub kind: EntryKind,
    /// Permission bits, with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Owner name, when the system knew one.
    pub user: Option<String>,
    /// Group name, when the system knew one.
    pub group: Option<String>,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status-change time (change detection only; cannot be restored).
    pub ctime: Timestamp,
    /// Inode number (change detection, hard links).
    pub inode: u64,
    /// Device of the inode, kept only for entries with more than one link, so that restore can
    /// tell which entries are hard links of each other; 0 otherwise.
    pub dev: u64,
    /// Link count at snapshot time.
    pub nlink: u64,
    /// Size in bytes (files); 0 for others.
    pub size: u64,
    /// Device number (device nodes).
    pub rdev: u64,
    /// Target of a symbolic link, raw bytes.
    pub target: Vec<u8>,
    /// The directory's tree.
    pub subtree: Option<TreeId>,
    /// The file's content, in file order.
    pub content: Vec<ChunkRef>,
    /// BLAKE3 of the whole file as read (what `b3sum` prints and `restore --verify` checks).
    pub file_hash: Option<FileHash>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// A blank entry of a kind, for building.
    #[must_use]
    pub fn new(name: Vec<u8>, kind: EntryKind) -> Self {
        Self {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            inode: 0,
            dev: 0,
            nlink: 1,
            size: 0,
            rdev: 0,
            target: Vec::new(),
            subtree: None,
            content: Vec::new(),
            file_hash: None,
            xattrs: Vec::new(),
        }
    }

    /// The name as text (lossy), for messages.
    #[must_use]
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// True when the name can be used as one path component: not empty, not `.` or `..`, no `/`
    /// and no NUL. Restore skips any other name (a hostile repository can hold anything).
    #[must_use]
    pub fn has_safe_name(&self) -> bool {
        !self.name.is_empty()
            && self.name != b"."
            && self.name != b".."
            && !self.name.contains(&b'/')
            && !self.name.contains(&0)
    }
}

/// A directory's entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name.
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Sorts the entries and encodes the tree; returns its ID (by the plain ID function) and
    /// bytes.
    #[must_use]
    pub fn seal(self) -> (TreeId, Vec<u8>) {
        let bytes = self.encode();
        (TreeId::of(&bytes), bytes)
    }

    /// Sorts the entries and encodes the tree; its ID is the repository's to give (frame.rs).
    pub(crate) fn encode(mut self) -> Vec<u8> {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut bytes = vec![TREE_VERSION];
        bytes.extend_from_slice(&codec::encode(&self));
        bytes
    }

    /// Decodes a tree's bytes (already checked against its ID by the blob reader).
    pub fn decode(id: TreeId, bytes: &[u8]) -> Result<Self> {
        let what = format!("tree {id}");
        match bytes.first() {
            None => Err(Error::corrupt(what, "empty")),
            Some(&v) if v == 0 || v > TREE_VERSION => {
                Err(Error::UnsupportedVersion { what, found: u32::from(v), supported: u32::from(TREE_VERSION) })
            }
            Some(_) => codec::decode(&what, &bytes[1..]),
        }
    }

    /// The entry with this name (entries are sorted).
    #[must_use]
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| &self.entries[i])
    }
}

/// A path as the snapshot path it names: absolute (a relative one is taken from `/`), `.`
/// dropped, and `..` taken lexically and never above `/` (as the kernel does at `/`), so
/// `/../../etc/ssh` is `/etc/ssh`. Every path a user gives for a snapshot's tree (an include,
/// a diff path, a `--path` filter, a source) goes through here, so that none can name a place
/// above the root or outside a restore's target.
#[must_use]
pub fn snapshot_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_given_for_a_snapshot_never_climb_above_the_root() {
        assert_eq!(snapshot_path(Path::new("/../../etc/ssh")), Path::new("/etc/ssh"));
        assert_eq!(snapshot_path(Path::new("etc/./nginx/../ssh")), Path::new("/etc/ssh"));
        assert_eq!(snapshot_path(Path::new("/a/b/../../..")), Path::new("/"));
        assert_eq!(snapshot_path(Path::new("etc/../../srv/./app")), Path::new("/srv/app"));
        assert_eq!(snapshot_path(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn tree_round_trip_is_order_independent() {
        let mut a = Entry::new(b"b".to_vec(), EntryKind::File);
        a.size = 3;
        let b = Entry::new(b"a".to_vec(), EntryKind::Dir);
        let (id1, bytes) = Tree { entries: vec![a.clone(), b.clone()] }.seal();
        let (id2, _) = Tree { entries: vec![b, a] }.seal();
        assert_eq!(id1, id2);
        let tree = Tree::decode(id1, &bytes).unwrap();
        assert_eq!(tree.get(b"b").unwrap().size, 3);
        assert!(tree.get(b"c").is_none());
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert!(matches!(Tree::decode(id1, &newer), Err(Error::UnsupportedVersion { .. })));
        assert!(Tree::decode(id1, &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn hostile_names_are_flagged() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"x\0"] {
            assert!(!Entry::new(bad.to_vec(), EntryKind::File).has_safe_name(), "{bad:?}");
        }
        assert!(Entry::new(b"..hidden".to_vec(), EntryKind::File).has_safe_name());
    }
}
