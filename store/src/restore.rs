//! Restore: recreate a snapshot's source paths under a target directory.
//!
//! Safety (invariant 6): every entry name is checked to be one plain path component; a directory
//! is only entered after checking that it is a real directory (a symlink in its place is
//! replaced or the entry skipped, never followed); files are written to a fresh temporary file
//! in their directory and renamed over the destination, so a symlink at the destination is
//! replaced, not followed; hard links only point at files this run wrote. Nothing is written
//! outside the target whatever the repository holds.
//!
//! Files are restored in parallel; directory metadata is applied last, deepest first, so that
//! restoring children does not disturb a directory's mtime or trip over its permissions.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fsmeta;
use crate::id::{BlobId, FileHash, TreeId};
use crate::progress::{Progress, Unit};
use crate::repo::{Repo, Snapshot};
use crate::snapshot::{Excludes, SnapshotOptions, Warning};
use crate::tree::{Entry, EntryKind};

/// When an existing file at the destination is replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Never: existing files are left as they are.
    Never,
    /// When its content differs (size, then mtime, then BLAKE3 of the content).
    #[default]
    IfChanged,
    /// Always.
    Always,
}

/// What to restore and where.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Source paths are recreated under this directory (`/` restores in place).
    pub target: PathBuf,
    /// Restore only these snapshot paths (and what is below them); all when empty.
    pub includes: Vec<PathBuf>,
    /// Glob patterns to leave out (as for snapshot excludes).
    pub excludes: Vec<String>,
    /// Re-read every written file and check it against its stored BLAKE3.
    pub verify: bool,
    /// Report what would be written, write nothing.
    pub dry_run: bool,
    /// Policy for existing files.
    pub overwrite: Overwrite,
    /// Take a snapshot of the existing files before overwriting them.
    pub safety_snapshot: bool,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: String,
    /// The target directory.
    pub target: String,
    /// Regular files written.
    pub files_written: u64,
    /// Existing files left alone (unchanged, or `--overwrite never`).
    pub files_skipped: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symbolic links restored.
    pub symlinks: u64,
    /// FIFOs and device nodes restored.
    pub specials: u64,
    /// Hard links recreated.
    pub hardlinks: u64,
    /// File content bytes written.
    pub bytes_written: u64,
    /// Files verified against their stored BLAKE3 (with `verify`).
    pub files_verified: u64,
    /// The snapshot of overwritten files, taken first.
    pub safety_snapshot: Option<String>,
    /// Files that could not be restored because stored data is damaged or missing.
    pub damaged: Vec<Warning>,
    /// Other problems (entries skipped, metadata not settable).
    pub warnings: Vec<Warning>,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// True when nothing was written.
    pub dry_run: bool,
}

impl RestoreReport {
    /// True when some file could not be restored because of damage (exit code 4).
    #[must_use]
    pub fn has_damage(&self) -> bool {
        !self.damaged.is_empty()
    }
}

#[derive(Default)]
struct Counts {
    files_written: AtomicU64,
    files_skipped: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    specials: AtomicU64,
    hardlinks: AtomicU64,
    bytes_written: AtomicU64,
    files_verified: AtomicU64,
    owner_failures: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct Job<'a> {
    repo: &'a Repo,
    opts: &'a RestoreOptions,
    includes: Vec<PathBuf>,
    /// The snapshot's source paths.
    sources: Vec<PathBuf>,
    excludes: Excludes,
    progress: &'a dyn Progress,
    root_user: bool,
    counts: Counts,
    damaged: Mutex<Vec<Warning>>,
    warnings: Mutex<Vec<Warning>>,
    /// Directories restored, for metadata at the end.
    dirs: Mutex<Vec<(PathBuf, Entry)>>,
    /// Hard-link groups: (dev, inode) → the path written for it.
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Further members of hard-link groups, linked at the end.
    deferred: Mutex<Vec<(PathBuf, Entry)>>,
    tmp_counter: AtomicU64,
}

fn push(list: &Mutex<Vec<Warning>>, path: &Path, message: impl Into<String>) {
    list.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Warning { path: path.to_string_lossy().into_owned(), message: message.into() });
}

