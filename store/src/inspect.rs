//! Looking inside without restoring: walk, show, stats, find, log, cat, manifest (diff has
//! its own room, diff/).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, TreeId};
use crate::index::MarkSet;
use crate::progress::NoProgress;
use crate::record::{CaptureRecord, SnapshotTotals};
use crate::repo::{now_secs, Repo, Snapshot};
use crate::tree::{Entry, EntryKind, Tree};
use crate::workers::lock;

/// Whether a walk enters a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Go on, into the directory if it is one.
    Enter,
    /// Do not enter this directory.
    Skip,
}

/// One entry as the listing commands print it.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    /// Absolute path in the snapshot (lossy UTF-8).
    pub path: String,
    /// `file`, `dir`, `symlink`, `fifo`, `chardev`, `blockdev`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Permission bits, octal.
    pub mode: String,
    /// Owner (name, or number).
    pub user: String,
    /// Group (name, or number).
    pub group: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// Symlink target.
    pub target: Option<String>,
    /// BLAKE3 of the content (files).
    pub blake3: Option<String>,
}

/// The name of an entry kind.
#[must_use]
pub fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Fifo => "fifo",
        EntryKind::CharDevice => "chardev",
        EntryKind::BlockDevice => "blockdev",
    }
}

/// An entry described for listings.
#[must_use]
pub fn listing(path: &Path, e: &Entry) -> Listing {
    Listing {
        path: path.to_string_lossy().into_owned(),
        kind: kind_name(e.kind),
        mode: format!("{:04o}", e.mode),
        user: e.user.clone().unwrap_or_else(|| e.uid.to_string()),
        group: e.group.clone().unwrap_or_else(|| e.gid.to_string()),
        size: e.size,
        mtime: jiff::Timestamp::new(e.mtime.sec, i32::try_from(e.mtime.nsec).unwrap_or(0))
            .map(|t| t.to_string())
            .unwrap_or_default(),
        target: (e.kind == EntryKind::Symlink).then(|| String::from_utf8_lossy(&e.target).into_owned()),
        blake3: e.file_hash.map(|h| h.to_hex()),
    }
}

/// A snapshot's record with the figures `show` adds.
#[derive(Clone, Debug, Serialize)]
pub struct ShowReport {
    /// ID.
    pub id: String,
    /// Time, RFC 3339.
    pub time: String,
    /// Host.
    pub host: String,
    /// User.
    pub user: String,
    /// Source paths.
    pub paths: Vec<String>,
    /// Kind.
    pub kind: &'static str,
    /// The snapshot trusted for change detection.
    pub parent: Option<String>,
    /// Label.
    pub label: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// No keep-policy removes it.
    pub pinned: bool,
    /// A restore's safety snapshot (expired by its own policy, skipped by `latest`).
    pub safety: bool,
    /// The ID it was first written as, before `cairn tag` changed it.
    pub original: Option<String>,
    /// Counts and totals recorded at snapshot time.
    #[serde(flatten)]
    pub totals: SnapshotTotals,
    /// Stored bytes only this snapshot needs: what `forget` of it alone and `gc` would free
    /// (before pack rounding).
    pub exclusive_size: u64,
    /// Wall time of the snapshot run, seconds.
    pub duration_secs: f64,
    /// The cairn version that wrote it.
    pub cairn_version: String,
    /// Its captures: command, how each ended, how long it took, the tail of its stderr.
    pub captures: Vec<CaptureRecord>,
}

/// Repository (or snapshot) statistics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Sum of the snapshots' logical sizes (what restoring every one would write).
    pub logical_size: u64,
    /// Distinct blobs (chunks and trees) they need.
    pub blobs: u64,
    /// Of those, chunks.
    pub chunks: u64,
    /// Plaintext size of those blobs (unique data before compression).
    pub unique_size: u64,
    /// Their stored size (unique data after compression).
    pub stored_size: u64,
    /// Logical size over the plaintext size of the distinct chunks (file content only; trees
    /// are left out).
    pub dedup_ratio: f64,
    /// unique / stored.
    pub compression_ratio: f64,
    /// Packs in the repository, and their total size.
    pub packs: u64,
    /// Total size of the pack files.
    pub packs_size: u64,
    /// Size of the index files.
    pub index_size: u64,
    /// Age of the newest snapshot counted, seconds.
    pub newest_snapshot_age_secs: Option<u64>,
}

