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
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rustix::fs::{FileType, Stat};

use super::at::{self, Dir};
use super::fetch::{Pipeline, Plan};
use super::{Overwrite, RestoreAction, RestoreOptions};
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::fsmeta;
use crate::id::TreeId;
use crate::index::BlobLocation;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::tally::{Counter, Warnings};
use crate::tree::{Entry, EntryKind};
use crate::workers::lock;

/// The first member of a hard-link group: where it was written, and which inode it became.
pub(super) struct LinkSource {
    pub(super) dir: Arc<Held>,
    pub(super) name: OsString,
    pub(super) written: Option<(u64, u64)>,
}

/// A further member of a hard-link group, linked at the end.
pub(super) struct Deferred {
    pub(super) dir: Arc<Held>,
    pub(super) name: OsString,
    pub(super) entry: Entry,
}

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
    pub(super) deleted: Counter,
}

/// A destination directory held open for the walk below it, for the files the pipeline writes
/// into it, and for hard links made into it at the end.
pub(super) struct Held {
    pub(super) dir: Dir,
    /// Made by this restore (and, not being the target, held only by its owner): every file
    /// goes in new, so it is created under its own name, with no look at what is there
    /// (`O_EXCL`: something put there meanwhile is never followed, and is replaced as an
    /// existing file would be).
    pub(super) fresh: bool,
    /// Set when a hard link will be made into it at the end: its metadata waits for that.
    pub(super) links_pending: AtomicBool,
    /// Files handed to the pipeline and not yet placed, and the metadata waiting for them.
    pub(super) waiting: Mutex<Waiting>,
    /// Where the chunks of its files are, found for many files at once (fetch.rs), by name.
    pub(super) located: Mutex<HashMap<OsString, Vec<Option<BlobLocation>>>>,
}

/// What a directory's metadata waits for (fetch.rs).
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) files: usize,
    pub(super) meta: Option<Entry>,
}

impl Held {
    fn new(dir: Dir, fresh: bool) -> Arc<Self> {
        Arc::new(Self {
            dir,
            fresh,
            links_pending: AtomicBool::new(false),
            waiting: Mutex::default(),
            located: Mutex::default(),
        })
    }
}

pub(super) struct Job<'a> {
    pub(super) repo: &'a Repo,
    pub(super) opts: &'a RestoreOptions,
    pub(super) includes: Vec<PathBuf>,
    /// The snapshot's source paths.
    pub(super) sources: Vec<PathBuf>,
    pub(super) excludes: Excludes,
    /// What the snapshot itself left out (its exclude patterns): `--delete` keeps it, since
    /// the snapshot not having it says nothing about whether it should be there.
    pub(super) left_out: Excludes,
    /// The repository's folder (device, inode), when local: `--delete` never removes it (a
    /// snapshot leaves out the repository it is stored in, so it never has it).
    pub(super) repository: Option<(u64, u64)>,
    pub(super) progress: &'a dyn Progress,
    pub(super) root_user: bool,
    pub(super) counts: Counts,
    pub(super) damaged: Warnings,
    pub(super) failed: Warnings,
    pub(super) warnings: Warnings,
    /// An error that stops the whole restore (the index failing), first one wins.
    pub(super) fatal: Mutex<Option<Error>>,
    pub(super) links: Mutex<HashMap<(u64, u64), LinkSource>>,
    /// Hard-link groups met in a dry run below directories that do not exist yet.
    pub(super) dry_links: Mutex<std::collections::HashSet<(u64, u64)>>,
    pub(super) deferred: Mutex<Vec<Deferred>>,
    /// Directories whose metadata waits for the hard links made into them.
    pub(super) late_dirs: Mutex<Vec<(Arc<Held>, Entry)>>,
    pub(super) tmp_counter: AtomicU64,
    /// What was done (or, in a dry run, would be) to each path, with `list_changes`.
    /// Paths, not strings: the safety snapshot is taken of them, whatever bytes they hold.
    pub(super) changes: Mutex<Vec<(PathBuf, RestoreAction)>>,
    /// Where file content is fetched and written (fetch.rs).
    pub(super) pipeline: Pipeline,
}

