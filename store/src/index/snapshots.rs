//! Snapshot rows: a verified copy of every committed record, so that a record file that is
//! damaged or gone can be written again (`repair index`).

use rusqlite::{params, OptionalExtension};

use super::Index;
use crate::error::{Error, Result};
use crate::id::SnapshotId;

/// A snapshot row: its ID and record bytes.
pub struct SnapshotRow {
    /// The snapshot's ID.
    pub id: SnapshotId,
    /// The framed record, as stored in `snapshots/<id>`.
    pub record: Vec<u8>,
}

impl Index {
    /// Records a committed snapshot.
    pub fn add_snapshot(
        &self,
        id: SnapshotId,
        time_ns: i64,
        host: &str,
        label: Option<&str>,
        record: &[u8],
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO snapshots(id, time_ns, host, label, record, generation) \
                 VALUES (?1, ?2, ?3, ?4, ?5, (SELECT coalesce(max(value), 0) FROM meta WHERE key = 'generation'))",
                params![id.as_bytes(), time_ns, host, label, record],
            )
            .map(|_| ())
        })
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRow>> {
        let rows = self.with(|c| {
            let mut st = c.prepare_cached("SELECT id, record FROM snapshots ORDER BY time_ns, id")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(id, record)| {
                let id = SnapshotId::from_slice(&id)
                    .ok_or_else(|| Error::corrupt(format!("index {}", self.path.display()), "bad snapshot id"))?;
                Ok(SnapshotRow { id, record })
            })
            .collect()
    }

    /// IDs of the snapshots in the index (to reconcile with the snapshot files).
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.snapshots()?.into_iter().map(|r| r.id).collect())
    }

    /// Forgets a snapshot (its record file is removed first by the caller).
    pub fn delete_snapshot(&self, id: SnapshotId) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM snapshots WHERE id = ?1", [id.as_bytes()]).map(|_| ()))
    }

    /// The generation a snapshot was indexed in, if it is indexed.
    pub fn snapshot_generation(&self, id: SnapshotId) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row("SELECT generation FROM snapshots WHERE id = ?1", [id.as_bytes()], |r| r.get(0)).optional()
        })
    }
}
