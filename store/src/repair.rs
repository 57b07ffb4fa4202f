//! Rebuilding the index from the packs and snapshot records: quickly from the pack trailers
//! when an open finds it lost (`rebuild_index`), and, by `repair index`, from every pack read
//! whole, discarding nothing that still verifies.
//!
//! The new index is built beside the old one, which is read (read-only, when it opens at all)
//! as evidence: its rows say where blobs of a pack whose trailer is damaged lie, and its
//! snapshot rows hold verified copies of records whose files are damaged or gone.
//!
//! 1. Every record file is read and checked. One that is damaged, or gone without a tombstone,
//!    is written again from the old index's copy when that copy verifies; one with no copy is
//!    lost, moved to `quarantine/` and named.
//! 2. Every pack is read whole. An intact pack (its content hashes to its name) is indexed from
//!    its trailer. From a damaged one, every blob that hashes to its ID is copied to a new
//!    pack: found by its trailer read leniently, by the old index's rows, and, for what the
//!    snapshots still miss after that, by a scan of its frames (salvage.rs).
//! 3. Only then is the new index swapped in, and the damaged packs moved to `quarantine/`.
//!    A structural scrub names every file and snapshot that needs data that is gone; the next
//!    snapshot of the same sources stores it again, which heals the repository.
//!
//! Anything of a format this build cannot read (an intact pack, tree or record of a newer
//! cairn) stops the repair before anything is changed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{Backend, FileKind, Location, ObjectInfo, Storage};
use crate::error::{Error, Result};
use crate::frame::FrameCodec;
use crate::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::index::Index;
use crate::pack::{self, BlobKind, PackEntry, PackWriter};
use crate::progress::{NoProgress, Progress, Unit};
use crate::repo::{missing, now_secs, OpenOptions, RebuildReport, Repo};
use crate::salvage::{self, Blob, Wanted};
use crate::scrub::{Damage, ScrubOptions};
use crate::tally::Counter;
use crate::workers::{self, lock};

/// What `repair config` may use when both copies of the config are lost.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ConfigRepair {
    /// The average chunk size the repository was made with (`init --chunk-size`); inferred
    /// from the packs when not given.
    pub chunk_size: Option<u32>,
    /// Target pack size for new data (default 16 MiB).
    pub pack_size: Option<u32>,
    /// zstd level for new data (default 3).
    pub compression_level: Option<i32>,
}

/// What `repair config` did.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigRepairReport {
    /// `none` (both copies were good), `copied` (one copy written again from the other) or
    /// `rebuilt` (both were lost: a new config from the given or inferred parameters).
    pub action: &'static str,
    /// The chunker parameters in force now.
    pub chunker: crate::config::ChunkerParams,
    /// True when the chunk size was inferred from the packs (rebuilt without `--chunk-size`).
    pub chunk_size_inferred: bool,
    /// The repository ID now; a rebuilt config gets a new one.
    pub repo_id: String,
}

/// What `repair index` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Intact packs indexed.
    pub packs_indexed: u64,
    /// Blobs indexed (from intact packs and salvaged from damaged ones).
    pub blobs_indexed: u64,
    /// Damaged packs moved to `quarantine/` (every blob in them that verified was copied first).
    pub packs_quarantined: Vec<String>,
    /// Good blobs copied out of damaged packs into new packs.
    pub blobs_salvaged: u64,
    /// Blobs the damaged packs were known to hold (by their trailers or the old index) that
    /// could not be recovered and are stored nowhere else.
    pub blobs_lost: u64,
    /// Snapshots indexed.
    pub snapshots: u64,
    /// Snapshot record files that were damaged with no verified copy anywhere (moved to
    /// `quarantine/`): these snapshots are lost.
    pub snapshots_quarantined: Vec<String>,
    /// Snapshot record files written again from the old index's verified copy (the file was
    /// damaged, or gone without having been forgotten).
    pub snapshots_rewritten: Vec<String>,
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

fn newer(what: String, e: &Error) -> Error {
    Error::Refused { reason: format!("{what} cannot be read ({e}); upgrade cairn: repair would discard it") }
}

