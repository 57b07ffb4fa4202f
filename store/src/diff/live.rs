//! A snapshot against the files on disk now (`diff --live`).
//!
//! The live side is read as a snapshot would read it, and nothing more: below the source
//! paths every directory is opened from its parent without following symlinks, the snapshot's
//! excludes and the repository's own folder are left out, sockets are skipped. Nothing is
//! written, and files are opened with `O_NOATIME` where allowed.
//!
//! A file's content is judged as change detection judges it: same size, mtime, ctime and inode
//! as stored means unchanged, unread. When the size is equal but the rest is not, the file is
//! read and its BLAKE3 compared with the one stored, so `M` means the bytes differ (a `touch`
//! or a `chmod` is `T`, not `M`). A live entry that cannot be read is a warning in the report,
//! never an abort, and is not called changed.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::{meta_differs, DiffReport};
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::fsmeta::{self, Meta, Names};
use crate::id::{FileHash, TreeId};
use crate::repo::{Repo, Snapshot};
use crate::tally::Warning;
use crate::tree::snapshot_path;
use crate::tree::{Entry, EntryKind, Tree};

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// An entry on disk: a name in an open directory, and its metadata.
#[derive(Clone, Copy)]
struct Here<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    meta: Meta,
    /// A source path given as a symlink, followed as the snapshot followed it.
    follow: bool,
}

impl Here<'_> {
    fn nofollow(&self) -> OFlags {
        if self.follow {
            OFlags::empty()
        } else {
            OFlags::NOFOLLOW
        }
    }
}

/// The comparison's settings, taken from the snapshot's record.
struct Live<'a> {
    repo: &'a Repo,
    excludes: Excludes,
    /// (st_dev, st_ino) of a local repository's folder: never compared, as never snapshotted.
    repo_id: Option<(u64, u64)>,
    names: Names,
}

/// The error of a name that is not there as the snapshot would see it: missing, or a symlink
/// or file where a directory would be.
fn absent(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::NOENT, Errno::NOTDIR, Errno::LOOP].iter().any(|x| e.raw_os_error() == Some(x.raw_os_error()))
}

impl Repo {
    /// What changed from snapshot `snap` to the files on disk now, below `paths` (paths of the
    /// snapshot, at or below its sources, or above them: then the sources below), or below
    /// every source path. Reads the live tree, never writes to it.
    pub fn diff_live(&self, snap: &Snapshot, paths: &[PathBuf]) -> Result<DiffReport> {
        let sources: Vec<PathBuf> = snap.record.paths.iter().map(|p| PathBuf::from(OsStr::from_bytes(p))).collect();
        let mut r = DiffReport::default();
        // (root, the source it lies in)
        let mut roots: Vec<(PathBuf, PathBuf)> = Vec::new();
        if paths.is_empty() {
            roots.extend(sources.iter().map(|s| (s.clone(), s.clone())));
        }
        for p in paths.iter().map(|p| snapshot_path(p)) {
            if let Some(s) = sources.iter().find(|s| p.starts_with(s)) {
                let held = self.find_entry(snap.record.root, &p)?.is_some() || p == Path::new("/");
                if !held && std::fs::symlink_metadata(&p).is_err() {
                    r.not_found.push(p.to_string_lossy().into_owned());
                    continue;
                }
                roots.push((p, s.clone()));
                continue;
            }
            let below: Vec<&PathBuf> = sources.iter().filter(|s| s.starts_with(&p)).collect();
            if below.is_empty() {
                r.not_found.push(p.to_string_lossy().into_owned());
            }
            roots.extend(below.into_iter().map(|s| (s.clone(), s.clone())));
        }
        if !paths.is_empty() && r.not_found.len() == paths.len() {
            return Err(Error::NotInSnapshot {
                paths: r.not_found.join(", "),
                snapshot: format!("{} or on disk below its paths", snap.id.short(8)),
            });
        }
        roots.sort();
        let mut kept: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (root, source) in roots {
            if !kept.iter().any(|(k, _)| root.starts_with(k)) {
                kept.push((root, source));
            }
        }
        let live = Live {
            repo: self,
            excludes: Excludes::new(
                &snap.record.excludes,
                self.location.as_local().and_then(|p| p.canonicalize().ok()),
            )?,
            repo_id: self.location.as_local().and_then(|p| rustix::fs::stat(p).ok()).map(|st| {
                let m = Meta::from(&st);
                (m.dev, m.ino)
            }),
            names: Names::default(),
        };
        for (root, source) in kept {
            live.root(&root, &source, snap.record.root, &mut r)?;
        }
        r.finish();
        Ok(r)
    }
}

