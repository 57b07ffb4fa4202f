//! `cairn copy`: snapshots of one repository copied into another (a local repository into a
//! bucket for the off-site copy, a bucket's snapshot back to a local one, or any two).
//!
//! A copied snapshot keeps its ID: a record's ID is the BLAKE3 of its bytes, nothing in those
//! bytes is repository-specific (blob IDs are the BLAKE3 of their plaintext in every
//! unencrypted repository), and the record is copied byte for byte. So the same snapshot has
//! the same ID in both repositories, its tags, label, pin, host, time, paths and `parent` are
//! those it had in the source (the parent is named as it was, whether or not it is copied),
//! and a copy run twice finds the snapshot already there.
//!
//! Only the blobs the destination lacks are sent (send.rs). They go through the destination's
//! pack writer under a session, as a snapshot's do, so a gc running beside keeps them (docs/
//! GC.md), and a record is written only once everything it names is durable and indexed
//! (invariant 1): a copy killed at any point leaves no snapshot that cannot restore, and the
//! next run sends only what is still missing. Snapshots are copied oldest first, in batches
//! that fill about a pack, so a run of many small incremental snapshots does not leave a small
//! pack per snapshot; a batch's records are written together, after its packs.

mod send;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use serde::Serialize;

use crate::backend::{FileKind, Location};
use crate::error::{Error, Result};
use crate::id::{SnapshotId, TreeId};
use crate::index::MarkSet;
use crate::progress::{Progress, Unit};
use crate::record::SnapshotRecord;
use crate::repo::{Repo, Snapshot};
use crate::report::Counters;
use crate::upload::{self, Upload};
use crate::workers;

use send::{Sender, SentTrees};

/// The most snapshots whose records wait for one batch's packs.
const MAX_BATCH: usize = 64;

/// How a copy runs.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Worker threads reading and sealing; 0 means one per core.
    pub threads: usize,
}

/// What became of one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyStatus {
    /// Its data and record are in the destination now.
    Copied,
    /// The destination had it already (the same record, or a record of the same snapshot).
    Skipped,
    /// It could not be copied (`reason` says why); nothing of it is visible in the destination.
    Failed,
}

/// One snapshot of a copy.
#[derive(Clone, Debug, Serialize)]
pub struct CopiedSnapshot {
    /// Its ID in the source.
    pub source_id: String,
    /// Its ID in the destination (the same as in the source when copied; the matching record
    /// when skipped); none when it failed.
    pub destination_id: Option<String>,
    /// Copied, skipped or failed.
    pub status: CopyStatus,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// True when it failed because the source's data is damaged or missing.
    pub damaged: bool,
    /// Its time, RFC 3339.
    pub time: String,
    /// Its host.
    pub host: String,
    /// Its source paths.
    pub paths: Vec<String>,
    /// Its label.
    pub label: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Chunks sent for it (those the destination lacked and no snapshot copied before it in
    /// this run sent).
    pub chunks_sent: u64,
    /// Trees sent for it.
    pub trees_sent: u64,
    /// Stored (compressed) bytes sent for it.
    pub bytes_sent: u64,
}

/// What `copy` did.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    /// Where the snapshots came from.
    pub source: String,
    /// Where they went.
    pub destination: String,
    /// Every snapshot asked for, oldest first.
    pub snapshots: Vec<CopiedSnapshot>,
    /// Snapshots copied.
    pub copied: u64,
    /// Snapshots the destination had already.
    pub skipped: u64,
    /// Snapshots that could not be copied.
    pub failed: u64,
    /// Chunks sent.
    pub chunks_sent: u64,
    /// Trees sent.
    pub trees_sent: u64,
    /// Stored bytes sent.
    pub bytes_sent: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// What is worth knowing about the two repositories (different chunk sizes).
    pub notes: Vec<String>,
}

/// The fields that make two records one snapshot, whatever its tags, label, pin or `original`
/// say (restic's rule, with tags left out: a `cairn tag` on either side must not make the
/// snapshot look new and be copied again beside itself).
fn identity(r: &SnapshotRecord) -> (i64, TreeId, &str, &str, &[Vec<u8>], &[String]) {
    (r.time_ns, r.root, &r.host, &r.user, &r.paths, &r.excludes)
}

