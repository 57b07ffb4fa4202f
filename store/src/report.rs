//! What a snapshot run reports: its totals as the workers count them, and the report the
//! caller gets (the CLI's `--json` is this struct).

use std::time::Instant;

use serde::Serialize;

use crate::id::SnapshotId;
use crate::record::{SnapshotKind, SnapshotRecord, SnapshotTotals};
use crate::tally::{Counter, Warning};

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

impl SnapshotReport {
    /// The report of the run that made `record` (committed as `id`; none on a dry run).
    pub(crate) fn new(
        record: &SnapshotRecord,
        id: Option<SnapshotId>,
        time: jiff::Timestamp,
        started: Instant,
        warnings: Vec<Warning>,
        notes: Vec<Warning>,
    ) -> Self {
        Self {
            id: id.map(|i| i.to_hex()),
            parent: record.parent.map(|p| p.to_hex()),
            kind: record.kind,
            time: time.to_string(),
            host: record.host.clone(),
            paths: record.paths_lossy(),
            label: record.label.clone(),
            tags: record.tags.clone(),
            totals: record.totals.clone(),
            duration_secs: started.elapsed().as_secs_f64(),
            dry_run: id.is_none(),
            warnings,
            notes,
        }
    }
}

/// `SnapshotTotals` as the workers count them.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) files: Counter,
    pub(crate) dirs: Counter,
    pub(crate) symlinks: Counter,
    pub(crate) specials: Counter,
    pub(crate) files_new: Counter,
    pub(crate) files_changed: Counter,
    pub(crate) files_unchanged: Counter,
    pub(crate) bytes_total: Counter,
    pub(crate) bytes_read: Counter,
    pub(crate) blobs_new: Counter,
    pub(crate) data_added: Counter,
    pub(crate) data_stored: Counter,
}

impl Counters {
    pub(crate) fn totals(&self) -> SnapshotTotals {
        SnapshotTotals {
            files: self.files.get(),
            dirs: self.dirs.get(),
            symlinks: self.symlinks.get(),
            specials: self.specials.get(),
            files_new: self.files_new.get(),
            files_changed: self.files_changed.get(),
            files_unchanged: self.files_unchanged.get(),
            bytes_total: self.bytes_total.get(),
            bytes_read: self.bytes_read.get(),
            blobs_new: self.blobs_new.get(),
            data_added: self.data_added.get(),
            data_stored: self.data_stored.get(),
        }
    }
}