/// One version of a path in `log`.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    /// BLAKE3 of the content (files) or the tree ID (directories); `absent` where missing.
    pub version: String,
    /// `file`, `dir`, ..., or `absent`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size (files).
    pub size: u64,
    /// Modification time of the first snapshot holding it, RFC 3339.
    pub mtime: String,
    /// Snapshots holding this version, oldest first.
    pub snapshots: Vec<String>,
    /// When the first and the last of them were taken, RFC 3339 UTC.
    pub first_time: String,
    /// See `first_time`.
    pub last_time: String,
}

impl Repo {
    /// Walks the tree at `root` depth first in name order, calling `visit` with each entry's
    /// absolute path; directories are entered unless `visit` says `Skip`.
    pub fn walk(&self, root: TreeId, visit: &mut dyn FnMut(&Path, &Entry) -> Result<Visit>) -> Result<()> {
        self.walk_from(root, Path::new("/"), visit)
    }

    fn walk_from(&self, tree: TreeId, at: &Path, visit: &mut dyn FnMut(&Path, &Entry) -> Result<Visit>) -> Result<()> {
        let tree = self.load_tree(tree)?;
        for e in &tree.entries {
            if !e.has_safe_name() {
                continue;
            }
            let path = at.join(OsStr::from_bytes(&e.name));
            if visit(&path, e)? == Visit::Enter {
                if let Some(sub) = e.subtree.filter(|_| e.kind == EntryKind::Dir) {
                    self.walk_from(sub, &path, visit)?;
                }
            }
        }
        Ok(())
    }

    /// The tree below an absolute path of a snapshot (`/` is the root).
    fn tree_at(&self, snap: &Snapshot, path: &Path) -> Result<Option<TreeId>> {
        if path.components().all(|c| matches!(c, std::path::Component::RootDir)) {
            return Ok(Some(snap.record.root));
        }
        Ok(self.find_entry(snap.record.root, path)?.and_then(|e| e.subtree.filter(|_| e.kind == EntryKind::Dir)))
    }

