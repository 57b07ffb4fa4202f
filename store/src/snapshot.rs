//! The snapshot pipeline: walk → chunk / hash / compress (rayon) → pack writer thread → trees →
//! record.
//!
//! Directories are processed in parallel (rayon work stealing over the entries of each directory,
//! recursively), and the chunks of one large file are hashed and compressed in parallel one buffer
//! at a time. Blobs go through a bounded channel to one writer thread, which fills packs, makes
//! each durable and indexes it. Memory is bounded by the work in flight: a read buffer per file
//! being read, the channel, and the two packs being filled. The record is written last, after the
//! writer has made every pack durable and indexed (invariant 1).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;

use crate::backend::FileKind;
use crate::chunker::Chunker;
use crate::error::{Error, IoContext, Result};
use crate::fsmeta::{self, Meta, Names};
use crate::id::{BlobId, ChunkId, FileHash, SnapshotId, TreeId};
use crate::pack::{self, BlobKind, PackWriter, SealedFrame, FRAME_TARGET};
use crate::progress::{Progress, Unit};
use crate::record::{SnapshotKind, SnapshotRecord, SnapshotTotals};
use crate::repo::{now_secs, Repo, Snapshot};
use crate::tree::{ChunkRef, Entry, EntryKind, Tree};

/// Read buffer of one file being chunked. Large enough for several chunks, so that the chunks of
/// one buffer can be compressed in parallel.
const READ_BUFFER: usize = 4 << 20;
/// Blobs waiting for the writer thread (each at most `max_size` bytes).
const CHANNEL_DEPTH: usize = 64;

/// What to snapshot and how.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SnapshotOptions {
    /// Source paths (made absolute; need not be canonical).
    pub paths: Vec<PathBuf>,
    /// Change-detection kind.
    pub kind: SnapshotKind,
    /// Optional label.
    pub label: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Glob patterns to leave out: a pattern without `/` matches a name anywhere, one with `/`
    /// matches the whole absolute path.
    pub excludes: Vec<String>,
    /// Do not cross into other filesystems below a source path.
    pub one_file_system: bool,
    /// Read and hash everything, store nothing.
    pub dry_run: bool,
    /// Host name to record instead of this machine's.
    pub host: Option<String>,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Store a source path that is a symlink as the link instead of following it: a restore's
    /// safety snapshot must not read through a link the restore is about to replace.
    pub no_follow_sources: bool,
}

impl SnapshotOptions {
    /// Options for a snapshot of `paths` with everything else at its default.
    #[must_use]
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, ..Self::default() }
    }
}

/// A file that could not be (fully) snapshotted.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Warning {
    /// The path (lossy UTF-8).
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// What a snapshot run did.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotReport {
    /// The new snapshot's ID (none on a dry run).
    pub id: Option<String>,
    /// The snapshot trusted for change detection.
    pub parent: Option<String>,
    /// Kind.
    pub kind: SnapshotKind,
    /// Start time, RFC 3339.
    pub time: String,
    /// Host.
    pub host: String,
    /// Source paths.
    pub paths: Vec<String>,
    /// Label.
    pub label: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Counts and byte totals.
    #[serde(flatten)]
    pub totals: SnapshotTotals,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// True when nothing was stored.
    pub dry_run: bool,
    /// Files left out or stored with a caveat.
    pub warnings: Vec<Warning>,
    /// What is worth knowing but left nothing out that was asked for: a source given as a
    /// symlink and followed, the repository met under another path and skipped.
    pub notes: Vec<Warning>,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    specials: AtomicU64,
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unchanged: AtomicU64,
    bytes_total: AtomicU64,
    bytes_read: AtomicU64,
    blobs_new: AtomicU64,
    data_added: AtomicU64,
    data_stored: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn totals(&self) -> SnapshotTotals {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SnapshotTotals {
            files: g(&self.files),
            dirs: g(&self.dirs),
            symlinks: g(&self.symlinks),
            specials: g(&self.specials),
            files_new: g(&self.files_new),
            files_changed: g(&self.files_changed),
            files_unchanged: g(&self.files_unchanged),
            bytes_total: g(&self.bytes_total),
            bytes_read: g(&self.bytes_read),
            blobs_new: g(&self.blobs_new),
            data_added: g(&self.data_added),
            data_stored: g(&self.data_stored),
        }
    }
}

/// The source paths arranged as a tree from `/`: inner nodes are directories above a source.
enum Node {
    Source,
    Inner(std::collections::BTreeMap<Vec<u8>, Node>),
}

/// Makes a path absolute and removes `.` and `..` lexically: the snapshot keeps the path as
/// given (a source that is a symlink is followed when it is read, but stored under its own path).
fn normalise(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).at(path)?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

fn build_nodes(paths: &[PathBuf]) -> Node {
    let mut root = Node::Inner(Default::default());
    for p in paths {
        let names: Vec<Vec<u8>> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            return Node::Source; // `/` itself
        }
        let mut node = &mut root;
        for (i, name) in names.iter().enumerate() {
            let Node::Inner(children) = node else { break }; // an ancestor is already a source
            let last = i + 1 == names.len();
            node = children.entry(name.clone()).or_insert_with(|| {
                if last {
                    Node::Source
                } else {
                    Node::Inner(Default::default())
                }
            });
            if last {
                *node = Node::Source;
            }
        }
    }
    root
}

