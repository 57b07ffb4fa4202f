//! Scrub: prove what is intact and name what is not.
//!
//! Structural check: the SQLite index passes its own integrity check; both copies of the config
//! and every snapshot record file are read and verified (a record the index holds whose file is
//! damaged or gone is reported, since a rebuild of the index would lose it); the index agrees
//! with the packs on disk (every indexed pack exists with its indexed size, every blob lies
//! inside its pack); every tree of every snapshot in scope is present and decodes, and every
//! chunk it names is indexed. With `read_data`, every pack in scope is also read back once,
//! sequentially: its whole-file hash must equal its name, its trailer must parse, and every
//! frame must decompress into blobs that hash to their IDs. A pack whose header, trailer or
//! footer is damaged is reported as such, and the blobs the index reads from it are checked one
//! by one: a blob that verifies is not called damaged. Packs are verified oldest-verification
//! first, and a budget (time or bytes) stops the run between packs, so successive bounded runs
//! cover the whole repository. Damage is reported as blobs, the packs they lived in, and every
//! snapshot and file that needs them. Objects of a format this build cannot read are listed
//! apart, never called damaged.
//!
//! A scrub takes no lock and writes nothing but the verification times in the index, so
//! snapshots, forgets and gc may run beside it. What it finds is therefore confirmed against
//! the repository as it is at the end: damage that another command explains (a pack gc deleted
//! after taking its rows out of the index, a blob repacked elsewhere, a snapshot forgotten
//! meanwhile) is not reported; what is still there is. A scrub beside other commands is as
//! right as a quiet one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{FileKind, ObjectInfo};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::index::{BlobLocation, PackRow};
use crate::pack;
use crate::pack::PackEntry;
use crate::progress::{Progress, Unit};
use crate::record::SnapshotRecord;
use crate::repo::{now_secs, Repo, Snapshot};
use crate::tree::EntryKind;

/// What to check.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ScrubOptions {
    /// Also read every stored blob back and check it.
    pub read_data: bool,
    /// Stop reading packs once this much time has passed.
    pub max_duration: Option<Duration>,
    /// Stop reading packs once this many bytes have been read.
    pub max_bytes: Option<u64>,
    /// Limit the scrub to what these snapshots need (all when empty).
    pub snapshots: Vec<SnapshotId>,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Packs on their way to quarantine (a repair's closing scrub): what only they hold is
    /// lost, not "unindexed".
    pub(crate) leaving: Vec<String>,
}

/// A file (or directory) of a snapshot that needs a damaged blob.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Affected {
    /// The snapshot.
    pub snapshot: String,
    /// The path in it.
    pub path: String,
}

/// One damaged or missing object.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Damage {
    /// What is wrong: `missing pack`, `truncated pack`, `damaged pack` (its header, trailer or
    /// bytes outside the indexed blobs), `bad blob`, `missing blob`, `unindexed blob` (intact in
    /// a pack the index does not know), `damaged record`, `missing record`, `config`, `index`.
    pub kind: String,
    /// The blob, when one is named.
    pub blob: Option<String>,
    /// The pack it lived in, when known.
    pub pack: Option<String>,
    /// The snapshot whose record is damaged or missing, for record damage.
    pub snapshot: Option<String>,
    /// Details.
    pub detail: String,
    /// Every snapshot and path that needs it.
    pub affected: Vec<Affected>,
}

/// A snapshot's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotStatus {
    /// The snapshot.
    pub id: String,
    /// RFC 3339 time.
    pub time: String,
    /// `intact` or `damaged`.
    pub status: &'static str,
    /// Paths in it that need damaged data.
    pub damaged_paths: u64,
    /// Its record file: `ok`, `damaged` or `missing` (the last two only in the index).
    pub record: &'static str,
}

/// Harmless leftovers of interrupted runs; `gc` removes them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Leftovers {
    /// Temporary files of interrupted writes.
    pub temp_files: Vec<String>,
    /// Durable packs the index does not know (a run killed before indexing them).
    pub unindexed_packs: Vec<String>,
    /// Indexed packs that no snapshot in scope needs (a killed run's packs, or forgotten data).
    pub unreferenced_packs: u64,
}

/// What a scrub found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScrubReport {
    /// True when nothing is damaged and everything could be read.
    pub clean: bool,
    /// Whether stored data was read back.
    pub read_data: bool,
    /// Snapshots checked.
    pub snapshots_checked: u64,
    /// Distinct trees walked.
    pub trees_checked: u64,
    /// Chunk references checked against the index.
    pub chunks_checked: u64,
    /// Packs in scope.
    pub packs_in_scope: u64,
    /// Packs read back and verified by this run.
    pub packs_verified: u64,
    /// Bytes read back by this run.
    pub bytes_verified: u64,
    /// Packs in scope never verified (after this run).
    pub packs_never_verified: u64,
    /// True when every pack in scope was read back by this run (with `read_data`).
    pub all_packs_verified_this_run: bool,
    /// Age in seconds of the oldest verification among the packs in scope, when all have one.
    pub oldest_verification_age_secs: Option<u64>,
    /// Damage found.
    pub damage: Vec<Damage>,
    /// Objects this build cannot read (written by a newer cairn): not checked, not damage.
    pub unreadable: Vec<String>,
    /// Per-snapshot verdicts.
    pub snapshots: Vec<SnapshotStatus>,
    /// Harmless leftovers.
    pub leftovers: Leftovers,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// Something found wrong with one blob, and where it was looked for.
