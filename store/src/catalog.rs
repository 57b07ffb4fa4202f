//! The catalog of snapshots: which exist, which are being forgotten, and how a name a user
//! gives (an ID, a prefix, `latest`, a label, a time) picks one. The record files are the
//! truth; the index holds a verified copy of each for listing without reading them all.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::{FileKind, ObjectInfo};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::record::{SnapshotRecord, SAFETY_TAG};
use crate::repo::{missing, Repo, Snapshot};
use crate::select::{check_label, check_tags, SnapshotFilter};

/// How snapshots are grouped: the groups `forget`'s policy applies to, and which earlier
/// snapshot is a new snapshot's automatic parent (the newest of its group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of source paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl GroupBy {
    /// restic's default: host and paths.
    #[must_use]
    pub fn host_and_paths() -> Self {
        Self { host: true, paths: true, tags: false }
    }

    /// Parses `host,paths,tags` (any subset; empty for one group).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut g = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => return Err(format!("unknown group key {other:?} (use host, paths, tags)")),
            }
        }
        Ok(g)
    }

    pub(crate) fn key(self, s: &Snapshot) -> String {
        let mut k = Vec::new();
        if self.host {
            k.push(format!("host={}", s.record.host));
        }
        if self.paths {
            k.push(format!("paths={}", s.record.paths_lossy().join(":")));
        }
        if self.tags {
            let mut t = s.record.tags.clone();
            t.sort();
            k.push(format!("tags={}", t.join(",")));
        }
        k.join(" ")
    }

    /// Whether `s` is in the group of a snapshot of `paths` (as recorded) with `tags` on `host`.
    pub(crate) fn admits(self, s: &Snapshot, host: &str, paths: &[Vec<u8>], tags: &[String]) -> bool {
        let sorted = |t: &[String]| {
            let mut t = t.to_vec();
            t.sort();
            t
        };
        (!self.host || s.record.host == host)
            && (!self.paths || s.record.paths == paths)
            && (!self.tags || sorted(&s.record.tags) == sorted(tags))
    }
}

/// The IDs among listed names (others are ignored, as everywhere).
fn ids_of(listed: Vec<ObjectInfo>) -> HashSet<SnapshotId> {
    listed.into_iter().filter_map(|o| o.name.parse().ok()).collect()
}

impl Repo {
    /// Brings the index's snapshot rows in line with the record files, the truth: a record
    /// that is durable but not indexed (a run killed between writing and indexing it) is
    /// added; a forget that did not finish (its tombstone is there) is finished. A row whose
    /// record file is gone without a tombstone was not forgotten: it is kept, and reported, so
    /// that `repair index` can write the file again from the row's verified copy. Cheap: two
    /// directory listings. Returns what the user should be told.
    pub(crate) fn reconcile_snapshots(&mut self) -> Result<Vec<String>> {
        let mut notices = Vec::new();
        // Files first, then tombstones, then rows: a forget writes its tombstone before it
        // removes the file and removes the tombstone after the row, so a row whose file was
        // forgotten always shows its tombstone here (the same order as `live_snapshots`).
        let files = ids_of(self.backend.list(FileKind::Snapshot)?);
        let (tombs, damaged) = self.tombstones()?;
        for id in damaged {
            notices.push(format!(
                "forgotten/{} is not a tombstone (damaged or written by something else): snapshot {} is \
                 kept; `cairn forget {}` forgets it, or remove that file",
                id.to_hex(),
                id.short(8),
                id.short(8)
            ));
        }
        let known: HashSet<SnapshotId> = self.index.snapshot_ids()?.into_iter().collect();
        for id in &tombs {
            let name = id.to_hex();
            if self.read_only {
                self.overlay.1.insert(*id); // what the next writable open finishes
                continue;
            }
            if files.contains(id) {
                self.backend.remove(FileKind::Snapshot, &name)?;
            }
            if known.contains(id) {
                self.index.delete_snapshot(*id)?;
            }
            self.backend.remove(FileKind::Tombstone, &name)?;
        }
        for id in files.iter().filter(|id| !tombs.contains(id) && !known.contains(id)) {
            let name = id.to_hex();
            match self.backend.get(FileKind::Snapshot, &name).and_then(|b| Ok((self.open_record(*id, &b)?, b))) {
                Ok((record, _)) if self.read_only => self.overlay.0.push(Snapshot { id: *id, record }),
                Ok((rec, bytes)) => {
                    self.index.add_snapshot(*id, rec.time_ns, &rec.host, rec.label.as_deref(), &bytes)?;
                }
                Err(e @ Error::UnsupportedVersion { .. }) => notices.push(format!(
                    "snapshot {} cannot be read by this cairn ({e}); it is not listed, and gc and repair \
                     refuse to run until cairn is upgraded",
                    id.short(8)
                )),
                Err(e) if missing(&e) => {} // forgotten since the listing
                Err(e) => notices.push(format!(
                    "snapshot record {name} is damaged ({e}) and not indexed; `cairn scrub` reports it, \
                     and gc refuses to run until `cairn repair index` has dealt with it"
                )),
            }
        }
        for id in known.iter().filter(|id| !files.contains(id) && !tombs.contains(id)) {
            notices.push(format!(
                "the record file of snapshot {} is missing (it was not forgotten); the index still holds a \
                 verified copy: run `cairn repair index` to write it again",
                id.short(8)
            ));
        }
        notices.sort();
        Ok(notices)
    }

