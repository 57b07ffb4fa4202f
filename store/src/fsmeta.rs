//! Reading file metadata: owners (numeric and names), modes, times, extended attributes.
//! Applying it is restore's, through descriptors (`restore/at.rs`).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{FileType, Mode, OFlags};

use crate::tree::{Entry, EntryKind, Timestamp};
use crate::workers::lock;

/// Caches uid → user name and gid → group name lookups for one run.
#[derive(Default)]
pub(crate) struct Names {
    users: Mutex<HashMap<u32, Option<String>>>,
    groups: Mutex<HashMap<u32, Option<String>>>,
}

impl Names {
    pub(crate) fn user(&self, uid: u32) -> Option<String> {
        let mut m = lock(&self.users);
        m.entry(uid)
            .or_insert_with(|| uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned()))
            .clone()
    }

    pub(crate) fn group(&self, gid: u32) -> Option<String> {
        let mut m = lock(&self.groups);
        m.entry(gid)
            .or_insert_with(|| uzers::get_group_by_gid(gid).map(|g| g.name().to_string_lossy().into_owned()))
            .clone()
    }
}

pub(crate) fn timestamp(sec: i64, nsec: i64) -> Timestamp {
    Timestamp { sec, nsec: u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0) }
}

/// The fields of a `stat` result that cairn keeps, in fixed types (`struct stat` varies by
/// architecture). Taken with `statat`/`fstat` on descriptors, never by a full path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

impl From<&rustix::fs::Stat> for Meta {
    #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
    fn from(st: &rustix::fs::Stat) -> Self {
        Self {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            rdev: st.st_rdev as u64,
            size: st.st_size.max(0) as u64,
            blocks: st.st_blocks.max(0) as u64,
            mtime: timestamp(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: timestamp(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

impl Meta {
    pub(crate) fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    pub(crate) fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }
}

/// The entry kind of a stat result; `None` for sockets (not restorable, skipped as tar does).
pub(crate) fn kind_of(meta: &Meta) -> Option<EntryKind> {
    match meta.file_type() {
        FileType::RegularFile => Some(EntryKind::File),
        FileType::Directory => Some(EntryKind::Dir),
        FileType::Symlink => Some(EntryKind::Symlink),
        FileType::Fifo => Some(EntryKind::Fifo),
        FileType::CharacterDevice => Some(EntryKind::CharDevice),
        FileType::BlockDevice => Some(EntryKind::BlockDevice),
        _ => None,
    }
}

/// Fills an entry's metadata from a stat result; `xattrs` reads its extended attributes.
///
/// Extended attributes are read only when `same_as` (the entry this path had in the parent
/// snapshot) does not have the same inode and ctime: setting or removing an attribute changes
/// the ctime, so the parent's list still holds, and a no-change snapshot skips one syscall a file.
pub(crate) fn fill(
    entry: &mut Entry,
    meta: &Meta,
    xattrs: impl FnOnce() -> Vec<(Vec<u8>, Vec<u8>)>,
    names: &Names,
    same_as: Option<&Entry>,
) {
    entry.mode = meta.mode & 0o7777;
    entry.uid = meta.uid;
    entry.gid = meta.gid;
    entry.user = names.user(entry.uid);
    entry.group = names.group(entry.gid);
    entry.mtime = meta.mtime;
    entry.ctime = meta.ctime;
    entry.inode = meta.ino;
    entry.nlink = meta.nlink;
    entry.dev = if entry.nlink > 1 && entry.kind == EntryKind::File { meta.dev } else { 0 };
    entry.size = if entry.kind == EntryKind::File { meta.size } else { 0 };
    entry.rdev = if matches!(entry.kind, EntryKind::CharDevice | EntryKind::BlockDevice) { meta.rdev } else { 0 };
    entry.xattrs = match same_as {
        Some(p) if p.kind == entry.kind && p.inode == entry.inode && p.ctime == entry.ctime => p.xattrs.clone(),
        _ => xattrs(),
    };
}

/// The `listxattr` or `getxattr` call for one file: with a buffer, or (`None`) to ask the size.
type XattrCall<'a> = dyn Fn(Option<&mut [u8]>) -> rustix::io::Result<usize> + 'a;
/// The `getxattr` call for one file, given the attribute's name.
type XattrGet<'a> = dyn Fn(&CStr, Option<&mut [u8]>) -> rustix::io::Result<usize> + 'a;

/// Reads one attribute list or value: a small buffer first (most files have no attributes, and
/// then this is the only syscall), the size asked for only when it is too small. Sizes can grow
/// between the two calls (ERANGE): a few tries, then give up.
fn sized(call: &XattrCall<'_>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    for _ in 0..4 {
        match call(Some(&mut buf)) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let n = call(None).ok()?;
                buf.resize(n.max(buf.len() * 2), 0);
            }
            Err(_) => return None,
        }
    }
    None
}

/// Reads a file's extended attributes, sorted by name, given its list and get calls. A filesystem
/// without attributes, or an attribute that vanished meanwhile, yields what could be read.
fn read_xattrs_with(list: &XattrCall<'_>, get: &XattrGet<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(names) = sized(list) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| {
            let name = std::ffi::CString::new(n).ok()?;
            let value = sized(&|buf| get(&name, buf))?;
            Some((n.to_vec(), value))
        })
        .collect();
    out.sort();
    out
}