/// Whether `--delete` prunes a directory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Prune {
    /// Above what is restored (or without `--delete`): never here, but a restored directory
    /// below starts pruning, on its own file system.
    Above,
    /// Restored as a whole: pruned, staying on this mount (a bind mount of the same file
    /// system is another one).
    On(at::Mount),
    /// Not here and not below: a directory this restore created, or one on another file
    /// system than the restored directory above it (a mount point: `/dev` below `/`).
    Off,
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

pub(super) fn file_type(st: &Stat) -> FileType {
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
        left_out: Excludes,
        progress: &'a dyn Progress,
    ) -> Self {
        use std::os::unix::fs::MetadataExt;
        let repository = repo.location.as_local().and_then(|p| std::fs::metadata(p).ok()).map(|m| (m.dev(), m.ino()));
        Self {
            repo,
            opts,
            includes,
            sources,
            excludes,
            left_out,
            repository,
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
            changes: Mutex::new(Vec::new()),
            pipeline: Pipeline::new(Plan::for_repo(repo, opts.threads)),
        }
    }

    /// Restores the whole snapshot below `target` (the snapshot's `/`), then the hard links
    /// and the directories waiting for them.
    pub(super) fn run(&self, root: TreeId, target: Option<Dir>) -> Result<()> {
        let target = target.map(|t| Held::new(t, false));
        // The target itself is restored only for a snapshot of `/`.
        let whole = self.sources.iter().any(|s| s == Path::new("/"));
        if let Some(t) = target.as_ref().filter(|_| whole) {
            self.clean_leftovers(&t.dir);
        }
        let prune = match &target {
            Some(t) if self.opts.delete && whole && wanted(&self.includes, Path::new("/")) == Some(true) => {
                match at::mount_of(t.dir.file()) {
                    Ok(m) => Prune::On(m),
                    Err(e) => {
                        self.failed.add(&t.dir.path, format!("nothing deleted: {e}"));
                        Prune::Off
                    }
                }
            }
            _ => Prune::Above,
        };
        self.with_workers(|| self.restore_tree(root, Path::new("/"), target.as_ref(), prune));
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

    /// Notes what is done to `dest` (with `list_changes`).
    pub(super) fn change(&self, dest: &Path, action: RestoreAction) {
        if self.opts.list_changes {
            lock(&self.changes).push((dest.to_path_buf(), action));
        }
    }

    /// `--delete`: removes what `dir` (the restored directory `snap_path`, whose snapshot
    /// entries are `tree`) holds and the snapshot does not. Excluded names are protected, as
    /// are the temporary files of restores (leftovers go their own way), and nothing is
    /// followed: see `Dir::remove_all`.
    fn prune(&self, dir: &Dir, snap_path: &Path, tree: &crate::tree::Tree) {
        let names = match dir.names() {
            Ok(n) => n,
            Err(e) => return self.failed.add(&dir.path, format!("cannot list what to delete: {e}")),
        };
        let known: std::collections::HashSet<&[u8]> = tree.entries.iter().map(|e| e.name.as_slice()).collect();
        // Kept wherever it is met, below a deleted directory too: what `--exclude` or the
        // snapshot's own excludes name, and the repository.
        let keep = |rel: &Path, st: &Stat| {
            let name = rel.file_name().map_or(&[][..], OsStr::as_bytes);
            let path = snap_path.join(rel);
            self.excludes.excluded(&path, name)
                || self.left_out.excluded(&path, name)
                || (file_type(st) == FileType::Directory && self.repository == Some((st.st_dev, st.st_ino)))
        };
        for name in names {
            let bytes = name.as_bytes();
            if known.contains(bytes) || bytes.starts_with(at::TEMP_PREFIX.as_bytes()) {
                continue;
            }
            dir.remove_all(&name, self.opts.dry_run, &keep, &mut |path, done| match done {
                Ok(()) => {
                    self.counts.deleted.add(1);
                    self.change(&path, RestoreAction::Delete);
                }
                Err(e) if e.kind() == io::ErrorKind::CrossesDevices => self.warnings.add(&path, e.to_string()),
                Err(e) => self.failed.add(&path, format!("not deleted: {e}")),
            });
        }
    }

    /// Records the failure of one entry and lets the walk go on; an index error stops it.
    fn fail(&self, snap_path: &Path, err: Error) {
        self.fail_at(&self.dest_of(snap_path), err);
    }

    /// `fail`, for the entry restored at `dest`.
    pub(super) fn fail_at(&self, dest: &Path, err: Error) {
        if matches!(err, Error::Index { .. }) {
            lock(&self.fatal).get_or_insert(err);
        } else if err.is_damage() {
            self.damaged.add(dest, reason(&err));
        } else {
            self.failed.add(dest, reason(&err));
        }
    }

    pub(super) fn stopped(&self) -> bool {
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
    /// directory does not exist yet); when it is pruned (`--delete`, a directory restored as a
    /// whole), first removes what the snapshot does not have there.
    fn restore_tree(&self, tree_id: TreeId, snap_path: &Path, dir: Option<&Arc<Held>>, prune: Prune) {
        let tree = match self.repo.load_tree(tree_id) {
            Ok(t) => t,
            Err(e) if e.is_damage() => {
                self.damaged.add(&self.dest_of(snap_path), format!("directory contents lost: {e}"));
                return;
            }
            Err(e) => return self.fail(snap_path, e),
        };
        if let Some(d) = dir.filter(|_| matches!(prune, Prune::On(_))) {
            self.prune(&d.dir, snap_path, &tree);
        }
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
        if let Some(d) = dir.filter(|d| d.fresh && !self.opts.dry_run) {
            let files = entries.iter().filter(|(e, _, all)| *all && e.kind == EntryKind::File).map(|(e, _, _)| *e);
            self.locate_ahead(d, files);
        }
        entries.into_par_iter().for_each(|(e, path, all)| {
            if self.stopped() {
                return;
            }
            if let Err(err) = self.restore_entry(e, &path, all, dir, prune) {
                self.fail(&path, err);
            }
        });
    }

    fn restore_entry(
        &self,
        e: &Entry,
        snap_path: &Path,
        all: bool,
        dir: Option<&Arc<Held>>,
        prune: Prune,
    ) -> Result<()> {
        let name = OsStr::from_bytes(&e.name);
        let dest = self.dest_of(snap_path);
        match e.kind {
            EntryKind::Dir => {
                // A directory only on the way to what is restored (above the source paths, or
                // above an include) keeps its own metadata unless this restore created it:
                // restoring /etc/nginx in place must not reset /etc.
                let on_the_way = (!all || self.above_sources(snap_path))
                    && !self.opts.dir_meta_below.iter().any(|p| snap_path.starts_with(p));
                let opened = match dir {
                    Some(d) => self.ensure_dir(&d.dir, name, &dest, e, on_the_way)?,
                    None => {
                        self.change(&dest, RestoreAction::Create); // a dry run below a missing directory
                        None
                    }
                };
                if dir.is_some() && opened.is_none() && !self.opts.dry_run {
                    return Ok(()); // skipped, with a warning
                }
                let created = opened.as_ref().is_some_and(|(_, c)| *c);
                let child = opened.map(|(d, created)| Held::new(d, created));
                self.counts.dirs.add(1);
                if let Some(sub) = e.subtree {
                    let below = self.prune_below(prune, child.as_deref(), on_the_way, created, &dest);
                    self.restore_tree(sub, snap_path, child.as_ref(), below);
                }
                if let Some(child) = child {
                    if !self.opts.dry_run && (!on_the_way || created) {
                        if child.links_pending.load(Ordering::SeqCst) {
                            lock(&self.late_dirs).push((child, e.clone()));
                        } else {
                            self.dir_done(&child, e);
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

    /// Whether `--delete` prunes the directory `child` (open, or `None`), below a directory
    /// pruned as `parent` says.
    fn prune_below(&self, parent: Prune, child: Option<&Held>, on_the_way: bool, created: bool, dest: &Path) -> Prune {
        let Some(child) = child.filter(|_| self.opts.delete && parent != Prune::Off) else {
            return Prune::Off;
        };
        if on_the_way {
            return Prune::Above;
        }
        if created {
            return Prune::Off; // nothing there to delete
        }
        let mount = match at::mount_of(child.dir.file()) {
            Ok(m) => m,
            Err(e) => {
                self.failed.add(dest, format!("nothing below it deleted: {e}"));
                return Prune::Off;
            }
        };
        match parent {
            Prune::On(m) if m != mount => {
                self.warnings.add(dest, "on another file system (a mount point): --delete removes nothing below it");
                Prune::Off
            }
            _ => Prune::On(mount),
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
            self.change(dest, RestoreAction::Create);
            return Ok(());
        };
        let Some(action) = self.clear_for(d, name, dest, e)? else {
            return Ok(());
        };
        counter.add(1);
        if self.opts.dry_run {
            self.change(dest, action);
            return Ok(());
        }
        make(d).map_err(|err| Error::io(dest, err))?;
        self.change(dest, action);
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
            Some(_) if self.opts.dry_run => {
                self.change(dest, RestoreAction::Overwrite);
                return Ok(None);
            }
            Some(_) => {
                parent.remove_file(name).map_err(io_err)?;
                parent.mkdir(name).map_err(io_err)?;
                self.change(dest, RestoreAction::Overwrite);
                true
            }
            None if self.opts.dry_run => {
                self.change(dest, RestoreAction::Create);
                return Ok(None);
            }
            None => {
                parent.mkdir(name).map_err(io_err)?;
                self.change(dest, RestoreAction::Create);
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
            // Not in a dry run: it changes nothing, and the one a safety snapshot is planned by
            // runs before that snapshot sees the directory.
            if self.root_user && !self.opts.dry_run {
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

    /// Prepares the destination of a non-file entry: what making it does there, or `None`
    /// when it is not made (kept as it is, or skipped).
    fn clear_for(&self, dir: &Dir, name: &OsStr, dest: &Path, e: &Entry) -> Result<Option<RestoreAction>> {
        match dir.stat(name).map_err(|e| Error::io(dest, e))? {
            None => Ok(Some(RestoreAction::Create)),
            Some(_) if self.opts.overwrite == Overwrite::Never => {
                self.counts.files_skipped.add(1);
                Ok(None)
            }
            Some(st) if file_type(&st) == FileType::Directory => {
                self.failed.add(dest, "a directory is in the way; not replaced");
                Ok(None)
            }
            Some(st) if self.opts.overwrite == Overwrite::IfChanged && self.same_special(dir, name, &st, e) => {
                self.counts.files_skipped.add(1);
                Ok(None)
            }
            Some(_) if self.opts.dry_run => Ok(Some(RestoreAction::Overwrite)),
            Some(_) => {
                dir.remove_file(name).map_err(|e| Error::io(dest, e))?;
                Ok(Some(RestoreAction::Overwrite))
            }
        }
    }

    /// `if-changed` for a symlink or special file: the existing one is kept when it is already
    /// what the snapshot holds, metadata included (it is not touched at all), so that an
    /// in-place restore neither replaces nor saves in its safety snapshot what it would make
    /// again identically.
    fn same_special(&self, dir: &Dir, name: &OsStr, st: &Stat, e: &Entry) -> bool {
        let kind = match e.kind {
            EntryKind::Symlink => FileType::Symlink,
            EntryKind::Fifo => FileType::Fifo,
            EntryKind::CharDevice => FileType::CharacterDevice,
            EntryKind::BlockDevice => FileType::BlockDevice,
            _ => return false,
        };
        if file_type(st) != kind
            || (self.root_user && (st.st_uid, st.st_gid) != (e.uid, e.gid))
            || fsmeta::timestamp(st.st_mtime, i64::try_from(st.st_mtime_nsec).unwrap_or(0)) != e.mtime
        {
            return false;
        }
        if kind == FileType::Symlink {
            dir.read_link(name).is_ok_and(|t| t == e.target)
        } else {
            st.st_mode & 0o7777 == e.mode & 0o7777 && st.st_rdev == e.rdev && e.xattrs.is_empty()
        }
    }
}

/// What went wrong with an entry, without its path again (the list names the path).
pub(super) fn reason(err: &Error) -> String {
    match err {
        Error::Io { source, .. } => source.to_string(),
        Error::Backend(b) => b.source.to_string(),
        other => other.to_string(),
    }
}
