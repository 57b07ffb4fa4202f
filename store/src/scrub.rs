//! Scrub: prove what is intact and name what is not.
//!
//! Structural check: the SQLite index passes its own integrity check; the index agrees with the
//! packs on disk (every indexed pack exists with its indexed size, every blob lies inside its
//! pack); every tree of every snapshot in scope is present and decodes, and every chunk it
//! names is indexed. With `read_data`, every pack in scope is also read back once, sequentially:
//! its whole-file hash must equal its name, its trailer must parse, and every frame must
//! decompress into blobs that hash to their IDs. Packs are verified oldest-verification first,
//! and a budget (time or bytes) stops the run between packs, so successive bounded runs cover
//! the whole repository. Damage is reported as blobs, the packs they lived in, and every
//! snapshot and file that needs them. A scrub takes no lock and writes nothing but the
//! verification times in the index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::index::PackRow;
use crate::pack;
use crate::progress::{Progress, Unit};
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
#[derive(Clone, Debug, Serialize)]
pub struct Damage {
    /// What is wrong: `missing pack`, `truncated pack`, `bad pack`, `bad blob`, `missing blob`,
    /// `index`.
    pub kind: String,
    /// The blob, when one is named.
    pub blob: Option<String>,
    /// The pack it lived in, when known.
    pub pack: Option<String>,
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
    /// True when nothing is damaged.
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
    /// Per-snapshot verdicts.
    pub snapshots: Vec<SnapshotStatus>,
    /// Harmless leftovers.
    pub leftovers: Leftovers,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// Damage found so far: blob → (pack, kind, detail).
type DamageMap = BTreeMap<BlobId, (Option<PackId>, String, String)>;

struct Walk<'a> {
    repo: &'a Repo,
    visited: Mutex<HashSet<TreeId>>,
    referenced_packs: Mutex<HashSet<PackId>>,
    damage: Mutex<DamageMap>,
    trees: AtomicU64,
    chunks: AtomicU64,
    /// Chunk IDs waiting to be looked up: many trees' worth at once, deduplicated and in key
    /// order, so the index's leaves are read left to right once a batch instead of once a chunk
    /// (a lookup per tree was 40% of a read-data scrub).
    batch: Mutex<Vec<BlobId>>,
}

