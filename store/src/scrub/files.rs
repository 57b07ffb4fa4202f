//! The repository's own files: both copies of the config, and every snapshot record file
//! against the index's verified copies.

use std::collections::{HashMap, HashSet};

use super::{Damage, Scrub};
use crate::backend::{FileKind, ObjectInfo, CONFIG_COPY};
use crate::error::{Error, Result};
use crate::id::SnapshotId;

impl Scrub<'_> {
    /// Both copies of the config: one that cannot be read is damage (opening mends it when the
    /// repository is writable, so a scrub normally finds both good).
    pub(super) fn check_config(&mut self) {
        for name in ["config", CONFIG_COPY] {
            let read =
                self.repo.backend.get(FileKind::Config, name).and_then(|b| crate::config::RepoConfig::decode(&b));
            if let Err(e) = read {
                self.problems.push(Damage {
                    kind: "config".into(),
                    detail: format!("{name}: {e}; the other copy is good: `cairn repair config` writes it again"),
                    ..Damage::default()
                });
            }
        }
    }

    /// Reads and verifies every snapshot record file, and compares them with the index: a
    /// record file that is damaged or gone while the index holds a verified copy is damage
    /// (`repair index` writes it again); one that is damaged with no copy is a lost snapshot.
    pub(super) fn check_records(&mut self) -> Result<()> {
        let repo = self.repo;
        // The same order as `Repo::reconcile_snapshots`: files, tombstones, rows.
        let files = repo.backend.list(FileKind::Snapshot)?;
        crate::failpoint::hit("scrub.records_listed");
        let tombs: HashSet<String> = repo.tombstones()?.0.iter().map(SnapshotId::to_hex).collect();
        let rows: HashMap<SnapshotId, Vec<u8>> =
            repo.index.snapshots()?.into_iter().map(|r| (r.id, r.record)).collect();
        let mut seen = HashSet::new();
        for ObjectInfo { name, .. } in &files {
            let Ok(id) = name.parse::<SnapshotId>() else { continue };
            seen.insert(id);
            if tombs.contains(name) {
                continue; // being forgotten
            }
            match repo.backend.get(FileKind::Snapshot, name).and_then(|b| repo.open_record(id, &b)) {
                Ok(_) => {}
                Err(e) if crate::repo::missing(&e) => {} // forgotten since the listing
                Err(e @ Error::UnsupportedVersion { .. }) => {
                    self.report.unreadable.push(format!("snapshot record {name}: {e}"))
                }
                Err(e) => {
                    let copy = rows.get(&id).is_some_and(|b| repo.open_record(id, b).is_ok());
                    let detail = if copy {
                        format!("{e}; the index holds a verified copy: `cairn repair index` writes the file again")
                    } else {
                        format!("{e}; no verified copy exists: the snapshot is lost unless a good copy of the file is found")
                    };
                    self.problems.push(Damage {
                        kind: "damaged record".into(),
                        snapshot: Some(name.clone()),
                        detail,
                        ..Damage::default()
                    });
                }
            }
        }
        let unlisted: Vec<SnapshotId> =
            rows.keys().filter(|id| !seen.contains(*id) && !tombs.contains(&id.to_hex())).copied().collect();
        // A snapshot writes its file before its row, and forget removes the file before the
        // row: a snapshot or a forget that committed between the listing and the rows leaves a
        // row without a listed file that is not damage. Asked again now, each such row has its
        // file, or is gone (or tombstoned) too.
        let (now_rows, now_tombs) = if unlisted.is_empty() {
            (HashSet::new(), HashSet::new())
        } else {
            let rows: HashSet<SnapshotId> = repo.index.snapshots()?.into_iter().map(|r| r.id).collect();
            (rows, repo.tombstones()?.0.into_iter().collect())
        };
        for id in unlisted {
            match repo.backend.size(FileKind::Snapshot, &id.to_hex()) {
                Ok(_) => continue, // written after the listing
                Err(e) if crate::repo::missing(&e) => {}
                Err(e) => return Err(e),
            }
            if !now_rows.contains(&id) || now_tombs.contains(&id) {
                continue; // forgotten meanwhile
            }
            self.problems.push(Damage {
                kind: "missing record".into(),
                snapshot: Some(id.to_hex()),
                detail: "the record file is gone (it was not forgotten); the index holds a verified copy: \
                         `cairn repair index` writes it again"
                    .into(),
                ..Damage::default()
            });
        }
        Ok(())
    }
}