pub(crate) struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    repo_root: Option<PathBuf>,
}

impl Excludes {
    pub(crate) fn new(patterns: &[String], repo_root: Option<PathBuf>) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let trimmed = p.trim_end_matches('/');
            let glob =
                Glob::new(trimmed).map_err(|e| Error::InvalidInput(format!("bad exclude pattern {p:?}: {e}")))?;
            if trimmed.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::InvalidInput(format!("bad exclude pattern: {e}")));
        Ok(Self { names: build(names)?, paths: build(paths)?, repo_root })
    }

    pub(crate) fn excluded(&self, path: &Path, name: &[u8]) -> bool {
        if self.repo_root.as_deref() == Some(path) {
            return true; // never snapshot the repository into itself
        }
        (!self.names.is_empty() && self.names.is_match(std::ffi::OsStr::from_bytes(name)))
            || (!self.paths.is_empty() && self.paths.is_match(path))
    }
}

/// Reads an exclude file: one pattern a line, `#` comments and blank lines ignored.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).at(path)?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

/// The run's state shared by the worker threads.
struct Run<'a> {
    repo: &'a Repo,
    progress: &'a dyn Progress,
    excludes: Excludes,
    one_file_system: bool,
    follow_sources: bool,
    full: bool,
    names: Names,
    counters: Counters,
    warnings: Mutex<Vec<Warning>>,
    notes: Mutex<Vec<Warning>>,
    /// (st_dev, st_ino) of the repository's root: never entered, by whatever path it is met.
    repo_id: Option<(u64, u64)>,
    /// Blobs sent to the writer but not yet indexed (cleared as packs are indexed).
    pending: Mutex<HashSet<BlobId>>,
    sender: Option<SyncSender<SealedFrame>>,
    chunkers: Mutex<Vec<Chunker>>,
    /// New chunks too few to fill a frame of their own (small files, file tails), one gatherer
    /// per worker thread: they are compressed together with the same thread's next files, so a
    /// small file gets the context zstd needs (docs/FORMAT.md, "Frames") and restore, which
    /// walks files in the same order, still finds them in the frame it decoded last.
    gathers: Vec<Mutex<Gather>>,
    /// The parent was indexed in the current generation: nothing it names can have left the
    /// index since (only a rebuild or repair removes what a snapshot needs, and they start a
    /// new generation; gc never deletes what a snapshot or a running session needs), so its
    /// chunk lists are reused without looking each chunk up.
    trusted_parent: bool,
    /// Hard-linked files already read in this run: (dev, inode) → content and hash.
    links: Mutex<HashMap<(u64, u64), (Vec<ChunkRef>, Option<FileHash>, Timestamp2)>>,
}

/// Small new chunks waiting for a shared frame.
#[derive(Default)]
struct Gather {
    blobs: Vec<(BlobId, Vec<u8>)>,
    len: usize,
}

/// mtime and ctime of a hard-linked inode, to tell whether the cached content still applies.
type Timestamp2 = (crate::tree::Timestamp, crate::tree::Timestamp);

