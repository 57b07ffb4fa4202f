//! Descriptor-relative operations on a restore's destination (invariant 6).
//!
//! Every call names one plain component relative to an open directory, and every directory is
//! opened from its parent's descriptor with `O_DIRECTORY | O_NOFOLLOW`. No path is resolved a
//! second time, so a directory that another user swaps for a symlink after it was checked (a
//! race against an in-place restore run as root) makes the open fail instead of sending the
//! writes, owners and modes that follow somewhere else. Metadata goes through descriptors
//! (`fchown`, `fchmod`, `fsetxattr`, `futimens`) or through `*at` calls that do not follow a
//! final symlink. And since no call sees more than one component, depth is not limited by
//! `PATH_MAX`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, CWD};
use rustix::io::Errno;

use crate::id::FileHash;
use crate::tree::{EntryKind, Timestamp};

/// The prefix of a restore's temporary files: `.cairn-restore.<pid>.<n>`.
pub(crate) const TEMP_PREFIX: &str = ".cairn-restore.";

/// Which mount a file is on: its file system (`st_dev`) and its mount's ID. A bind mount of a
/// folder of the same file system has the same `st_dev`, and only the mount ID (statx,
/// Linux 5.8+) tells it apart; where the kernel gives none it is 0 and `st_dev` alone decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mount {
    dev: u64,
    id: u64,
}

/// The mount `fd`'s file is on.
pub(crate) fn mount_of(fd: impl AsFd) -> io::Result<Mount> {
    let dev = rustix::fs::fstat(&fd).map_err(io)?.st_dev;
    let id = match rustix::fs::statx(&fd, c"", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID) {
        Ok(x) if rustix::fs::StatxFlags::from_bits_retain(x.stx_mask).contains(rustix::fs::StatxFlags::MNT_ID) => {
            x.stx_mnt_id
        }
        _ => 0,
    };
    Ok(Mount { dev, id })
}

/// An open destination directory and the path it was reached by (for messages only: the path
/// is never opened again).
pub(crate) struct Dir {
    fd: File,
    pub(crate) path: PathBuf,
}

fn io(e: Errno) -> io::Error {
    io::Error::from(e)
}

fn times(t: Timestamp) -> Timestamps {
    let ts = Timespec { tv_sec: t.sec, tv_nsec: i64::from(t.nsec) };
    Timestamps { last_access: ts, last_modification: ts }
}

/// True for the errors an `O_NOFOLLOW | O_DIRECTORY` open gives when the name is no longer a
/// directory (a symlink or a file was put in its place).
pub(crate) fn is_swapped(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == Errno::LOOP.raw_os_error() || code == Errno::NOTDIR.raw_os_error())
}

impl Dir {
    /// Opens the restore's target (created first when missing). The target path is resolved
    /// as the user wrote it, symlinks included: it is what they named.
    pub(crate) fn open_target(path: &Path) -> io::Result<Self> {
        let fd =
            rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(io)?;
        Ok(Self { fd: File::from(fd), path: path.to_path_buf() })
    }

