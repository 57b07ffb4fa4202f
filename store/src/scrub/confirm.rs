//! The scrub's conclusion: what it found is confirmed against the repository as it is at the
//! end (other commands may have run beside it), then traced to every snapshot and path that
//! needs it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{finding, is_damage, Affected, Damage, DamageMap, Finding, Scrub, ScrubReport, SnapshotStatus};
use crate::backend::{FileKind, ObjectInfo};
use crate::error::Result;
use crate::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::index::BlobLocation;
use crate::repo::{Repo, Snapshot};

impl Scrub<'_> {
    /// Confirms what was found against the repository as it is now, then names every snapshot
    /// and path that needs what is still damaged, and gives each snapshot in scope its verdict.
    pub(super) fn conclude(self, scope: &[&Snapshot]) -> Result<ScrubReport> {
        let Scrub { repo, opts, started, mut report, damage, problems, .. } = self;
        let (damage, problems) = repo.confirm(damage, problems)?;
        let current = repo.snapshots()?;
        let affected = repo.affected_paths(&current, &damage)?;
        let mut damage = damage;
        damage.retain(|blob, f| f.pack.is_some() || affected.get(blob).is_some_and(|a| !a.is_empty()));
        let damage = repo.explain_unindexed(damage, &report.leftovers.unindexed_packs, &opts.leaving)?;
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
}

impl Repo {
    /// Keeps what is still wrong in the repository as it is now. A scrub takes no lock, so gc
    /// may have deleted a pack (rows first, then the file), repacked a blob elsewhere, or a
    /// forget may have removed the snapshot that needed it, while the scrub read: each finding
    /// is looked up again, a blob now indexed elsewhere is read there, and a pack the index no
    /// longer names is no longer damage. A blob no longer indexed anywhere is kept only while a
    /// snapshot still needs it (decided by the caller).
    pub(super) fn confirm(&self, damage: DamageMap, mut problems: Vec<Damage>) -> Result<(DamageMap, Vec<Damage>)> {
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
                .map(|((_, l), stored)| self.frames.open_blob(&l.entry, &stored).map(|_| ()))
                .collect()),
            Err(e) if is_damage(&e) => Ok(blobs.iter().map(|(_, l)| self.read_located(l).map(|_| ())).collect()),
            Err(e) => Err(e),
        }
    }

    /// A blob the index does not place may still be in a pack: one the index does not know (an
    /// index rebuilt without it), or one whose rows it lost. Then it is the index that is
    /// wrong, and saying so keeps the user from taking intact data for lost. Only run when
    /// something is unplaced: it reads every pack's trailer.
    pub(super) fn explain_unindexed(
        &self,
        mut damage: DamageMap,
        unindexed: &[String],
        leaving: &[String],
    ) -> Result<DamageMap> {
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
    pub(super) fn affected_paths(
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