/// The record files, sorted by what repair does with them.
#[derive(Default)]
struct Records {
    /// Intact files: (id, bytes).
    good: Vec<(SnapshotId, Vec<u8>)>,
    /// Files to write again from a verified copy: (id, bytes, the file is there but damaged).
    rewrite: Vec<(SnapshotId, Vec<u8>, bool)>,
    /// Damaged files with no copy.
    lost: Vec<String>,
}

impl Records {
    fn roots(&self, repo: &Repo) -> Result<Vec<TreeId>> {
        let all = self.good.iter().map(|(id, b)| (id, b)).chain(self.rewrite.iter().map(|(id, b, _)| (id, b)));
        all.map(|(id, bytes)| Ok(repo.open_record(*id, bytes)?.root)).collect()
    }
}

/// Salvaged blobs on their way to new packs: chunks and trees in packs of their own, blobs that
/// shared a frame in the damaged pack sharing one again.
struct Salvage {
    chunks: PackWriter,
    trees: PackWriter,
    written: HashSet<BlobId>,
}

impl Repo {
    /// Rebuilds the index from the packs' trailers and the snapshot records alone.
    pub fn rebuild_index(&self) -> Result<RebuildReport> {
        self.rebuild_index_reporting(&NoProgress)
    }

    /// `rebuild_index`, counting the packs on `progress`.
    pub(crate) fn rebuild_index_reporting(&self, progress: &dyn Progress) -> Result<RebuildReport> {
        self.index.clear()?;
        let report = self.index_from_files(&[], now_secs(), progress, crate::repo::pack_trailer)?;
        // Chunks may have gone with the old index: snapshots recorded so far are no longer
        // trusted as parents without checking their chunks (so a new snapshot heals).
        self.index.bump_generation()?;
        Ok(report)
    }

    /// Indexes the pack and record files the index does not hold yet (all of them after a
    /// `clear`), but for the packs in `skip`. A pack is indexed by what `entries` reads from
    /// it: its outer error stops the run, its inner one names the pack as damaged. A record is
    /// indexed once it verifies. What cannot be read is named in the report, not indexed.
    ///
    /// The packs are read `READERS` at a time (on a bucket each read is two round trips for
    /// the footer and trailer, so a fresh cache of thousands of packs is a wait on latency,
    /// not on the disk), a batch at a time so memory stays bounded; the index is written by
    /// this thread alone. `progress` counts the packs.
    pub(crate) fn index_from_files(
        &self,
        skip: &[String],
        now: i64,
        progress: &dyn Progress,
        entries: impl Fn(&dyn Backend, &dyn FrameCodec, &str, u64) -> Result<Result<Vec<PackEntry>>> + Sync,
    ) -> Result<RebuildReport> {
        const READERS: usize = 8;
        const BATCH: usize = 256;
        let mut report = RebuildReport::default();
        let indexed: HashSet<PackId> = self.index.packs()?.into_iter().map(|p| p.id).collect();
        let todo: Vec<(PackId, String, u64)> = self
            .backend
            .list(FileKind::Pack)?
            .into_iter()
            .filter_map(|ObjectInfo { name, size, .. }| Some((name.parse::<PackId>().ok()?, name, size)))
            .filter(|(id, name, _)| !indexed.contains(id) && !skip.contains(name))
            .collect();
        if !todo.is_empty() {
            progress.start("indexing packs", Some(todo.len() as u64), Unit::Items);
        }
        let backend = self.backend.as_ref();
        let codec = self.frames.as_ref();
        for batch in todo.chunks(BATCH) {
            let read = read_concurrently(batch, READERS, |(_, name, size)| entries(backend, codec, name, *size));
            for ((id, name, size), found) in batch.iter().zip(read) {
                match found? {
                    Ok(entries) => {
                        self.index.add_pack(*id, *size, &entries, now)?;
                        report.packs += 1;
                        report.blobs += entries.len() as u64;
                    }
                    Err(e) => report.damaged.push(format!("pack {name}: {e}")),
                }
                progress.inc(1);
            }
        }
        if !todo.is_empty() {
            progress.finish();
        }
        let known: HashSet<SnapshotId> = self.index.snapshot_ids()?.into_iter().collect();
        for ObjectInfo { name, .. } in self.backend.list(FileKind::Snapshot)? {
            let Ok(id) = name.parse::<SnapshotId>() else { continue };
            if known.contains(&id) {
                continue;
            }
            match self.backend.get(FileKind::Snapshot, &name).and_then(|b| Ok((self.open_record(id, &b)?, b))) {
                Ok((rec, bytes)) => {
                    self.index.add_snapshot(id, rec.time_ns, &rec.host, rec.label.as_deref(), &bytes)?;
                    report.snapshots += 1;
                }
                Err(e) => report.damaged.push(format!("snapshot {name}: {e}")),
            }
        }
        Ok(report)
    }