/// Chunk IDs per index lookup batch of the structural walk (32 bytes each).
const WALK_BATCH: usize = 1 << 14;

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
                None => self.note(*id, None, "missing blob", "chunk is not in the index".into()),
            }
        }
        self.referenced_packs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(packs);
        Ok(())
    }

    /// Looks up what the batch still holds; after the last tree.
    fn flush(&self) -> Result<()> {
        let rest = std::mem::take(&mut *self.batch.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.lookup(rest)
    }

    fn note(&self, blob: BlobId, pack: Option<PackId>, kind: &str, detail: String) {
        self.damage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(blob).or_insert((
            pack,
            kind.to_owned(),
            detail,
        ));
    }

    /// Walks a tree once (trees shared between snapshots are walked once), checking that it
    /// decodes and that every chunk it names is indexed.
    fn tree(&self, id: TreeId) -> Result<()> {
        if !self.visited.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id) {
            return Ok(());
        }
        self.trees.fetch_add(1, Ordering::Relaxed);
        if let Some(loc) = self.repo.index.locate(id.into())? {
            self.referenced_packs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(loc.pack);
        }
        let tree = match self.repo.load_tree(id) {
            Ok(t) => t,
            Err(e) if is_damage(&e) => {
                let pack = self.repo.index.locate(id.into())?.map(|l| l.pack);
                let kind = if pack.is_some() { "bad blob" } else { "missing blob" };
                self.note(id.into(), pack, kind, format!("tree: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Every chunk this directory's files name goes into the batch of lookups.
        let mut n = 0;
        let full = {
            let mut batch = self.batch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
    e.is_damage() || matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Verifies one pack read whole: its hash, its trailer, and every blob the index places in it.
/// Returns the damaged blobs (blob, detail); a damaged pack with no readable trailer is
/// reported through `Err`.
fn verify_pack(repo: &Repo, pack: PackId, bytes: &[u8]) -> std::result::Result<Vec<(BlobId, String)>, String> {
    let name = pack.to_hex();
    let whole_ok = PackId::of(bytes) == pack;
    let entries = match pack::check_pack_layout(&name, bytes) {
        Ok(e) => e,
        Err(e) => return Err(format!("unreadable trailer: {e}")),
    };
    let mut bad = Vec::new();
    let mut frame: Option<(u64, Result<Vec<u8>>)> = None;
    // Every blob is checked, and the index is asked only about the damaged ones (a lookup per
    // blob was half of a read-data scrub's time): only the copy the index points at matters,
    // other copies are unreferenced space.
    for e in &entries {
        if frame.as_ref().is_none_or(|(off, _)| *off != e.offset) {
            let start = usize::try_from(e.offset).unwrap_or(usize::MAX);
            let stored = bytes.get(start..start.saturating_add(e.stored_len as usize)).unwrap_or(&[]);
            frame = Some((e.offset, pack::open_frame(e, stored)));
        }
        let result = match &frame {
            Some((_, Ok(f))) => pack::blob_from_frame(e, f).map(|_| ()),
            Some((_, Err(err))) => Err(Error::HashMismatch { what: "blob", id: err.to_string() }),
            None => Ok(()),
        };
        if let Err(err) = result {
            bad.push((e, err.to_string()));
        }
    }
    let ids: Vec<BlobId> = bad.iter().map(|(e, _)| e.id).collect();
    let locations = repo.index.locate_many(&ids).map_err(|e| e.to_string())?;
    let bad: Vec<(BlobId, String)> = bad
        .into_iter()
        .zip(locations)
        .filter(|((e, _), loc)| loc.as_ref().is_some_and(|l| l.pack == pack && l.entry == **e))
        .map(|((e, why), _)| (e.id, why))
        .collect();
    if !whole_ok && bad.is_empty() {
        return Err("the pack's content does not hash to its name (damage outside the indexed blobs)".into());
    }
    Ok(bad)
}

impl Repo {
    /// Checks the repository (see the module documentation).
    pub fn scrub(&self, opts: &ScrubOptions, progress: &dyn Progress) -> Result<ScrubReport> {
        let started = Instant::now();
        let _session = crate::lock::start_session(self.root(), "scrub")?;
        let now = now_secs();
        let mut report = ScrubReport { read_data: opts.read_data, ..ScrubReport::default() };
        let mut damage: DamageMap = BTreeMap::new();
        let mut pack_problems: Vec<Damage> = Vec::new();

        for problem in self.index.integrity_check()? {
            pack_problems.push(Damage {
                kind: "index".into(),
                blob: None,
                pack: None,
                detail: format!("SQLite integrity check: {problem}; run `cairn repair index`"),
                affected: Vec::new(),
            });
        }

        // The index against the packs on disk.
        let on_disk: HashMap<String, u64> = self.backend.list(FileKind::Pack)?.into_iter().collect();
        let indexed = self.index.packs()?;
        let indexed_names: HashSet<String> = indexed.iter().map(|p| p.id.to_hex()).collect();
        let mut broken_packs = Vec::new();
        for p in &indexed {
            match on_disk.get(&p.id.to_hex()) {
                None => {
                    broken_packs.push(p.id);
                    pack_problems.push(pack_damage("missing pack", p.id, "indexed but not on disk".into()));
                }
                Some(&size) if size != p.size => {
                    broken_packs.push(p.id);
                    pack_problems.push(pack_damage(
                        "truncated pack",
                        p.id,
                        format!("{size} bytes on disk, {} when indexed", p.size),
                    ));
                }
                Some(_) => {}
            }
        }
        for (blob, pack) in self.index.blobs_in_packs(&broken_packs)? {
            damage
                .insert(blob, (Some(pack), "missing blob".into(), format!("its pack {pack} is missing or truncated")));
        }
        for (blob, pack) in self.index.blobs_out_of_bounds()? {
            damage.entry(blob).or_insert((Some(pack), "bad blob".into(), "indexed outside its pack".into()));
        }
        report.leftovers.unindexed_packs =
            on_disk.keys().filter(|n| !indexed_names.contains(*n)).cloned().collect::<Vec<_>>();
        report.leftovers.unindexed_packs.sort();
        report.leftovers.temp_files = self.backend.temporaries()?.into_iter().map(|(n, _)| n).collect();

        // Every tree of every snapshot in scope.
        let all = self.snapshots()?;
        let scope: Vec<&Snapshot> = if opts.snapshots.is_empty() {
            all.iter().collect()
        } else {
            let wanted: HashSet<&SnapshotId> = opts.snapshots.iter().collect();
            all.iter().filter(|s| wanted.contains(&s.id)).collect()
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()
            .map_err(|e| Error::InvalidInput(format!("cannot start worker threads: {e}")))?;
        let walk = Walk {
            repo: self,
            visited: Mutex::new(HashSet::new()),
            referenced_packs: Mutex::new(HashSet::new()),
            damage: Mutex::new(BTreeMap::new()),
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
        for (blob, v) in walk.damage.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            damage.entry(blob).or_insert(v);
        }
        let referenced = walk.referenced_packs.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_scope: Vec<&PackRow> = if opts.snapshots.is_empty() {
            indexed.iter().collect()
        } else {
            indexed.iter().filter(|p| referenced.contains(&p.id)).collect()
        };
        report.leftovers.unreferenced_packs = indexed.iter().filter(|p| !referenced.contains(&p.id)).count() as u64;
        report.packs_in_scope = in_scope.len() as u64;

        // Read back, oldest verification first, within the budget.
        let mut verified_now: HashSet<PackId> = HashSet::new();
        if opts.read_data {
            let broken: HashSet<PackId> = broken_packs.iter().copied().collect();
            let mut order: Vec<&PackRow> = in_scope.iter().copied().filter(|p| !broken.contains(&p.id)).collect();
            order.sort_by_key(|p| (p.verified_at.unwrap_or(i64::MIN), p.id));
            let total: u64 = order.iter().map(|p| p.size).sum();
            progress.start("scrub: read data", Some(opts.max_bytes.map_or(total, |m| m.min(total))), Unit::Bytes);
            let bytes_done = AtomicU64::new(0);
            let stop = AtomicBool::new(false);
            let found: Mutex<Vec<(PackId, std::result::Result<Vec<(BlobId, String)>, String>)>> =
                Mutex::new(Vec::new());
            let verified: Mutex<Vec<PackId>> = Mutex::new(Vec::new());
            // Workers take packs strictly in order from a shared cursor, so the budget always
            // goes to the packs verified longest ago (a parallel iterator would split the list
            // and start a second worker from its newest end).
            let cursor = AtomicUsize::new(0);
            let failure: Mutex<Option<Error>> = Mutex::new(None);
            let check_one = |p: &PackRow| -> Result<()> {
                let bytes = match self.backend.get(FileKind::Pack, &p.id.to_hex()) {
                    Ok(b) => b,
                    Err(e) if is_damage(&e) => {
                        found
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((p.id, Err(e.to_string())));
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                progress.inc(bytes.len() as u64);
                let outcome = verify_pack(self, p.id, &bytes);
                if matches!(&outcome, Ok(bad) if bad.is_empty()) {
                    self.index.set_verified(p.id, now)?;
                    verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(p.id);
                } else {
                    found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((p.id, outcome));
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
                            failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(e);
                        }
                    });
                }
            });
            if let Some(e) = failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
                return Err(e);
            }
            progress.finish();
            report.bytes_verified = bytes_done.load(Ordering::Relaxed);
            verified_now.extend(verified.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
            for (pack, outcome) in found.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
                match outcome {
                    Ok(bad) => {
                        for (blob, detail) in bad {
                            damage.insert(blob, (Some(pack), "bad blob".into(), detail));
                        }
                    }
                    Err(detail) => {
                        for (blob, _) in self.index.blobs_in_packs(&[pack])? {
                            damage.entry(blob).or_insert((Some(pack), "bad blob".into(), detail.clone()));
                        }
                        pack_problems.push(pack_damage("bad pack", pack, detail));
                    }
                }
            }
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

        // Name every snapshot and path that needs damaged data.
        let affected = self.affected_paths(&all, &damage)?;
        let mut per_snapshot: HashMap<String, u64> = HashMap::new();
        for list in affected.values() {
            for a in list {
                *per_snapshot.entry(a.snapshot.clone()).or_default() += 1;
            }
        }
        report.damage = pack_problems;
        for (blob, (pack, kind, detail)) in &damage {
            report.damage.push(Damage {
                kind: kind.clone(),
                blob: Some(blob.to_hex()),
                pack: pack.map(|p| p.to_hex()),
                detail: detail.clone(),
                affected: affected.get(blob).cloned().unwrap_or_default(),
            });
        }
        for s in &scope {
            let n = per_snapshot.get(&s.id.to_hex()).copied().unwrap_or(0);
            report.snapshots.push(SnapshotStatus {
                id: s.id.to_hex(),
                time: jiff::Timestamp::from_nanosecond(i128::from(s.record.time_ns))
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                status: if n == 0 { "intact" } else { "damaged" },
                damaged_paths: n,
            });
        }
        report.clean = report.damage.is_empty();
        report.duration_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// For each damaged blob, every snapshot and path that needs it. Subtrees are walked once
    /// per distinct tree; a damaged tree marks its directory.
    pub(crate) fn affected_paths(
        &self,
        snapshots: &[Snapshot],
        damage: &DamageMap,
    ) -> Result<BTreeMap<BlobId, Vec<Affected>>> {
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
    Damage { kind: kind.into(), blob: None, pack: Some(pack.to_hex()), detail, affected: Vec::new() }
}