impl Live<'_> {
    fn warn(r: &mut DiffReport, path: &Path, message: impl Into<String>) {
        r.warnings.push(Warning::new(path, message));
    }

    /// Compares one root: the entry at `root` (a source path, or a path below one) and what is
    /// below it.
    fn root(&self, root: &Path, source: &Path, snap_root: TreeId, r: &mut DiffReport) -> Result<()> {
        let Some(parent) = root.parent() else {
            // `/` itself: the root tree has no entry of its own, only entries.
            let fd = match rustix::fs::open("/", DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) => {
                    Self::warn(r, root, format!("cannot read directory: {}", io::Error::from(e)));
                    return Ok(());
                }
            };
            return self.entries(fd.as_fd(), root, Some(snap_root), r);
        };
        let stored = self.repo.find_entry(snap_root, root)?;
        let name = CString::new(root.file_name().unwrap_or_default().as_bytes())
            .map_err(|_| Error::InvalidInput(format!("{} has a NUL byte", root.display())))?;
        let dir = match open_parent(parent, source) {
            Ok(fd) => Some(fd),
            Err(e) if absent(&e) => None,
            Err(e) => {
                Self::warn(r, parent, format!("cannot read directory: {e}"));
                return Ok(());
            }
        };
        // A source given as a symlink was followed by the snapshot (unless it stored the link).
        let follow = root == source && stored.as_ref().is_none_or(|e| e.kind != EntryKind::Symlink);
        let here = match &dir {
            None => None,
            Some(fd) => match stat_at(fd.as_fd(), &name, follow).or_else(|e| {
                if follow && absent(&e) {
                    stat_at(fd.as_fd(), &name, false) // a dangling source link is stored as the link
                } else {
                    Err(e)
                }
            }) {
                Ok(meta) => Some(Here { dir: fd.as_fd(), name: &name, meta, follow }),
                Err(e) if absent(&e) => None,
                Err(e) => {
                    Self::warn(r, root, format!("cannot read: {e}"));
                    return Ok(());
                }
            },
        };
        self.entry(root, stored.as_ref(), here, r)
    }

    /// Compares one entry of the snapshot with what stands at its path now.
    fn entry(&self, path: &Path, stored: Option<&Entry>, here: Option<Here<'_>>, r: &mut DiffReport) -> Result<()> {
        // What a snapshot leaves out is not there: sockets, the repository itself.
        let here = here.filter(|h| self.repo_id != Some((h.meta.dev, h.meta.ino)));
        let live = here.and_then(|h| fsmeta::kind_of(&h.meta).map(|k| (h, k)));
        match (stored, live) {
            (None, None) => {}
            (Some(e), None) => self.repo.diff_entry(Some(e), None, path, r)?,
            (None, Some((h, kind))) => {
                r.push('+', path, kind);
                if kind == EntryKind::Dir {
                    self.dir(h, path, None, r)?;
                }
            }
            (Some(e), Some((h, kind))) if e.kind != kind => {
                self.repo.diff_entry(Some(e), None, path, r)?;
                self.entry(path, None, Some(h), r)?;
            }
            (Some(e), Some((h, kind))) => {
                let Some(now) = self.describe(h, e, path, r) else { return Ok(()) };
                let modified = kind == EntryKind::File && self.content_changed(h, e, &now, path, r);
                if modified {
                    r.push('M', path, kind);
                } else if meta_differs(e, &now) {
                    r.push('T', path, kind);
                }
                if kind == EntryKind::Dir {
                    self.dir(h, path, e.subtree, r)?;
                }
            }
        }
        Ok(())
    }

    /// The live entry's metadata as a snapshot would record it (its content aside); `None`
    /// when it cannot be read (a warning says so).
    fn describe(&self, h: Here<'_>, stored: &Entry, path: &Path, r: &mut DiffReport) -> Option<Entry> {
        let kind = fsmeta::kind_of(&h.meta)?;
        let mut now = Entry::new(stored.name.clone(), kind);
        fsmeta::fill(&mut now, &h.meta, || fsmeta::xattrs_at(h.dir, h.name, path), &self.names, Some(stored));
        if kind == EntryKind::Symlink {
            match rustix::fs::readlinkat(h.dir, h.name, Vec::new()) {
                Ok(t) => now.target = t.into_bytes(),
                Err(e) => {
                    Self::warn(r, path, format!("cannot read symlink: {}", io::Error::from(e)));
                    return None;
                }
            }
        }
        Some(now)
    }

    /// Whether a file's bytes differ from the stored ones: by size, else by the metadata change
    /// detection trusts, else by reading and hashing it. An unreadable file is a warning and is
    /// not called changed.
    fn content_changed(&self, h: Here<'_>, stored: &Entry, now: &Entry, path: &Path, r: &mut DiffReport) -> bool {
        if stored.size != now.size {
            return true;
        }
        if stored.mtime == now.mtime && stored.ctime == now.ctime && stored.inode == now.inode {
            return false;
        }
        let Some(want) = stored.file_hash else {
            return true; // nothing to compare the bytes with; the metadata says changed
        };
        match hash_at(h) {
            Ok(got) => {
                r.files_read += 1;
                got != want
            }
            Err(e) => {
                Self::warn(r, path, format!("cannot read to compare: {e}"));
                false
            }
        }
    }

    /// Compares a directory's entries on disk with its stored tree (`None`: all are added).
    fn dir(&self, h: Here<'_>, path: &Path, stored: Option<TreeId>, r: &mut DiffReport) -> Result<()> {
        let fd = match rustix::fs::openat(h.dir, h.name, DIR_FLAGS | h.nofollow(), Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                Self::warn(r, path, format!("cannot read directory: {}", io::Error::from(e)));
                return Ok(());
            }
        };
        self.entries(fd.as_fd(), path, stored, r)
    }

    fn entries(&self, fd: BorrowedFd<'_>, path: &Path, stored: Option<TreeId>, r: &mut DiffReport) -> Result<()> {
        r.trees_compared += 1;
        let tree = stored.map_or(Ok(Tree::default()), |t| self.repo.load_tree(t))?;
        let live = match fsmeta::list_dir(fd) {
            Ok(names) => names,
            Err((names, e)) => {
                Self::warn(r, path, format!("cannot list the whole directory: {e}"));
                names
            }
        };
        let mut names: Vec<CString> = live;
        for e in tree.entries.iter().filter(|e| e.has_safe_name()) {
            if let Ok(n) = CString::new(e.name.clone()) {
                names.push(n);
            }
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        names.dedup();
        for name in &names {
            let bytes = name.as_bytes();
            let child = path.join(OsStr::from_bytes(bytes));
            if self.excludes.excluded(&child, bytes) {
                continue;
            }
            let here = match stat_at(fd, name, false) {
                Ok(meta) => Some(Here { dir: fd, name, meta, follow: false }),
                Err(e) if absent(&e) => None,
                Err(e) => {
                    Self::warn(r, &child, format!("cannot read: {e}"));
                    continue;
                }
            };
            self.entry(&child, tree.get(bytes), here, r)?;
        }
        Ok(())
    }
}

