//! The snapshot pipeline: walk (walk.rs) → chunk / hash / compress → pack writer thread
//! (upload.rs) → trees → record.
//!
//! The record is written last, after the writer has made every pack durable and indexed
//! (invariant 1).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::FileKind;
use crate::capture::{self, Capture, CAPTURES_DIR};
use crate::catalog::GroupBy;
use crate::crypto::putcache::{self, PutRun};
use crate::error::{Error, Result};
use crate::id::{SnapshotId, TreeId};
use crate::progress::{NoProgress, Progress, Unit};
use crate::record::SAFETY_TAG;
use crate::record::{CaptureRecord, SnapshotKind, SnapshotRecord};
use crate::repo::{Repo, Snapshot};
use crate::report::{Counters, SnapshotReport};
use crate::select::check_tags;
use crate::tally::Warning;
use crate::walk::{Scan, Walk};
use crate::{upload, walk, workers};

/// What to snapshot and how.
#[derive(Clone, Debug)]
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
    /// Pin it: no keep-policy removes it (`forget --include-pinned` overrides).
    pub pin: bool,
    /// A restore's safety snapshot: tagged `safety`, the one tag users may not give.
    pub(crate) safety: bool,
    /// The snapshot to trust for change detection (an ID, a prefix, `latest` or a label),
    /// whatever its paths; `None` picks the newest of the new snapshot's group.
    pub parent: Option<String>,
    /// Which earlier snapshots are in the new one's group, the newest of which is its parent
    /// (by host and paths unless told otherwise, as `forget` groups).
    pub group_by: GroupBy,
    /// A source path that does not exist is left out with a warning instead of failing the
    /// snapshot (it still fails when none exists).
    pub ignore_missing: bool,
    /// Source paths snapshotted when they exist; one that does not is left out with a note
    /// (a profile's `optional_sources`: a drop-in directory that may not be there).
    pub optional_paths: Vec<PathBuf>,
    /// Streams stored as files under the captures directory of the snapshot's tree (issue 18):
    /// run before the sources are walked, in this order. A snapshot may consist of captures
    /// only.
    pub captures: Vec<Capture>,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            kind: SnapshotKind::default(),
            label: None,
            tags: Vec::new(),
            excludes: Vec::new(),
            one_file_system: false,
            dry_run: false,
            host: None,
            threads: 0,
            no_follow_sources: false,
            parent: None,
            group_by: GroupBy::host_and_paths(),
            ignore_missing: false,
            pin: false,
            safety: false,
            optional_paths: Vec::new(),
            captures: Vec::new(),
        }
    }
}

impl SnapshotOptions {
    /// Options for a snapshot of `paths` with everything else at its default.
    #[must_use]
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, ..Self::default() }
    }

    /// Checks the source paths as a snapshot will: an error when it would fail for want of
    /// them (none given; one missing, or all of them with `ignore_missing`). The CLI asks
    /// before it creates a repository for the snapshot.
    pub fn check_sources(&self) -> Result<()> {
        capture::check(&self.captures)?;
        self.sources().map(|_| ())
    }

    /// The source paths as recorded and the missing ones left out (`walk::sources`); none is
    /// needed when there are captures. A source inside the captures directory is refused, so
    /// that a capture is never confused with a file (a restore's safety snapshot has no
    /// captures and may hold what `restore --captures` wrote).
    fn sources(&self) -> Result<(Vec<PathBuf>, Vec<Warning>)> {
        let (paths, missing) = walk::sources(&self.present_paths().0, self.ignore_missing, !self.captures.is_empty())?;
        if let Some(p) = paths.iter().find(|p| capture::is_reserved(p)).filter(|_| !self.safety) {
            return Err(Error::InvalidInput(format!(
                "{} is inside /{CAPTURES_DIR}, the name a snapshot keeps for its captures: it cannot be a source",
                p.display()
            )));
        }
        Ok((paths, missing))
    }

    /// The paths to snapshot: `paths` and the optional ones that exist; and a note for each
    /// optional one that does not.
    fn present_paths(&self) -> (Vec<PathBuf>, Vec<Warning>) {
        let mut paths = self.paths.clone();
        let mut notes = Vec::new();
        for p in &self.optional_paths {
            match std::fs::symlink_metadata(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    notes.push(Warning::new(p, "optional source does not exist: left out"));
                }
                _ => paths.push(p.clone()), // there, or an error the walk reports
            }
        }
        (paths, notes)
    }
}