    /// Mends the config of the repository at `root`: a damaged or missing copy is written again
    /// from the good one; when both are lost, a new config is made from `opts`, the chunk size
    /// inferred from the largest chunks in the packs when not given (a wrong one costs only
    /// deduplication against older data, never a byte of it). A config of a newer format is
    /// refused, never replaced.
    pub fn repair_config(location: &Location, opts: &ConfigRepair) -> Result<ConfigRepairReport> {
        use crate::backend::CONFIG_COPY;
        use crate::config::{ChunkerParams, RepoConfig};
        let backend = location.backend()?;
        let read = |name: &str| backend.get(FileKind::Config, name).and_then(|b| RepoConfig::decode(&b));
        let (main, copy) = (read("config"), read(CONFIG_COPY));
        for r in [&main, &copy] {
            if let Err(Error::UnsupportedVersion { what, found, supported }) = r {
                return Err(Error::UnsupportedVersion { what: what.clone(), found: *found, supported: *supported });
            }
        }
        let done = |action, c: &RepoConfig, inferred| ConfigRepairReport {
            action,
            chunker: c.chunker,
            chunk_size_inferred: inferred,
            repo_id: c.repo_id.clone(),
        };
        match (main, copy) {
            (Ok(m), Ok(c)) if m == c => return Ok(done("none", &m, false)),
            (Ok(good), _) => {
                backend.put(FileKind::Config, CONFIG_COPY, &good.encode())?;
                return Ok(done("copied", &good, false));
            }
            (Err(_), Ok(good)) => {
                backend.put(FileKind::Config, "config", &good.encode())?;
                return Ok(done("copied", &good, false));
            }
            (Err(_), Err(_)) => {}
        }
        if backend.list(FileKind::Pack)?.is_empty() && backend.list(FileKind::Snapshot)?.is_empty() {
            return Err(Error::NotARepository(location.to_string().into()));
        }
        let (avg, inferred) = match opts.chunk_size {
            Some(avg) => (avg, false),
            None => (infer_chunk_size(backend.as_ref())?, true),
        };
        let chunker = ChunkerParams { min_size: avg / 4, avg_size: avg, max_size: avg.saturating_mul(8) };
        chunker.validate()?;
        let defaults = crate::repo::InitOptions::default(); // what `init` would have chosen
        let config = RepoConfig {
            repo_id: crate::repo::new_repo_id(),
            created: now_secs(),
            chunker,
            compression_level: opts.compression_level.unwrap_or(defaults.compression_level),
            pack_size: opts.pack_size.unwrap_or(defaults.pack_size),
            // Key files say the repository is encrypted: its packs and records are sealed.
            encryption: (!backend.list(FileKind::Key)?.is_empty()).then_some(crate::crypto::SCHEME_V1),
        };
        // Validated as any config read back is.
        let bytes = config.encode();
        // What the caller asked for (a pack size out of range, say), not damage: exit 1, not 4.
        RepoConfig::decode(&bytes).map_err(|e| Error::InvalidInput(e.to_string()))?;
        backend.put(FileKind::Config, CONFIG_COPY, &bytes)?;
        backend.put(FileKind::Config, "config", &bytes)?;
        Ok(done("rebuilt", &config, inferred))
    }

