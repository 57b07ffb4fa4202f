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

mod confirm;
mod files;
mod read_back;
mod trees;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::PackRow;
use crate::pack::PackEntry;
use crate::progress::{Progress, Unit};
use crate::repo::{now_secs, Repo, Snapshot};
use crate::workers;

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

fn is_damage(e: &Error) -> bool {
    e.is_damage() || crate::repo::missing(e)
}

fn pack_damage(kind: &str, pack: PackId, detail: String) -> Damage {
    Damage { kind: kind.into(), pack: Some(pack.to_hex()), detail, ..Damage::default() }
}

/// A scrub as it goes: what it was asked, and what it has found so far.
struct Scrub<'a> {
    repo: &'a Repo,
    opts: &'a ScrubOptions,
    progress: &'a dyn Progress,
    started: Instant,
    /// The time this run stamps on the packs it verifies (Unix seconds).
    now: i64,
    report: ScrubReport,
    /// Damage to blobs.
    damage: DamageMap,
    /// Damage that is not one blob's: the index, the config, records, whole packs.
    problems: Vec<Damage>,
}

/// The snapshots among `all` that a scrub limited to `wanted` checks (all when none is named).
fn in_scope<'s>(all: &'s [Snapshot], wanted: &[SnapshotId]) -> Vec<&'s Snapshot> {
    if wanted.is_empty() {
        all.iter().collect()
    } else {
        let wanted: HashSet<&SnapshotId> = wanted.iter().collect();
        all.iter().filter(|s| wanted.contains(&s.id)).collect()
    }
}

impl Repo {
    /// Checks the repository (see the module documentation): the index, the config and the
    /// records, the packs against the index, every tree in scope, with `read_data` every pack in
    /// scope read back; then what was found is confirmed and traced to snapshots and paths.
    pub fn scrub(&self, opts: &ScrubOptions, progress: &dyn Progress) -> Result<ScrubReport> {
        let started = Instant::now();
        let _session = self.session("scrub")?;
        // The structural walk looks up every chunk every snapshot names.
        self.index.map_for_reads(crate::index::READ_MAP);
        let mut run = Scrub {
            repo: self,
            opts,
            progress,
            started,
            now: now_secs(),
            report: ScrubReport { read_data: opts.read_data, ..ScrubReport::default() },
            damage: BTreeMap::new(),
            problems: Vec::new(),
        };
        if !run.check_index()? {
            // What the index says cannot be trusted: blame no data for it.
            run.report.damage = run.problems;
            run.report.duration_secs = started.elapsed().as_secs_f64();
            return Ok(run.report);
        }
        run.check_config();
        run.check_records()?;
        let (indexed, missing_packs) = run.check_packs()?;
        let all = self.snapshots()?;
        let scope = in_scope(&all, &opts.snapshots);
        let pool = workers::pool(opts.threads)?;
        let referenced = run.check_trees(&pool, &scope)?;
        let in_scope = run.packs_in_scope(&indexed, &referenced);
        if opts.read_data {
            // Reading packs back asks the index little: its map goes, so that it does not add
            // to the packs held in memory.
            self.index.map_for_reads(0);
            let order: Vec<&PackRow> = in_scope.iter().copied().filter(|p| !missing_packs.contains(&p.id)).collect();
            let verified_now = run.read_back(&pool, order)?;
            run.report.packs_verified = verified_now.len() as u64;
            run.report.all_packs_verified_this_run = verified_now.len() == in_scope.len();
        }
        run.coverage(&in_scope)?;
        let concluded = run.conclude(&scope);
        self.leased(concluded)
    }
}