    /// A second descriptor of this directory (a restore's planning pass walks it too).
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(Self { fd: self.fd.try_clone()?, path: self.path.clone() })
    }

    /// The names in this directory (`.` and `..` left out).
    pub(crate) fn names(&self) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }

    /// The target of the symlink `name`.
    pub(crate) fn read_link(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, name, Vec::new()).map_err(io)?.into_bytes())
    }

    /// Removes `name` and, when it is a directory, everything below it (`restore --delete`).
    /// Every step is relative to an open directory: a directory is opened `O_NOFOLLOW` and
    /// checked to be the one that was looked at, a symlink is unlinked, never followed, so
    /// nothing outside this directory is touched whatever is swapped in meanwhile. Nothing on
    /// another mount (a mount point below, a bind mount of the same file system included) is
    /// removed. An entry `keep` holds to (given its path below this directory, `name` first,
    /// and its lstat) stays, and so do the directories above it. `each` hears of every entry
    /// removed (or, with `dry_run`, that would be), children before their directory, and of
    /// every one that could not be. Iterative: depth costs one descriptor a level, not stack.
    pub(crate) fn remove_all(
        &self,
        name: &OsStr,
        dry_run: bool,
        keep: &dyn Fn(&Path, &Stat) -> bool,
        each: &mut dyn FnMut(PathBuf, io::Result<()>),
    ) {
        struct Frame {
            dir: Dir,
            rel: PathBuf,
            name: OsString,
            left: Vec<OsString>,
            incomplete: bool,
        }
        let mount = match mount_of(&self.fd) {
            Ok(m) => m,
            Err(e) => return each(self.child_path(name), Err(e)),
        };
        // Looks at `name` in `parent`: a non-directory is removed at once, a directory is
        // opened and returned to be emptied first. `Err(())` when it could not be removed.
        #[allow(clippy::too_many_arguments)]
        fn visit(
            parent: &Dir,
            name: &OsStr,
            rel: PathBuf,
            mount: Mount,
            dry_run: bool,
            keep: &dyn Fn(&Path, &Stat) -> bool,
            each: &mut dyn FnMut(PathBuf, io::Result<()>),
        ) -> Result<Option<Frame>, ()> {
            let path = parent.child_path(name);
            let mut fail = |e: io::Error| {
                each(path.clone(), Err(e));
                Err(())
            };
            let elsewhere =
                || io::Error::new(io::ErrorKind::CrossesDevices, "on another file system (a mount point); not deleted");
            let st = match parent.stat(name) {
                Ok(Some(st)) => st,
                Ok(None) => return Ok(None), // gone already
                Err(e) => return fail(e),
            };
            if keep(&rel, &st) {
                return Err(()); // kept, and so is what holds it
            }
            if st.st_dev != mount.dev {
                return fail(elsewhere());
            }
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return match if dry_run { Ok(()) } else { parent.remove_file(name) } {
                    Ok(()) => {
                        each(path, Ok(()));
                        Ok(None)
                    }
                    Err(e) => fail(e),
                };
            }
            let dir = match parent.open_dir(name) {
                Ok(d) => d,
                Err(e) => return fail(e),
            };
            match rustix::fs::fstat(&dir.fd) {
                Ok(now) if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) => {}
                Ok(_) => return fail(io::Error::other("replaced while it was deleted; left as it is")),
                Err(e) => return fail(io(e)),
            }
            // A bind mount shows the same file system: only its mount tells it apart.
            match mount_of(&dir.fd) {
                Ok(m) if m == mount => {}
                Ok(_) => return fail(elsewhere()),
                Err(e) => return fail(e),
            }
            match dir.names() {
                Ok(left) => Ok(Some(Frame { dir, rel, name: name.to_os_string(), left, incomplete: false })),
                Err(e) => fail(e),
            }
        }
        let mut stack: Vec<Frame> = Vec::new();
        match visit(self, name, PathBuf::from(name), mount, dry_run, keep, each) {
            Ok(Some(frame)) => stack.push(frame),
            Ok(None) | Err(()) => return,
        }
        while let Some(top) = stack.last_mut() {
            if let Some(child) = top.left.pop() {
                let rel = top.rel.join(&child);
                match visit(&top.dir, &child, rel, mount, dry_run, keep, each) {
                    Ok(Some(frame)) => stack.push(frame),
                    Ok(None) => {}
                    Err(()) => top.incomplete = true,
                }
                continue;
            }
            let Some(done) = stack.pop() else { break };
            let parent = stack.last().map_or(self, |f| &f.dir);
            if done.incomplete {
                if let Some(f) = stack.last_mut() {
                    f.incomplete = true;
                }
                continue; // named already: what is left below it
            }
            let removed = if dry_run {
                Ok(())
            } else {
                rustix::fs::unlinkat(&parent.fd, &done.name, AtFlags::REMOVEDIR).map_err(io)
            };
            if removed.is_err() {
                if let Some(f) = stack.last_mut() {
                    f.incomplete = true;
                }
            }
            each(done.dir.path, removed);
        }
    }

    /// The path of `name` in this directory, for messages.
    pub(crate) fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// lstat of `name`; `None` when there is nothing by that name.
    pub(crate) fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Opens the directory `name`, never through a symlink.
    pub(crate) fn open_dir(&self, name: &OsStr) -> io::Result<Self> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        Ok(Self { fd: File::from(fd), path: self.child_path(name) })
    }

    /// Creates the directory `name`, private until its own mode is applied at the end.
    pub(crate) fn mkdir(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)).map_err(io)
    }

    /// Removes the non-directory `name`.
    pub(crate) fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io)
    }

    /// Removes the empty directory `name`.
    pub(crate) fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(io)
    }

    /// A new temporary file in this directory, readable and writable, mode 0600. A name left by
    /// an earlier run of the same process ID is skipped, never reused.
    pub(crate) fn create_temp(&self, counter: &std::sync::atomic::AtomicU64) -> io::Result<(File, OsString)> {
        static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let pid = *PID.get_or_init(std::process::id);
        loop {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = OsString::from(format!("{TEMP_PREFIX}{pid}.{n}"));
            match self.create_new(&name) {
                Ok(f) => return Ok((f, name)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates the file `name`, which must not exist (not even as a symlink, which is never
    /// followed), readable and writable by its owner only.
    pub(crate) fn create_new(&self, name: &OsStr) -> io::Result<File> {
        rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map(File::from)
        .map_err(io)
    }

    /// Renames `from` over `to`, both in this directory; a symlink at `to` is replaced, not
    /// followed.
    pub(crate) fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(io)
    }

    /// Creates the symlink `name` pointing at `target`.
    pub(crate) fn symlink(&self, target: &[u8], name: &OsStr) -> io::Result<()> {
        rustix::fs::symlinkat(OsStr::from_bytes(target), &self.fd, name).map_err(io)
    }

    /// Creates a FIFO or device node `name`.
    pub(crate) fn mknod(&self, name: &OsStr, kind: EntryKind, mode: u32, rdev: u64) -> io::Result<()> {
        let ft = match kind {
            EntryKind::Fifo => FileType::Fifo,
            EntryKind::CharDevice => FileType::CharacterDevice,
            EntryKind::BlockDevice => FileType::BlockDevice,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a special file")),
        };
        rustix::fs::mknodat(&self.fd, name, ft, Mode::from_bits_truncate(mode & 0o777), rdev).map_err(io)
    }

    /// Hard-links the inode `want` (dev, inode), found as `from_name` in `from`, as `name`
    /// here. The source is opened `O_PATH | O_NOFOLLOW` and checked to be that inode, then
    /// linked through its `/proc/self/fd` name: whatever is swapped in under `from_name`
    /// meanwhile, the link is to the file this restore wrote. `false` when it is not there.
    pub(crate) fn link_verified(
        &self,
        from: &Dir,
        from_name: &OsStr,
        want: (u64, u64),
        name: &OsStr,
    ) -> io::Result<bool> {
        let fd = match rustix::fs::openat(
            &from.fd,
            from_name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(io)?;
        if (st.st_dev, st.st_ino) != want || FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(false);
        }
        rustix::fs::linkat(CWD, proc_path(&fd), &self.fd, name, AtFlags::SYMLINK_FOLLOW).map_err(io)?;
        Ok(true)
    }

    /// Opens the existing regular file `name` for reading, never through a symlink, and never
    /// blocking on a FIFO put in its place; `None` when it is not a regular file (any more).
    pub(crate) fn open_regular(&self, name: &OsStr) -> io::Result<Option<File>> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let st = rustix::fs::fstat(&fd).map_err(io)?;
        Ok((FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then(|| File::from(fd)))
    }

    /// Opens the symlink or special file `name` just made, as `O_PATH | O_NOFOLLOW`, and checks
    /// that it is still of the kind made: its metadata is then set through that descriptor, so
    /// a regular file another user swaps in meanwhile never gets the snapshot's owner or mode.
    pub(crate) fn open_made(&self, name: &OsStr, kind: EntryKind) -> io::Result<Made> {
        let fd = rustix::fs::openat(&self.fd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(io)?;
        let st = rustix::fs::fstat(&fd).map_err(io)?;
        let want = match kind {
            EntryKind::Fifo => FileType::Fifo,
            EntryKind::CharDevice => FileType::CharacterDevice,
            EntryKind::BlockDevice => FileType::BlockDevice,
            _ => FileType::Symlink,
        };
        if FileType::from_raw_mode(st.st_mode) != want {
            return Err(io::Error::other("replaced by something else while it was restored; its metadata is not set"));
        }
        Ok(Made { fd, symlink: want == FileType::Symlink })
    }

    /// Times of `name` itself (a symlink is not followed).
    pub(crate) fn times_at(&self, name: &OsStr, t: Timestamp) -> io::Result<()> {
        rustix::fs::utimensat(&self.fd, name, &times(t), AtFlags::SYMLINK_NOFOLLOW).map_err(io)
    }

    /// Sets extended attributes on `name` itself (a symlink or special file), through this
    /// directory's `/proc/self/fd` link so that only the last component is looked up.
    pub(crate) fn set_xattrs_at(&self, name: &OsStr, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let path = proc_path(&self.fd).join(name);
        for (key, value) in xattrs {
            xattr::set(&path, OsStr::from_bytes(key), value)?;
        }
        Ok(())
    }

    /// The directory as an open file, for metadata calls on the directory itself.
    pub(crate) fn file(&self) -> &File {
        &self.fd
    }

    /// Removes the temporary files an interrupted restore left here: regular files named
    /// `.cairn-restore.<pid>.<n>` whose process is gone and that belong to this user (a
    /// restore makes them as itself). Returns how many.
    pub(crate) fn remove_leftovers(&self) -> io::Result<u64> {
        let mut removed = 0;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if leftover_pid(name).is_some_and(|pid| pid != std::process::id() && !process_exists(pid)) {
                names.push(name.to_os_string());
            }
        }
        for name in names {
            let me = rustix::process::geteuid().as_raw();
            if self
                .stat(&name)?
                .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_uid == me)
            {
                self.remove_file(&name)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// True when `rel` exists below `dir` reached through real directories only (its last
/// component may be anything, a symlink included). `Ok(false)` when some part is missing; an
/// error when a directory on the way is a symlink or not a directory.
pub(crate) fn exists_without_symlinks(dir: &Dir, rel: &Path) -> io::Result<bool> {
    let names: Vec<&OsStr> = rel.iter().collect();
    let Some((last, parents)) = names.split_last() else {
        return Ok(true); // the target itself
    };
    let mut here: Option<Dir> = None;
    for name in parents {
        let cur = here.as_ref().unwrap_or(dir);
        match cur.stat(name)? {
            None => return Ok(false),
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Some(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a directory (a symlink is never followed)",
                    cur.child_path(name).display()
                )))
            }
        }
        here = Some(cur.open_dir(name)?);
    }
    Ok(here.as_ref().unwrap_or(dir).stat(last)?.is_some())
}

/// A symlink or special file this restore made, held by an `O_PATH` descriptor.
pub(crate) struct Made {
    fd: rustix::fd::OwnedFd,
    symlink: bool,
}

impl Made {
    /// Owner, through the descriptor (`AT_EMPTY_PATH`: the inode itself, never a name).
    pub(crate) fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::chownat(
            &self.fd,
            "",
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH,
        )
        .map_err(io)
    }

    /// Mode of a special file, through its `/proc/self/fd` link, which names that very inode
    /// (`fchmod` does not take an `O_PATH` descriptor). Symlinks have no mode of their own.
    pub(crate) fn chmod(&self, mode: u32) -> io::Result<()> {
        if self.symlink {
            return Ok(());
        }
        rustix::fs::chmodat(CWD, proc_path(&self.fd), Mode::from_bits_truncate(mode), AtFlags::empty()).map_err(io)
    }
}

/// The process ID in a temporary file's name, when `name` is one.
fn leftover_pid(name: &OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix(TEMP_PREFIX)?;
    let (pid, n) = rest.split_once('.')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
    pid.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// `/proc/self/fd/N`: a name for exactly the inode behind an open descriptor.
fn proc_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Sets the times of an open file or directory.
pub(crate) fn set_fd_times(fd: &impl AsFd, t: Timestamp) -> io::Result<()> {
    rustix::fs::futimens(fd, &times(t)).map_err(io)
}

/// BLAKE3 of everything readable from `file`, from its start.
pub(crate) fn hash_open_file(file: &File) -> io::Result<FileHash> {
    use std::os::unix::fs::FileExt;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(FileHash::from_hash(hasher.finalize()))
}

/// BLAKE3 of a file read through a reader (the public `hash_file`).
pub(crate) fn hash_reader(mut r: impl Read) -> io::Result<FileHash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(FileHash::from_hash(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names() {
        assert_eq!(leftover_pid(OsStr::new(".cairn-restore.123.4")), Some(123));
        assert_eq!(leftover_pid(OsStr::new(".cairn-restore.123.")), None);
        assert_eq!(leftover_pid(OsStr::new(".cairn-restore.x.4")), None);
        assert_eq!(leftover_pid(OsStr::new("cairn-restore.1.2")), None);
        assert_eq!(leftover_pid(OsStr::new(".cairn-restore.1.2x")), None);
    }
}