    fn scratch(&self, what: &str) -> Result<MarkSet> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        MarkSet::create(&self.scratch_path(&format!("cairn-{what}-{}-{n}.sqlite", std::process::id())))
    }

    /// The record of a snapshot, with its exclusive size.
    pub fn show(&self, snap: &Snapshot) -> Result<ShowReport> {
        let others_mark = self.scratch("show-others")?;
        let all = self.snapshots()?;
        let others: Vec<&Snapshot> = all.iter().filter(|s| s.id != snap.id).collect();
        self.mark(&others_mark, &others, &NoProgress)?;
        let mine = self.scratch("show-own")?;
        self.mark(&mine, &[snap], &NoProgress)?;
        let exclusive = self.index.stored_size_of(&mine, Some(&others_mark))?;
        let r = &snap.record;
        Ok(ShowReport {
            id: snap.id.to_hex(),
            time: jiff::Timestamp::from_nanosecond(i128::from(r.time_ns)).map(|t| t.to_string()).unwrap_or_default(),
            host: r.host.clone(),
            user: r.user.clone(),
            paths: r.paths_lossy(),
            kind: r.kind.as_str(),
            parent: r.parent.map(|p| p.to_hex()),
            label: r.label.clone(),
            tags: r.tags.clone(),
            pinned: r.pinned,
            safety: snap.is_safety(),
            original: r.original.map(|o| o.to_hex()),
            totals: r.totals.clone(),
            exclusive_size: exclusive.stored,
            duration_secs: r.duration_ms as f64 / 1000.0,
            cairn_version: r.cairn_version.clone(),
            captures: r.captures.clone(),
        })
    }

    /// Statistics of the repository, or of the given snapshots.
    pub fn stats(&self, only: &[Snapshot]) -> Result<Stats> {
        let all = self.snapshots()?;
        let scope: Vec<&Snapshot> = if only.is_empty() { all.iter().collect() } else { only.iter().collect() };
        let mark = self.scratch("stats")?;
        self.mark(&mark, &scope, &NoProgress)?;
        let sums = self.index.stored_size_of(&mark, None)?;
        let packs = self.index.packs()?;
        let mut s = Stats {
            snapshots: scope.len() as u64,
            logical_size: scope.iter().map(|s| s.record.totals.bytes_total).sum(),
            blobs: sums.blobs,
            chunks: sums.chunks,
            unique_size: sums.raw,
            stored_size: sums.stored,
            packs: packs.len() as u64,
            packs_size: packs.iter().map(|p| p.size).sum(),
            ..Stats::default()
        };
        // File bytes over distinct chunk bytes: trees are metadata, not deduplicated content,
        // and in a tree of small files they would outweigh the content and hide the sharing.
        s.dedup_ratio = if sums.chunks_raw > 0 { s.logical_size as f64 / sums.chunks_raw as f64 } else { 0.0 };
        s.compression_ratio = if s.stored_size > 0 { s.unique_size as f64 / s.stored_size as f64 } else { 0.0 };
        s.index_size = self.state.index_size();
        let newest = scope.iter().map(|s| s.record.time_ns).max();
        s.newest_snapshot_age_secs = newest.map(|t| u64::try_from(now_secs() - t / 1_000_000_000).unwrap_or(0));
        Ok(s)
    }

    /// Entries under `path` of a snapshot: the directory's entries (recursively if asked), or
    /// the entry itself when `path` is not a directory.
    pub fn ls(&self, snap: &Snapshot, path: &Path, recursive: bool) -> Result<Vec<Listing>> {
        let mut out = Vec::new();
        self.below(snap, path, recursive, &mut |p, e| out.push(listing(p, e)))?;
        Ok(out)
    }

    /// Calls `f` for the entries below `path` (one level, or all), or for the entry at `path`
    /// itself when it is not a directory.
    fn below(&self, snap: &Snapshot, path: &Path, recursive: bool, f: &mut dyn FnMut(&Path, &Entry)) -> Result<()> {
        let path = Path::new("/").join(path.strip_prefix("/").unwrap_or(path));
        match self.tree_at(snap, &path)? {
            Some(tree) => self.walk_from(tree, &path, &mut |p, e| {
                f(p, e);
                Ok(if recursive { Visit::Enter } else { Visit::Skip })
            }),
            None => match self.find_entry(snap.record.root, &path)? {
                Some(e) => {
                    f(&path, &e);
                    Ok(())
                }
                None => Err(Error::NotInSnapshot { paths: path.display().to_string(), snapshot: snap.id.short(8) }),
            },
        }
    }

    /// The history of one path: each distinct version, with the snapshots holding it. Trees
    /// are cached across snapshots, which share most of them.
    pub fn log(&self, path: &Path) -> Result<Vec<Version>> {
        let path = Path::new("/").join(path.strip_prefix("/").unwrap_or(path));
        let cache: Mutex<HashMap<TreeId, std::sync::Arc<Tree>>> = Mutex::new(HashMap::new());
        let tree = |id: TreeId| -> Result<std::sync::Arc<Tree>> {
            if let Some(t) = lock(&cache).get(&id) {
                return Ok(std::sync::Arc::clone(t));
            }
            let t = std::sync::Arc::new(self.load_tree(id)?);
            lock(&cache).insert(id, std::sync::Arc::clone(&t));
            Ok(t)
        };
        let names: Vec<Vec<u8>> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        let mut out: Vec<Version> = Vec::new();
        // Only snapshots whose sources reach the path say anything about it: "absent" from a
        // snapshot of another tree is noise.
        // A snapshot with captures reaches the captures directory.
        let covers = |s: &crate::repo::Snapshot| {
            (!s.record.captures.is_empty() && crate::capture::is_reserved(&path))
                || s.record.paths.iter().any(|p| {
                    let source = Path::new(std::ffi::OsStr::from_bytes(p));
                    path.starts_with(source) || source.starts_with(&path)
                })
        };
        for s in self.snapshots()?.into_iter().filter(|s| covers(s)) {
            let mut entry: Option<Entry> = None;
            let mut t = Some(s.record.root);
            for (i, n) in names.iter().enumerate() {
                let Some(id) = t else { break };
                let found = tree(id)?.get(n).cloned();
                t = found.as_ref().and_then(|e| e.subtree);
                if i + 1 == names.len() {
                    entry = found;
                } else if found.is_none() {
                    break;
                }
            }
            let (version, kind, size, mtime) = match &entry {
                None => ("absent".to_owned(), "absent", 0, String::new()),
                Some(e) => (
                    e.file_hash.map(|h| h.to_hex()).or(e.subtree.map(|t| t.to_hex())).unwrap_or_else(|| {
                        blake3::hash(&[e.target.as_slice(), &e.rdev.to_le_bytes()].concat()).to_hex().to_string()
                    }),
                    kind_name(e.kind),
                    e.size,
                    listing(&path, e).mtime,
                ),
            };
            let time = jiff::Timestamp::from_nanosecond(i128::from(s.record.time_ns))
                .map(|t| t.to_string())
                .unwrap_or_default();
            match out.last_mut() {
                Some(v) if v.version == version => {
                    v.snapshots.push(s.id.to_hex());
                    v.last_time = time;
                }
                _ => out.push(Version {
                    version,
                    kind,
                    size,
                    mtime,
                    snapshots: vec![s.id.to_hex()],
                    first_time: time.clone(),
                    last_time: time,
                }),
            }
        }
        if out.iter().all(|v| v.kind == "absent") {
            return Err(Error::InNoSnapshot(path.display().to_string()));
        }
        Ok(out)
    }

    /// Writes a file's content to `out`, chunk by chunk (holes as zeros), checking every chunk.
    pub fn cat(&self, snap: &Snapshot, path: &Path, out: &mut dyn Write) -> Result<u64> {
        let path = Path::new("/").join(path.strip_prefix("/").unwrap_or(path));
        let e = self
            .find_entry(snap.record.root, &path)?
            .ok_or_else(|| Error::NotInSnapshot { paths: path.display().to_string(), snapshot: snap.id.short(8) })?;
        if e.kind != EntryKind::File {
            return Err(Error::InvalidInput(format!("{} is a {}, not a file", path.display(), kind_name(e.kind))));
        }
        let io = |err: std::io::Error| Error::io("standard output", err);
        let zeros = [0u8; 64 * 1024];
        let mut pos = 0u64;
        let write_zeros = |out: &mut dyn Write, mut n: u64| -> Result<()> {
            while n > 0 {
                let k = n.min(zeros.len() as u64) as usize;
                out.write_all(&zeros[..k]).map_err(io)?;
                n -= k as u64;
            }
            Ok(())
        };
        let ids: Vec<BlobId> = e.content.iter().map(|c| BlobId::from(c.id)).collect();
        for (c, loc) in e.content.iter().zip(self.index.locate_many(&ids)?) {
            let loc = loc.ok_or_else(|| Error::Missing { what: "chunk", id: c.id.to_hex() })?;
            write_zeros(out, c.offset.saturating_sub(pos))?;
            let data = self.read_located(&loc)?;
            out.write_all(&data).map_err(io)?;
            pos = c.offset + data.len() as u64;
        }
        write_zeros(out, e.size.saturating_sub(pos))?;
        out.flush().map_err(io)?;
        Ok(e.size)
    }

    /// The files below `path` with their BLAKE3 (stored at snapshot time), paths relative to
    /// `/` so that `b3sum --check` run in a restore target verifies them.
    pub fn manifest(&self, snap: &Snapshot, path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        self.below(snap, path, true, &mut |p, e| {
            if let (EntryKind::File, Some(h)) = (e.kind, e.file_hash) {
                out.push((h.to_hex(), p.strip_prefix("/").unwrap_or(p).as_os_str().as_bytes().to_vec()));
            }
        })?;
        Ok(out)
    }
}