/// What the walk stored: the root tree, and what it has to say about paths.
struct Stored {
    root: TreeId,
    captures: Vec<CaptureRecord>,
    warnings: Vec<Warning>,
    notes: Vec<Warning>,
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
    /// The snapshot change detection trusts for a new snapshot of `paths` (as recorded) on
    /// `host` with `opts.tags`: the one `opts.parent` names, else the newest of its group (the
    /// newest full one for a differential snapshot). A restore's safety snapshot is the
    /// automatic parent only of another safety snapshot: `latest` leaves them out too, and one
    /// holds only what a restore overwrote.
    pub fn parent_for(&self, opts: &SnapshotOptions, host: &str, paths: &[Vec<u8>]) -> Result<Option<Snapshot>> {
        if let Some(spec) = &opts.parent {
            if opts.kind == SnapshotKind::Full {
                return Err(Error::InvalidInput(
                    "a full snapshot reads every byte and trusts no parent: name one only for an incremental or \
                     differential snapshot"
                        .into(),
                ));
            }
            return self.resolve(spec).map(Some);
        }
        if opts.kind == SnapshotKind::Full {
            return Ok(None);
        }
        let tags = &opts.tags;
        let safety = opts.safety;
        Ok(self.snapshots()?.into_iter().rev().find(|s| {
            opts.group_by.admits(s, host, paths, tags)
                && (safety || !s.is_safety())
                && (opts.kind == SnapshotKind::Incremental || s.record.kind == SnapshotKind::Full)
        }))
    }

