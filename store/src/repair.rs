//! `repair index`: rebuild the index from the packs and snapshot records alone.
//!
//! The old index (deleted, truncated or corrupt) is discarded. Every pack is read whole: an
//! intact pack (its content hashes to its name) is indexed from its trailer. A damaged pack has
//! its blobs checked one by one against their IDs; the good ones are written to a new pack and
//! indexed, the damaged pack is moved to `quarantine/`, and what it lost is named. Snapshot
//! records are re-read and checked. Finally a structural scrub names every file and snapshot
//! that needs data that is gone; the next snapshot of the same sources stores that data again,
//! which heals the repository.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{Backend, FileKind, LocalBackend};
use crate::error::{Error, Result};
use crate::id::{PackId, SnapshotId};
use crate::pack::{self, PackWriter};
use crate::progress::{NoProgress, Progress, Unit};
use crate::record::SnapshotRecord;
use crate::repo::{now_secs, Repo};
use crate::scrub::{Damage, ScrubOptions};

/// What `repair index` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Intact packs indexed.
    pub packs_indexed: u64,
    /// Blobs indexed (from intact packs and salvaged from damaged ones).
    pub blobs_indexed: u64,
    /// Damaged packs moved to `quarantine/`.
    pub packs_quarantined: Vec<String>,
    /// Good blobs copied out of damaged packs into new packs.
    pub blobs_salvaged: u64,
    /// Blobs of damaged packs that could not be recovered.
    pub blobs_lost: u64,
    /// Snapshots indexed.
    pub snapshots: u64,
    /// Snapshot records that were damaged (moved to `quarantine/`).
    pub snapshots_quarantined: Vec<String>,
    /// What is still missing afterwards, with every snapshot and file that needs it.
    pub lost: Vec<Damage>,
}

impl RepairReport {
    /// True when nothing referenced by a snapshot is lost.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.lost.is_empty() && self.snapshots_quarantined.is_empty()
    }
}

/// What reading one pack gave.
enum PackOutcome {
    Intact(PackId, u64, Vec<pack::PackEntry>),
    Damaged { name: String, good: Vec<(pack::PackEntry, Vec<u8>)>, lost: u64 },
}

fn remove_file_if_any(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Removes a database file and its WAL and shared-memory files.
fn remove_db(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-filter"] {
        remove_file_if_any(&PathBuf::from(format!("{}{suffix}", path.display())))?;
    }
    Ok(())
}

fn read_pack(backend: &dyn Backend, name: &str, size: u64) -> Result<PackOutcome> {
    let bytes = match backend.get(FileKind::Pack, name) {
        Ok(b) => b,
        Err(e) if e.is_damage() => return Ok(PackOutcome::Damaged { name: name.to_owned(), good: vec![], lost: 0 }),
        Err(e) => return Err(e),
    };
    if let (Ok(id), Ok(entries)) = (name.parse::<PackId>(), pack::check_pack(name, &bytes)) {
        return Ok(PackOutcome::Intact(id, size, entries));
    }
    // Damaged: keep every blob that still hashes to its ID.
    let Ok(entries) = pack::check_pack_layout(name, &bytes) else {
        return Ok(PackOutcome::Damaged { name: name.to_owned(), good: vec![], lost: 0 });
    };
    let mut good = Vec::new();
    let mut lost = 0;
    for e in entries {
        let start = usize::try_from(e.offset).unwrap_or(usize::MAX);
        let stored = bytes.get(start..start.saturating_add(e.stored_len as usize)).unwrap_or(&[]);
        match pack::open_blob(&e, stored) {
            Ok(data) => good.push((e, data)),
            Err(_) => lost += 1,
        }
    }
    Ok(PackOutcome::Damaged { name: name.to_owned(), good, lost })
}