impl Run<'_> {
    fn note(&self, path: &Path, message: impl Into<String>) {
        let n = Warning { path: path.to_string_lossy().into_owned(), message: message.into() };
        log::info!("{}: {}", n.path, n.message);
        self.notes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(n);
    }

    fn warn(&self, path: &Path, message: impl Into<String>) {
        let w = Warning { path: path.to_string_lossy().into_owned(), message: message.into() };
        log::warn!("{}: {}", w.path, w.message);
        self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(w);
    }

    /// Registers a blob as needed by this run; true when it must be stored (neither indexed nor
    /// already on its way to the writer).
    fn claim(&self, id: BlobId) -> Result<bool> {
        Ok(self.claim_many(&[id])?[0])
    }

    /// `claim` for many blobs, with one index transaction for those not pending.
    fn claim_many(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        let pending: Vec<bool> = {
            let p = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ids.iter().map(|id| p.contains(id)).collect()
        };
        let unknown: Vec<BlobId> = ids.iter().zip(&pending).filter(|(_, p)| !**p).map(|(id, _)| *id).collect();
        let mut indexed = self.repo.index.has_blobs(&unknown)?.into_iter();
        let mut p = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(ids
            .iter()
            .zip(pending)
            .map(|(id, was_pending)| !was_pending && !indexed.next().unwrap_or(true) && p.insert(*id))
            .collect())
    }

    /// Hands a sealed frame to the pack writer (or, on a dry run, only counts it).
    fn send(&self, frame: SealedFrame) -> Result<()> {
        Counters::add(&self.counters.blobs_new, frame.members.len() as u64);
        Counters::add(&self.counters.data_added, u64::from(frame.raw_len));
        Counters::add(&self.counters.data_stored, frame.data.len() as u64);
        match &self.sender {
            Some(tx) => tx.send(frame).map_err(|_| Error::InvalidInput("the pack writer stopped".into())),
            None => Ok(()),
        }
    }

    /// Stores the new chunks among one buffer's chunks: consecutive new chunks are compressed
    /// together in frames of up to `FRAME_TARGET` bytes, frames in parallel.
    fn store_chunks(&self, buf: &[u8], cuts: &[(usize, usize)], ids: &[ChunkId]) -> Result<()> {
        let blob_ids: Vec<BlobId> = ids.iter().map(|id| BlobId::from(*id)).collect();
        let fresh = self.claim_many(&blob_ids)?;
        let mut frames: Vec<Vec<usize>> = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut current_len = 0;
        for (i, _) in fresh.iter().enumerate().filter(|(_, f)| **f) {
            let len = cuts[i].1 - cuts[i].0;
            if !current.is_empty() && current_len + len > FRAME_TARGET {
                frames.push(std::mem::take(&mut current));
                current_len = 0;
            }
            current.push(i);
            current_len += len;
        }
        if !current.is_empty() {
            frames.push(current);
        }
        let level = self.repo.config.compression_level;
        let seal = |members: &Vec<usize>| {
            let blobs: Vec<(BlobKind, BlobId, &[u8])> =
                members.iter().map(|&i| (BlobKind::Chunk, BlobId::from(ids[i]), &buf[cuts[i].0..cuts[i].1])).collect();
            if blobs.iter().map(|b| b.2.len()).sum::<usize>() < FRAME_TARGET / 2 {
                return self.gather(&blobs);
            }
            self.send(pack::seal_frame(&blobs, level))
        };
        if frames.len() > 1 {
            frames.par_iter().try_for_each(seal)
        } else {
            frames.iter().try_for_each(seal)
        }
    }

    /// Adds small new chunks to this thread's gatherer; seals it once it holds a frame's worth.
    fn gather(&self, blobs: &[(BlobKind, BlobId, &[u8])]) -> Result<()> {
        let slot = rayon::current_thread_index().map_or(0, |i| i + 1) % self.gathers.len();
        let full = {
            let mut g = self.gathers[slot].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for &(_, id, data) in blobs {
                g.len += data.len();
                g.blobs.push((id, data.to_vec()));
            }
            (g.len >= FRAME_TARGET).then(|| std::mem::take(&mut *g))
        };
        full.map_or(Ok(()), |g| self.seal_gathered(&g))
    }

    fn seal_gathered(&self, g: &Gather) -> Result<()> {
        let blobs: Vec<(BlobKind, BlobId, &[u8])> =
            g.blobs.iter().map(|(id, data)| (BlobKind::Chunk, *id, data.as_slice())).collect();
        self.send(pack::seal_frame(&blobs, self.repo.config.compression_level))
    }

    /// Seals what the gatherers still hold: before the writer is told to finish.
    fn flush_gathered(&self) -> Result<()> {
        for slot in &self.gathers {
            let g = std::mem::take(&mut *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            if !g.blobs.is_empty() {
                self.seal_gathered(&g)?;
            }
        }
        Ok(())
    }

    fn store_tree(&self, tree: Tree) -> Result<TreeId> {
        let (id, bytes) = tree.seal();
        if self.claim(id.into())? {
            self.send(pack::seal_frame(&[(BlobKind::Tree, id.into(), &bytes)], self.repo.config.compression_level))?;
        }
        Ok(id)
    }

    fn take_chunker(&self) -> Chunker {
        self.chunkers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| Chunker::new(self.repo.config.chunker, READ_BUFFER))
    }

    fn give_chunker(&self, c: Chunker) {
        self.chunkers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c);
    }

    /// The tree of the directories above the source paths, each opened relative to the one
    /// above it. The path as given names directories: a symlink on the way is followed, as the
    /// kernel follows it for any path (its entry gets the metadata of the directory it leads to).
    fn inner_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        children: &std::collections::BTreeMap<Vec<u8>, Node>,
        parent: Option<&Tree>,
    ) -> Result<TreeId> {
        let entries: Vec<Option<Entry>> = children
            .par_iter()
            .map(|(name, node)| {
                let child_path = path.join(std::ffi::OsStr::from_bytes(name));
                let cname = CString::new(name.clone())
                    .map_err(|_| Error::InvalidInput(format!("{} has a NUL byte", child_path.display())))?;
                let parent_entry = parent.and_then(|t| t.get(name));
                match node {
                    Node::Source => {
                        let at = At { dir, name: &cname, path: &child_path, follow: false };
                        let (at, meta) = self.source_root(at)?;
                        self.entry(at, name, &meta, parent_entry, meta.dev)
                    }
                    Node::Inner(grand) => {
                        let fd = rustix::fs::openat(dir, cname.as_c_str(), DIR_FLAGS, Mode::empty())
                            .map_err(|e| Error::io(&child_path, e.into()))?;
                        let meta = fstat(&fd).map_err(|e| Error::io(&child_path, e))?;
                        let mut entry = Entry::new(name.clone(), EntryKind::Dir);
                        fsmeta::fill(&mut entry, &meta, || fsmeta::xattrs_of_fd(fd.as_fd()), &self.names, None);
                        let sub = self.parent_subtree(parent_entry);
                        entry.subtree =
                            Some(self.inner_tree(fd.as_fd(), &child_path, grand, sub.as_ref().map(|(_, t)| t))?);
                        Ok(Some(entry))
                    }
                }
            })
            .collect::<Result<_>>()?;
        self.store_tree(Tree { entries: entries.into_iter().flatten().collect() })
    }

    /// A source path as given: a symlink is followed (restic does the same), so that
    /// `cairn snapshot /opt/app` with `/opt/app -> /srv/app-v2` stores the target's contents
    /// under `/opt/app`, as a directory with the target's metadata; a note says so. Symlinks
    /// below a source are never followed. A link whose target cannot be reached is stored as
    /// the link.
    fn source_root<'a>(&self, at: At<'a>) -> Result<(At<'a>, Meta)> {
        let meta = stat_at(at).map_err(|e| Error::io(at.path, e))?; // a missing source is an error
        if meta.file_type() != rustix::fs::FileType::Symlink || !self.follow_sources {
            return Ok((at, meta));
        }
        let target = rustix::fs::readlinkat(at.dir, at.name, Vec::new())
            .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned())
            .unwrap_or_default();
        let follow = At { follow: true, ..at };
        match stat_at(follow) {
            Ok(m) => {
                self.note(at.path, format!("a symlink to {target}: followed, its target is stored under this path"));
                Ok((follow, m))
            }
            Err(e) => {
                self.note(at.path, format!("a symlink to {target}, which cannot be reached ({e}): stored as the link"));
                Ok((at, meta))
            }
        }
    }

    fn parent_subtree(&self, parent_entry: Option<&Entry>) -> Option<(TreeId, Tree)> {
        let id = parent_entry.filter(|e| e.kind == EntryKind::Dir)?.subtree?;
        // A parent tree that cannot be read only costs change detection, never correctness.
        self.repo.load_tree(id).ok().map(|t| (id, t))
    }

    /// One directory's tree, read through its open descriptor: each child is stat'ed, opened
    /// and read relative to it, so no path longer than one name is ever handed to the kernel
    /// (a tree deeper than PATH_MAX is walked like any other) and a directory renamed or
    /// replaced meanwhile cannot redirect the walk. `parent_id` names `parent` when it is known.
    fn dir_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        parent: Option<&Tree>,
        parent_id: Option<TreeId>,
        dev: u64,
    ) -> Result<TreeId> {
        let mut names = match list_dir(dir) {
            Ok(names) => names,
            Err((names, e)) => {
                self.warn(path, format!("cannot list the whole directory: {e}"));
                names
            }
        };
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let entries: Vec<Option<Entry>> = names
            .par_iter()
            .map(|name| {
                let bytes = name.as_bytes();
                let child = path.join(std::ffi::OsStr::from_bytes(bytes));
                if self.excludes.excluded(&child, bytes) {
                    return Ok(None);
                }
                let at = At { dir, name, path: &child, follow: false };
                let meta = match stat_at(at) {
                    Ok(m) => m,
                    Err(e) => {
                        self.warn(&child, format!("vanished or unreadable: {e}"));
                        return Ok(None);
                    }
                };
                self.entry(at, bytes, &meta, parent.and_then(|t| t.get(bytes)), dev)
            })
            .collect::<Result<_>>()?;
        let tree = Tree { entries: entries.into_iter().flatten().collect() };
        // An unchanged directory keeps its parent's tree: no encoding, hashing or index lookup
        // (the parent is trusted, so its tree is indexed).
        if let (Some(p), Some(id)) = (parent, parent_id) {
            if self.trusted_parent && *p == tree {
                return Ok(id);
            }
        }
        self.store_tree(tree)
    }

    /// The entry for one name (recursing into directories).
    fn entry(&self, at: At<'_>, name: &[u8], meta: &Meta, parent: Option<&Entry>, dev: u64) -> Result<Option<Entry>> {
        let Some(kind) = fsmeta::kind_of(meta) else {
            log::debug!("{}: socket skipped", at.path.display());
            return Ok(None);
        };
        let mut entry = Entry::new(name.to_vec(), kind);
        match kind {
            EntryKind::Dir => {
                // The path check in `Excludes` misses the repository reached by another path (a
                // bind mount, a symlinked source); its identity does not.
                if self.repo_id == Some((meta.dev, meta.ino)) {
                    self.note(at.path, "the repository itself, reached under this path: left out");
                    return Ok(None);
                }
                Counters::add(&self.counters.dirs, 1);
                let sub = self.parent_subtree(parent);
                if self.one_file_system && meta.dev != dev {
                    // A mount point: kept, not entered.
                    fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                    entry.subtree = Some(self.store_tree(Tree::default())?);
                    return Ok(Some(entry));
                }
                match open_dir_at(at) {
                    Ok(fd) => {
                        // The directory as opened is the one described and read (it may have been
                        // replaced since it was listed).
                        let meta = fstat(&fd).unwrap_or(*meta);
                        fsmeta::fill(&mut entry, &meta, || fsmeta::xattrs_of_fd(fd.as_fd()), &self.names, parent);
                        let (sub_tree, sub_id) = (sub.as_ref().map(|(_, t)| t), sub.as_ref().map(|(id, _)| *id));
                        entry.subtree = Some(self.dir_tree(fd.as_fd(), at.path, sub_tree, sub_id, meta.dev)?);
                    }
                    Err(e) => {
                        self.warn(at.path, format!("cannot read directory: {e}"));
                        fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                        entry.subtree = Some(self.store_tree(Tree::default())?);
                    }
                }
            }
            EntryKind::File => {
                fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                self.progress.item(&at.path.to_string_lossy());
                if !self.file_content(at, &mut entry, parent)? {
                    return Ok(None);
                }
                // Counted once stored, so the totals describe what the snapshot holds.
                Counters::add(&self.counters.files, 1);
                Counters::add(&self.counters.bytes_total, entry.size);
            }
            EntryKind::Symlink => {
                fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                match rustix::fs::readlinkat(at.dir, at.name, Vec::new()) {
                    Ok(t) => entry.target = t.into_bytes(),
                    Err(e) => {
                        self.warn(at.path, format!("cannot read symlink: {}", io::Error::from(e)));
                        return Ok(None);
                    }
                }
                Counters::add(&self.counters.symlinks, 1);
            }
            _ => {
                fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                Counters::add(&self.counters.specials, 1);
            }
        }
        Ok(Some(entry))
    }

    /// Fills a file entry's content: from the parent when its metadata is unchanged, else by
    /// reading it. False when the file could not be read (a warning was recorded; it is then
    /// counted neither as new nor as changed).
    fn file_content(&self, at: At<'_>, entry: &mut Entry, parent: Option<&Entry>) -> Result<bool> {
        let counter = if let Some(p) = parent.filter(|p| p.kind == EntryKind::File) {
            let same =
                p.size == entry.size && p.mtime == entry.mtime && p.ctime == entry.ctime && p.inode == entry.inode;
            if same && !self.full && (self.trusted_parent || self.all_present(&p.content)?) {
                entry.content.clone_from(&p.content);
                entry.file_hash = p.file_hash;
                Counters::add(&self.counters.files_unchanged, 1);
                return Ok(true);
            }
            &self.counters.files_changed
        } else {
            &self.counters.files_new
        };
        let key = (entry.dev, entry.inode);
        if entry.nlink > 1 {
            let links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((content, hash, times)) = links.get(&key) {
                if *times == (entry.mtime, entry.ctime) {
                    entry.content.clone_from(content);
                    entry.file_hash = *hash;
                    Counters::add(counter, 1);
                    return Ok(true);
                }
            }
        }
        match self.read_file(at, entry) {
            Ok(()) => {}
            Err(ReadError::Warn(msg)) => {
                self.warn(at.path, msg);
                return Ok(false);
            }
            Err(ReadError::Fatal(e)) => return Err(e),
        }
        Counters::add(counter, 1);
        if entry.nlink > 1 {
            self.links
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key, (entry.content.clone(), entry.file_hash, (entry.mtime, entry.ctime)));
        }
        Ok(true)
    }

    /// True when every chunk is still indexed, so reusing the parent's list keeps the snapshot
    /// complete (a chunk lost to damage and dropped by `repair index` is read and stored again).
    fn all_present(&self, content: &[ChunkRef]) -> Result<bool> {
        let ids: Vec<BlobId> = content.iter().map(|c| BlobId::from(c.id)).collect();
        let indexed = self.repo.index.has_blobs(&ids)?;
        let pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(ids.iter().zip(indexed).all(|(id, known)| known || pending.contains(id)))
    }

    /// Reads a file, retrying once when it changes under us. The stored chunks and the file hash
    /// always come from the same bytes, so what is stored matches its hash even then.
    fn read_file(&self, at: At<'_>, entry: &mut Entry) -> Result<(), ReadError> {
        for attempt in 0..2 {
            let file = open_file_at(at).map_err(|e| ReadError::Warn(format!("cannot open: {e}")))?;
            let before = fstat(&file).map_err(|e| ReadError::Warn(format!("cannot stat: {e}")))?;
            // The name must still be a regular file, and (on the first attempt) the one that
            // was listed; a retry reads whatever replaced it.
            if !before.is_file() || (attempt == 0 && before.ino != entry.inode) {
                if attempt == 0 && before.is_file() {
                    continue;
                }
                return Err(ReadError::Warn("replaced by something else while being read; not stored".into()));
            }
            // Metadata is taken from the open file, so that it describes the bytes we read.
            fsmeta::fill(entry, &before, || fsmeta::xattrs_of_fd(file.as_fd()), &self.names, None);
            crate::failpoint::hit("snapshot.file_read");
            let (content, hash) = self.chunk_file(&file, &before)?;
            let after = fstat(&file).map_err(|e| ReadError::Warn(format!("cannot stat: {e}")))?;
            let now = stat_at(at).ok();
            let stable = after.size == before.size
                && after.mtime == before.mtime
                && after.ctime == before.ctime
                && now.is_some_and(|m| m.ino == before.ino);
            entry.content = content;
            entry.file_hash = Some(hash);
            if stable {
                return Ok(());
            }
            if attempt == 1 {
                self.warn(
                    at.path,
                    "changed while being read (twice); stored as read, which may mix old and new content",
                );
            }
        }
        Ok(())
    }

    /// Chunks, hashes and stores an open file; sparse files by their data segments only.
    fn chunk_file(&self, file: &File, meta: &Meta) -> Result<(Vec<ChunkRef>, FileHash), ReadError> {
        let size = meta.size;
        let segments = if meta.blocks.saturating_mul(512) < size { data_segments(file, size) } else { vec![(0, size)] };
        let mut chunker = self.take_chunker();
        let mut hasher = blake3::Hasher::new();
        let mut content = Vec::new();
        let mut pos = 0u64; // how far the whole-file hash has got
        let mut reader = file;
        let result = (|| {
            for (start, end) in segments {
                hash_zeros(&mut hasher, start - pos);
                reader.seek(SeekFrom::Start(start)).map_err(|e| ReadError::Warn(format!("cannot seek: {e}")))?;
                let mut offset = start;
                let read = chunker.run::<_, ReadError>(&mut reader, end - start, |buf, cuts| {
                    hasher.update(&buf[cuts[0].0..cuts[cuts.len() - 1].1]);
                    let ids: Vec<ChunkId> = if cuts.len() > 4 {
                        cuts.par_iter().map(|&(s, e)| ChunkId::of(&buf[s..e])).collect()
                    } else {
                        cuts.iter().map(|&(s, e)| ChunkId::of(&buf[s..e])).collect()
                    };
                    self.store_chunks(buf, cuts, &ids)?;
                    for (id, &(s, e)) in ids.into_iter().zip(cuts) {
                        content.push(ChunkRef { id, offset, len: (e - s) as u32 });
                        offset += (e - s) as u64;
                    }
                    let n = (cuts[cuts.len() - 1].1 - cuts[0].0) as u64;
                    Counters::add(&self.counters.bytes_read, n);
                    self.progress.inc(n);
                    Ok(())
                })?;
                pos = start + read;
                if read < end - start {
                    break; // the file shrank; the stat check after reading reports it
                }
            }
            // A trailing hole (or bytes lost to shrinking) restores as zeros up to `size`: the
            // hash covers exactly what a restore produces.
            hash_zeros(&mut hasher, size.saturating_sub(pos));
            Ok::<_, ReadError>(())
        })();
        self.give_chunker(chunker);
        result?;
        Ok((content, FileHash::from_hash(hasher.finalize())))
    }
}

