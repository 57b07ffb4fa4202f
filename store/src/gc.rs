//! `forget` and garbage collection. The safety argument is written out in docs/GC.md.
//!
//! 1. Take the exclusive gc lock.
//! 2. Mark: walk every snapshot's trees into a scratch mark set on disk.
//! 3. Condemn packs with no reachable blob, and repack packs whose unused share is above the
//!    threshold (their reachable blobs are written to a new durable pack first). Condemning
//!    takes a pack's rows out of the index in one transaction, so nothing that starts later
//!    can find its blobs; the time of that commit is recorded with the pack.
//! 4. Wait for every session (snapshot, restore, scrub) that started before a condemnation to
//!    end: only such sessions can still use a condemned pack's blobs.
//! 5. Mark the snapshots committed meanwhile, then delete each condemned pack whose blobs are
//!    still unneeded; a pack holding a blob a new snapshot needs is put back in the index
//!    (rescued) instead.
//! 6. Remove leftovers of crashed runs: temporary files of dead processes, and packs that were
//!    on disk but unindexed when gc started and still are once older sessions have ended.
//!
//! A crash at any point leaves a consistent repository: the index never names a pack that is
//! gone (a pack is deleted only after its rows), new packs are durable and indexed before the
//! old ones are condemned, and condemned packs are finished by the next gc.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::index::{MarkSet, PackUsage};
use crate::lock::now_ns;
use crate::pack::{self, PackWriter, FOOTER_LEN};
use crate::progress::{Progress, Unit};
use crate::repo::{now_secs, Repo, Snapshot};

/// How `gc` runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GcOptions {
    /// Report what would be freed; change nothing.
    pub dry_run: bool,
    /// Repack a pack when more than this share of it (0.0–1.0) is unused.
    pub max_unused: f64,
    /// How long to wait for older sessions to end before leaving condemned packs to a later gc.
    pub max_wait: Duration,
    /// Snapshots to count as forgotten already, for a dry run: `forget --dry-run --gc` asks
    /// what gc would free once the forget it did not carry out were done.
    pub assume_forgotten: Vec<SnapshotId>,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self { dry_run: false, max_unused: 0.10, max_wait: Duration::from_secs(600), assume_forgotten: Vec::new() }
    }
}

/// What a gc did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// True when nothing was changed.
    pub dry_run: bool,
    /// Snapshots whose data was kept.
    pub snapshots: u64,
    /// Distinct reachable blobs.
    pub reachable_blobs: u64,
    /// Packs and bytes before.
    pub packs_before: u64,
    /// Bytes of all packs before.
    pub bytes_before: u64,
    /// Packs with nothing reachable (deleted, or to be).
    pub packs_unused: u64,
    /// Packs rewritten because too much of them was unused.
    pub packs_repacked: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Pack files deleted by this run.
    pub packs_deleted: u64,
    /// Condemned packs put back because a new snapshot needed them.
    pub packs_rescued: u64,
    /// Condemned packs left for a later gc (older sessions still running).
    pub packs_pending: u64,
    /// Bytes freed (deleted packs minus new packs).
    pub bytes_freed: i64,
    /// Bytes a dry run would free (estimate: unused packs and unused shares of repacked ones).
    pub bytes_freeable: u64,
    /// Leftover temporary files and unindexed packs removed.
    pub leftovers_removed: u64,
    /// Unindexed packs holding blobs a snapshot needs and the index had no copy of: indexed.
    pub packs_adopted: u64,
    /// Unindexed packs that cannot be read, left in place for `repair index` (with the reason).
    pub packs_unreadable: Vec<String>,
    /// Seconds spent waiting for older sessions.
    pub waited_secs: f64,
    /// The sessions waited for (`kind pid`), still running at the end if `packs_pending` > 0.
    pub waited_for: Vec<String>,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// What `forget` removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetReport {
    /// Every decision, kept and removed, with reasons.
    pub decisions: Vec<crate::retention::Decision>,
    /// IDs removed (empty on a dry run).
    pub removed: Vec<String>,
    /// True when nothing was changed.
    pub dry_run: bool,
}