/// True when two locations name one place (after resolving symlinks of a local path).
fn same_place(a: &Location, b: &Location) -> bool {
    match (a.as_local(), b.as_local()) {
        (Some(a), Some(b)) => {
            let real = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            real(a) == real(b)
        }
        (None, None) => a.to_string() == b.to_string(),
        _ => false,
    }
}

/// The record file of `snap` as the source holds it: re-encoding gives the same bytes for a
/// record of the current version; an older one is read from its file (or the index's copy).
fn record_bytes(source: &Repo, snap: &Snapshot) -> Result<Vec<u8>> {
    // (A sealed record never encodes to the same bytes twice: it is read from its file.)
    let (id, bytes) = snap.record.seal_with(source.frames.as_ref());
    if id == snap.id {
        return Ok(bytes);
    }
    match source.backend.get(FileKind::Snapshot, &snap.id.to_hex()) {
        Ok(b) if source.open_record(snap.id, &b).is_ok() => Ok(b),
        _ => source
            .index
            .snapshots()?
            .into_iter()
            .find(|r| r.id == snap.id && source.open_record(snap.id, &r.record).is_ok())
            .map(|r| r.record)
            .ok_or_else(|| Error::Missing { what: "snapshot record", id: snap.id.to_hex() }),
    }
}

/// Errors that end one snapshot's copy but not the run: its data cannot be read from the
/// source (damaged, missing, or of a newer format).
fn snapshot_local(e: &Error) -> bool {
    e.is_damage() || matches!(e, Error::UnsupportedVersion { .. })
}

impl CopiedSnapshot {
    fn new(s: &Snapshot, status: CopyStatus) -> Self {
        Self {
            source_id: s.id.to_hex(),
            destination_id: None,
            status,
            reason: None,
            damaged: false,
            time: jiff::Timestamp::from_nanosecond(i128::from(s.record.time_ns))
                .map(|t| t.to_string())
                .unwrap_or_default(),
            host: s.record.host.clone(),
            paths: s.record.paths_lossy(),
            label: s.record.label.clone(),
            tags: s.record.tags.clone(),
            chunks_sent: 0,
            trees_sent: 0,
            bytes_sent: 0,
        }
    }

    fn fail(&mut self, e: &Error) {
        self.status = CopyStatus::Failed;
        self.damaged = snapshot_local(e);
        self.reason = Some(e.to_string());
    }
}

impl Repo {
    /// Copies `snapshots` of `source` into this repository (see the module documentation).
    /// A snapshot this repository has already (the same ID, or a record of the same snapshot:
    /// same time, root tree, host, user, paths and excludes) is skipped; one whose label another
    /// snapshot here has, or whose data the source cannot give back intact, fails alone, and
    /// the others are copied. Errors of either repository as a whole (unreachable, a full disk)
    /// stop the copy; what was committed before stays.
    pub fn copy_from(
        &self,
        source: &Repo,
        snapshots: &[Snapshot],
        opts: &CopyOptions,
        progress: &dyn Progress,
    ) -> Result<CopyReport> {
        let started = Instant::now();
        self.writable("copy")?;
        if same_place(&source.location, &self.location) {
            return Err(Error::InvalidInput(format!(
                "{} is both the source and the destination: a repository already holds its own snapshots",
                self.location
            )));
        }
        // The seam encryption will use (issue 16): blobs are copied under their IDs, which is
        // right only when both repositories name a blob the same way. Keyed IDs would need
        // every blob named again and every tree rewritten, a different copy.
        let probe = b"cairn copy: do both repositories name blobs alike?";
        if source.frames.id_of(probe) != self.frames.id_of(probe) {
            return Err(Error::InvalidInput(
                "the two repositories name blobs differently (keyed IDs): copying between them is not supported".into(),
            ));
        }
        let mut notes = Vec::new();
        if source.config.chunker != self.config.chunker {
            notes.push(format!(
                "the source cuts chunks of {} bytes on average, the destination of {}: copied files keep the \
                 source's chunks, so they share less with snapshots taken into the destination directly",
                source.config.chunker.avg_size, self.config.chunker.avg_size
            ));
        }
        // Registered before the first lookup in either index: a gc in the destination keeps
        // what this copy deduplicates against, one in the source what it is about to read.
        let _session = self.session("copy")?;
        let _reading = source.session("copy")?;

        let mut selected: Vec<&Snapshot> = Vec::new();
        let mut seen = HashSet::new();
        for s in snapshots {
            if seen.insert(s.id) {
                selected.push(s);
            }
        }
        selected.sort_by_key(|s| (s.record.time_ns, s.id));
        let mut outcomes: Vec<CopiedSnapshot> = Vec::with_capacity(selected.len());
        let to_copy = self.decide(source, &selected, &mut outcomes)?;

        // A source read under a lost lease may find a pack its gc deleted: not damage, a lost lease.
        let sent = self.send_batches(source, &selected, to_copy, &mut outcomes, opts, progress);
        source.leased(sent)?;
        self.top_up_reserve();
        let count = |status| outcomes.iter().filter(|o| o.status == status).count() as u64;
        Ok(CopyReport {
            source: source.location.to_string(),
            destination: self.location.to_string(),
            copied: count(CopyStatus::Copied),
            skipped: count(CopyStatus::Skipped),
            failed: count(CopyStatus::Failed),
            chunks_sent: outcomes.iter().map(|o| o.chunks_sent).sum(),
            trees_sent: outcomes.iter().map(|o| o.trees_sent).sum(),
            bytes_sent: outcomes.iter().map(|o| o.bytes_sent).sum(),
            snapshots: outcomes,
            duration_secs: started.elapsed().as_secs_f64(),
            notes,
        })
    }

