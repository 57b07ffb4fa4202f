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
use std::fs::{self, File, Metadata};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::chunker::Chunker;
use crate::error::{Error, IoContext, Result};
use crate::fsmeta::{self, Names};
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

/// Makes a path absolute and removes `.` and `..` lexically (no symlink is resolved: a source
/// that is a symlink is stored as the symlink, as restic and tar do).
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
    full: bool,
    names: Names,
    counters: Counters,
    warnings: Mutex<Vec<Warning>>,
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

    /// The tree of the virtual directories above the source paths.
    fn inner_tree(
        &self,
        path: &Path,
        children: &std::collections::BTreeMap<Vec<u8>, Node>,
        parent: Option<&Tree>,
    ) -> Result<TreeId> {
        let entries: Vec<Option<Entry>> = children
            .par_iter()
            .map(|(name, node)| {
                let child_path = path.join(std::ffi::OsStr::from_bytes(name));
                let parent_entry = parent.and_then(|t| t.get(name));
                let meta = fs::symlink_metadata(&child_path).at(&child_path)?;
                match node {
                    Node::Source => self.entry(&child_path, name, &meta, parent_entry, meta.dev()),
                    Node::Inner(grand) => {
                        let mut entry = Entry::new(name.clone(), EntryKind::Dir);
                        if !meta.is_dir() {
                            return Err(Error::InvalidInput(format!("{} is not a directory", child_path.display())));
                        }
                        fsmeta::fill(&mut entry, &meta, &child_path, &self.names, None);
                        let sub = self.parent_subtree(parent_entry);
                        entry.subtree = Some(self.inner_tree(&child_path, grand, sub.as_ref().map(|(_, t)| t))?);
                        Ok(Some(entry))
                    }
                }
            })
            .collect::<Result<_>>()?;
        self.store_tree(Tree { entries: entries.into_iter().flatten().collect() })
    }

    fn parent_subtree(&self, parent_entry: Option<&Entry>) -> Option<(TreeId, Tree)> {
        let id = parent_entry.filter(|e| e.kind == EntryKind::Dir)?.subtree?;
        // A parent tree that cannot be read only costs change detection, never correctness.
        self.repo.load_tree(id).ok().map(|t| (id, t))
    }

    /// One directory's tree. `parent_id` names `parent` when it is known.
    fn dir_tree(&self, path: &Path, parent: Option<&Tree>, parent_id: Option<TreeId>, dev: u64) -> Result<TreeId> {
        // Each child is stat'ed through its directory entry (fstatat on the open directory), not
        // by a path walked from the root again.
        let mut names: Vec<(Vec<u8>, fs::DirEntry)> = match fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(|e| match e {
                    Ok(e) => Some((e.file_name().as_bytes().to_vec(), e)),
                    Err(err) => {
                        self.warn(path, format!("cannot list directory entry: {err}"));
                        None
                    }
                })
                .collect(),
            Err(e) => {
                self.warn(path, format!("cannot read directory: {e}"));
                Vec::new()
            }
        };
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let entries: Vec<Option<Entry>> = names
            .par_iter()
            .map(|(name, dirent)| {
                let child = path.join(std::ffi::OsStr::from_bytes(name));
                if self.excludes.excluded(&child, name) {
                    return Ok(None);
                }
                let meta = match dirent.metadata() {
                    Ok(m) => m,
                    Err(e) => {
                        self.warn(&child, format!("vanished or unreadable: {e}"));
                        return Ok(None);
                    }
                };
                self.entry(&child, name, &meta, parent.and_then(|t| t.get(name)), dev)
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

    /// The entry for one path (recursing into directories).
    fn entry(
        &self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        parent: Option<&Entry>,
        dev: u64,
    ) -> Result<Option<Entry>> {
        let Some(kind) = fsmeta::kind_of(meta) else {
            log::debug!("{}: socket skipped", path.display());
            return Ok(None);
        };
        let mut entry = Entry::new(name.to_vec(), kind);
        fsmeta::fill(&mut entry, meta, path, &self.names, parent);
        match kind {
            EntryKind::Dir => {
                Counters::add(&self.counters.dirs, 1);
                let sub = self.parent_subtree(parent);
                entry.subtree = Some(if self.one_file_system && meta.dev() != dev {
                    self.store_tree(Tree::default())? // a mount point: kept, not entered
                } else {
                    self.dir_tree(path, sub.as_ref().map(|(_, t)| t), sub.as_ref().map(|(id, _)| *id), meta.dev())?
                });
            }
            EntryKind::File => {
                self.progress.item(&path.to_string_lossy());
                Counters::add(&self.counters.bytes_total, entry.size);
                if !self.file_content(path, &mut entry, parent)? {
                    return Ok(None);
                }
                Counters::add(&self.counters.files, 1);
            }
            EntryKind::Symlink => {
                Counters::add(&self.counters.symlinks, 1);
                match fs::read_link(path) {
                    Ok(t) => entry.target = t.as_os_str().as_bytes().to_vec(),
                    Err(e) => {
                        self.warn(path, format!("cannot read symlink: {e}"));
                        return Ok(None);
                    }
                }
            }
            _ => Counters::add(&self.counters.specials, 1),
        }
        Ok(Some(entry))
    }

    /// Fills a file entry's content: from the parent when its metadata is unchanged, else by
    /// reading it. False when the file could not be read (a warning was recorded).
    fn file_content(&self, path: &Path, entry: &mut Entry, parent: Option<&Entry>) -> Result<bool> {
        if let Some(p) = parent.filter(|p| p.kind == EntryKind::File) {
            let same =
                p.size == entry.size && p.mtime == entry.mtime && p.ctime == entry.ctime && p.inode == entry.inode;
            if same && !self.full && (self.trusted_parent || self.all_present(&p.content)?) {
                entry.content.clone_from(&p.content);
                entry.file_hash = p.file_hash;
                Counters::add(&self.counters.files_unchanged, 1);
                return Ok(true);
            }
            Counters::add(&self.counters.files_changed, 1);
        } else {
            Counters::add(&self.counters.files_new, 1);
        }
        let key = (entry.dev, entry.inode);
        if entry.nlink > 1 {
            let links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((content, hash, times)) = links.get(&key) {
                if *times == (entry.mtime, entry.ctime) {
                    entry.content.clone_from(content);
                    entry.file_hash = *hash;
                    return Ok(true);
                }
            }
        }
        match self.read_file(path, entry) {
            Ok(()) => {}
            Err(ReadError::Warn(msg)) => {
                self.warn(path, msg);
                return Ok(false);
            }
            Err(ReadError::Fatal(e)) => return Err(e),
        }
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
    fn read_file(&self, path: &Path, entry: &mut Entry) -> Result<(), ReadError> {
        for attempt in 0..2 {
            let file = open_source(path).map_err(|e| ReadError::Warn(format!("cannot open: {e}")))?;
            let before = file.metadata().map_err(|e| ReadError::Warn(format!("cannot stat: {e}")))?;
            // The path must still name a regular file, and (on the first attempt) the one that
            // was listed; a retry reads whatever replaced it.
            if !before.is_file() || (attempt == 0 && before.ino() != entry.inode) {
                if attempt == 0 && before.is_file() {
                    continue;
                }
                return Err(ReadError::Warn("replaced by something else while being read; not stored".into()));
            }
            // Metadata is taken from the open file, so that it describes the bytes we read.
            fsmeta::fill(entry, &before, path, &self.names, None);
            crate::failpoint::hit("snapshot.file_read");
            let (content, hash) = self.chunk_file(&file, &before)?;
            let after = file.metadata().map_err(|e| ReadError::Warn(format!("cannot stat: {e}")))?;
            let now = fs::symlink_metadata(path).ok();
            let stable = after.len() == before.len()
                && after.mtime() == before.mtime()
                && after.mtime_nsec() == before.mtime_nsec()
                && after.ctime() == before.ctime()
                && after.ctime_nsec() == before.ctime_nsec()
                && now.is_some_and(|m| m.ino() == before.ino());
            entry.content = content;
            entry.file_hash = Some(hash);
            if stable {
                return Ok(());
            }
            if attempt == 1 {
                self.warn(path, "changed while being read (twice); stored as read, which may mix old and new content");
            }
        }
        Ok(())
    }

    /// Chunks, hashes and stores an open file; sparse files by their data segments only.
    fn chunk_file(&self, file: &File, meta: &Metadata) -> Result<(Vec<ChunkRef>, FileHash), ReadError> {
        let size = meta.len();
        let segments =
            if meta.blocks().saturating_mul(512) < size { data_segments(file, size) } else { vec![(0, size)] };
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

/// Opens a source file without following a symlink and, where allowed, without updating its
/// access time.
fn open_source(path: &Path) -> io::Result<File> {
    let nofollow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    let noatime = rustix::fs::OFlags::NOATIME.bits() as i32;
    match fs::OpenOptions::new().read(true).custom_flags(nofollow | noatime).open(path) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            fs::OpenOptions::new().read(true).custom_flags(nofollow).open(path)
        }
        other => other,
    }
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
        let repo_root = fs::canonicalize(self.root()).ok();
        let mut run = Run {
            repo: self,
            progress,
            excludes: Excludes::new(&opts.excludes, repo_root)?,
            one_file_system: opts.one_file_system,
            full: opts.kind == SnapshotKind::Full,
            names: Names::default(),
            counters: Counters::default(),
            warnings: Mutex::new(Vec::new()),
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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()
            .map_err(|e| Error::InvalidInput(format!("cannot start worker threads: {e}")))?;
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
    match build_nodes(paths) {
        Node::Source => {
            let meta = fs::symlink_metadata("/").at("/")?;
            run.dir_tree(Path::new("/"), parent, None, meta.dev())
        }
        Node::Inner(children) => run.inner_tree(Path::new("/"), &children, parent),
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