#[derive(Clone, Debug)]
struct Finding {
    /// The pack it was read from (or is indexed in), when known.
    pack: Option<PackId>,
    /// The exact place that failed, when one was read.
    entry: Option<PackEntry>,
    kind: &'static str,
    detail: String,
}

/// Damage found so far, by blob.
type DamageMap = BTreeMap<BlobId, Finding>;

fn finding(pack: Option<PackId>, entry: Option<PackEntry>, kind: &'static str, detail: String) -> Finding {
    Finding { pack, entry, kind, detail }
}

struct Walk<'a> {
    repo: &'a Repo,
    visited: Mutex<HashSet<TreeId>>,
    referenced_packs: Mutex<HashSet<PackId>>,
    damage: Mutex<DamageMap>,
    unreadable: Mutex<Vec<String>>,
    trees: AtomicU64,
    chunks: AtomicU64,
    /// Chunk IDs waiting to be looked up: many trees' worth at once, deduplicated and in key
    /// order, so the index's leaves are read left to right once a batch instead of once a chunk
    /// (a lookup per tree was 40% of a read-data scrub).
    batch: Mutex<Vec<BlobId>>,
}

/// Chunk IDs per index lookup batch of the structural walk (32 bytes each).
const WALK_BATCH: usize = 1 << 14;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Walk<'_> {
    /// Looks up a batch of chunk IDs: their packs are referenced, a missing one is damage.
    fn lookup(&self, mut chunks: Vec<BlobId>) -> Result<()> {
        chunks.sort_unstable();
        chunks.dedup();
        let mut packs = HashSet::new();
        for (id, loc) in chunks.iter().zip(self.repo.index.locate_many(&chunks)?) {
            match loc {
                Some(loc) => {
                    packs.insert(loc.pack);
                }
                None => self.note(*id, finding(None, None, "missing blob", "chunk is not in the index".into())),
            }
        }
        lock(&self.referenced_packs).extend(packs);
        Ok(())
    }

    /// Looks up what the batch still holds; after the last tree.
    fn flush(&self) -> Result<()> {
        let rest = std::mem::take(&mut *lock(&self.batch));
        self.lookup(rest)
    }

    fn note(&self, blob: BlobId, f: Finding) {
        lock(&self.damage).entry(blob).or_insert(f);
    }

    /// Walks a tree once (trees shared between snapshots are walked once), checking that it
    /// decodes and that every chunk it names is indexed.
    fn tree(&self, id: TreeId) -> Result<()> {
        if !lock(&self.visited).insert(id) {
            return Ok(());
        }
        self.trees.fetch_add(1, Ordering::Relaxed);
        let loc = self.repo.index.locate(id.into())?;
        if let Some(loc) = &loc {
            lock(&self.referenced_packs).insert(loc.pack);
        }
        let tree = match self.repo.load_tree(id) {
            Ok(t) => t,
            Err(e @ Error::UnsupportedVersion { .. }) => {
                lock(&self.unreadable).push(format!("tree {id}: {e}"));
                return Ok(());
            }
            Err(e) if is_damage(&e) => {
                let (pack, entry) = (loc.as_ref().map(|l| l.pack), loc.as_ref().map(|l| l.entry));
                let kind = if pack.is_some() { "bad blob" } else { "missing blob" };
                self.note(id.into(), finding(pack, entry, kind, format!("tree: {e}")));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Every chunk this directory's files name goes into the batch of lookups.
        let mut n = 0;
        let full = {
            let mut batch = lock(&self.batch);
            for c in tree.entries.iter().filter(|e| e.kind == EntryKind::File).flat_map(|e| &e.content) {
                batch.push(BlobId::from(c.id));
                n += 1;
            }
            (batch.len() >= WALK_BATCH).then(|| std::mem::take(&mut *batch))
        };
        self.chunks.fetch_add(n, Ordering::Relaxed);
        if let Some(chunks) = full {
            self.lookup(chunks)?;
        }
        tree.entries
            .par_iter()
            .filter_map(|e| e.subtree.filter(|_| e.kind == EntryKind::Dir))
            .try_for_each(|s| self.tree(s))
    }
}

fn is_damage(e: &Error) -> bool {
    e.is_damage() || crate::repo::missing(e)
}

/// What reading one pack back found.
struct Verdict {
    /// Blobs the index reads from this pack that fail their check, with the reason.
    bad: Vec<(PackEntry, String)>,
    /// Damage to the pack itself (header, trailer, footer, bytes outside the indexed blobs)
    /// that the bad blobs do not explain; the blobs that verify are still good.
    structure: Option<String>,
}

/// Checks each entry's blob in `bytes`; returns the ones that fail. A frame is decoded once for
/// all the blobs it holds.
fn check_entries(bytes: &[u8], entries: &[PackEntry]) -> Vec<(PackEntry, String)> {
    let mut bad = Vec::new();
    let mut frame: Option<(u64, Result<Vec<u8>>)> = None;
    for e in entries {
        if frame.as_ref().is_none_or(|(off, _)| *off != e.offset) {
            frame = Some((e.offset, pack::open_frame(e, pack::frame_in(bytes, e).unwrap_or(&[]))));
        }
        // The frame's own error says what is wrong with it (wrapping it in a hash mismatch
        // named after the message read "blob blob ... fails its hash check" twice over).
        let result: std::result::Result<(), String> = match &frame {
            Some((_, Ok(f))) => pack::blob_from_frame(e, f).map(|_| ()).map_err(|err| err.to_string()),
            Some((_, Err(err))) => Err(err.to_string()),
            None => Ok(()),
        };
        if let Err(detail) = result {
            bad.push((*e, detail));
        }
    }
    bad
}

/// Verifies one pack read whole. An intact pack (its hash is its name) is checked from its own
/// trailer, and the index is asked only about the blobs that fail (a lookup per blob was half
/// of a read-data scrub's time): only the copy the index points at matters, other copies are
/// unreferenced space. A pack that is damaged anywhere is checked by what the index reads from
/// it, blob by blob, so that a damaged trailer or a few appended bytes never condemn frames
/// that still verify.
fn verify_pack(repo: &Repo, pack: PackId, indexed_size: u64, bytes: &[u8]) -> Result<Verdict> {
    let name = pack.to_hex();
    let whole_ok = PackId::of(bytes) == pack;
    let layout = match pack::check_pack_layout(&name, bytes) {
        // Only an intact pack is of a newer format; a damaged one's header is not believed.
        Err(e @ Error::UnsupportedVersion { .. }) if whole_ok => return Err(e),
        other => other,
    };
    if let (true, Ok(entries)) = (whole_ok, &layout) {
        let bad = check_entries(bytes, entries);
        let ids: Vec<BlobId> = bad.iter().map(|(e, _)| e.id).collect();
        let placed = repo.index.locate_many(&ids)?;
        let bad = bad
            .into_iter()
            .zip(placed)
            .filter(|((e, _), loc)| loc.as_ref().is_some_and(|l| l.pack == pack && l.entry == *e))
            .map(|(b, _)| b)
            .collect();
        return Ok(Verdict { bad, structure: None });
    }
    let bad = check_entries(bytes, &repo.index.pack_rows(pack)?);
    let structure = match layout {
        // The footer is read at the end of the file, so bytes appended after a whole pack hide
        // it: say so, rather than the footer's guess (it cannot tell this from a truncation).
        Err(_) if bytes.len() as u64 > indexed_size => Some(format!(
            "its trailer cannot be found: {} bytes were appended after its end; `cairn repair index` \
             rewrites the blobs that verify",
            bytes.len() as u64 - indexed_size
        )),
        Err(e) => {
            Some(format!("its trailer cannot be used ({e}); `cairn repair index` rewrites the blobs that verify"))
        }
        Ok(_) if bad.is_empty() => Some(
            "its content does not hash to its name, but every indexed blob verifies: bytes outside them are \
             damaged; `cairn repair index` rewrites the pack"
                .into(),
        ),
        Ok(_) => None,
    };
    Ok(Verdict { bad, structure })
}

impl Repo {
    /// Checks the repository (see the module documentation).
    pub fn scrub(&self, opts: &ScrubOptions, progress: &dyn Progress) -> Result<ScrubReport> {
        let started = Instant::now();
        let _session = self.session("scrub")?;
        let now = now_secs();
        let mut report = ScrubReport { read_data: opts.read_data, ..ScrubReport::default() };
        let mut damage: DamageMap = BTreeMap::new();
        let mut problems: Vec<Damage> = Vec::new();

        let index_problems = self.index.integrity_check()?;
        if !index_problems.is_empty() {
            // What the index says cannot be trusted: blame no data for it.
            for problem in index_problems {
                problems.push(Damage {
                    kind: "index".into(),
                    detail: format!(
                        "SQLite integrity check: {problem}; no data was checked against this index: \
                         run `cairn repair index`"
                    ),
                    ..Damage::default()
                });
            }
            report.damage = problems;
            report.duration_secs = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        problems.extend(self.check_config());
        let records = self.check_records()?;
        problems.extend(records.damage);
        report.unreadable.extend(records.unreadable);

        // The index first, then the disk: a pack indexed meanwhile is then merely unindexed in
        // this run's view (a pack is durable before its rows), and one deleted meanwhile by gc
        // is caught by the confirmation at the end (its rows go before its file).
        let indexed = self.index.packs()?;
        let on_disk: HashMap<String, u64> =
            self.backend.list(FileKind::Pack)?.into_iter().map(|o| (o.name, o.size)).collect();
        let indexed_names: HashSet<String> = indexed.iter().map(|p| p.id.to_hex()).collect();
        let mut missing_packs = HashSet::new();
        for p in &indexed {
            let Some(&size) = on_disk.get(&p.id.to_hex()) else {
                missing_packs.insert(p.id);
                problems.push(pack_damage("missing pack", p.id, "indexed but not on disk".into()));
                for e in self.index.pack_rows(p.id)? {
                    damage.insert(
                        e.id,
                        finding(Some(p.id), Some(e), "missing blob", format!("its pack {} is missing", p.id)),
                    );
                }
                continue;
            };
            if size < p.size {
                problems.push(pack_damage(
                    "truncated pack",
                    p.id,
                    format!("{size} bytes on disk, {} when indexed", p.size),
                ));
                for e in self.index.pack_rows(p.id)? {
                    if e.offset + u64::from(e.stored_len) > size {
                        let why = format!("its frame lies past the end of its truncated pack {}", p.id);
                        damage.insert(e.id, finding(Some(p.id), Some(e), "missing blob", why));
                    }
                }
            } else if size > p.size {
                problems.push(pack_damage(
                    "damaged pack",
                    p.id,
                    format!("{size} bytes on disk, {} when indexed: {} bytes were appended", p.size, size - p.size),
                ));
            }
        }
        for (blob, pack) in self.index.blobs_out_of_bounds()? {
            damage.entry(blob).or_insert(finding(Some(pack), None, "bad blob", "indexed outside its pack".into()));
        }
        report.leftovers.unindexed_packs =
            on_disk.keys().filter(|n| !indexed_names.contains(*n)).cloned().collect::<Vec<_>>();
        report.leftovers.unindexed_packs.sort();
        report.leftovers.temp_files = self.backend.temporaries()?.into_iter().map(|t| t.name).collect();

        // Every tree of every snapshot in scope.
        let all = self.snapshots()?;
        let scope: Vec<&Snapshot> = if opts.snapshots.is_empty() {
            all.iter().collect()
        } else {
            let wanted: HashSet<&SnapshotId> = opts.snapshots.iter().collect();
            all.iter().filter(|s| wanted.contains(&s.id)).collect()
        };
        let pool = crate::workers::pool(opts.threads)?;
        let walk = Walk {
            repo: self,
            visited: Mutex::new(HashSet::new()),
            referenced_packs: Mutex::new(HashSet::new()),
            damage: Mutex::new(BTreeMap::new()),
            unreadable: Mutex::new(Vec::new()),
            trees: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            batch: Mutex::new(Vec::new()),
        };
        progress.start("scrub: trees", Some(scope.len() as u64), Unit::Items);
        for s in &scope {
            pool.install(|| walk.tree(s.record.root))?;
            progress.inc(1);
        }
        walk.flush()?;
        progress.finish();
        report.snapshots_checked = scope.len() as u64;
        report.trees_checked = walk.trees.load(Ordering::Relaxed);
        report.chunks_checked = walk.chunks.load(Ordering::Relaxed);
        for (blob, f) in walk.damage.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            damage.entry(blob).or_insert(f);
        }
        report.unreadable.extend(walk.unreadable.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        let referenced = walk.referenced_packs.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_scope: Vec<&PackRow> = if opts.snapshots.is_empty() {
            indexed.iter().collect()
        } else {
            indexed.iter().filter(|p| referenced.contains(&p.id)).collect()
        };
        report.leftovers.unreferenced_packs = indexed.iter().filter(|p| !referenced.contains(&p.id)).count() as u64;
        report.packs_in_scope = in_scope.len() as u64;

        if opts.read_data {
            let order: Vec<&PackRow> = in_scope.iter().copied().filter(|p| !missing_packs.contains(&p.id)).collect();
            let verified_now =
                self.read_back(opts, &pool, order, now, started, progress, &mut report, &mut damage, &mut problems)?;
            report.packs_verified = verified_now.len() as u64;
            report.all_packs_verified_this_run = verified_now.len() == in_scope.len();
        }

        // Coverage, from the index after this run.
        let after = self.index.packs()?;
        let scope_ids: HashSet<PackId> = in_scope.iter().map(|p| p.id).collect();
        let stamps: Vec<Option<i64>> =
            after.iter().filter(|p| scope_ids.contains(&p.id)).map(|p| p.verified_at).collect();
        report.packs_never_verified = stamps.iter().filter(|v| v.is_none()).count() as u64;
        if !stamps.is_empty() && report.packs_never_verified == 0 {
            let oldest = stamps.iter().flatten().min().copied().unwrap_or(now);
            report.oldest_verification_age_secs = Some(u64::try_from(now - oldest).unwrap_or(0));
        }

        // Confirm against the repository as it is now, then name every snapshot and path that
        // needs what is still damaged.
        let (damage, problems) = self.confirm(damage, problems)?;
        let current = self.snapshots()?;
        let affected = self.affected_paths(&current, &damage)?;
        let mut damage = damage;
        damage.retain(|blob, f| f.pack.is_some() || affected.get(blob).is_some_and(|a| !a.is_empty()));
        let damage = self.explain_unindexed(damage, &report.leftovers.unindexed_packs, &opts.leaving)?;
        let mut per_snapshot: HashMap<String, u64> = HashMap::new();
        for list in affected.values() {
            for a in list {
                *per_snapshot.entry(a.snapshot.clone()).or_default() += 1;
            }
        }
        let record_state = |id: &SnapshotId| {
            problems.iter().find(|d| d.snapshot.as_deref() == Some(id.to_hex().as_str())).map_or("ok", |d| {
                if d.kind == "missing record" {
                    "missing"
                } else {
                    "damaged"
                }
            })
        };
        let still: HashSet<SnapshotId> = current.iter().map(|s| s.id).collect();
        for s in scope.iter().filter(|s| still.contains(&s.id)) {
            let n = per_snapshot.get(&s.id.to_hex()).copied().unwrap_or(0);
            let record = record_state(&s.id);
            report.snapshots.push(SnapshotStatus {
                id: s.id.to_hex(),
                time: jiff::Timestamp::from_nanosecond(i128::from(s.record.time_ns))
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                status: if n == 0 && record == "ok" { "intact" } else { "damaged" },
                damaged_paths: n,
                record,
            });
        }
        report.damage = problems;
        for (blob, f) in &damage {
            report.damage.push(Damage {
                kind: f.kind.into(),
                blob: Some(blob.to_hex()),
                pack: f.pack.map(|p| p.to_hex()),
                snapshot: None,
                detail: f.detail.clone(),
                affected: affected.get(blob).cloned().unwrap_or_default(),
            });
        }
        report.unreadable.sort();
        report.unreadable.dedup();
        report.clean = report.damage.is_empty() && report.unreadable.is_empty();
        report.duration_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Reads packs back, oldest verification first, within the budget; returns the packs that
    /// verified completely (their verification time is recorded).
    #[allow(clippy::too_many_arguments)]
    fn read_back(
        &self,
        opts: &ScrubOptions,
        pool: &rayon::ThreadPool,
        mut order: Vec<&PackRow>,
        now: i64,
        started: Instant,
        progress: &dyn Progress,
        report: &mut ScrubReport,
        damage: &mut DamageMap,
        problems: &mut Vec<Damage>,
    ) -> Result<HashSet<PackId>> {
        order.sort_by_key(|p| (p.verified_at.unwrap_or(i64::MIN), p.id));
        let total: u64 = order.iter().map(|p| p.size).sum();
        progress.start("scrub: read data", Some(opts.max_bytes.map_or(total, |m| m.min(total))), Unit::Bytes);
        let bytes_done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let found: Mutex<Vec<(PackId, std::result::Result<Verdict, String>)>> = Mutex::new(Vec::new());
        let unreadable: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let verified: Mutex<Vec<PackId>> = Mutex::new(Vec::new());
        // Workers take packs strictly in order from a shared cursor, so the budget always goes
        // to the packs verified longest ago (a parallel iterator would split the list and start
        // a second worker from its newest end).
        let cursor = AtomicUsize::new(0);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let check_one = |p: &PackRow| -> Result<()> {
            let bytes = match self.backend.get(FileKind::Pack, &p.id.to_hex()) {
                Ok(b) => b,
                Err(e) if is_damage(&e) => {
                    lock(&found).push((p.id, Err(e.to_string())));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            progress.inc(bytes.len() as u64);
            match verify_pack(self, p.id, p.size, &bytes) {
                Ok(v) if v.bad.is_empty() && v.structure.is_none() => {
                    // A read-only repository cannot remember it: its coverage stays as it was.
                    if !self.read_only {
                        self.index.set_verified(p.id, now)?;
                    }
                    lock(&verified).push(p.id);
                }
                Ok(v) => lock(&found).push((p.id, Ok(v))),
                Err(e @ Error::UnsupportedVersion { .. }) => lock(&unreadable).push(format!("pack {}: {e}", p.id)),
                Err(e) => return Err(e),
            }
            Ok(())
        };
        pool.scope(|scope| {
            for _ in 0..pool.current_num_threads() {
                scope.spawn(|_| loop {
                    let over_time = opts.max_duration.is_some_and(|d| started.elapsed() >= d);
                    let over_bytes = opts.max_bytes.is_some_and(|b| bytes_done.load(Ordering::Relaxed) >= b);
                    if over_time || over_bytes || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = order.get(i) else { return };
                    bytes_done.fetch_add(p.size, Ordering::Relaxed);
                    if let Err(e) = check_one(p) {
                        stop.store(true, Ordering::Relaxed);
                        lock(&failure).get_or_insert(e);
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            return Err(e);
        }
        progress.finish();
        report.bytes_verified = bytes_done.load(Ordering::Relaxed);
        report.unreadable.extend(unreadable.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (pack, outcome) in found.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            match outcome {
                Ok(v) => {
                    for (e, detail) in v.bad {
                        damage.insert(e.id, finding(Some(pack), Some(e), "bad blob", detail));
                    }
                    if let Some(detail) = v.structure {
                        // One finding a pack: the size check may have named it already (bytes
                        // appended); the read gives the fuller account.
                        let hex = pack.to_hex();
                        match problems.iter_mut().find(|d| d.kind == "damaged pack" && d.pack.as_deref() == Some(&hex))
                        {
                            Some(d) => d.detail = detail,
                            None => problems.push(pack_damage("damaged pack", pack, detail)),
                        }
                    }
                }
                Err(detail) => {
                    for e in self.index.pack_rows(pack)? {
                        damage.entry(e.id).or_insert(finding(Some(pack), Some(e), "bad blob", detail.clone()));
                    }
                    problems.push(pack_damage("missing pack", pack, detail));
                }
            }
        }
        Ok(verified.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).into_iter().collect())
    }

    /// Both copies of the config: one that cannot be read is damage (opening mends it when the
    /// repository is writable, so a scrub normally finds both good).
    fn check_config(&self) -> Vec<Damage> {
        let mut out = Vec::new();
        for name in ["config", crate::backend::CONFIG_COPY] {
            let read = self.backend.get(FileKind::Config, name).and_then(|b| crate::config::RepoConfig::decode(&b));
            if let Err(e) = read {
                out.push(Damage {
                    kind: "config".into(),
                    detail: format!("{name}: {e}; the other copy is good: `cairn repair config` writes it again"),
                    ..Damage::default()
                });
            }
        }
        out
    }

    /// Reads and verifies every snapshot record file, and compares them with the index: a
    /// record file that is damaged or gone while the index holds a verified copy is damage
    /// (`repair index` writes it again); one that is damaged with no copy is a lost snapshot.
    fn check_records(&self) -> Result<RecordCheck> {
        let mut out = RecordCheck::default();
        // The same order as `Repo::reconcile_snapshots`: files, tombstones, rows.
        let files = self.backend.list(FileKind::Snapshot)?;
        let tombs: HashSet<String> = self.tombstones()?.0.iter().map(SnapshotId::to_hex).collect();
        let rows: HashMap<SnapshotId, Vec<u8>> =
            self.index.snapshots()?.into_iter().map(|r| (r.id, r.record)).collect();
        let mut seen = HashSet::new();
        for ObjectInfo { name, .. } in &files {
            let Ok(id) = name.parse::<SnapshotId>() else { continue };
            seen.insert(id);
            if tombs.contains(name) {
                continue; // being forgotten
            }
            match self.backend.get(FileKind::Snapshot, name).and_then(|b| SnapshotRecord::open(id, &b)) {
                Ok(_) => {}
                Err(e) if crate::repo::missing(&e) => {} // forgotten since the listing
                Err(e @ Error::UnsupportedVersion { .. }) => {
                    out.unreadable.push(format!("snapshot record {name}: {e}"))
                }
                Err(e) => {
                    let copy = rows.get(&id).is_some_and(|b| SnapshotRecord::open(id, b).is_ok());
                    let detail = if copy {
                        format!("{e}; the index holds a verified copy: `cairn repair index` writes the file again")
                    } else {
                        format!("{e}; no verified copy exists: the snapshot is lost unless a good copy of the file is found")
                    };
                    out.damage.push(Damage {
                        kind: "damaged record".into(),
                        snapshot: Some(name.clone()),
                        detail,
                        ..Damage::default()
                    });
                }
            }
        }
        for id in rows.keys().filter(|id| !seen.contains(*id) && !tombs.contains(&id.to_hex())) {
            out.damage.push(Damage {
                kind: "missing record".into(),
                snapshot: Some(id.to_hex()),
                detail: "the record file is gone (it was not forgotten); the index holds a verified copy: \
                         `cairn repair index` writes it again"
                    .into(),
                ..Damage::default()
            });
        }
        Ok(out)
    }

    /// Keeps what is still wrong in the repository as it is now. A scrub takes no lock, so gc
    /// may have deleted a pack (rows first, then the file), repacked a blob elsewhere, or a
    /// forget may have removed the snapshot that needed it, while the scrub read: each finding
    /// is looked up again, a blob now indexed elsewhere is read there, and a pack the index no
    /// longer names is no longer damage. A blob no longer indexed anywhere is kept only while a
    /// snapshot still needs it (decided by the caller).
    fn confirm(&self, damage: DamageMap, mut problems: Vec<Damage>) -> Result<(DamageMap, Vec<Damage>)> {
        let packs_now: HashMap<String, u64> =
            self.index.packs()?.into_iter().map(|p| (p.id.to_hex(), p.size)).collect();
        let disk_now: HashMap<String, u64> =
            self.backend.list(FileKind::Pack)?.into_iter().map(|o| (o.name, o.size)).collect();
        problems.retain(|d| {
            let Some(p) = &d.pack else { return true };
            let Some(&indexed) = packs_now.get(p) else { return false };
            match d.kind.as_str() {
                "missing pack" => disk_now.get(p).is_none_or(|&size| size != indexed),
                "truncated pack" => disk_now.get(p).is_some_and(|&size| size < indexed),
                _ => true,
            }
        });
        let ids: Vec<BlobId> = damage.keys().copied().collect();
        let now = self.index.locate_many(&ids)?;
        let mut out = DamageMap::new();
        let mut moved: BTreeMap<PackId, Vec<(BlobId, BlobLocation)>> = BTreeMap::new();
        for ((blob, f), loc) in damage.into_iter().zip(now) {
            match loc {
                Some(l) if Some(l.pack) == f.pack && f.entry.is_none_or(|e| e == l.entry) => {
                    out.insert(blob, f);
                }
                Some(l) => moved.entry(l.pack).or_default().push((blob, l)),
                None => {
                    out.insert(blob, Finding { pack: None, entry: None, ..f });
                }
            }
        }
        for (pack, blobs) in moved {
            for ((blob, l), read) in blobs.iter().zip(self.read_again(pack, &blobs)?) {
                match read {
                    Ok(()) => {} // found intact where the index places it now
                    Err(e) if is_damage(&e) => {
                        out.insert(*blob, finding(Some(l.pack), Some(l.entry), "bad blob", e.to_string()));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((out, problems))
    }

    /// Reads blobs of one pack again, each with its own verdict. A gc that repacked them while
    /// the scrub read put them in the same new pack, so they are fetched with one request (one
    /// round trip to an object store, not one per blob); when the pack fails that as a whole
    /// (short or gone), each is read on its own, so that each is judged by its own frame.
    fn read_again(&self, pack: PackId, blobs: &[(BlobId, BlobLocation)]) -> Result<Vec<Result<()>>> {
        let ranges: Vec<(u64, usize)> =
            blobs.iter().map(|(_, l)| (l.entry.offset, l.entry.stored_len as usize)).collect();
        match self.backend.get_ranges(FileKind::Pack, &pack.to_hex(), &ranges) {
            Ok(frames) => Ok(blobs
                .iter()
                .zip(frames)
                .map(|((_, l), stored)| {
                    pack::open_frame(&l.entry, &stored).and_then(|f| pack::blob_from_frame(&l.entry, &f)).map(|_| ())
                })
                .collect()),
            Err(e) if is_damage(&e) => Ok(blobs.iter().map(|(_, l)| self.read_located(l).map(|_| ())).collect()),
            Err(e) => Err(e),
        }
    }

    /// A blob the index does not place may still be in a pack: one the index does not know (an
    /// index rebuilt without it), or one whose rows it lost. Then it is the index that is
    /// wrong, and saying so keeps the user from taking intact data for lost. Only run when
    /// something is unplaced: it reads every pack's trailer.
    fn explain_unindexed(&self, mut damage: DamageMap, unindexed: &[String], leaving: &[String]) -> Result<DamageMap> {
        if damage.values().all(|f| f.pack.is_some()) {
            return Ok(damage);
        }
        for ObjectInfo { name, size, .. } in self.backend.list(FileKind::Pack)? {
            if leaving.contains(&name) {
                continue; // damaged, and quarantined once the repair is in force
            }
            let Ok(entries) = self.pack_trailer(&name, size) else { continue };
            let known = !unindexed.contains(&name);
            for e in entries {
                if let Some(f) = damage.get_mut(&e.id).filter(|f| f.pack.is_none()) {
                    f.kind = "unindexed blob";
                    f.detail = if known {
                        format!("pack {name} holds it, but the index has lost its row: `cairn repair index` mends the index")
                    } else {
                        format!(
                            "its pack {name} is on disk but not in the index: `cairn repair index` indexes it again"
                        )
                    };
                }
            }
        }
        Ok(damage)
    }

    /// For each damaged blob, every snapshot and path that needs it. Subtrees are walked once
    /// per distinct tree; a damaged tree marks its directory.
    fn affected_paths(&self, snapshots: &[Snapshot], damage: &DamageMap) -> Result<BTreeMap<BlobId, Vec<Affected>>> {
        let mut out: BTreeMap<BlobId, Vec<Affected>> = BTreeMap::new();
        if damage.is_empty() {
            return Ok(out);
        }
        // Relative paths below each tree that need damaged blobs (memoised across snapshots).
        let mut memo: HashMap<TreeId, Vec<(PathBuf, BlobId)>> = HashMap::new();
        for s in snapshots {
            let hits = self.damaged_below(s.record.root, damage, &mut memo)?;
            for (rel, blob) in hits {
                out.entry(blob).or_default().push(Affected {
                    snapshot: s.id.to_hex(),
                    path: Path::new("/").join(rel).to_string_lossy().into_owned(),
                });
            }
        }
        for list in out.values_mut() {
            list.sort();
            list.dedup();
        }
        Ok(out)
    }

    fn damaged_below(
        &self,
        tree: TreeId,
        damage: &DamageMap,
        memo: &mut HashMap<TreeId, Vec<(PathBuf, BlobId)>>,
    ) -> Result<Vec<(PathBuf, BlobId)>> {
        if let Some(hit) = memo.get(&tree) {
            return Ok(hit.clone());
        }
        let mut hits = Vec::new();
        if damage.contains_key(&BlobId::from(tree)) {
            hits.push((PathBuf::new(), BlobId::from(tree)));
        } else {
            match self.load_tree(tree) {
                Ok(t) => {
                    for e in &t.entries {
                        let name = Path::new(OsStr::from_bytes(&e.name));
                        if let Some(sub) = e.subtree {
                            for (rel, blob) in self.damaged_below(sub, damage, memo)? {
                                hits.push((name.join(rel), blob));
                            }
                        }
                        for c in &e.content {
                            if damage.contains_key(&BlobId::from(c.id)) {
                                hits.push((name.to_path_buf(), c.id.into()));
                            }
                        }
                    }
                }
                Err(e) if is_damage(&e) => hits.push((PathBuf::new(), BlobId::from(tree))),
                Err(e) => return Err(e),
            }
        }
        memo.insert(tree, hits.clone());
        Ok(hits)
    }
}

fn pack_damage(kind: &str, pack: PackId, detail: String) -> Damage {
    Damage { kind: kind.into(), pack: Some(pack.to_hex()), detail, ..Damage::default() }
}

/// What `check_records` found.
#[derive(Default)]
struct RecordCheck {
    damage: Vec<Damage>,
    unreadable: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InitOptions, Location, NoProgress, SnapshotOptions};

    #[test]
    fn blobs_of_one_pack_are_read_again_together_each_with_its_own_verdict() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..24 {
            let data: Vec<u8> = (0..30_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect();
            std::fs::write(src.join(format!("f{i}")), data).expect("write");
        }
        let root = dir.path().join("repo");
        let repo = Repo::init(&Location::local(&root), &InitOptions::default())?;
        repo.snapshot(&SnapshotOptions::new(vec![src]), &NoProgress)?;
        let pack = repo.index.packs()?.into_iter().max_by_key(|p| p.size).expect("a pack");
        let blobs: Vec<(BlobId, BlobLocation)> = repo
            .index
            .pack_rows(pack.id)?
            .into_iter()
            .map(|e| (e.id, BlobLocation { pack: pack.id, entry: e }))
            .collect();
        let frames: HashSet<u64> = blobs.iter().map(|(_, l)| l.entry.offset).collect();
        assert!(frames.len() >= 3, "{} frames", frames.len());
        assert!(repo.read_again(pack.id, &blobs)?.iter().all(Result::is_ok));

        // A flipped byte in one frame fails the blob it lies in, and none of another frame.
        let hex = pack.id.to_hex();
        let path = root.join("packs").join(&hex[..2]).join(&hex);
        let mut bytes = std::fs::read(&path).expect("read pack");
        let (victim_id, victim) = blobs[blobs.len() / 2];
        let victim = victim.entry;
        bytes[victim.offset as usize + victim.frame_offset as usize] ^= 0x10;
        std::fs::write(&path, &bytes).expect("damage pack");
        for ((id, l), read) in blobs.iter().zip(repo.read_again(pack.id, &blobs)?) {
            if *id == victim_id {
                assert!(read.as_ref().err().is_some_and(is_damage), "{read:?}");
            } else if l.entry.offset != victim.offset {
                assert!(read.is_ok(), "{l:?}: {read:?}");
            }
        }

        // Gone: every blob is missing, which is damage.
        repo.backend.remove(FileKind::Pack, &hex)?;
        assert!(repo.read_again(pack.id, &blobs)?.iter().all(|r| r.as_ref().err().is_some_and(is_damage)));

        // Cut short before the damaged frame: the batch fails as a whole, and each blob is
        // judged by its own frame (those before the cut still read).
        bytes.truncate(victim.offset as usize);
        std::fs::write(&path, &bytes).expect("write a short pack");
        for ((_, l), read) in blobs.iter().zip(repo.read_again(pack.id, &blobs)?) {
            let past = l.entry.offset + u64::from(l.entry.stored_len) > victim.offset;
            assert_eq!(read.as_ref().err().is_some_and(is_damage), past, "{l:?}: {read:?}");
        }
        Ok(())
    }
}