/// How an include path relates to an entry path.
fn wanted(includes: &[PathBuf], path: &Path) -> Option<bool> {
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

impl Job<'_> {
    /// True for a directory strictly above the snapshot's source paths.
    fn above_sources(&self, snap_path: &Path) -> bool {
        self.sources.iter().any(|s| s != snap_path && s.starts_with(snap_path))
    }

    fn dest_of(&self, snap_path: &Path) -> PathBuf {
        let rel = snap_path.strip_prefix("/").unwrap_or(snap_path);
        self.opts.target.join(rel)
    }

    /// Restores the entries of one directory (already created at `dest`).
    fn restore_tree(&self, tree_id: TreeId, snap_path: &Path) -> Result<()> {
        let tree = match self.repo.load_tree(tree_id) {
            Ok(t) => t,
            Err(e) if e.is_damage() => {
                push(&self.damaged, snap_path, format!("directory contents lost: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut prev: Option<&[u8]> = None;
        let mut entries = Vec::with_capacity(tree.entries.len());
        for e in &tree.entries {
            let path = snap_path.join(OsStr::from_bytes(&e.name));
            if !e.has_safe_name() || prev == Some(e.name.as_slice()) {
                push(&self.warnings, &path, format!("unsafe or duplicate entry name {:?} skipped", e.name_lossy()));
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
        entries.into_par_iter().try_for_each(|(e, path, all)| self.restore_entry(e, &path, all))
    }

    fn restore_entry(&self, e: &Entry, snap_path: &Path, all: bool) -> Result<()> {
        let dest = self.dest_of(snap_path);
        match e.kind {
            EntryKind::Dir => {
                let created = !self.opts.dry_run && fs::symlink_metadata(&dest).is_err();
                if !self.opts.dry_run && !self.ensure_dir(&dest)? {
                    return Ok(());
                }
                bump(&self.counts.dirs, 1);
                if let Some(sub) = e.subtree {
                    self.restore_tree(sub, snap_path)?;
                }
                // A directory only on the way to what is restored (above the source paths, or
                // above an include) keeps its own metadata unless this restore created it:
                // restoring /etc/nginx in place must not reset /etc.
                let on_the_way = !all || self.above_sources(snap_path);
                if !on_the_way || created {
                    self.dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((dest, e.clone()));
                }
                Ok(())
            }
            _ if !all => Ok(()), // not below an include
            EntryKind::File => self.restore_file(e, &dest),
            EntryKind::Symlink => {
                bump(&self.counts.symlinks, 1);
                if self.opts.dry_run || !self.clear_for(&dest)? {
                    return Ok(());
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), &dest).at(&dest)?;
                self.apply_meta(&dest, e, None);
                Ok(())
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
                if e.kind != EntryKind::Fifo && !self.root_user {
                    push(&self.warnings, &dest, "device node not restored (needs root)");
                    return Ok(());
                }
                bump(&self.counts.specials, 1);
                if self.opts.dry_run || !self.clear_for(&dest)? {
                    return Ok(());
                }
                fsmeta::make_node(&dest, e)?;
                self.apply_meta(&dest, e, None);
                Ok(())
            }
        }
    }

    /// Makes `dest` a real directory. A symlink or file in its place is removed when the policy
    /// allows overwriting; otherwise the entry is skipped. Never follows a symlink.
    fn ensure_dir(&self, dest: &Path) -> Result<bool> {
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => Ok(true),
            Ok(_) if self.opts.overwrite == Overwrite::Never => {
                push(&self.warnings, dest, "exists and is not a directory; skipped (--overwrite never)");
                Ok(false)
            }
            Ok(_) => {
                fs::remove_file(dest).at(dest)?;
                fs::create_dir(dest).at(dest)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(dest).at(dest)?;
                // Writable by us until its own mode is applied at the end.
                fs::set_permissions(dest, fs::Permissions::from_mode(0o700)).at(dest)?;
                Ok(true)
            }
            Err(e) => Err(Error::io(dest, e)),
        }
    }

    /// Prepares the destination of a non-file entry: true when it may be created.
    fn clear_for(&self, dest: &Path) -> Result<bool> {
        match fs::symlink_metadata(dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Error::io(dest, e)),
            Ok(_) if self.opts.overwrite == Overwrite::Never => {
                bump(&self.counts.files_skipped, 1);
                Ok(false)
            }
            Ok(m) if m.is_dir() => {
                push(&self.warnings, dest, "a directory is in the way; not replaced");
                Ok(false)
            }
            Ok(_) => {
                fs::remove_file(dest).at(dest)?;
                Ok(true)
            }
        }
    }

    fn restore_file(&self, e: &Entry, dest: &Path) -> Result<()> {
        if e.nlink > 1 && e.dev != 0 {
            let mut links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if links.contains_key(&(e.dev, e.inode)) {
                drop(links);
                self.deferred
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((dest.to_path_buf(), e.clone()));
                return Ok(());
            }
            links.insert((e.dev, e.inode), dest.to_path_buf());
        }
        if let Ok(existing) = fs::symlink_metadata(dest) {
            if existing.is_dir() {
                push(&self.warnings, dest, "a directory is in the way; file not restored");
                return Ok(());
            }
            let skip = match self.opts.overwrite {
                Overwrite::Never => true,
                Overwrite::Always => false,
                Overwrite::IfChanged => existing.is_file() && same_content(dest, &existing, e),
            };
            if skip {
                bump(&self.counts.files_skipped, 1);
                self.progress.inc(e.size);
                if self.opts.overwrite == Overwrite::IfChanged && !self.opts.dry_run {
                    self.apply_meta(dest, e, None);
                }
                return Ok(());
            }
        }
        bump(&self.counts.files_written, 1);
        if self.opts.dry_run {
            bump(&self.counts.bytes_written, e.size);
            return Ok(());
        }
        let parent = dest.parent().unwrap_or(&self.opts.target);
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".cairn-restore.{}.{n}", std::process::id()));
        let written = self.write_content(e, &tmp);
        match written {
            Ok(file) => {
                self.apply_meta(&tmp, e, Some(&file));
                drop(file);
                fs::rename(&tmp, dest).at(dest)?;
                crate::failpoint::hit("restore.file_written");
            }
            Err(err) => {
                let _ = fs::remove_file(&tmp);
                if err.is_damage() {
                    push(&self.damaged, dest, format!("not restored: {err}"));
                    return Ok(());
                }
                return Err(err);
            }
        }
        if self.opts.verify {
            match hash_file(dest) {
                Ok(h) if Some(h) == e.file_hash => bump(&self.counts.files_verified, 1),
                Ok(_) => push(&self.damaged, dest, "verification failed: content differs from the stored BLAKE3"),
                Err(err) => push(&self.damaged, dest, format!("verification failed: {err}")),
            }
        }
        Ok(())
    }

    /// Writes a file's content into a new temporary file; holes stay holes.
    fn write_content(&self, e: &Entry, tmp: &Path) -> Result<File> {
        let file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp).at(tmp)?;
        let ids: Vec<BlobId> = e.content.iter().map(|c| BlobId::from(c.id)).collect();
        let locations = self.repo.index.locate_many(&ids)?;
        let misfit = |c: &crate::tree::ChunkRef| {
            Error::corrupt(format!("chunk {}", c.id), "does not fit the file it belongs to")
        };
        // A chunk's bytes, which must be as long as the file's list says.
        let fetch = |c: &crate::tree::ChunkRef, loc: &Option<crate::index::BlobLocation>| -> Result<Vec<u8>> {
            let loc = loc.as_ref().ok_or_else(|| Error::Missing { what: "chunk", id: c.id.to_hex() })?;
            let data = self.repo.read_located(loc)?;
            if data.len() != c.len as usize {
                return Err(misfit(c));
            }
            Ok(data)
        };
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
                buf.extend_from_slice(&fetch(c, loc)?);
            }
            file.write_all_at(&buf, 0).at(tmp)?;
            bump(&self.counts.bytes_written, e.size);
            self.progress.inc(e.size);
            return Ok(file);
        }
        file.set_len(e.size).at(tmp)?;
        let write = |(c, loc): (&crate::tree::ChunkRef, &Option<crate::index::BlobLocation>)| -> Result<()> {
            let data = fetch(c, loc)?;
            if c.offset.checked_add(u64::from(c.len)).is_none_or(|end| end > e.size) {
                return Err(misfit(c));
            }
            file.write_all_at(&data, c.offset).at(tmp)?;
            bump(&self.counts.bytes_written, data.len() as u64);
            self.progress.inc(data.len() as u64);
            Ok(())
        };
        if e.content.len() > 8 {
            e.content.par_iter().zip(locations.par_iter()).try_for_each(write)?;
        } else {
            e.content.iter().zip(locations.iter()).try_for_each(write)?;
        }
        Ok(file)
    }

    /// Owner, mode, extended attributes and times. Failures are warnings: the data is what matters.
    fn apply_meta(&self, path: &Path, e: &Entry, file: Option<&File>) {
        // Through the open file when there is one: the same calls without three path walks.
        if self.root_user {
            let owned = match file {
                Some(f) => fsmeta::set_file_owner(f, path, e.uid, e.gid),
                None => fsmeta::set_owner(path, e.uid, e.gid),
            };
            if let Err(err) = owned {
                push(&self.warnings, path, format!("cannot set owner: {err}"));
            }
        } else if e.uid != rustix::process::geteuid().as_raw() || e.gid != rustix::process::getegid().as_raw() {
            bump(&self.counts.owner_failures, 1);
        }
        if e.kind != EntryKind::Symlink {
            // After chown, which clears setuid/setgid.
            let moded = match file {
                Some(f) => fsmeta::set_file_mode(f, path, e.mode),
                None => {
                    fs::set_permissions(path, fs::Permissions::from_mode(e.mode)).map_err(|err| Error::io(path, err))
                }
            };
            if let Err(err) = moded {
                push(&self.warnings, path, format!("cannot set mode: {err}"));
            }
        }
        if !e.xattrs.is_empty() {
            if let Err(err) = fsmeta::set_xattrs(path, &e.xattrs) {
                push(&self.warnings, path, format!("cannot set extended attributes: {err}"));
            }
        }
        let times = match file {
            Some(f) => fsmeta::set_file_times(f, path, e.mtime),
            None => fsmeta::set_times(path, e.mtime),
        };
        if let Err(err) = times {
            push(&self.warnings, path, format!("cannot set times: {err}"));
        }
    }

    /// Links the remaining members of hard-link groups, then applies directory metadata.
    fn finish(&self) -> Result<()> {
        let deferred = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for (dest, e) in deferred {
            let Some(first) = links.get(&(e.dev, e.inode)) else {
                continue;
            };
            if self.opts.dry_run {
                bump(&self.counts.hardlinks, 1);
                continue;
            }
            if !first.exists() {
                // The first member could not be written (damage): restore this one on its own.
                let mut alone = e.clone();
                alone.nlink = 1;
                self.restore_file(&alone, &dest)?;
                continue;
            }
            if fs::symlink_metadata(&dest).is_ok() {
                if self.opts.overwrite == Overwrite::Never || same_file(first, &dest) {
                    continue;
                }
                fs::remove_file(&dest).at(&dest)?;
            }
            fs::hard_link(first, &dest).at(&dest)?;
            bump(&self.counts.hardlinks, 1);
        }
        if self.opts.dry_run {
            return Ok(());
        }
        let mut dirs = std::mem::take(&mut *self.dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (path, e) in &dirs {
            self.apply_meta(path, e, None);
        }
        Ok(())
    }
}