enum ReadError {
    /// This file is left out (or stored as read) with a warning; the snapshot goes on.
    Warn(String),
    /// The snapshot cannot go on (repository write failed).
    Fatal(Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Warn(format!("read error: {e}"))
    }
}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        Self::Fatal(e)
    }
}

fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// Where an entry is found: a name in an open directory. The full path is only a label, for
/// messages, excludes and progress; it may be longer than any path the kernel takes.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    path: &'a Path,
    /// Follow a final symlink: only for a source path given as a symlink.
    follow: bool,
}

/// How every directory of the walk is opened: `O_NOFOLLOW` is added below a source, so a symlink
/// that replaced a directory after it was listed is never entered.
const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

fn nofollow(at: At<'_>) -> OFlags {
    if at.follow {
        OFlags::empty()
    } else {
        OFlags::NOFOLLOW
    }
}

fn stat_at(at: At<'_>) -> io::Result<Meta> {
    let flags = if at.follow { AtFlags::empty() } else { AtFlags::SYMLINK_NOFOLLOW };
    Ok(Meta::from(&rustix::fs::statat(at.dir, at.name, flags)?))
}

fn fstat(fd: impl AsFd) -> io::Result<Meta> {
    Ok(Meta::from(&rustix::fs::fstat(fd)?))
}