/// Extended attributes of an open file or directory.
pub(crate) fn xattrs_of_fd(fd: BorrowedFd<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    use rustix::fs::{fgetxattr, fgetxattr_query, flistxattr, flistxattr_query};
    read_xattrs_with(&|buf| buf.map_or_else(|| flistxattr_query(fd), |b| flistxattr(fd, b)), &|name, buf| {
        buf.map_or_else(|| fgetxattr_query(fd, name), |b| fgetxattr(fd, name, b))
    })
}

/// Extended attributes of the entry `name` in the open directory `dir` (not following a final
/// symlink), for entries that are not opened (symlinks, devices, FIFOs, unchanged files).
///
/// Linux has no `*xattrat` calls before 6.13, so the entry is named through the directory's
/// descriptor in /proc (`/proc/self/fd/N/name`): a short path however deep the directory, and
/// the same directory the walk holds open. Without /proc, `label` (the full path) is used.
pub(crate) fn xattrs_at(dir: BorrowedFd<'_>, name: &CStr, label: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    static PROC_FD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let proc_fd = *PROC_FD.get_or_init(|| Path::new("/proc/self/fd").is_dir());
    let mut path = if proc_fd {
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.to_bytes());
        p
    } else {
        label.as_os_str().as_bytes().to_vec()
    };
    path.push(0);
    let Ok(path) = CStr::from_bytes_with_nul(&path) else {
        return Vec::new();
    };
    use rustix::fs::{lgetxattr, lgetxattr_query, llistxattr, llistxattr_query};
    read_xattrs_with(&|buf| buf.map_or_else(|| llistxattr_query(path), |b| llistxattr(path, b)), &|name, buf| {
        buf.map_or_else(|| lgetxattr_query(path, name), |b| lgetxattr(path, name, b))
    })
}

/// The names in an open directory (without `.` and `..`), read with `getdents64` on the
/// descriptor. On an error part way, the names read so far and the error.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<CString>, (Vec<CString>, io::Error)> {
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    let mut entries = rustix::fs::RawDir::new(dir, buf.spare_capacity_mut());
    let mut names = Vec::new();
    while let Some(e) = entries.next() {
        match e {
            Ok(e) => {
                let n = e.file_name();
                if n != c"." && n != c".." {
                    names.push(n.to_owned());
                }
            }
            Err(e) => return Err((names, e.into())),
        }
    }
    Ok(names)
}

/// Opens a file to read it, with `extra` flags (`O_NOFOLLOW`), and where allowed without
/// updating its access time (a snapshot or a diff reads, it does not "use" the file).
pub(crate) fn open_read_at(dir: BorrowedFd<'_>, name: &CStr, extra: OFlags) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | extra;
    match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        // O_NOATIME is allowed only to the file's owner (or root).
        Err(rustix::io::Errno::PERM) => Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?.into()),
        other => Ok(other?.into()),
    }
}

/// True when this process may set owners and make device nodes.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::AsFd;

    #[test]
    fn xattrs_are_read_through_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        if xattr::set(&file, "user.k", b"v").is_err() {
            return; // no user xattrs on this filesystem
        }
        let want = vec![(b"user.k".to_vec(), b"v".to_vec())];
        let f = File::open(&file).unwrap();
        assert_eq!(xattrs_of_fd(f.as_fd()), want);
        let d = File::open(dir.path()).unwrap();
        assert_eq!(xattrs_at(d.as_fd(), c"f", &file), want);
    }
}