/// Files up to this size without holes are written in one call.
const SMALL_FILE: u64 = 1 << 20;

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// `if-changed`: size first, then mtime, then the content's BLAKE3.
fn same_content(path: &Path, meta: &fs::Metadata, e: &Entry) -> bool {
    use std::os::unix::fs::MetadataExt;
    if meta.len() != e.size {
        return false;
    }
    let mtime = fsmeta::timestamp(meta.mtime(), meta.mtime_nsec());
    if mtime == e.mtime {
        return true;
    }
    e.file_hash.is_some() && hash_file(path).ok() == e.file_hash
}

/// BLAKE3 of a file's content.
pub fn hash_file(path: &Path) -> Result<FileHash> {
    let mut f = File::open(path).at(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(FileHash::from_hash(hasher.finalize()))
}

impl Repo {
    /// Restores a snapshot (or part of it) under `opts.target`.
    pub fn restore(
        &self,
        snapshot: &Snapshot,
        opts: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestoreReport> {
        let started = Instant::now();
        let _session = self.session("restore")?;
        let includes: Vec<PathBuf> =
            opts.includes.iter().map(|p| Path::new("/").join(p.strip_prefix("/").unwrap_or(p))).collect();
        if !opts.dry_run {
            fs::create_dir_all(&opts.target).at(&opts.target)?;
        }
        let mut report = RestoreReport {
            snapshot: snapshot.id.to_hex(),
            target: opts.target.to_string_lossy().into_owned(),
            dry_run: opts.dry_run,
            ..RestoreReport::default()
        };
        if opts.safety_snapshot && !opts.dry_run && opts.overwrite != Overwrite::Never {
            report.safety_snapshot = self.safety_snapshot(snapshot, opts, &includes)?;
        }
        let job = Job {
            repo: self,
            opts,
            excludes: Excludes::new(&opts.excludes, None)?,
            includes,
            sources: snapshot.record.paths.iter().map(|p| PathBuf::from(OsStr::from_bytes(p))).collect(),
            progress,
            root_user: fsmeta::is_root(),
            counts: Counts::default(),
            damaged: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            dirs: Mutex::new(Vec::new()),
            links: Mutex::new(HashMap::new()),
            deferred: Mutex::new(Vec::new()),
            tmp_counter: AtomicU64::new(0),
        };
        let total = job.includes.is_empty().then_some(snapshot.record.totals.bytes_total);
        progress.start("restore", total, Unit::Bytes);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()
            .map_err(|e| Error::InvalidInput(format!("cannot start worker threads: {e}")))?;
        pool.install(|| job.restore_tree(snapshot.record.root, Path::new("/")))?;
        job.finish()?;
        progress.finish();
        let c = &job.counts;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut warnings = job.warnings.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        if g(&c.owner_failures) > 0 {
            warnings.push(Warning {
                path: report.target.clone(),
                message: format!("{} entries keep this user as owner: setting owners needs root", g(&c.owner_failures)),
            });
        }
        report.files_written = g(&c.files_written);
        report.files_skipped = g(&c.files_skipped);
        report.dirs = g(&c.dirs);
        report.symlinks = g(&c.symlinks);
        report.specials = g(&c.specials);
        report.hardlinks = g(&c.hardlinks);
        report.bytes_written = g(&c.bytes_written);
        report.files_verified = g(&c.files_verified);
        report.damaged = job.damaged.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        report.warnings = warnings;
        report.duration_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Snapshots what a restore is about to overwrite: the existing destinations of the restored
    /// paths. `None` when nothing exists there yet.
    fn safety_snapshot(
        &self,
        snapshot: &Snapshot,
        opts: &RestoreOptions,
        includes: &[PathBuf],
    ) -> Result<Option<String>> {
        let roots: Vec<PathBuf> = if includes.is_empty() {
            snapshot.record.paths.iter().map(|p| PathBuf::from(OsStr::from_bytes(p))).collect()
        } else {
            includes.to_vec()
        };
        let existing: Vec<PathBuf> = roots
            .iter()
            .map(|p| opts.target.join(p.strip_prefix("/").unwrap_or(p)))
            .filter(|d| fs::symlink_metadata(d).is_ok())
            .collect();
        if existing.is_empty() {
            return Ok(None);
        }
        self.writable(
            "the safety snapshot of what this restore overwrites (--no-safety-snapshot restores without one)",
        )?;
        let mut so = SnapshotOptions::new(existing);
        so.tags = vec![crate::repo::SAFETY_TAG.into()];
        so.label = Some(format!("{}{}", crate::repo::SAFETY_LABEL_PREFIX, snapshot.id.short(8)));
        let report = self.snapshot(&so, &crate::progress::NoProgress)?;
        Ok(report.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_matching() {
        let inc = vec![PathBuf::from("/etc/nginx")];
        assert_eq!(wanted(&inc, Path::new("/etc")), Some(false));
        assert_eq!(wanted(&inc, Path::new("/etc/nginx")), Some(true));
        assert_eq!(wanted(&inc, Path::new("/etc/nginx/a.conf")), Some(true));
        assert_eq!(wanted(&inc, Path::new("/etc/ssh")), None);
        assert_eq!(wanted(&[], Path::new("/x")), Some(true));
    }
}