    /// Rebuilds the index of the repository at `root` (see the module docs). The new index is
    /// built beside the old one and swapped in only when complete, so a repair that is killed
    /// never leaves a partial index that looks whole: the old one stays until the new one is
    /// ready, and running the repair again starts over. A repair that refuses (a newer format)
    /// or fails leaves the repository as it found it, without a half-built index file.
    pub fn repair_index(
        location: &Location,
        opts: &OpenOptions,
        progress: &dyn Progress,
    ) -> Result<(Self, RepairReport)> {
        Self::repair_index_storage(location.storage()?, opts, progress)
    }

    /// `repair_index` of a repository in storage the caller assembled (a test's backend).
    pub fn repair_index_storage(
        storage: Storage,
        opts: &OpenOptions,
        progress: &dyn Progress,
    ) -> Result<(Self, RepairReport)> {
        // Keys first, as every open does: a wrong passphrase does no work.
        let unlocked = crate::keyring::unlock(&storage, opts)?;
        if unlocked.as_ref().is_some_and(|u| u.keys.is_put_only()) {
            return Err(Error::PutOnly { what: "rebuild the index (it reads every trailer and record)".into() });
        }
        storage.state.create()?;
        // Alone: the index file is replaced under every connection, and a forget or snapshot
        // running beside the rebuild would be judged by evidence read before it.
        let alone = storage.state.own_index(storage.locks.as_ref())?;
        // No gc while the index is rebuilt: it would judge packs by the old index while this
        // one is built from them.
        let _gc = storage.locks.gc_lock("repair index")?;
        // A repair on a full disk may use the space reserve (reserve.rs).
        crate::reserve::release_if_short(&storage.state);
        let fresh = storage.state.rebuild_path();
        crate::state::remove_db(&fresh)?;
        let live = storage.state.index_path();
        let again = storage.clone(); // to open the repository anew once the index is swapped
        let (config, notices) = crate::repo::load_config(&storage.location, storage.backend.as_ref(), true)?;
        // The old index, if it opens at all, is evidence; it is never written to. One that says
        // it belongs to another repository (copied over by mistake) is no evidence of this one:
        // its records would be written here as snapshots whose data is elsewhere.
        let evidence = Index::open_read_only(&live)
            .ok()
            .filter(|old| old.repo_id().ok().flatten().is_none_or(|id| id == config.repo_id));
        let built = Index::open(&fresh).and_then(|index| {
            let mut building = Self::assemble(storage, index, config);
            building.install_keys(unlocked.clone())?;
            building.notices = notices;
            let report = building.rebuild_verified(evidence.as_ref(), progress)?;
            Ok((building, report))
        });
        drop(evidence);
        let (building, mut report) = match built {
            Ok(b) => b,
            Err(e) => {
                crate::state::remove_db(&fresh)?;
                return Err(e);
            }
        };
        crate::failpoint::hit("repair.before_swap");
        drop(building); // closes every connection: the new index's WAL is checkpointed
        again.state.swap_in_rebuilt()?;
        drop(alone); // the new index is in force; others may open it (this process too)
        let repo = Self::open_unlocked(again, opts, unlocked)?;
        // The damaged packs go only now: the index in force no longer names them, and every
        // blob in them that verified is in a new pack it does name.
        for name in &report.packs_quarantined {
            repo.backend.quarantine(FileKind::Pack, name)?;
            crate::failpoint::hit("repair.pack_quarantined");
        }
        report.packs_quarantined.sort();
        Ok((repo, report))
    }