    /// Every snapshot that exists, for deciding which data is needed (gc): each record file
    /// (the truth), and each record the index holds whose file vanished without a tombstone.
    /// A snapshot whose tombstone is there is being forgotten and does not count. Refuses when
    /// a record file cannot be read and the index holds no verified copy of it: deleting data
    /// then could destroy what that snapshot needs (a newer cairn's record, say).
    /// The snapshots being forgotten: the tombstones that verify, and the names in
    /// `forgotten/` that are not tombstones (acted on by nobody: a garbled file must never
    /// make a snapshot whose record verifies go away).
    pub(crate) fn tombstones(&self) -> Result<(HashSet<SnapshotId>, Vec<SnapshotId>)> {
        let mut valid = HashSet::new();
        let mut damaged = Vec::new();
        for id in ids_of(self.backend.list(FileKind::Tombstone)?) {
            match self.backend.get(FileKind::Tombstone, &id.to_hex()) {
                Ok(bytes) if SnapshotRecord::is_tombstone(&bytes) => {
                    valid.insert(id);
                }
                Ok(_) => damaged.push(id),
                Err(e) if missing(&e) => {} // the forget finished meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok((valid, damaged))
    }

    pub(crate) fn live_snapshots(&self) -> Result<Vec<Snapshot>> {
        let files = self.backend.list(FileKind::Snapshot)?;
        let tombs = self.tombstones()?.0;
        let rows: HashMap<SnapshotId, Vec<u8>> =
            self.index.snapshots()?.into_iter().map(|r| (r.id, r.record)).collect();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for ObjectInfo { name, .. } in files {
            let Ok(id) = name.parse::<SnapshotId>() else { continue };
            seen.insert(id);
            if tombs.contains(&id) {
                continue;
            }
            let record = match self.backend.get(FileKind::Snapshot, &name).and_then(|b| self.open_record(id, &b)) {
                Ok(r) => r,
                Err(e) if missing(&e) => continue, // forgotten since the listing
                Err(e) => match rows.get(&id).map(|b| self.open_record(id, b)) {
                    // A damaged file whose verified copy the index holds: the copy says what it needs.
                    Some(Ok(r)) if !matches!(e, Error::UnsupportedVersion { .. }) => r,
                    _ => {
                        return Err(Error::Refused {
                            reason: format!(
                                "snapshot record {name} cannot be read ({e}), so what it needs is unknown; \
                                 upgrade cairn if a newer one wrote it, else run `cairn repair index`"
                            ),
                        })
                    }
                },
            };
            out.push(Snapshot { id, record });
        }
        for (id, bytes) in &rows {
            if !seen.contains(id) && !tombs.contains(id) {
                out.push(Snapshot { id: *id, record: self.open_record(*id, bytes)? });
            }
        }
        out.sort_by_key(|s| (s.record.time_ns, s.id));
        Ok(out)
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for row in self.index.snapshots()? {
            if self.overlay.1.contains(&row.id) {
                continue;
            }
            let record = match self.open_record(row.id, &row.record) {
                Ok(r) => r,
                // The index's copy is damaged: the record file is the truth, when it is good.
                Err(e) => match self.backend.get(FileKind::Snapshot, &row.id.to_hex()) {
                    Ok(bytes) => self.open_record(row.id, &bytes).map_err(|_| e)?,
                    Err(_) => return Err(e),
                },
            };
            out.push(Snapshot { id: row.id, record });
        }
        if !self.overlay.0.is_empty() {
            out.extend(self.overlay.0.iter().cloned());
            out.sort_by_key(|s| (s.record.time_ns, s.id));
        }
        Ok(out)
    }

    /// Finds a snapshot by full ID, unique ID prefix, `latest`, or label (the newest with it).
    pub fn resolve(&self, spec: &str) -> Result<Snapshot> {
        self.resolve_in(spec, &SnapshotFilter::default())
    }

    /// Finds a snapshot by full ID, unique ID prefix, `latest`, or label, among those `filter`
    /// lets through. `latest` is the newest that is not a restore's safety snapshot (unless the
    /// filter asks for the `safety` tag): running the same in-place `restore latest` twice
    /// must not put back what the first one replaced. A reference that is both a label and the
    /// start of another snapshot's ID is refused.
    pub fn resolve_in(&self, spec: &str, filter: &SnapshotFilter) -> Result<Snapshot> {
        let all: Vec<Snapshot> = self.snapshots()?.into_iter().filter(|s| filter.matches(s)).collect();
        let among = |what: &str| match filter.describe() {
            d if d.is_empty() => what.to_owned(),
            d => format!("{what} (among snapshots {d})"),
        };
        if spec == "latest" {
            return all.into_iter().rev().find(|s| filter.wants_safety() || !s.is_safety()).ok_or_else(|| {
                Error::NoSuchSnapshot(among(
                    "latest (safety snapshots are left out: name one by ID, or add --tag safety)",
                ))
            });
        }
        let lower = spec.to_ascii_lowercase();
        let hex = !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_hexdigit());
        let mut by_id: Vec<&Snapshot> =
            if hex { all.iter().filter(|s| s.id.to_hex().starts_with(&lower)).collect() } else { Vec::new() };
        if let Some(labelled) = all.iter().rev().find(|s| s.record.label.as_deref() == Some(spec)) {
            by_id.retain(|s| s.id != labelled.id);
            if by_id.is_empty() {
                return Ok(labelled.clone());
            }
            return Err(Error::LabelOrId {
                spec: spec.to_owned(),
                labelled: labelled.id.short(8),
                ids: by_id.iter().map(|s| s.id.short(8)).collect::<Vec<_>>().join(", "),
            });
        }
        match by_id.len() {
            0 => Err(Error::NoSuchSnapshot(among(spec))),
            1 => Ok(by_id[0].clone()),
            count => Err(Error::AmbiguousSnapshot { prefix: spec.to_owned(), count }),
        }
    }

    /// The newest snapshot taken at or before `time_ns` (point-in-time restore), leaving out
    /// restores' safety snapshots as `latest` does.
    pub fn resolve_at(&self, time_ns: i64) -> Result<Snapshot> {
        self.resolve_at_in(time_ns, &SnapshotFilter::default())
    }

    /// The newest snapshot `filter` lets through taken at or before `time_ns`, leaving out
    /// restores' safety snapshots as `latest` does: `--at` with `--path /etc` never picks a
    /// snapshot of another tree.
    pub fn resolve_at_in(&self, time_ns: i64, filter: &SnapshotFilter) -> Result<Snapshot> {
        self.snapshots()?
            .into_iter()
            .rfind(|s| s.record.time_ns <= time_ns && filter.matches(s) && (filter.wants_safety() || !s.is_safety()))
            .ok_or_else(|| {
                let when =
                    jiff::Timestamp::from_nanosecond(i128::from(time_ns)).map(|t| t.to_string()).unwrap_or_default();
                let d = filter.describe();
                Error::NoSuchSnapshot(if d.is_empty() {
                    format!("at or before {when}")
                } else {
                    format!("at or before {when} among snapshots {d}")
                })
            })
    }

    /// Refuses `label` when it is malformed (`select::check_label`) or another live snapshot
    /// than `except` has it: a label names one snapshot. Records of the same snapshot (one
    /// `cairn tag` wrote again, and its old record a crash left behind) are not "another".
    pub fn check_label_free(&self, label: &str, except: Option<&Snapshot>) -> Result<()> {
        check_label(label)?;
        if let Some(other) = self.label_holder(label, except)? {
            return Err(Error::InvalidInput(format!(
                "label {label:?} is already the label of snapshot {}; labels name one snapshot: pick another, \
                 or take it off that one first (`cairn tag {} --unlabel`)",
                other.id.short(8),
                other.id.short(8)
            )));
        }
        Ok(())
    }
}

impl Repo {
    /// The live snapshot other than `except` that has `label`, if any. Records of the same
    /// snapshot (one `cairn tag` wrote again, and its old record a crash left behind; a copy
    /// of it) are not "another": they share `original`, or are it.
    pub(crate) fn label_holder(&self, label: &str, except: Option<&Snapshot>) -> Result<Option<Snapshot>> {
        let lineage = |s: &Snapshot| s.record.original.unwrap_or(s.id);
        Ok(self
            .snapshots()?
            .into_iter()
            .find(|s| s.record.label.as_deref() == Some(label) && except.is_none_or(|e| lineage(e) != lineage(s))))
    }
}

/// What `cairn tag` changes on a snapshot. A record's ID is the hash of its bytes, so a change
/// writes a new record (naming the first as `original`) and forgets the old one.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Retag {
    /// Replace the tags with these (before `add` and `remove` apply).
    pub set: Option<Vec<String>>,
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to take off.
    pub remove: Vec<String>,
    /// `Some(Some(l))` sets the label, `Some(None)` takes it off.
    pub label: Option<Option<String>>,
    /// `Some(true)` pins, `Some(false)` unpins.
    pub pin: Option<bool>,
    /// Say what would change; write nothing.
    pub dry_run: bool,
}