    /// Sends the snapshots `to_copy` (positions in `selected`, with their record bytes) in
    /// batches, and writes each batch's records once its packs are durable and indexed.
    fn send_batches(
        &self,
        source: &Repo,
        selected: &[&Snapshot],
        to_copy: Vec<(usize, Vec<u8>)>,
        outcomes: &mut [CopiedSnapshot],
        opts: &CopyOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        let counters = Counters::default();
        let trees = SentTrees::default();
        let pool = workers::pool(opts.threads)?;
        let mut b = Batching {
            sender: Sender {
                source,
                dest: self,
                pool: &pool,
                progress,
                trees: &trees,
                as_stored: source.frames.frame_format() == self.frames.frame_format(),
            },
            counters: &counters,
            done: walked_trees(self, 0)?,
            scratch: 0,
            walked: 0,
            total: to_copy.len(),
        };
        let mut queue: VecDeque<(usize, Vec<u8>)> = to_copy.into();
        while !queue.is_empty() {
            let batch = upload::run_as("copy", self, progress, &counters, workers::count(opts.threads), false, |up| {
                b.fill(up, selected, &mut queue, outcomes)
            })?;
            // Every pack of the batch is durable and indexed: its records may be written.
            for (i, bytes) in batch {
                self.commit_copied(selected[i], &bytes, &mut outcomes[i])?;
            }
        }
        Ok(())
    }

    /// Decides what becomes of each selected snapshot before anything is sent: skipped when
    /// this repository has it, failed when its label is another snapshot's here or its record
    /// cannot be read; the rest (position and record bytes) are returned, to be copied. Each
    /// gets its outcome in `outcomes`, in order (those to copy as `Copied`, until they fail).
    fn decide(
        &self,
        source: &Repo,
        selected: &[&Snapshot],
        outcomes: &mut Vec<CopiedSnapshot>,
    ) -> Result<Vec<(usize, Vec<u8>)>> {
        let here = self.snapshots()?;
        let ids: HashSet<SnapshotId> = here.iter().map(|s| s.id).collect();
        let mut same: HashMap<_, SnapshotId> = here.iter().map(|s| (identity(&s.record), s.id)).collect();
        let mut to_copy = Vec::new();
        for (i, s) in selected.iter().enumerate() {
            let mut o = CopiedSnapshot::new(s, CopyStatus::Copied);
            if ids.contains(&s.id) {
                o.status = CopyStatus::Skipped;
                o.destination_id = Some(s.id.to_hex());
                o.reason = Some("already in the destination".into());
            } else if let Some(other) = same.get(&identity(&s.record)) {
                o.status = CopyStatus::Skipped;
                o.destination_id = Some(other.to_hex());
                o.reason = Some(format!(
                    "already in the destination as {} (the same snapshot with other tags, label or pin)",
                    other.short(8)
                ));
            } else if let Some(holder) =
                s.record.label.as_deref().map(|l| self.label_holder(l, Some(*s))).transpose()?.flatten()
            {
                o.fail(&label_taken(s, &holder));
            } else {
                match record_bytes(source, s) {
                    Ok(bytes) => {
                        same.insert(identity(&s.record), s.id);
                        to_copy.push((i, bytes));
                    }
                    Err(e) => o.fail(&e),
                }
            }
            outcomes.push(o);
        }
        Ok(to_copy)
    }