/// Opens the directory holding a root the way the snapshot reached it: at or above the source
/// path as the kernel resolves it (a symlink there is followed, as the snapshot followed it),
/// below it one name at a time without following symlinks.
fn open_parent(parent: &Path, source: &Path) -> io::Result<OwnedFd> {
    if source.starts_with(parent) {
        return Ok(rustix::fs::open(parent, DIR_FLAGS, Mode::empty())?);
    }
    let mut fd = rustix::fs::open(source, DIR_FLAGS, Mode::empty())?;
    for c in parent.strip_prefix(source).unwrap_or(parent).components() {
        let name = CString::new(c.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        fd = rustix::fs::openat(&fd, name.as_c_str(), DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
    }
    Ok(fd)
}

fn stat_at(dir: BorrowedFd<'_>, name: &CStr, follow: bool) -> io::Result<Meta> {
    let flags = if follow { AtFlags::empty() } else { AtFlags::SYMLINK_NOFOLLOW };
    Ok(Meta::from(&rustix::fs::statat(dir, name, flags)?))
}

/// The BLAKE3 of a live file's bytes, read through a descriptor that does not follow a symlink.
fn hash_at(h: Here<'_>) -> io::Result<FileHash> {
    let file = fsmeta::open_read_at(h.dir, h.name, h.nofollow())?;
    if !Meta::from(&rustix::fs::fstat(file.as_fd())?).is_file() {
        return Err(io::Error::other("no longer a regular file"));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&file)?;
    Ok(FileHash::from_hash(hasher.finalize()))
}