/// What `tag` did to one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Retagged {
    /// The snapshot as it was.
    pub old_id: String,
    /// Its new ID (the rewritten record); `None` when nothing changed or on a dry run.
    pub new_id: Option<String>,
    /// False when the change left the record as it was.
    pub changed: bool,
    /// Its tags now.
    pub tags: Vec<String>,
    /// Its label now.
    pub label: Option<String>,
    /// Pinned now.
    pub pinned: bool,
}

impl Repo {
    /// Changes the tags, label or pin of `snap` (see `Retag`). The new record is durable
    /// before the old one is forgotten: a crash in between leaves both, never neither. Runs as
    /// a session, so that a gc running beside it keeps what the new record needs.
    pub fn retag(&self, snap: &Snapshot, change: &Retag) -> Result<Retagged> {
        self.need_full_key("tag snapshots")?;
        self.writable("tag")?;
        let _session = if change.dry_run { None } else { self.session("tag")? };
        let mut record = snap.record.clone();
        if let Some(set) = &change.set {
            check_tags(set)?;
            record.tags.clone_from(set);
        }
        check_tags(&change.add)?;
        for t in &change.add {
            if !record.tags.contains(t) {
                record.tags.push(t.clone());
            }
        }
        record.tags.retain(|t| !change.remove.contains(t));
        if let Some(label) = &change.label {
            if let Some(l) = label {
                self.check_label_free(l, Some(snap))?;
            }
            record.label.clone_from(label);
        }
        if let Some(pin) = change.pin {
            record.pinned = pin;
        }
        // A safety snapshot that lost its tag (or got a label) would be an ordinary one, and
        // `latest`: the next `restore latest` would put back what the last restore replaced.
        if snap.is_safety() && !record.is_safety() {
            return Err(Error::InvalidInput(format!(
                "snapshot {} is a restore's safety snapshot: it keeps its {SAFETY_TAG:?} tag and takes no label \
                 (pin it with `cairn tag {} --pin` to keep it)",
                snap.id.short(8),
                snap.id.short(8)
            )));
        }
        let changed = record != snap.record;
        let mut new_id = None;
        if changed && !change.dry_run {
            record.original = snap.record.original.or(Some(snap.id));
            let id = self.commit(&record)?;
            crate::failpoint::hit("tag.new_record_written");
            self.forget(&[snap.id])?;
            new_id = Some(id.to_hex());
        }
        Ok(Retagged {
            old_id: snap.id.to_hex(),
            new_id,
            changed,
            tags: record.tags,
            label: record.label,
            pinned: record.pinned,
        })
    }
}