impl Repo {
    /// Removes snapshot records. Space comes back with `gc`.
    ///
    /// A tombstone (`forgotten/<id>`) is written first and removed last: it is the point of
    /// commit of a forget. A run killed after it is finished by the next open; a record file
    /// that is gone without one was not forgotten, and is reported instead of being dropped.
    pub fn forget(&self, ids: &[SnapshotId]) -> Result<()> {
        self.need_full_key("forget snapshots")?;
        self.writable("forget")?;
        for id in ids {
            let name = id.to_hex();
            self.backend.put(FileKind::Tombstone, &name, &crate::record::SnapshotRecord::tombstone(now_ns()))?;
            crate::failpoint::hit("forget.tombstone_written");
            self.backend.remove(FileKind::Snapshot, &name)?;
            crate::failpoint::hit("forget.record_removed");
            self.index.delete_snapshot(*id)?;
            self.backend.remove(FileKind::Tombstone, &name)?;
        }
        Ok(())
    }

    /// Walks the trees of `snaps` into the mark set (trees already visited are skipped).
    pub(crate) fn mark(&self, mark: &MarkSet, snaps: &[&Snapshot], progress: &dyn Progress) -> Result<()> {
        progress.start("gc: mark", Some(snaps.len() as u64), Unit::Items);
        for s in snaps {
            let mut stack: Vec<TreeId> = vec![s.record.root];
            while let Some(t) = stack.pop() {
                if !mark.visit_tree(t)? {
                    continue;
                }
                // A tree that cannot be read makes reachability unknowable: stop, change nothing.
                let tree = self.load_tree(t).map_err(|e| {
                    let what_to_do = if matches!(e, Error::UnsupportedVersion { .. }) {
                        "upgrade cairn: a newer one wrote it"
                    } else {
                        "run `cairn scrub` and `cairn repair index`"
                    };
                    Error::Refused {
                        reason: format!("tree {t} of snapshot {} cannot be read ({e}); {what_to_do}", s.id.short(8)),
                    }
                })?;
                // Straight into the mark set's bounded buffer: a directory of large files
                // lists millions of chunks, which need not be copied once more first.
                mark.add([BlobId::from(t)])?;
                for e in &tree.entries {
                    if let Some(sub) = e.subtree {
                        stack.push(sub);
                    }
                    mark.add(e.content.iter().map(|c| BlobId::from(c.id)))?;
                }
            }
            progress.inc(1);
        }
        progress.finish();
        Ok(())
    }