    fn rebuild_verified(&self, evidence: Option<&Index>, progress: &dyn Progress) -> Result<RepairReport> {
        let mut report = RepairReport::default();
        let now = now_secs();
        let records = self.sort_records(evidence)?;

        let packs = self.backend.list(FileKind::Pack)?;
        progress.start("repair: reading packs", Some(packs.iter().map(|p| p.size).sum()), Unit::Bytes);
        let damaged: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let blobs = Counter::default();
        workers::pool(0)?.install(|| {
            packs.par_iter().with_max_len(1).try_for_each(|ObjectInfo { name, size, .. }| -> Result<()> {
                let bytes = match self.backend.get(FileKind::Pack, name) {
                    Ok(b) => b,
                    Err(e) if missing(&e) => return Ok(()),
                    Err(e) => return Err(e),
                };
                match (name.parse::<PackId>(), pack::check_pack_with(name, &bytes, self.frames.as_ref())) {
                    (Ok(id), Ok(entries)) => {
                        self.index.add_pack(id, *size, &entries, now)?;
                        blobs.add(entries.len() as u64);
                        crate::failpoint::hit("repair.pack_indexed");
                    }
                    (_, Err(e @ Error::UnsupportedVersion { .. })) => return Err(newer(format!("pack {name}"), &e)),
                    _ => lock(&damaged).push(name.clone()),
                }
                progress.inc(*size);
                Ok(())
            })
        })?;
        progress.finish();
        let mut damaged = workers::into_inner(damaged);
        damaged.sort();
        report.packs_indexed = packs.len() as u64 - damaged.len() as u64;
        report.blobs_indexed = blobs.get();

        // From each damaged pack, every blob its trailer or the old index places and that
        // verifies; then, for what the snapshots still miss, a scan of its frames, again while
        // it finds trees (a salvaged tree can name more that is missing).
        let mut salvage = Salvage {
            chunks: PackWriter::for_codec(&self.frames, 0),
            trees: PackWriter::for_codec(&self.frames, 0),
            written: HashSet::new(),
        };
        let mut known: HashSet<BlobId> = HashSet::new();
        // A sealed pack's damaged trailer cannot be read without its checksum, nor its frames
        // found by their zstd magic: its blobs are salvaged from the old index's rows alone
        // (docs/ENCRYPTION.md, "Not done here").
        let sealed = self.frames.encrypted();
        let salvageable: &[String] = if sealed { &[] } else { &damaged };
        for name in &damaged {
            let Some(bytes) = self.read_damaged(name)? else { continue };
            let mut entries = if sealed { Vec::new() } else { salvage::trailer_entries(&bytes) };
            if let (Some(old), Ok(id)) = (evidence, name.parse::<PackId>()) {
                entries.extend(old.pack_rows(id).unwrap_or_default());
            }
            known.extend(entries.iter().map(|e| e.id));
            self.keep(&mut salvage, salvage::blobs_of_with(&bytes, &entries, self.frames.as_ref()), now, &mut report)?;
        }
        let roots = records.roots(self)?;
        loop {
            let wanted = if salvageable.is_empty() { Wanted::default() } else { self.missing_blobs(&roots)? };
            if wanted.is_empty() {
                break;
            }
            let before = report.blobs_salvaged;
            for name in salvageable {
                let Some(bytes) = self.read_damaged(name)? else { continue };
                self.keep(&mut salvage, salvage::scan(&bytes, &wanted, self.config.chunker), now, &mut report)?;
            }
            if report.blobs_salvaged == before {
                break;
            }
        }
        for w in [&mut salvage.chunks, &mut salvage.trees] {
            self.flush_salvage(w, now, &mut report)?;
        }
        let ids: Vec<BlobId> = known.into_iter().collect();
        report.blobs_lost = self.index.has_blobs(&ids)?.into_iter().filter(|present| !present).count() as u64;
        report.packs_quarantined = damaged;

        // Records: the intact ones indexed, the others written again from their copy first.
        for (id, bytes) in &records.good {
            let rec = self.open_record(*id, bytes)?;
            self.index.add_snapshot(*id, rec.time_ns, &rec.host, rec.label.as_deref(), bytes)?;
            report.snapshots += 1;
        }
        for (id, bytes, damaged_file) in &records.rewrite {
            let name = id.to_hex();
            if *damaged_file {
                self.backend.quarantine(FileKind::Snapshot, &name)?;
            }
            self.backend.put(FileKind::Snapshot, &name, bytes)?;
            crate::failpoint::hit("repair.record_rewritten");
            let rec = self.open_record(*id, bytes)?;
            self.index.add_snapshot(*id, rec.time_ns, &rec.host, rec.label.as_deref(), bytes)?;
            report.snapshots += 1;
            report.snapshots_rewritten.push(name);
        }
        for name in &records.lost {
            self.backend.quarantine(FileKind::Snapshot, name)?;
            report.snapshots_quarantined.push(name.clone());
        }
        self.catch_up(&report.packs_quarantined, now)?;
        // What damaged packs held may be gone: parents must be checked chunk by chunk again.
        self.index.bump_generation()?;
        // Name what is gone: a structural scrub over every snapshot.
        let scrub = self.scrub(
            &ScrubOptions { leaving: report.packs_quarantined.clone(), ..ScrubOptions::default() },
            &NoProgress,
        )?;
        report.lost = scrub.damage.into_iter().filter(|d| d.blob.is_some()).collect();
        Ok(report)
    }

