//! Reading file metadata: owners (numeric and names), modes, times, extended attributes.
//! Applying it is restore's, through descriptors (`restore/at.rs`).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use crate::tree::{Entry, EntryKind, Timestamp};

/// Caches uid → user name and gid → group name lookups for one run.
#[derive(Default)]
pub(crate) struct Names {
    users: Mutex<HashMap<u32, Option<String>>>,
    groups: Mutex<HashMap<u32, Option<String>>>,
}

impl Names {
    pub(crate) fn user(&self, uid: u32) -> Option<String> {
        let mut m = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(uid)
            .or_insert_with(|| uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned()))
            .clone()
    }

    pub(crate) fn group(&self, gid: u32) -> Option<String> {
        let mut m = self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(gid)
            .or_insert_with(|| uzers::get_group_by_gid(gid).map(|g| g.name().to_string_lossy().into_owned()))
            .clone()
    }
}

pub(crate) fn timestamp(sec: i64, nsec: i64) -> Timestamp {
    Timestamp { sec, nsec: u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0) }
}

/// The entry kind of an lstat result; `None` for sockets (not restorable, skipped as tar does).
pub(crate) fn kind_of(meta: &Metadata) -> Option<EntryKind> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        Some(EntryKind::File)
    } else if t.is_dir() {
        Some(EntryKind::Dir)
    } else if t.is_symlink() {
        Some(EntryKind::Symlink)
    } else if t.is_fifo() {
        Some(EntryKind::Fifo)
    } else if t.is_char_device() {
        Some(EntryKind::CharDevice)
    } else if t.is_block_device() {
        Some(EntryKind::BlockDevice)
    } else {
        None
    }
}

/// Fills an entry's metadata from an lstat result and the path's extended attributes.
///
/// Extended attributes are read from the path unless `same_as` (the entry this path had in the
/// parent snapshot) has the same inode and ctime: setting or removing an attribute changes the
/// ctime, so the parent's list still holds, and a no-change snapshot skips one syscall a file.
pub(crate) fn fill(entry: &mut Entry, meta: &Metadata, path: &Path, names: &Names, same_as: Option<&Entry>) {
    entry.mode = meta.mode() & 0o7777;
    entry.uid = meta.uid();
    entry.gid = meta.gid();
    entry.user = names.user(entry.uid);
    entry.group = names.group(entry.gid);
    entry.mtime = timestamp(meta.mtime(), meta.mtime_nsec());
    entry.ctime = timestamp(meta.ctime(), meta.ctime_nsec());
    entry.inode = meta.ino();
    entry.nlink = meta.nlink();
    entry.dev = if entry.nlink > 1 && entry.kind == EntryKind::File { meta.dev() } else { 0 };
    entry.size = if entry.kind == EntryKind::File { meta.len() } else { 0 };
    entry.rdev = if matches!(entry.kind, EntryKind::CharDevice | EntryKind::BlockDevice) { meta.rdev() } else { 0 };
    entry.xattrs = match same_as {
        Some(p) if p.kind == entry.kind && p.inode == entry.inode && p.ctime == entry.ctime => p.xattrs.clone(),
        _ => read_xattrs(path),
    };
}

/// Extended attributes of a path (not following a final symlink), sorted by name. A filesystem
/// without them, or one attribute that vanished meanwhile, yields what could be read.
pub(crate) fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok().flatten()?;
            Some((name.as_encoded_bytes().to_vec(), value))
        })
        .collect();
    out.sort();
    out
}

/// True when this process may set owners and make device nodes.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