impl Scrub<'_> {
    /// SQLite's own check of the index; false (and the problems noted) when it fails.
    fn check_index(&mut self) -> Result<bool> {
        let index_problems = self.repo.index.integrity_check()?;
        for problem in &index_problems {
            self.problems.push(Damage {
                kind: "index".into(),
                detail: format!(
                    "SQLite integrity check: {problem}; no data was checked against this index: \
                     run `cairn repair index`"
                ),
                ..Damage::default()
            });
        }
        Ok(index_problems.is_empty())
    }

    /// The packs the index names against the packs on disk: missing, truncated or grown ones,
    /// and blobs indexed outside their pack; the leftovers of interrupted runs are listed.
    /// Returns the indexed packs and those of them that are missing.
    fn check_packs(&mut self) -> Result<(Vec<PackRow>, HashSet<PackId>)> {
        let repo = self.repo;
        // The index first, then the disk: a pack indexed meanwhile is then merely unindexed in
        // this run's view (a pack is durable before its rows), and one deleted meanwhile by gc
        // is caught by the confirmation at the end (its rows go before its file).
        let indexed = repo.index.packs()?;
        let on_disk: HashMap<String, u64> =
            repo.backend.list(FileKind::Pack)?.into_iter().map(|o| (o.name, o.size)).collect();
        let indexed_names: HashSet<String> = indexed.iter().map(|p| p.id.to_hex()).collect();
        let mut missing_packs = HashSet::new();
        for p in &indexed {
            let Some(&size) = on_disk.get(&p.id.to_hex()) else {
                missing_packs.insert(p.id);
                self.problems.push(pack_damage("missing pack", p.id, "indexed but not on disk".into()));
                for e in repo.index.pack_rows(p.id)? {
                    self.damage.insert(
                        e.id,
                        finding(Some(p.id), Some(e), "missing blob", format!("its pack {} is missing", p.id)),
                    );
                }
                continue;
            };
            if size < p.size {
                self.problems.push(pack_damage(
                    "truncated pack",
                    p.id,
                    format!("{size} bytes on disk, {} when indexed", p.size),
                ));
                for e in repo.index.pack_rows(p.id)? {
                    if e.offset + u64::from(e.stored_len) > size {
                        let why = format!("its frame lies past the end of its truncated pack {}", p.id);
                        self.damage.insert(e.id, finding(Some(p.id), Some(e), "missing blob", why));
                    }
                }
            } else if size > p.size {
                self.problems.push(pack_damage(
                    "damaged pack",
                    p.id,
                    format!("{size} bytes on disk, {} when indexed: {} bytes were appended", p.size, size - p.size),
                ));
            }
        }
        for (blob, pack) in repo.index.blobs_out_of_bounds()? {
            self.damage.entry(blob).or_insert(finding(Some(pack), None, "bad blob", "indexed outside its pack".into()));
        }
        self.report.leftovers.unindexed_packs =
            on_disk.keys().filter(|n| !indexed_names.contains(*n)).cloned().collect::<Vec<_>>();
        self.report.leftovers.unindexed_packs.sort();
        self.report.leftovers.temp_files = repo.backend.temporaries()?.into_iter().map(|t| t.name).collect();
        Ok((indexed, missing_packs))
    }

    /// Walks every tree of the snapshots in `scope` (trees.rs); returns the packs they need.
    fn check_trees(&mut self, pool: &rayon::ThreadPool, scope: &[&Snapshot]) -> Result<HashSet<PackId>> {
        let walk = trees::Walk::new(self.repo);
        self.progress.start("scrub: trees", Some(scope.len() as u64), Unit::Items);
        for s in scope {
            pool.install(|| walk.tree(s.record.root))?;
            self.progress.inc(1);
        }
        walk.flush()?;
        self.progress.finish();
        let walked = walk.into_walked();
        self.report.snapshots_checked = scope.len() as u64;
        self.report.trees_checked = walked.trees;
        self.report.chunks_checked = walked.chunks;
        for (blob, f) in walked.damage {
            self.damage.entry(blob).or_insert(f);
        }
        self.report.unreadable.extend(walked.unreadable);
        Ok(walked.referenced)
    }

    /// The packs in scope: every indexed pack, or, for a scrub of chosen snapshots, the ones
    /// they need.
    fn packs_in_scope<'p>(&mut self, indexed: &'p [PackRow], referenced: &HashSet<PackId>) -> Vec<&'p PackRow> {
        let in_scope: Vec<&PackRow> = if self.opts.snapshots.is_empty() {
            indexed.iter().collect()
        } else {
            indexed.iter().filter(|p| referenced.contains(&p.id)).collect()
        };
        self.report.leftovers.unreferenced_packs =
            indexed.iter().filter(|p| !referenced.contains(&p.id)).count() as u64;
        self.report.packs_in_scope = in_scope.len() as u64;
        in_scope
    }

    /// How much of the scope has been read back, ever: from the index after this run.
    fn coverage(&mut self, in_scope: &[&PackRow]) -> Result<()> {
        let now = self.now;
        let after = self.repo.index.packs()?;
        let scope_ids: HashSet<PackId> = in_scope.iter().map(|p| p.id).collect();
        let stamps: Vec<Option<i64>> =
            after.iter().filter(|p| scope_ids.contains(&p.id)).map(|p| p.verified_at).collect();
        self.report.packs_never_verified = stamps.iter().filter(|v| v.is_none()).count() as u64;
        if !stamps.is_empty() && self.report.packs_never_verified == 0 {
            let oldest = stamps.iter().flatten().min().copied().unwrap_or(now);
            self.report.oldest_verification_age_secs = Some(u64::try_from(now - oldest).unwrap_or(0));
        }
        Ok(())
    }
}
