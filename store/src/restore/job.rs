//! The walk of one restore: a snapshot's trees recreated under open directory descriptors.
//!
//! Entries of a directory are restored in parallel. A directory's own metadata is applied as
//! soon as everything below it is done (its descriptor is still open; nothing is looked up by
//! path again), except for directories that still receive hard links at the end, which get
//! theirs after the links. A failure of one entry (damaged data, no space, a name too long for
//! the target's file system, a directory swapped by another user) is recorded and the walk goes
//! on with every other entry; only a failing index stops it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rustix::fs::{FileType, Stat};

use super::at::{self, Dir};
use super::{Overwrite, RestoreOptions};
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::fsmeta;
use crate::id::{BlobId, TreeId};
use crate::index::BlobLocation;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::tally::{Counter, Warnings};
use crate::tree::{ChunkRef, Entry, EntryKind};
use crate::workers::lock;

/// Files up to this size without holes are written in one call.
const SMALL_FILE: u64 = 1 << 20;

/// The counts of `RestoreReport` as the workers add to them.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) files_written: Counter,
    pub(super) files_skipped: Counter,
    pub(super) dirs: Counter,
    pub(super) symlinks: Counter,
    pub(super) specials: Counter,
    pub(super) hardlinks: Counter,
    pub(super) bytes_written: Counter,
    pub(super) files_verified: Counter,
    pub(super) owner_failures: Counter,
    pub(super) leftovers_removed: Counter,
}

/// A destination directory held open for the walk below it, and for hard links made into it
/// at the end.
struct Held {
    dir: Dir,
    /// Set when a hard link will be made into it at the end: its metadata waits for that.
    links_pending: AtomicBool,
}

/// The first member of a hard-link group: where it was written, and which inode it became.
struct LinkSource {
    dir: Arc<Held>,
    name: OsString,
    written: Option<(u64, u64)>,
}

/// A further member of a hard-link group, linked at the end.
struct Deferred {
    dir: Arc<Held>,
    name: OsString,
    entry: Entry,
}

pub(super) struct Job<'a> {
    pub(super) repo: &'a Repo,
    pub(super) opts: &'a RestoreOptions,
    pub(super) includes: Vec<PathBuf>,
    /// The snapshot's source paths.
    pub(super) sources: Vec<PathBuf>,
    pub(super) excludes: Excludes,
    pub(super) progress: &'a dyn Progress,
    pub(super) root_user: bool,
    pub(super) counts: Counts,
    pub(super) damaged: Warnings,
    pub(super) failed: Warnings,
    pub(super) warnings: Warnings,
    /// An error that stops the whole restore (the index failing), first one wins.
    pub(super) fatal: Mutex<Option<Error>>,
    links: Mutex<HashMap<(u64, u64), LinkSource>>,
    /// Hard-link groups met in a dry run below directories that do not exist yet.
    dry_links: Mutex<std::collections::HashSet<(u64, u64)>>,
    deferred: Mutex<Vec<Deferred>>,
    /// Directories whose metadata waits for the hard links made into them.
    late_dirs: Mutex<Vec<(Arc<Held>, Entry)>>,
    tmp_counter: AtomicU64,
}