impl Repo {
    /// Rebuilds the index of the repository at `root` (see the module docs). The new index is
    /// built beside the old one and swapped in only when complete, so a repair that is killed
    /// never leaves a partial index that looks whole: the old one stays until the new one is
    /// ready, and running the repair again starts over.
    pub fn repair_index(root: &Path, progress: &dyn Progress) -> Result<(Self, RepairReport)> {
        let dir = root.join("index");
        crate::backend::create_repo_dir(root, &dir)?;
        let fresh = dir.join("index.sqlite.rebuild");
        remove_db(&fresh)?;
        let backend: std::sync::Arc<dyn Backend> = std::sync::Arc::new(LocalBackend::new(root));
        let bytes = backend.get(FileKind::Config, "config")?;
        let config = crate::config::RepoConfig::decode(&bytes)?;
        let index = crate::index::Index::open(&fresh)?;
        let building = Self { root: root.to_path_buf(), backend, index, config };
        let report = building.rebuild_verified(progress)?;
        crate::failpoint::hit("repair.before_swap");
        drop(building); // closes every connection: the new index's WAL is checkpointed
                        // The old index's WAL must never be applied to the new file: remove it first.
        let live = dir.join("index.sqlite");
        for suffix in ["-wal", "-shm", "-filter"] {
            remove_file_if_any(&PathBuf::from(format!("{}{suffix}", live.display())))?;
        }
        fs::rename(&fresh, &live).map_err(|e| Error::io(&live, e))?;
        // The new index's blob filter comes along (its token is in the new index); were it
        // missing, the next writer would build one.
        let _ = fs::rename(format!("{}-filter", fresh.display()), format!("{}-filter", live.display()));
        crate::backend::sync_dir(&dir)?;
        let repo = Self::open(root, &crate::repo::OpenOptions::default())?;
        Ok((repo, report))
    }

    fn rebuild_verified(&self, progress: &dyn Progress) -> Result<RepairReport> {
        let mut report = RepairReport::default();
        let now = now_secs();
        let packs = self.backend.list(FileKind::Pack)?;
        progress.start("repair: reading packs", Some(packs.iter().map(|p| p.1).sum()), Unit::Bytes);
        let outcomes: Mutex<Vec<PackOutcome>> = Mutex::new(Vec::new());
        packs.par_iter().with_max_len(1).try_for_each(|(name, size)| -> Result<()> {
            let outcome = read_pack(self.backend.as_ref(), name, *size)?;
            if let PackOutcome::Intact(id, size, entries) = &outcome {
                self.index.add_pack(*id, *size, entries, now)?;
                crate::failpoint::hit("repair.pack_indexed");
            }
            progress.inc(*size);
            outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(outcome);
            Ok(())
        })?;
        progress.finish();
        let mut salvage = PackWriter::new();
        for outcome in outcomes.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            match outcome {
                PackOutcome::Intact(_, _, entries) => {
                    report.packs_indexed += 1;
                    report.blobs_indexed += entries.len() as u64;
                }
                PackOutcome::Damaged { name, good, lost } => {
                    for (e, data) in &good {
                        if !self.index.has_blob(e.id)? {
                            salvage.add(&pack::seal_frame(&[(e.kind, e.id, data)], self.config.compression_level));
                            report.blobs_salvaged += 1;
                        }
                    }
                    report.blobs_lost += lost;
                    // The salvaged blobs are durable and indexed before the damaged pack moves.
                    self.flush_salvage(&mut salvage, now, &mut report)?;
                    self.backend.quarantine(FileKind::Pack, &name)?;
                    report.packs_quarantined.push(name);
                }
            }
        }
        for (name, _) in self.backend.list(FileKind::Snapshot)? {
            let Ok(id) = name.parse::<SnapshotId>() else { continue };
            match self.backend.get(FileKind::Snapshot, &name).and_then(|b| Ok((SnapshotRecord::open(id, &b)?, b))) {
                Ok((rec, bytes)) => {
                    self.index.add_snapshot(id, rec.time_ns, &rec.host, rec.label.as_deref(), &bytes)?;
                    report.snapshots += 1;
                }
                Err(e) if e.is_damage() => {
                    self.backend.quarantine(FileKind::Snapshot, &name)?;
                    report.snapshots_quarantined.push(name);
                }
                Err(e) => return Err(e),
            }
        }
        // What damaged packs held is gone: parents must be checked chunk by chunk again.
        self.index.bump_generation()?;
        // Name what is gone: a structural scrub over every snapshot.
        let scrub = self.scrub(&ScrubOptions::default(), &NoProgress)?;
        report.lost = scrub.damage;
        Ok(report)
    }

    fn flush_salvage(&self, w: &mut PackWriter, now: i64, report: &mut RepairReport) -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let (id, bytes, entries) = w.finish();
        self.backend.put(FileKind::Pack, &id.to_hex(), &bytes)?;
        crate::failpoint::hit("repair.salvage_written");
        self.index.add_pack(id, bytes.len() as u64, &entries, now)?;
        report.blobs_indexed += entries.len() as u64;
        Ok(())
    }
}