    /// Collects garbage (see the module documentation): packs nothing live needs are condemned
    /// (the wasteful ones repacked first), and deleted once every session that could still use
    /// them has ended; then the leftovers of crashed runs go.
    pub fn gc(&self, opts: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
        let started = Instant::now();
        self.need_full_key("collect garbage (gc reads every record and tree)")?;
        self.writable("gc")?;
        if !opts.dry_run && !self.locks.sees_every_session() {
            // gc deletes a condemned pack once no older session is alive; sessions it cannot
            // see (another machine's, on a bucket) would make that a guess.
            return Err(Error::Refused {
                reason: format!(
                    "gc cannot run on {} yet: its locks see only this machine's sessions, and gc may delete \
                     only what no session anywhere can still use (lease locks in the bucket come next; \
                     `gc --dry-run` works)",
                    self.location
                ),
            });
        }
        let _lock = self.locks.gc_lock("gc")?;
        // Condemnations a collector on another machine published are this gc's to finish, and
        // are published again with its own (publishing replaces the older records).
        if !opts.dry_run {
            for (pack, at_ns) in self.locks.published_condemned()? {
                self.index.condemn(pack, at_ns)?;
            }
        }
        let mut report = GcReport { dry_run: opts.dry_run, ..GcReport::default() };
        let t0 = now_ns();
        let on_disk_at_start = self.packs_at_start()?;
        if !opts.assume_forgotten.is_empty() && !opts.dry_run {
            // Only a dry run may pretend: a real gc that left snapshots out would delete their data.
            return Err(Error::InvalidInput("gc can assume snapshots forgotten only in a dry run".into()));
        }
        let (mark, live) = self.mark_live(&opts.assume_forgotten, progress, &mut report)?;
        let plan = self.plan(&mark, opts, &mut report)?;
        if opts.dry_run {
            report.duration_secs = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        let written_bytes = self.condemn(&plan, &mark, progress, &mut report)?;
        let oldest_live = self.wait_for_sessions(opts, &mut report)?;
        self.mark_newer(&mark, &live, progress)?;
        let mut deleted_bytes = self.sweep(&mark, oldest_live, &mut report)?;
        // Published again: what was deleted is named as gone, for caches elsewhere.
        self.locks.publish_condemned(&self.index.condemned()?)?;
        deleted_bytes += self.remove_leftovers(on_disk_at_start, t0, oldest_live, &mark, &mut report)?;
        report.bytes_freed =
            i64::try_from(deleted_bytes).unwrap_or(i64::MAX) - i64::try_from(written_bytes).unwrap_or(0);
        self.top_up_reserve();
        report.duration_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The packs on disk as gc starts. Those the index does not know are deleted at the end as
    /// leftovers of killed runs, or indexed when a snapshot needs them: gc refuses now if one
    /// is of a format this build cannot read, before anything is changed.
    fn packs_at_start(&self) -> Result<Vec<(String, u64)>> {
        let on_disk: Vec<(String, u64)> =
            self.backend.list(FileKind::Pack)?.into_iter().map(|o| (o.name, o.size)).collect();
        let indexed: HashSet<String> = self.index.packs()?.into_iter().map(|p| p.id.to_hex()).collect();
        for (name, _) in on_disk.iter().filter(|(n, _)| !indexed.contains(n)) {
            self.refuse_newer_pack(name)?;
        }
        Ok(on_disk)
    }

    /// Marks everything the snapshots that exist now need (but those a dry run counts as
    /// forgotten); returns the mark set and them.
    fn mark_live(
        &self,
        forgotten: &[SnapshotId],
        progress: &dyn Progress,
        report: &mut GcReport,
    ) -> Result<(MarkSet, Vec<Snapshot>)> {
        let mark = MarkSet::create(&self.scratch_path(&format!("gc-mark-{}.sqlite", std::process::id())))?;
        let mut snaps = self.live_snapshots()?;
        self.index_other_machines_packs()?;
        snaps.retain(|s| !forgotten.contains(&s.id));
        self.mark(&mark, &snaps.iter().collect::<Vec<_>>(), progress)?;
        report.snapshots = snaps.len() as u64;
        report.reachable_blobs = mark.len()?;
        crate::failpoint::hit("gc.marked");
        Ok((mark, snaps))
    }

    /// Sorts the packs by what their reachable share calls for: unused (nothing reachable) or
    /// repacked (more than `max_unused` of them unused).
    fn plan(&self, mark: &MarkSet, opts: &GcOptions, report: &mut GcReport) -> Result<Plan> {
        let usage = self.index.pack_usage(mark)?;
        report.packs_before = usage.len() as u64;
        report.bytes_before = usage.iter().map(|u| u.size).sum();
        let mut plan = Plan::default();
        for u in &usage {
            // Header, footer and trailer are overhead of any pack, not unused space.
            let overhead = (pack::PACK_HEADER_LEN + FOOTER_LEN) as u64 + 8 + pack::TRAILER_ENTRY_LEN * u.blobs;
            let payload = u.size.saturating_sub(overhead).max(1);
            let share = 1.0 - (u.live_bytes as f64 / payload as f64).min(1.0);
            if u.live_blobs == 0 {
                plan.unused.push(*u);
                report.bytes_freeable += u.size;
            } else if share > opts.max_unused {
                plan.repack.push(*u);
                report.bytes_freeable += u.size.saturating_sub(u.live_bytes);
            }
        }
        report.packs_unused = plan.unused.len() as u64;
        report.packs_repacked = plan.repack.len() as u64;
        Ok(plan)
    }

    /// Condemns the unused packs, and repacks the others the plan names (which condemns them
    /// in turn); returns the bytes the new packs take.
    fn condemn(&self, plan: &Plan, mark: &MarkSet, progress: &dyn Progress, report: &mut GcReport) -> Result<u64> {
        for u in &plan.unused {
            self.index.condemn(u.id, now_ns())?;
            crate::failpoint::hit("gc.condemned");
        }
        progress.start("gc: repack", Some(plan.repack.iter().map(|u| u.size).sum()), Unit::Bytes);
        let mut written_bytes = 0u64;
        for u in &plan.repack {
            self.check_lease()?;
            if let Some(size) = self.repack(u.id, mark)? {
                report.packs_written += 1;
                written_bytes += size;
            }
            progress.inc(u.size);
        }
        progress.finish();
        // Writers elsewhere must stop deduplicating against them before the wait begins.
        self.locks.publish_condemned(&self.index.condemned()?)?;
        Ok(written_bytes)
    }

    /// Waits (up to `max_wait`) for the sessions that started before the last condemnation:
    /// they may still use its blobs. Returns when the oldest session still running started.
    fn wait_for_sessions(&self, opts: &GcOptions, report: &mut GcReport) -> Result<Option<i64>> {
        let wait_started = Instant::now();
        let latest_condemnation = now_ns();
        for polls in 0.. {
            let older: Vec<_> =
                self.locks.live_sessions()?.into_iter().filter(|s| s.started_ns < latest_condemnation).collect();
            for s in &older {
                let who = format!("{} {}", s.kind, s.pid);
                if !report.waited_for.contains(&who) {
                    report.waited_for.push(who);
                }
            }
            let left = opts.max_wait.saturating_sub(wait_started.elapsed());
            if older.is_empty() || left.is_zero() {
                break;
            }
            std::thread::sleep(self.locks.poll_interval(polls).min(left));
        }
        report.waited_secs = wait_started.elapsed().as_secs_f64();
        Ok(self.locks.live_sessions()?.iter().map(|s| s.started_ns).min())
    }

    /// On a repository other machines write (a bucket), indexes the packs they stored since
    /// this cache last looked. Called after the snapshots are listed: a snapshot's packs are
    /// stored before its record, so every pack a listed snapshot needs is indexed by then, and
    /// the sweep sees the fresh copies of condemned blobs they hold.
    fn index_other_machines_packs(&self) -> Result<()> {
        if self.location.is_shared() {
            let caught_up =
                self.index_from_files(&[], now_secs(), &crate::progress::NoProgress, crate::repo::pack_trailer)?;
            for damaged in &caught_up.damaged {
                log::warn!("not indexed: {damaged}");
            }
        }
        Ok(())
    }

    /// Marks the snapshots committed since `live` was listed: they may need condemned blobs.
    fn mark_newer(&self, mark: &MarkSet, live: &[Snapshot], progress: &dyn Progress) -> Result<()> {
        let seen: HashSet<SnapshotId> = live.iter().map(|s| s.id).collect();
        let newer: Vec<Snapshot> = self.live_snapshots()?.into_iter().filter(|s| !seen.contains(&s.id)).collect();
        self.index_other_machines_packs()?;
        self.mark(mark, &newer.iter().collect::<Vec<_>>(), progress)
    }

    /// Deletes (or rescues) each condemned pack that no session running since before its
    /// condemnation can still use; returns the bytes deleted. All their rows go in one index
    /// transaction (rows first, then the files: the index never names a pack that is gone).
    fn sweep(&self, mark: &MarkSet, oldest_live: Option<i64>, report: &mut GcReport) -> Result<u64> {
        let min_age = i64::try_from(self.locks.min_condemned_age().as_nanos()).unwrap_or(i64::MAX);
        let now = now_ns();
        let mut ripe = Vec::new();
        for (pack, at_ns) in self.index.condemned()? {
            // Too young (lease locks keep condemned packs a day), or an older session may use it.
            if now.saturating_sub(at_ns) < min_age || oldest_live.is_some_and(|o| o < at_ns) {
                report.packs_pending += 1;
                continue;
            }
            ripe.push(pack);
        }
        if ripe.is_empty() {
            return Ok(0);
        }
        // A collector whose lease is lost may have a second one beside it by now.
        self.check_lease()?;
        // A pack whose file is gone or whose trailer cannot be read is not rescued: nothing
        // could be read from it.
        let mut readable = |pack: PackId| {
            let name = pack.to_hex();
            self.backend.size(FileKind::Pack, &name).is_ok_and(|size| self.pack_trailer(&name, size).is_ok())
        };
        let swept = self.index.sweep_condemned(&ripe, mark, &mut readable)?;
        for pack in swept.rescued {
            self.locks.withdraw_condemned(pack)?;
            report.packs_rescued += 1;
        }
        let mut deleted_bytes = 0u64;
        for pack in swept.deleted {
            crate::failpoint::hit("gc.rows_deleted");
            self.check_lease()?;
            let name = pack.to_hex();
            let size = self.backend.size(FileKind::Pack, &name).unwrap_or(0);
            self.backend.remove(FileKind::Pack, &name)?;
            report.packs_deleted += 1;
            deleted_bytes += size;
        }
        Ok(deleted_bytes)
    }

    /// Removes what crashed runs left: packs that were on disk but unindexed when gc started
    /// (`t0`) and still are, once nothing older than this gc is running, and temporary files the
    /// backend judges abandoned. Returns the bytes of the packs removed.
    fn remove_leftovers(
        &self,
        on_disk_at_start: Vec<(String, u64)>,
        t0: i64,
        oldest_live: Option<i64>,
        mark: &MarkSet,
        report: &mut GcReport,
    ) -> Result<u64> {
        let mut deleted_bytes = 0u64;
        if oldest_live.is_none_or(|o| o >= t0) {
            let indexed: HashSet<String> = self.index.packs()?.into_iter().map(|p| p.id.to_hex()).collect();
            for (name, size) in on_disk_at_start {
                if indexed.contains(&name) || self.backend.size(FileKind::Pack, &name).is_err() {
                    continue;
                }
                self.check_lease()?;
                match self.settle_unindexed(&name, size, mark)? {
                    Unindexed::Removed => {
                        report.leftovers_removed += 1;
                        deleted_bytes += size;
                    }
                    Unindexed::Adopted => report.packs_adopted += 1,
                    Unindexed::Unreadable(why) => report.packs_unreadable.push(format!("{name}: {why}")),
                }
            }
        }
        let now = now_ns();
        for temp in self.backend.temporaries()? {
            if self.backend.is_abandoned(&temp, now) {
                self.check_lease()?;
                self.backend.remove_temporary(&temp.name)?;
                report.leftovers_removed += 1;
            }
        }
        Ok(deleted_bytes)
    }

    /// Copies a pack's reachable, indexed blobs into a new pack and condemns the old one.
    /// Returns the new pack's size (none when nothing needed copying).
    fn repack(&self, old: PackId, mark: &MarkSet) -> Result<Option<u64>> {
        let bytes = match self.backend.get(FileKind::Pack, &old.to_hex()) {
            Ok(b) => b,
            Err(e) if e.is_damage() => return Ok(None), // scrub reports it; nothing safe to do
            Err(e) => return Err(e),
        };
        let Ok(entries) = pack::check_pack_with(&old.to_hex(), &bytes, self.frames.as_ref()) else { return Ok(None) };
        let ids: Vec<BlobId> = entries.iter().map(|e| e.id).collect();
        let live = mark.contains(&ids)?;
        let here = self.index.locate_many(&ids)?;
        let mut writer = PackWriter::for_codec(&self.frames, 0);
        // Blobs of one old frame stay together in one new frame.
        let mut frames: Vec<(u64, Vec<OwnedBlob>)> = Vec::new();
        for ((e, live), loc) in entries.iter().zip(live).zip(here) {
            if !live || !loc.is_some_and(|l| l.pack == old && l.entry == *e) {
                continue;
            }
            let data = self.frames.open_blob(e, pack::frame_in(&bytes, e).unwrap_or(&[]))?;
            match frames.last_mut() {
                Some((off, blobs)) if *off == e.offset => blobs.push((e.kind, e.id, data)),
                _ => frames.push((e.offset, vec![(e.kind, e.id, data)])),
            }
        }
        for (_, blobs) in &frames {
            let refs: Vec<(pack::BlobKind, BlobId, &[u8])> =
                blobs.iter().map(|(k, i, d)| (*k, *i, d.as_slice())).collect();
            writer.add(&self.frames.seal(&refs));
        }
        if writer.is_empty() {
            self.index.condemn(old, now_ns())?;
            return Ok(None);
        }
        let (new, new_bytes, new_entries) = writer.finish();
        self.backend.put(FileKind::Pack, &new.to_hex(), &new_bytes)?;
        crate::failpoint::hit("gc.repack_written");
        self.index.replace_pack(new, new_bytes.len() as u64, &new_entries, old, now_ns(), now_secs())?;
        Ok(Some(new_bytes.len() as u64))
    }

    /// Stops gc, before it changes anything, when an intact pack is of a format this build
    /// cannot read: a newer cairn's pack may hold what a newer snapshot needs. (A damaged pack's
    /// header is not believed; such a pack is left alone at the end.)
    fn refuse_newer_pack(&self, name: &str) -> Result<()> {
        let bytes = match self.backend.get(FileKind::Pack, name) {
            Ok(b) => b,
            Err(e) if crate::repo::missing(&e) || e.is_damage() => return Ok(()),
            Err(e) => return Err(e),
        };
        match pack::check_pack_with(name, &bytes, self.frames.as_ref()) {
            Err(e @ Error::UnsupportedVersion { .. }) => Err(Error::Refused {
                reason: format!("pack {name} cannot be read ({e}); upgrade cairn before running gc"),
            }),
            _ => Ok(()),
        }
    }

    /// A pack on disk that the index does not know, once no run older than this gc can still
    /// be writing it: a leftover of a killed run is removed; one holding blobs a snapshot needs
    /// and the index has no copy of (an index rebuilt without it) is indexed instead; one that
    /// cannot be read is left for `repair index`, never deleted on a guess.
    fn settle_unindexed(&self, name: &str, size: u64, mark: &MarkSet) -> Result<Unindexed> {
        let bytes = match self.backend.get(FileKind::Pack, name) {
            Ok(b) => b,
            Err(e) if crate::repo::missing(&e) => return Ok(Unindexed::Removed),
            Err(e) if e.is_damage() => return Ok(Unindexed::Unreadable(e.to_string())),
            Err(e) => return Err(e),
        };
        let (Ok(id), Ok(entries)) = (name.parse::<PackId>(), pack::check_pack_with(name, &bytes, self.frames.as_ref()))
        else {
            let why = pack::check_pack_with(name, &bytes, self.frames.as_ref())
                .err()
                .map_or_else(|| "bad name".to_owned(), |e| e.to_string());
            return Ok(Unindexed::Unreadable(why));
        };
        let ids: Vec<BlobId> = entries.iter().map(|e| e.id).collect();
        let needed = mark.contains(&ids)?;
        let placed = self.index.locate_many(&ids)?;
        if needed.iter().zip(&placed).any(|(n, p)| *n && p.is_none()) {
            self.index.add_pack(id, size, &entries, now_secs())?;
            return Ok(Unindexed::Adopted);
        }
        self.backend.remove(FileKind::Pack, name)?;
        Ok(Unindexed::Removed)
    }
}

/// A blob copied out of a pack: kind, ID and plaintext.
type OwnedBlob = (pack::BlobKind, BlobId, Vec<u8>);

/// What gc does to which packs.
#[derive(Default)]
struct Plan {
    /// Nothing reachable: condemned.
    unused: Vec<PackUsage>,
    /// Too much unused: repacked.
    repack: Vec<PackUsage>,
}

enum Unindexed {
    Removed,
    Adopted,
    Unreadable(String),
}

/// Keeps the number of groups the policy would empty, for the CLI's refusal.
#[must_use]
pub fn emptied_groups(decisions: &[crate::retention::Decision]) -> Vec<String> {
    let mut kept: HashMap<&str, bool> = HashMap::new();
    for d in decisions {
        *kept.entry(d.group.as_str()).or_default() |= d.keep;
    }
    let mut out: Vec<String> = kept.into_iter().filter(|(_, k)| !k).map(|(g, _)| g.to_owned()).collect();
    out.sort();
    out
}