    /// Indexes what snapshots wrote while the repair read: packs and records that appeared
    /// after the listing. A repair now runs alone (`locks/index`), so only a build older than
    /// that lock can still write meanwhile; this keeps its work indexed. (A pack made durable
    /// between this and the swap is left unindexed: scrub then blames the index for its
    /// blobs, and gc indexes it again.)
    fn catch_up(&self, damaged: &[String], now: i64) -> Result<()> {
        self.index_from_files(damaged, now, &NoProgress, |backend, codec, name, _| {
            Ok(match read_damaged(backend, name)? {
                Some(bytes) => pack::check_pack_with(name, &bytes, codec),
                None => Err(Error::Missing { what: "pack", id: name.to_owned() }), // gone meanwhile
            })
        })
        .map(|_| ())
    }

    /// Reads every record file, and sorts them by what repair does with them. A record of a
    /// newer format stops the repair; a damaged one, or a row of the old index whose file is gone
    /// without a tombstone, is written again from the old index's verified copy.
    fn sort_records(&self, evidence: Option<&Index>) -> Result<Records> {
        let mut out = Records::default();
        // Files, tombstones, rows: the order of `Repo::reconcile_snapshots`.
        let files = self.backend.list(FileKind::Snapshot)?;
        let tombs: HashSet<String> = self.tombstones()?.0.iter().map(SnapshotId::to_hex).collect();
        let copies: HashMap<SnapshotId, Vec<u8>> = evidence
            .and_then(|old| old.snapshots().ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|row| self.open_record(row.id, &row.record).is_ok())
            .map(|row| (row.id, row.record))
            .collect();
        let mut seen = HashSet::new();
        for ObjectInfo { name, .. } in &files {
            let Ok(id) = name.parse::<SnapshotId>() else { continue };
            seen.insert(id);
            if tombs.contains(name) {
                continue; // being forgotten: the next open finishes it
            }
            let bytes = match self.backend.get(FileKind::Snapshot, name) {
                Ok(b) => b,
                Err(e) if missing(&e) => continue,
                Err(e) => return Err(e),
            };
            match self.open_record(id, &bytes) {
                Ok(_) => out.good.push((id, bytes)),
                Err(e @ Error::UnsupportedVersion { .. }) => return Err(newer(format!("snapshot record {name}"), &e)),
                Err(_) => match copies.get(&id) {
                    Some(copy) => out.rewrite.push((id, copy.clone(), true)),
                    None => out.lost.push(name.clone()),
                },
            }
        }
        for (id, copy) in copies {
            if !seen.contains(&id) && !tombs.contains(&id.to_hex()) {
                out.rewrite.push((id, copy, false));
            }
        }
        out.rewrite.sort_by_key(|r| r.0);
        Ok(out)
    }

    /// A damaged pack's bytes; none when it is gone meanwhile.
    fn read_damaged(&self, name: &str) -> Result<Option<Vec<u8>>> {
        read_damaged(self.backend.as_ref(), name)
    }