    /// A put-only key's parent: the last snapshot this machine took of the same host and paths,
    /// from its put cache (it cannot read records or trees in the repository). Starts the run
    /// that serves the parent's trees and gathers the new snapshot's.
    fn start_put_run(&self, opts: &SnapshotOptions, cache: &Path, host: &str, paths: &[Vec<u8>]) -> Option<Snapshot> {
        let mut found = (opts.kind != SnapshotKind::Full).then(|| putcache::load(cache)).flatten().filter(|c| {
            c.record.host == host
                && c.record.paths == paths
                && (opts.kind == SnapshotKind::Incremental || c.record.kind == SnapshotKind::Full)
        });
        let run = PutRun::new(found.as_mut());
        *self.put_run.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(run));
        found.map(|c| Snapshot { id: c.snapshot, record: c.record })
    }

    /// Takes a snapshot: the sources are walked and stored against the parent, then the record
    /// makes the snapshot exist.
    pub fn snapshot(&self, opts: &SnapshotOptions, progress: &dyn Progress) -> Result<SnapshotReport> {
        let started = Instant::now();
        // Registered before the first index lookup: gc waits for this session before deleting
        // anything it condemns meanwhile (docs/GC.md).
        self.writable("a snapshot")?;
        if !opts.safety {
            check_tags(&opts.tags)?;
        }
        if self.is_put_only()
            && (opts.parent.is_some() || opts.label.is_some() || opts.group_by != GroupBy::host_and_paths())
        {
            return Err(Error::PutOnly {
                what: "read the snapshot records that --parent, --label and --group-by need (its parent is the last \
                       snapshot this machine took of the same paths)"
                    .into(),
            });
        }
        if let Some(label) = &opts.label {
            self.check_label_free(label, None)?;
        }
        let _session = self.session("snapshot")?;
        let time = jiff::Timestamp::now();
        // The record holds the paths snapshotted: a missing one left out is only a warning.
        capture::check(&opts.captures)?;
        let absent = opts.present_paths().1;
        let (paths, missing) = opts.sources()?;
        let raw_paths: Vec<Vec<u8>> = paths.iter().map(|p| p.as_os_str().as_bytes().to_vec()).collect();
        let host = opts.host.clone().unwrap_or_else(host_name);
        let put_cache = self.is_put_only().then(|| putcache::path_for(self.state.dir(), &host, &raw_paths));
        let parent = match &put_cache {
            Some(path) => self.start_put_run(opts, path, &host, &raw_paths),
            None => self.parent_for(opts, &host, &raw_paths)?,
        };
        let counters = Counters::default();
        let stored = self.store_sources(opts, &paths, parent.as_ref(), &counters, progress);
        let run = self.put_run.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let mut stored = stored?;
        stored.warnings.splice(0..0, missing);
        stored.notes.splice(0..0, absent);
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
            root: stored.root,
            totals: counters.totals(),
            warnings: stored.warnings.len() as u64,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            cairn_version: env!("CARGO_PKG_VERSION").to_owned(),
            pinned: opts.pin,
            original: None,
            captures: std::mem::take(&mut stored.captures),
        };
        let id = if opts.dry_run { None } else { Some(self.commit(&record)?) };
        if let (Some(path), Some(run), Some(id)) = (&put_cache, run, id) {
            let trees = Arc::try_unwrap(run).map(PutRun::into_trees).unwrap_or_default();
            let cache = putcache::PutCache { snapshot: id, record: record.clone(), trees };
            if let Err(e) = putcache::store(path, &cache) {
                log::warn!("the put cache could not be written ({e}): the next snapshot reads every file");
            }
        }
        self.top_up_reserve();
        Ok(SnapshotReport::new(&record, id, time, started, stored.warnings, stored.notes))
    }

    /// Walks the sources and stores what they hold, against the parent's trees; returns once
    /// every pack is durable and indexed.
    fn store_sources(
        &self,
        opts: &SnapshotOptions,
        paths: &[PathBuf],
        parent: Option<&Snapshot>,
        counters: &Counters,
        progress: &dyn Progress,
    ) -> Result<Stored> {
        let parent_root = parent.and_then(|p| self.load_tree(p.record.root).ok());
        let scan = Scan::new(
            &opts.excludes,
            opts.one_file_system,
            !opts.no_follow_sources,
            opts.kind == SnapshotKind::Full,
            self.location.as_local(),
            !opts.safety,
        )?;
        // A put-only key on a bucket never learns (it cannot read records) that another
        // machine forgot its parent and collected the chunks only that parent held: each of
        // the parent's chunks is looked up instead, in an index that drops collected packs.
        let distrust = self.is_put_only() && self.location.is_shared();
        let trusted_parent = match parent {
            Some(p) if !distrust => self.index.snapshot_generation(p.id)? == Some(self.index.generation()?),
            _ => false,
        };
        let pool = workers::pool(opts.threads)?;
        // The parent's size is the best guess of this run's, and usually close: a bar with an
        // ETA instead of a spinner (the count covers unchanged files as well as files read).
        let estimate = parent.map(|p| p.record.totals.bytes_total).filter(|&n| n > 0);
        progress.start("snapshot", estimate, Unit::Bytes);
        let workers = workers::count(opts.threads);
        let stored = upload::run(self, progress, counters, workers, opts.dry_run, |upload| {
            // Captures first: one that fails the snapshot does so before the walk reads anything.
            let captured = pool.install(|| capture::run_all(&opts.captures, upload, counters, progress))?;
            let walk =
                Walk::new(self, progress, &scan, upload, counters, trusted_parent).with_root_entry(captured.entry);
            let root = pool.install(|| walk.root(paths, parent_root.as_ref()))?;
            let (mut warnings, notes) = walk.into_findings();
            warnings.splice(0..0, captured.warnings);
            Ok(Stored { root, captures: captured.records, warnings, notes })
        })?;
        progress.finish();
        Ok(stored)
    }

    /// Makes a snapshot exist: its record is written durably, then indexed.
    pub(crate) fn commit(&self, record: &SnapshotRecord) -> Result<SnapshotId> {
        let (id, bytes) = record.seal_with(self.frames.as_ref());
        self.commit_sealed("snapshot", id, &bytes, record)?;
        Ok(id)
    }

    /// Writes the record file `bytes` (sealed as `id`, decoding as `record`) durably, then
    /// indexes it; `kind` names the fail-points (`KIND.before_record`, `KIND.record_written`).
    pub(crate) fn commit_sealed(
        &self,
        kind: &str,
        id: SnapshotId,
        bytes: &[u8],
        record: &SnapshotRecord,
    ) -> Result<()> {
        crate::failpoint::hit(&format!("{kind}.before_record"));
        // Never a record under a lost lease: gc elsewhere may have counted this run as ended.
        self.check_lease()?;
        self.backend.put(FileKind::Snapshot, &id.to_hex(), bytes)?;
        crate::failpoint::hit(&format!("{kind}.record_written"));
        self.index.add_snapshot(id, record.time_ns, &record.host, record.label.as_deref(), bytes)
    }

    /// Snapshots what a restore is about to overwrite, `paths`: a source that is a symlink is
    /// stored as the link, since the restore replaces it and never writes through it. Returns
    /// the safety snapshot's ID. It has no label (labels are unique, and a restore may run
    /// many times): the `safety` tag marks it, and the restore's report names it.
    pub(crate) fn safety_snapshot_of(&self, paths: Vec<PathBuf>, extra_tags: &[String]) -> Result<Option<String>> {
        let mut so = SnapshotOptions::new(paths);
        so.no_follow_sources = true;
        so.safety = true;
        so.tags = vec![SAFETY_TAG.into()];
        so.tags.extend(extra_tags.iter().filter(|t| *t != SAFETY_TAG).cloned());
        Ok(self.snapshot(&so, &NoProgress)?.id)
    }
}