/// How an include path relates to an entry path.
pub(super) fn wanted(includes: &[PathBuf], path: &Path) -> Option<bool> {
    if includes.is_empty() {
        return Some(true);
    }
    let mut on_the_way = false;
    for inc in includes {
        if path.starts_with(inc) {
            return Some(true); // at or below an include: restore all of it
        }
        if inc.starts_with(path) {
            on_the_way = true; // an ancestor of an include: enter, restore only what is asked
        }
    }
    on_the_way.then_some(false)
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

impl<'a> Job<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        repo: &'a Repo,
        opts: &'a RestoreOptions,
        includes: Vec<PathBuf>,
        sources: Vec<PathBuf>,
        excludes: Excludes,
        progress: &'a dyn Progress,
    ) -> Self {
        Self {
            repo,
            opts,
            includes,
            sources,
            excludes,
            progress,
            root_user: fsmeta::is_root(),
            counts: Counts::default(),
            damaged: Warnings::default(),
            failed: Warnings::default(),
            warnings: Warnings::default(),
            fatal: Mutex::new(None),
            links: Mutex::new(HashMap::new()),
            dry_links: Mutex::new(std::collections::HashSet::new()),
            deferred: Mutex::new(Vec::new()),
            late_dirs: Mutex::new(Vec::new()),
            tmp_counter: AtomicU64::new(0),
        }
    }

    /// Restores the whole snapshot below `target` (the snapshot's `/`), then the hard links
    /// and the directories waiting for them.
    pub(super) fn run(&self, root: TreeId, target: Option<Dir>) -> Result<()> {
        let target = target.map(|dir| Arc::new(Held { dir, links_pending: AtomicBool::new(false) }));
        if let Some(t) = target.as_ref().filter(|_| self.sources.iter().any(|s| s == Path::new("/"))) {
            self.clean_leftovers(&t.dir); // the target itself is restored only for a snapshot of `/`
        }
        self.restore_tree(root, Path::new("/"), target.as_ref());
        if let Some(e) = lock(&self.fatal).take() {
            return Err(e);
        }
        self.finish();
        Ok(())
    }

    /// True for a directory strictly above the snapshot's source paths.
    fn above_sources(&self, snap_path: &Path) -> bool {
        self.sources.iter().any(|s| s != snap_path && s.starts_with(snap_path))
    }

    fn dest_of(&self, snap_path: &Path) -> PathBuf {
        let rel = snap_path.strip_prefix("/").unwrap_or(snap_path);
        self.opts.target.join(rel)
    }

    /// Records the failure of one entry and lets the walk go on; an index error stops it.
    fn fail(&self, snap_path: &Path, err: Error) {
        let dest = self.dest_of(snap_path);
        if matches!(err, Error::Index { .. }) {
            lock(&self.fatal).get_or_insert(err);
        } else if err.is_damage() {
            self.damaged.add(&dest, reason(&err));
        } else {
            self.failed.add(&dest, reason(&err));
        }
    }

    fn stopped(&self) -> bool {
        lock(&self.fatal).is_some()
    }

    fn clean_leftovers(&self, dir: &Dir) {
        if self.opts.dry_run {
            return;
        }
        match dir.remove_leftovers() {
            Ok(n) => self.counts.leftovers_removed.add(n),
            Err(e) => self.warnings.add(&dir.path, format!("cannot look for an interrupted restore's files: {e}")),
        }
    }

    /// Restores the entries of one directory, open as `dir` (`None` in a dry run when the
    /// directory does not exist yet).
    fn restore_tree(&self, tree_id: TreeId, snap_path: &Path, dir: Option<&Arc<Held>>) {
        let tree = match self.repo.load_tree(tree_id) {
            Ok(t) => t,
            Err(e) if e.is_damage() => {
                self.damaged.add(&self.dest_of(snap_path), format!("directory contents lost: {e}"));
                return;
            }
            Err(e) => return self.fail(snap_path, e),
        };
        let mut prev: Option<&[u8]> = None;
        let mut entries = Vec::with_capacity(tree.entries.len());
        for e in &tree.entries {
            let path = snap_path.join(OsStr::from_bytes(&e.name));
            if !e.has_safe_name() || prev == Some(e.name.as_slice()) {
                self.warnings.add(&path, format!("unsafe or duplicate entry name {:?} skipped", e.name_lossy()));
                continue;
            }
            prev = Some(e.name.as_slice());
            let Some(all) = wanted(&self.includes, &path) else {
                continue;
            };
            if self.excludes.excluded(&path, &e.name) {
                continue;
            }
            entries.push((e, path, all));
        }
        entries.into_par_iter().for_each(|(e, path, all)| {
            if self.stopped() {
                return;
            }
            if let Err(err) = self.restore_entry(e, &path, all, dir) {
                self.fail(&path, err);
            }
        });
    }

    fn restore_entry(&self, e: &Entry, snap_path: &Path, all: bool, dir: Option<&Arc<Held>>) -> Result<()> {
        let name = OsStr::from_bytes(&e.name);
        let dest = self.dest_of(snap_path);
        match e.kind {
            EntryKind::Dir => {
                // A directory only on the way to what is restored (above the source paths, or
                // above an include) keeps its own metadata unless this restore created it:
                // restoring /etc/nginx in place must not reset /etc.
                let on_the_way = !all || self.above_sources(snap_path);
                let opened = match dir {
                    Some(d) => self.ensure_dir(&d.dir, name, &dest, e, on_the_way)?,
                    None => None,
                };
                if dir.is_some() && opened.is_none() && !self.opts.dry_run {
                    return Ok(()); // skipped, with a warning
                }
                let created = opened.as_ref().is_some_and(|(_, c)| *c);
                let child = opened.map(|(d, _)| Arc::new(Held { dir: d, links_pending: AtomicBool::new(false) }));
                self.counts.dirs.add(1);
                if let Some(sub) = e.subtree {
                    self.restore_tree(sub, snap_path, child.as_ref());
                }
                if let Some(child) = child {
                    if !self.opts.dry_run && (!on_the_way || created) {
                        if child.links_pending.load(Ordering::SeqCst) {
                            lock(&self.late_dirs).push((child, e.clone()));
                        } else {
                            self.apply_dir_meta(&child.dir, e);
                        }
                    }
                }
                Ok(())
            }
            _ if !all => Ok(()), // not below an include
            EntryKind::File => self.restore_file(e, dir, name, &dest),
            EntryKind::Symlink => {
                self.make_entry(e, dir, name, &dest, &self.counts.symlinks, |d| d.symlink(&e.target, name))
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
                if e.kind != EntryKind::Fifo && !self.root_user {
                    self.warnings.add(&dest, "device node not restored (needs root)");
                    return Ok(());
                }
                self.make_entry(e, dir, name, &dest, &self.counts.specials, |d| d.mknod(name, e.kind, e.mode, e.rdev))
            }
        }
    }

    /// Makes a symlink or special file with `make` (once what is in its place may go), then
    /// its metadata; counted in `counter`, also in a dry run.
    fn make_entry(
        &self,
        e: &Entry,
        dir: Option<&Arc<Held>>,
        name: &OsStr,
        dest: &Path,
        counter: &Counter,
        make: impl FnOnce(&Dir) -> io::Result<()>,
    ) -> Result<()> {
        let Some(d) = dir.map(|d| &d.dir) else {
            counter.add(1);
            return Ok(());
        };
        if !self.clear_for(d, name, dest)? {
            return Ok(());
        }
        counter.add(1);
        if self.opts.dry_run {
            return Ok(());
        }
        make(d).map_err(|err| Error::io(dest, err))?;
        self.apply_meta_at(d, name, e, dest);
        Ok(())
    }

    /// Opens `name` in `parent` as a real directory, creating it when missing. Something else
    /// in its place is removed when the policy allows overwriting and the directory is one
    /// that is restored (the safety snapshot holds what was there); above what is restored it
    /// is never removed: that would lose a file or a symlinked `/opt` nobody asked to restore.
    /// `Some((dir, created))`, or `None` when skipped (or, in a dry run, missing).
    fn ensure_dir(
        &self,
        parent: &Dir,
        name: &OsStr,
        dest: &Path,
        e: &Entry,
        on_the_way: bool,
    ) -> Result<Option<(Dir, bool)>> {
        let io_err = |err: io::Error| Error::io(dest, err);
        let created = match parent.stat(name).map_err(io_err)? {
            Some(st) if file_type(&st) == FileType::Directory => false,
            Some(_) if on_the_way => {
                self.failed.add(
                    dest,
                    "not a directory, and above what is restored: left as it is, nothing below it restored \
                     (restore into another --target, or move it away)",
                );
                return Ok(None);
            }
            Some(_) if self.opts.overwrite == Overwrite::Never => {
                self.failed.add(dest, "exists and is not a directory; skipped (--overwrite never)");
                return Ok(None);
            }
            Some(_) if self.opts.dry_run => return Ok(None),
            Some(_) => {
                parent.remove_file(name).map_err(io_err)?;
                parent.mkdir(name).map_err(io_err)?;
                true
            }
            None if self.opts.dry_run => return Ok(None),
            None => {
                parent.mkdir(name).map_err(io_err)?;
                true
            }
        };
        crate::failpoint::hit("restore.dir_created");
        let d = match parent.open_dir(name) {
            Ok(d) => d,
            Err(err) if at::is_swapped(&err) => {
                self.failed.add(dest, "replaced by something else while it was restored (never followed); skipped");
                return Ok(None);
            }
            Err(err) => return Err(io_err(err)),
        };
        // A directory this restore made is its own: one that another user put in its place
        // between mkdir and open (theirs, so they could read what is written into it) is not.
        if created && !self.opts.dry_run {
            let st = rustix::fs::fstat(d.file()).map_err(|e| io_err(e.into()))?;
            if st.st_uid != rustix::process::geteuid().as_raw() {
                self.failed.add(dest, "replaced by another user's directory while it was restored; skipped");
                return Ok(None);
            }
        }
        if !on_the_way || created {
            if self.root_user {
                // Its owner and mode before anything is written into it, so that a directory
                // another user owns does not expose what a root restore puts there; and a
                // directory made on the way gets its mode even if the restore is killed.
                // Times follow when everything below it is done.
                self.secure_dir(&d, e);
            }
            if !on_the_way && !created {
                self.clean_leftovers(&d);
            }
        }
        Ok(Some((d, created)))
    }

    fn secure_dir(&self, d: &Dir, e: &Entry) {
        use std::os::unix::fs::PermissionsExt;
        if let Err(err) = std::os::unix::fs::fchown(d.file(), Some(e.uid), Some(e.gid)) {
            self.warnings.add(&d.path, format!("cannot set owner: {err}"));
        }
        if let Err(err) = d.file().set_permissions(std::fs::Permissions::from_mode(e.mode)) {
            self.warnings.add(&d.path, format!("cannot set mode: {err}"));
        }
    }

    /// Prepares the destination of a non-file entry: true when it may be created.
    fn clear_for(&self, dir: &Dir, name: &OsStr, dest: &Path) -> Result<bool> {
        match dir.stat(name).map_err(|e| Error::io(dest, e))? {
            None => Ok(true),
            Some(_) if self.opts.overwrite == Overwrite::Never => {
                self.counts.files_skipped.add(1);
                Ok(false)
            }
            Some(st) if file_type(&st) == FileType::Directory => {
                self.failed.add(dest, "a directory is in the way; not replaced");
                Ok(false)
            }
            Some(_) if self.opts.dry_run => Ok(true),
            Some(_) => {
                dir.remove_file(name).map_err(|e| Error::io(dest, e))?;
                Ok(true)
            }
        }
    }

    fn restore_file(&self, e: &Entry, dir: Option<&Arc<Held>>, name: &OsStr, dest: &Path) -> Result<()> {
        let Some(held) = dir else {
            // A dry run below a directory that does not exist yet: all of it would be written,
            // the further members of a hard-link group as links.
            if e.nlink > 1 && e.dev != 0 && !lock(&self.dry_links).insert((e.dev, e.inode)) {
                self.counts.hardlinks.add(1);
            } else {
                self.counts.files_written.add(1);
                self.counts.bytes_written.add(e.size);
            }
            return Ok(());
        };
        let d = &held.dir;
        if e.nlink > 1 && e.dev != 0 {
            let mut links = lock(&self.links);
            if links.contains_key(&(e.dev, e.inode)) {
                drop(links);
                held.links_pending.store(true, Ordering::SeqCst);
                lock(&self.deferred).push(Deferred {
                    dir: Arc::clone(held),
                    name: name.to_os_string(),
                    entry: e.clone(),
                });
                return Ok(());
            }
            links.insert(
                (e.dev, e.inode),
                LinkSource { dir: Arc::clone(held), name: name.to_os_string(), written: None },
            );
        }
        self.write_file(e, d, name, dest).map(|written| {
            if let (Some(ino), true) = (written, e.nlink > 1 && e.dev != 0) {
                if let Some(src) = lock(&self.links).get_mut(&(e.dev, e.inode)) {
                    src.written = Some(ino);
                }
            }
        })
    }

    /// Writes one file (or leaves it as it is); the (dev, inode) now holding the snapshot's
    /// content there, if any.
    fn write_file(&self, e: &Entry, d: &Dir, name: &OsStr, dest: &Path) -> Result<Option<(u64, u64)>> {
        let io_err = |err: io::Error| Error::io(dest, err);
        if let Some(existing) = d.stat(name).map_err(io_err)? {
            if file_type(&existing) == FileType::Directory {
                self.failed.add(dest, "a directory is in the way; file not restored");
                return Ok(None);
            }
            match self.opts.overwrite {
                Overwrite::Never => {
                    self.counts.files_skipped.add(1);
                    self.progress.inc(e.size);
                    return Ok(None);
                }
                Overwrite::IfChanged if file_type(&existing) == FileType::RegularFile => {
                    if let Some(kept) = self.keep_if_same(e, d, name, dest) {
                        self.counts.files_skipped.add(1);
                        self.progress.inc(e.size);
                        return Ok(Some(kept));
                    }
                }
                _ => {}
            }
        }
        if self.opts.dry_run {
            self.counts.files_written.add(1);
            self.counts.bytes_written.add(e.size);
            return Ok(None);
        }
        let (file, tmp) = d.create_temp(&self.tmp_counter).map_err(io_err)?;
        let verified = self.write_content(e, &file, dest).and_then(|()| {
            // Checked before it replaces anything: a file that fails its hash is never put in place.
            if !self.opts.verify {
                return Ok(false);
            }
            match at::hash_open_file(&file) {
                Ok(h) if Some(h) == e.file_hash => Ok(true),
                Ok(_) => Err(Error::HashMismatch {
                    what: "restored file (its stored BLAKE3 differs)",
                    id: dest.display().to_string(),
                }),
                Err(err) => Err(io_err(err)),
            }
        });
        let placed = verified.and_then(|verified| {
            // setuid/setgid only once the file is in place: a killed restore never leaves a
            // set-id copy under a temporary name.
            self.apply_file_meta(&file, e, dest, e.mode & !0o6000);
            crate::failpoint::hit("restore.temp_written");
            d.rename(&tmp, name).map_err(io_err).map(|()| verified)
        });
        let verified = match placed {
            Ok(v) => v,
            Err(err) => {
                let _ = d.remove_file(&tmp);
                return Err(err);
            }
        };
        crate::failpoint::hit("restore.file_written");
        if e.mode & 0o6000 != 0 {
            use std::os::unix::fs::PermissionsExt;
            if let Err(err) = file.set_permissions(std::fs::Permissions::from_mode(e.mode)) {
                self.warnings.add(dest, format!("cannot set mode: {err}"));
            }
        }
        self.counts.files_written.add(1);
        self.counts.bytes_written.add(e.size);
        if verified {
            self.counts.files_verified.add(1);
        }
        let st = rustix::fs::fstat(&file).map_err(|e| io_err(e.into()))?;
        Ok(Some((st.st_dev, st.st_ino)))
    }

    /// `if-changed`: the existing file is kept when it has the snapshot's content. It is opened
    /// once (never through a symlink) and judged, and its metadata set, through that one
    /// descriptor. Size and mtime vouch for the content only when owner and mode match too;
    /// before a kept file gets another owner or mode its content is hashed, so a file another
    /// user replaced (keeping size and mtime) never becomes theirs-with-root's-setuid. A file
    /// with other hard links is never kept: its inode may be shared with a file outside the
    /// target, which must not get the snapshot's metadata.
    fn keep_if_same(&self, e: &Entry, d: &Dir, name: &OsStr, dest: &Path) -> Option<(u64, u64)> {
        let f = d.open_regular(name).ok()??;
        let st = rustix::fs::fstat(&f).ok()?;
        if st.st_nlink > 1 || u64::try_from(st.st_size).ok() != Some(e.size) {
            return None;
        }
        let owner_same = !self.root_user || (st.st_uid == e.uid && st.st_gid == e.gid);
        let meta_same = owner_same && st.st_mode & 0o7777 == e.mode & 0o7777;
        let mtime_same = fsmeta::timestamp(st.st_mtime, i64::try_from(st.st_mtime_nsec).unwrap_or(0)) == e.mtime;
        let content_same =
            (meta_same && mtime_same) || (e.file_hash.is_some() && at::hash_open_file(&f).ok() == e.file_hash);
        if !content_same {
            return None;
        }
        if !self.opts.dry_run {
            self.apply_file_meta(&f, e, dest, e.mode);
        }
        Some((st.st_dev, st.st_ino))
    }

    /// A chunk's bytes, which must be as long as the file's list says.
    fn fetch(&self, c: &ChunkRef, loc: Option<&BlobLocation>) -> Result<Vec<u8>> {
        let loc = loc.ok_or_else(|| Error::Missing { what: "chunk", id: c.id.to_hex() })?;
        let data = self.repo.read_located(loc)?;
        if data.len() != c.len as usize {
            return Err(misfit(c));
        }
        Ok(data)
    }

    /// Writes a file's content into its new temporary file; holes stay holes.
    fn write_content(&self, e: &Entry, file: &File, dest: &Path) -> Result<()> {
        let io_err = |err: io::Error| Error::io(dest, err);
        let ids: Vec<BlobId> = e.content.iter().map(|c| BlobId::from(c.id)).collect();
        let locations = self.repo.index.locate_many(&ids)?;
        // A small file without holes is assembled in memory and written with one call, instead
        // of one write per 4 KiB chunk (most files of a source tree are one to a few chunks).
        let mut next = 0u64;
        let dense = e.size <= SMALL_FILE
            && e.content.iter().all(|c| {
                let at = next;
                next = next.saturating_add(u64::from(c.len));
                c.offset == at
            })
            && next == e.size;
        if dense {
            let mut buf = Vec::with_capacity(e.size as usize);
            for (c, loc) in e.content.iter().zip(&locations) {
                buf.extend_from_slice(&self.fetch(c, loc.as_ref())?);
            }
            file.write_all_at(&buf, 0).map_err(io_err)?;
            self.progress.inc(e.size);
            return Ok(());
        }
        file.set_len(e.size).map_err(io_err)?;
        let write = |(c, loc): (&ChunkRef, &Option<BlobLocation>)| -> Result<()> {
            let data = self.fetch(c, loc.as_ref())?;
            if c.offset.checked_add(u64::from(c.len)).is_none_or(|end| end > e.size) {
                return Err(misfit(c));
            }
            file.write_all_at(&data, c.offset).map_err(io_err)?;
            self.progress.inc(data.len() as u64);
            Ok(())
        };
        if e.content.len() > 8 {
            e.content.par_iter().zip(locations.par_iter()).try_for_each(write)
        } else {
            e.content.iter().zip(locations.iter()).try_for_each(write)
        }
    }

    /// Owner (root only; others count it), then mode (chown clears setuid), extended
    /// attributes and times, all through the open file. Failures are warnings: the data is
    /// what matters.
    fn apply_file_meta(&self, f: &File, e: &Entry, path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        if self.owner_wanted(e) {
            if let Err(err) = std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid)) {
                self.warnings.add(path, format!("cannot set owner: {err}"));
            }
        }
        if let Err(err) = f.set_permissions(std::fs::Permissions::from_mode(mode)) {
            self.warnings.add(path, format!("cannot set mode: {err}"));
        }
        for (key, value) in &e.xattrs {
            if let Err(err) = xattr::FileExt::set_xattr(f, OsStr::from_bytes(key), value) {
                self.warnings.add(path, format!("cannot set extended attributes: {err}"));
                break;
            }
        }
        if let Err(err) = at::set_fd_times(f, e.mtime) {
            self.warnings.add(path, format!("cannot set times: {err}"));
        }
    }

    fn apply_dir_meta(&self, d: &Dir, e: &Entry) {
        self.apply_file_meta(d.file(), e, &d.path, e.mode);
    }

    /// Metadata of a symlink or special file just made: owner and mode through an `O_PATH`
    /// descriptor checked to be what was made, times and attributes by name without following.
    fn apply_meta_at(&self, d: &Dir, name: &OsStr, e: &Entry, path: &Path) {
        let made = match d.open_made(name, e.kind) {
            Ok(m) => m,
            Err(err) => return self.failed.add(path, err.to_string()),
        };
        if self.owner_wanted(e) {
            if let Err(err) = made.chown(e.uid, e.gid) {
                self.warnings.add(path, format!("cannot set owner: {err}"));
            }
        }
        if let Err(err) = made.chmod(e.mode) {
            self.warnings.add(path, format!("cannot set mode: {err}"));
        }
        if !e.xattrs.is_empty() {
            if let Err(err) = d.set_xattrs_at(name, &e.xattrs) {
                self.warnings.add(path, format!("cannot set extended attributes: {err}"));
            }
        }
        if let Err(err) = d.times_at(name, e.mtime) {
            self.warnings.add(path, format!("cannot set times: {err}"));
        }
    }

    /// True when this restore sets owners; a non-root restore counts the entries it cannot
    /// give their owner (one summary warning).
    fn owner_wanted(&self, e: &Entry) -> bool {
        if self.root_user {
            return true;
        }
        if e.uid != rustix::process::geteuid().as_raw() || e.gid != rustix::process::getegid().as_raw() {
            self.counts.owner_failures.add(1);
        }
        false
    }

    /// Links the remaining members of hard-link groups, then applies the metadata of the
    /// directories that received them.
    fn finish(&self) {
        let deferred = std::mem::take(&mut *lock(&self.deferred));
        for d in deferred {
            let dest = d.dir.dir.child_path(&d.name);
            if let Err(err) = self.link_member(&d, &dest) {
                let list = if err.is_damage() { &self.damaged } else { &self.failed };
                list.add(&dest, reason(&err));
            }
        }
        let mut late = std::mem::take(&mut *lock(&self.late_dirs));
        late.sort_by_key(|(h, _)| std::cmp::Reverse(h.dir.path.components().count()));
        for (held, e) in &late {
            self.apply_dir_meta(&held.dir, e);
        }
    }

    fn link_member(&self, d: &Deferred, dest: &Path) -> Result<()> {
        let io_err = |err: io::Error| Error::io(dest, err);
        let e = &d.entry;
        let (src_dir, src_name, written) = {
            let links = lock(&self.links);
            let Some(src) = links.get(&(e.dev, e.inode)) else {
                return Ok(());
            };
            (Arc::clone(&src.dir), src.name.clone(), src.written)
        };
        // The first member must still be the inode this run wrote (or left unchanged).
        let now = src_dir.dir.stat(&src_name).map_err(io_err)?;
        if self.opts.dry_run {
            // As the real run would: a link is made unless the first member is kept and this
            // member already is that very file.
            let kept = matches!((now, written), (Some(st), Some(w)) if (st.st_dev, st.st_ino) == w);
            let here = d.dir.dir.stat(&d.name).map_err(io_err)?;
            let same = kept && here.zip(now).is_some_and(|(h, f)| (h.st_dev, h.st_ino) == (f.st_dev, f.st_ino));
            if !same {
                self.counts.hardlinks.add(1);
            }
            return Ok(());
        }
        let first_ok = matches!((now, written), (Some(st), Some(w)) if (st.st_dev, st.st_ino) == w);
        if !first_ok {
            // The first member could not be written (damage), was left with other content
            // (`--overwrite never`), or was changed since: this one is restored on its own.
            let mut alone = e.clone();
            alone.nlink = 1;
            return self.write_file(&alone, &d.dir.dir, &d.name, dest).map(|_| ());
        }
        if let Some(st) = d.dir.dir.stat(&d.name).map_err(io_err)? {
            let same = now.is_some_and(|f| (f.st_dev, f.st_ino) == (st.st_dev, st.st_ino));
            if self.opts.overwrite == Overwrite::Never || same {
                return Ok(());
            }
            if file_type(&st) == FileType::Directory {
                self.failed.add(dest, "a directory is in the way; hard link not restored");
                return Ok(());
            }
            d.dir.dir.remove_file(&d.name).map_err(io_err)?;
        }
        let Some(want) = written else { return Ok(()) };
        crate::failpoint::hit("restore.before_link");
        if !d.dir.dir.link_verified(&src_dir.dir, &src_name, want, &d.name).map_err(io_err)? {
            // Changed between the check above and now: this member is restored on its own.
            let mut alone = e.clone();
            alone.nlink = 1;
            return self.write_file(&alone, &d.dir.dir, &d.name, dest).map(|_| ());
        }
        self.counts.hardlinks.add(1);
        Ok(())
    }
}

/// What went wrong with an entry, without its path again (the list names the path).
fn reason(err: &Error) -> String {
    match err {
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

fn misfit(c: &ChunkRef) -> Error {
    Error::corrupt(format!("chunk {}", c.id), "does not fit the file it belongs to")
}