    /// Writes a copied snapshot's record, once its data is durable here; its label is checked
    /// again (a snapshot labelled meanwhile here, by another process, keeps its label).
    fn commit_copied(&self, snap: &Snapshot, bytes: &[u8], outcome: &mut CopiedSnapshot) -> Result<()> {
        if let Some(label) = &snap.record.label {
            if let Some(holder) = self.label_holder(label, Some(snap))? {
                outcome.fail(&label_taken(snap, &holder));
                return Ok(());
            }
        }
        self.commit_sealed("copy", snap.id, bytes, &snap.record)?;
        outcome.destination_id = Some(snap.id.to_hex());
        Ok(())
    }
}

/// What the batches of one copy share.
struct Batching<'a> {
    sender: Sender<'a>,
    counters: &'a Counters,
    /// The trees walked in this run whose blobs are all held or sent.
    done: MarkSet,
    /// Mark sets made so far (each has a file of its own).
    scratch: u32,
    /// Snapshots walked so far, and to walk in all (for the progress bar).
    walked: usize,
    total: usize,
}

/// A new mark set of walked trees, the `n`th of this process (each in a file of its own, which
/// goes with it).
fn walked_trees(dest: &Repo, n: u32) -> Result<MarkSet> {
    MarkSet::create(&dest.scratch_path(&format!("copy-trees-{}-{n}.sqlite", std::process::id())))
}

impl Batching<'_> {
    /// Starts remembering walked trees afresh.
    fn forget_walked(&mut self) -> Result<()> {
        self.scratch += 1;
        self.done = walked_trees(self.sender.dest, self.scratch)?;
        Ok(())
    }

    /// Walks snapshots from `queue` into the upload until about a pack's worth is sent (or
    /// `MAX_BATCH` snapshots); returns those whose data is all sent. One whose data the source
    /// cannot give back fails alone (its outcome says why); other errors end the copy.
    fn fill(
        &mut self,
        up: &Upload<'_>,
        selected: &[&Snapshot],
        queue: &mut VecDeque<(usize, Vec<u8>)>,
        outcomes: &mut [CopiedSnapshot],
    ) -> Result<Vec<(usize, Vec<u8>)>> {
        let (c, trees) = (self.counters, self.sender.trees);
        let progress = self.sender.progress;
        let mut batch = Vec::new();
        let batch_start = c.data_stored.get();
        while let Some((i, bytes)) = queue.pop_front() {
            let snap = selected[i];
            self.walked += 1;
            let before = (c.blobs_new.get(), trees.0.get(), c.data_stored.get());
            progress.start(
                &format!("copy {}/{} {}", self.walked, self.total, snap.id.short(8)),
                Some(snap.record.totals.bytes_total),
                Unit::Bytes,
            );
            let sent = self.sender.snapshot(up, snap, &self.done);
            progress.finish();
            let o = &mut outcomes[i];
            o.trees_sent = trees.0.get() - before.1;
            o.chunks_sent = c.blobs_new.get() - before.0 - o.trees_sent;
            o.bytes_sent = c.data_stored.get() - before.2;
            match sent {
                Ok(()) => batch.push((i, bytes)),
                Err(e) if snapshot_local(&e) => {
                    o.fail(&e);
                    // Trees it walked may name blobs it gave back unsent: walk them again.
                    self.forget_walked()?;
                }
                Err(e) => return Err(e),
            }
            let filled = c.data_stored.get() - batch_start >= u64::from(self.sender.dest.config.pack_size);
            if filled || batch.len() >= MAX_BATCH {
                break;
            }
        }
        Ok(batch)
    }
}

/// The failure of a snapshot whose label another snapshot of the destination has.
fn label_taken(snap: &Snapshot, holder: &Snapshot) -> Error {
    let label = snap.record.label.as_deref().unwrap_or_default();
    Error::InvalidInput(format!(
        "its label {label:?} is the label of snapshot {} in the destination, and labels name one snapshot: \
         take it off there (`cairn tag {} --unlabel`) and copy again",
        holder.id.short(8),
        holder.id.short(8)
    ))
}