    /// Everything the snapshots need that the new index does not hold: trees that cannot be
    /// loaded, and chunks (with their lengths, which a scan of frames needs).
    fn missing_blobs(&self, roots: &[TreeId]) -> Result<Wanted> {
        let mut wanted = Wanted::default();
        let mut visited = HashSet::new();
        let mut stack = roots.to_vec();
        while let Some(t) = stack.pop() {
            if !visited.insert(t) {
                continue;
            }
            let tree = match self.load_tree(t) {
                Ok(tree) => tree,
                Err(e @ Error::UnsupportedVersion { .. }) => return Err(newer(format!("tree {t}"), &e)),
                Err(e) if e.is_damage() || missing(&e) => {
                    wanted.trees.insert(t.into());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut chunks: Vec<(BlobId, u32)> = Vec::new();
            for e in &tree.entries {
                if let Some(sub) = e.subtree {
                    stack.push(sub);
                }
                chunks.extend(e.content.iter().map(|c| (BlobId::from(c.id), c.len)));
            }
            let ids: Vec<BlobId> = chunks.iter().map(|c| c.0).collect();
            for ((id, len), present) in chunks.into_iter().zip(self.index.has_blobs(&ids)?) {
                if !present {
                    wanted.chunks.insert(id, len);
                }
            }
        }
        Ok(wanted)
    }

    /// Queues salvaged blobs that no pack indexed so far holds; blobs from one old frame are
    /// sealed together again.
    fn keep(&self, s: &mut Salvage, blobs: Vec<Blob>, now: i64, report: &mut RepairReport) -> Result<()> {
        let ids: Vec<BlobId> = blobs.iter().map(|b| b.id).collect();
        let present = self.index.has_blobs(&ids)?;
        let fresh: Vec<Blob> =
            blobs.into_iter().zip(present).filter(|(b, p)| !*p && !s.written.contains(&b.id)).map(|(b, _)| b).collect();
        let mut start = 0;
        while start < fresh.len() {
            let (frame, kind) = (fresh[start].frame, fresh[start].kind);
            let end = start + fresh[start..].iter().take_while(|b| b.frame == frame && b.kind == kind).count();
            let members: Vec<(BlobKind, BlobId, &[u8])> =
                fresh[start..end].iter().map(|b| (b.kind, b.id, b.data.as_slice())).collect();
            let w = if kind == BlobKind::Tree { &mut s.trees } else { &mut s.chunks };
            w.add(&self.frames.seal(&members));
            s.written.extend(fresh[start..end].iter().map(|b| b.id));
            report.blobs_salvaged += (end - start) as u64;
            if w.len() >= self.config.pack_size as usize {
                self.flush_salvage(w, now, report)?;
            }
            start = end;
        }
        // Durable and indexed now, so that the next scan's wanted set leaves these out.
        self.flush_salvage(&mut s.chunks, now, report)?;
        self.flush_salvage(&mut s.trees, now, report)
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

/// The average chunk size a repository was made with, from its packs: no chunk is longer than
/// eight times the average, and files larger than that have chunks near it, so the longest
/// chunk in (up to) a few hundred packs, rounded up to a power of two, is eight averages.
fn infer_chunk_size(backend: &dyn Backend) -> Result<u32> {
    let mut longest = 0u32;
    for ObjectInfo { name, .. } in backend.list(FileKind::Pack)?.into_iter().take(400) {
        let Ok(bytes) = backend.get(FileKind::Pack, &name) else { continue };
        let entries = pack::check_pack(&name, &bytes).unwrap_or_else(|_| salvage::trailer_entries(&bytes));
        longest =
            entries.iter().filter(|e| e.kind == BlobKind::Chunk).map(|e| e.raw_len).max().unwrap_or(0).max(longest);
    }
    Ok((longest.max(8 * 1024).next_power_of_two() / 8).clamp(1024, 4 << 20))
}

/// A pack's bytes, or `None` when it is gone.
fn read_damaged(backend: &dyn Backend, name: &str) -> Result<Option<Vec<u8>>> {
    match backend.get(FileKind::Pack, name) {
        Ok(b) => Ok(Some(b)),
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `read` of every item, by `readers` threads at once, in the items' order.
fn read_concurrently<T: Sync, R: Send>(items: &[T], readers: usize, read: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..readers.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                *lock(&slots[i]) = Some(read(item));
            });
        }
    });
    slots.into_iter().filter_map(workers::into_inner).collect()
}