fn open_dir_at(at: At<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(at.dir, at.name, DIR_FLAGS | nofollow(at), Mode::empty())?)
}

/// Opens a source file without following a symlink (unless `at` says so) and, where allowed,
/// without updating its access time.
fn open_file_at(at: At<'_>) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | nofollow(at);
    match rustix::fs::openat(at.dir, at.name, flags | OFlags::NOATIME, Mode::empty()) {
        // O_NOATIME is allowed only to the file's owner (or root).
        Err(rustix::io::Errno::PERM) => Ok(rustix::fs::openat(at.dir, at.name, flags, Mode::empty())?.into()),
        other => Ok(other?.into()),
    }
}

/// The extended attributes of the entry `at` names (following it when `at` does).
fn xattrs_at(at: At<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if at.follow {
        // A followed source root: a path given on the command line, short enough to use.
        let Ok(names) = xattr::list_deref(at.path) else {
            return Vec::new();
        };
        let mut v: Vec<(Vec<u8>, Vec<u8>)> = names
            .filter_map(|n| Some((n.as_bytes().to_vec(), xattr::get_deref(at.path, &n).ok().flatten()?)))
            .collect();
        v.sort();
        return v;
    }
    fsmeta::xattrs_at(at.dir, at.name, at.path)
}

/// The names in an open directory (without `.` and `..`), read with `getdents64` on the
/// descriptor. On an error part way, the names read so far and the error.
fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<CString>, (Vec<CString>, io::Error)> {
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

/// The data ranges of a sparse file, from SEEK_DATA / SEEK_HOLE; the whole file when the
/// filesystem cannot tell.
fn data_segments(file: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::SeekFrom as RSeek;
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let Ok(start) = rustix::fs::seek(file, RSeek::Data(pos)) else {
            break;
        }; // ENXIO: only a hole remains
        let Ok(end) = rustix::fs::seek(file, RSeek::Hole(start)) else {
            return vec![(0, size)];
        };
        let end = end.min(size);
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    out
}

/// The writer thread: fills packs, makes each durable, indexes it, then forgets its blobs from
/// the pending set (after the index commit, so a blob is always either pending or indexed).
fn writer(repo: &Repo, rx: Receiver<SealedFrame>, pending: &Mutex<HashSet<BlobId>>) -> Result<()> {
    let target = repo.config.pack_size as usize;
    // Room for a full pack, the frame that tips it over and the trailer (64 bytes a blob: an
    // eighth of the pack covers blobs stored in 512 bytes or more), so the buffer never grows.
    let mut data = PackWriter::with_capacity(target + target / 8 + 2 * crate::pack::FRAME_TARGET + 4096);
    let mut trees = PackWriter::new();
    let flush = |w: &mut PackWriter| -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        w.finish_with(|id, bytes, entries| {
            repo.backend.put(FileKind::Pack, &id.to_hex(), bytes)?;
            crate::failpoint::hit("snapshot.pack_written");
            repo.index.add_pack(id, bytes.len() as u64, entries, now_secs())?;
            crate::failpoint::hit("snapshot.pack_indexed");
            let mut p = pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for e in entries {
                p.remove(&e.id);
            }
            Ok(())
        })
    };
    for frame in rx {
        let is_tree = frame.members.first().is_some_and(|m| m.kind == BlobKind::Tree);
        let w = if is_tree { &mut trees } else { &mut data };
        w.add(&frame);
        if w.len() >= target {
            flush(w)?;
        }
    }
    flush(&mut data)?;
    flush(&mut trees)
}

fn host_name() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

fn user_name() -> String {
    uzers::get_current_username()
        .map(|u| u.to_string_lossy().into_owned())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| rustix::process::getuid().as_raw().to_string())
}

impl Repo {
    /// The snapshot change detection trusts for a new snapshot of `paths` on `host`.
    pub fn parent_for(&self, host: &str, paths: &[Vec<u8>], kind: SnapshotKind) -> Result<Option<Snapshot>> {
        if kind == SnapshotKind::Full {
            return Ok(None);
        }
        Ok(self.snapshots()?.into_iter().rev().find(|s| {
            s.record.host == host
                && s.record.paths == paths
                && (kind == SnapshotKind::Incremental || s.record.kind == SnapshotKind::Full)
        }))
    }

    /// Takes a snapshot.
    pub fn snapshot(&self, opts: &SnapshotOptions, progress: &dyn Progress) -> Result<SnapshotReport> {
        let started = Instant::now();
        // Registered before the first index lookup: gc waits for this session before deleting
        // anything it condemns meanwhile (docs/GC.md).
        self.writable("a snapshot")?;
        let _session = self.session("snapshot")?;
        let time = jiff::Timestamp::now();
        if opts.paths.is_empty() {
            return Err(Error::InvalidInput("no paths to snapshot".into()));
        }
        let mut paths = opts.paths.iter().map(|p| normalise(p)).collect::<Result<Vec<_>>>()?;
        paths.sort();
        paths.dedup();
        for p in &paths {
            fs::symlink_metadata(p).at(p)?; // a missing source is an error, not a warning
        }
        let raw_paths: Vec<Vec<u8>> = paths.iter().map(|p| p.as_os_str().as_bytes().to_vec()).collect();
        let host = opts.host.clone().unwrap_or_else(host_name);
        let parent = self.parent_for(&host, &raw_paths, opts.kind)?;
        let parent_root = parent.as_ref().and_then(|p| self.load_tree(p.record.root).ok());
        // A repository inside a source is never snapshotted into itself.
        let local_root = self.location.as_local();
        let repo_root = local_root.and_then(|r| fs::canonicalize(r).ok());
        let mut run = Run {
            repo: self,
            progress,
            excludes: Excludes::new(&opts.excludes, repo_root)?,
            one_file_system: opts.one_file_system,
            follow_sources: !opts.no_follow_sources,
            full: opts.kind == SnapshotKind::Full,
            names: Names::default(),
            counters: Counters::default(),
            warnings: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
            repo_id: local_root.and_then(|r| rustix::fs::stat(r).ok()).map(|st| {
                let m = Meta::from(&st);
                (m.dev, m.ino)
            }),
            pending: Mutex::new(HashSet::new()),
            sender: None,
            chunkers: Mutex::new(Vec::new()),
            gathers: {
                let n = if opts.threads == 0 {
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
                } else {
                    opts.threads
                };
                (0..=n).map(|_| Mutex::default()).collect()
            },
            links: Mutex::new(HashMap::new()),
            trusted_parent: match &parent {
                Some(p) => self.index.snapshot_generation(p.id)? == Some(self.index.generation()?),
                None => false,
            },
        };
        let pool = crate::workers::pool(opts.threads)?;
        progress.start("snapshot", None, Unit::Bytes);
        let root = if opts.dry_run {
            let root = pool.install(|| walk_root(&run, &paths, parent_root.as_ref()))?;
            run.flush_gathered()?;
            root
        } else {
            let (tx, rx) = sync_channel(CHANNEL_DEPTH);
            run.sender = Some(tx);
            std::thread::scope(|s| {
                let pending = &run.pending;
                let handle = s.spawn(move || writer(self, rx, pending));
                let walked = pool
                    .install(|| walk_root(&run, &paths, parent_root.as_ref()))
                    .and_then(|root| run.flush_gathered().map(|()| root));
                run.sender = None; // closes the channel: the writer flushes and ends
                let written = handle.join().unwrap_or_else(|_| Err(Error::InvalidInput("pack writer panicked".into())));
                // A write error is the cause of a walk error ("writer stopped"): report it first.
                written.and(walked)
            })?
        };
        progress.finish();
        let warnings = run.warnings.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let notes = run.notes.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let record = SnapshotRecord {
            time_ns: i64::try_from(time.as_nanosecond()).unwrap_or(i64::MAX),
            host,
            user: user_name(),
            paths: raw_paths,
            kind: opts.kind,
            parent: parent.as_ref().map(|p| p.id),
            label: opts.label.clone(),
            tags: opts.tags.clone(),
            excludes: opts.excludes.clone(),
            root,
            totals: run.counters.totals(),
            warnings: warnings.len() as u64,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            cairn_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let id = if opts.dry_run { None } else { Some(self.commit(&record)?) };
        self.top_up_reserve();
        Ok(SnapshotReport {
            id: id.map(|i| i.to_hex()),
            parent: parent.map(|p| p.id.to_hex()),
            kind: opts.kind,
            time: time.to_string(),
            host: record.host.clone(),
            paths: record.paths_lossy(),
            label: record.label.clone(),
            tags: record.tags.clone(),
            totals: record.totals.clone(),
            duration_secs: started.elapsed().as_secs_f64(),
            dry_run: opts.dry_run,
            warnings,
            notes,
        })
    }

    /// Makes a snapshot exist: its record is written durably, then indexed.
    fn commit(&self, record: &SnapshotRecord) -> Result<SnapshotId> {
        let (id, bytes) = record.seal();
        crate::failpoint::hit("snapshot.before_record");
        self.backend.put(FileKind::Snapshot, &id.to_hex(), &bytes)?;
        crate::failpoint::hit("snapshot.record_written");
        self.index.add_snapshot(id, record.time_ns, &record.host, record.label.as_deref(), &bytes)?;
        Ok(id)
    }
}

fn walk_root(run: &Run<'_>, paths: &[PathBuf], parent: Option<&Tree>) -> Result<TreeId> {
    let root = rustix::fs::open("/", DIR_FLAGS, Mode::empty()).map_err(|e| Error::io(Path::new("/"), e.into()))?;
    match build_nodes(paths) {
        Node::Source => {
            let meta = fstat(&root).at("/")?;
            run.dir_tree(root.as_fd(), Path::new("/"), parent, None, meta.dev)
        }
        Node::Inner(children) => run.inner_tree(root.as_fd(), Path::new("/"), &children, parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_is_lexical() {
        assert_eq!(normalise(Path::new("/a/./b/../c")).unwrap(), PathBuf::from("/a/c"));
        assert_eq!(normalise(Path::new("/..")).unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn nested_sources_collapse_into_the_outer_one() {
        let Node::Inner(top) = build_nodes(&[PathBuf::from("/a/b"), PathBuf::from("/a/b/c"), PathBuf::from("/d")])
        else {
            panic!("root should be inner")
        };
        assert!(matches!(top.get(&b"d"[..]), Some(Node::Source)));
        let Some(Node::Inner(a)) = top.get(&b"a"[..]) else { panic!("a should be inner") };
        assert!(matches!(a.get(&b"b"[..]), Some(Node::Source)));
        assert!(matches!(build_nodes(&[PathBuf::from("/"), PathBuf::from("/x")]), Node::Source));
    }

    #[test]
    fn excludes_match_names_and_paths() {
        let ex = Excludes::new(&["*.log".into(), "/srv/cache/".into()], Some(PathBuf::from("/repo"))).unwrap();
        assert!(ex.excluded(Path::new("/var/app.log"), b"app.log"));
        assert!(ex.excluded(Path::new("/srv/cache"), b"cache"));
        assert!(ex.excluded(Path::new("/repo"), b"repo"));
        assert!(!ex.excluded(Path::new("/srv/data"), b"data"));
        assert!(Excludes::new(&["a[".into()], None).is_err());
    }
}
