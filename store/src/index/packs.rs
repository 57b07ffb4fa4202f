//! Pack rows: which packs exist, when each was verified, and the condemnation that gc's
//! safety rests on (docs/GC.md).

use rusqlite::{params, OptionalExtension};

use super::blobs::insert_pack;
use super::{levels, Index};
use crate::error::Result;
use crate::id::{BlobId, PackId};
use crate::pack::PackEntry;

/// A pack row.
#[derive(Clone, Copy, Debug)]
pub struct PackRow {
    /// The pack.
    pub id: PackId,
    /// Its size in bytes when indexed.
    pub size: u64,
    /// When it was last read back and verified (Unix seconds), if ever.
    pub verified_at: Option<i64>,
}

impl Index {
    /// Records a durable pack and all its blobs in one transaction, then merges levels that
    /// have outgrown their capacity.
    pub fn add_pack(&self, id: PackId, size: u64, entries: &[PackEntry], now: i64) -> Result<()> {
        self.with(|c| {
            let tx = Self::write_tx(c)?;
            insert_pack(&tx, id, size, entries, now)?;
            self.filter_add(&tx, entries)?;
            tx.commit()
        })?;
        self.settle()
    }

    /// Repack: the blobs in `entries` now live in the durable pack `new`; `old` is condemned.
    /// One transaction, the point of commit of a repack.
    pub fn replace_pack(
        &self,
        new: PackId,
        size: u64,
        entries: &[PackEntry],
        old: PackId,
        at_ns: i64,
        now: i64,
    ) -> Result<()> {
        self.with(|c| {
            let tx = Self::write_tx(c)?;
            insert_pack(&tx, new, size, entries, now)?;
            self.filter_add(&tx, entries)?;
            tx.execute("UPDATE packs SET condemned_at = ?1 WHERE id = ?2", params![at_ns, old.as_bytes()])?;
            tx.commit()
        })?;
        self.settle()
    }

    /// Every indexed pack.
    pub fn packs(&self) -> Result<Vec<PackRow>> {
        let rows = self.with(|c| {
            let mut st = c.prepare_cached("SELECT id, size, verified_at FROM packs ORDER BY pid")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(id, size, verified_at)| {
                Ok(PackRow {
                    id: PackId::from_slice(&id).ok_or_else(|| self.bad_row("pack id"))?,
                    size: u64::try_from(size).map_err(|_| self.bad_row("pack size"))?,
                    verified_at,
                })
            })
            .collect()
    }

    /// The place of every blob the index locates in `pack` (its newest row names the pack):
    /// what a restore would read from it. A full scan of the levels: used only for packs whose
    /// own trailer cannot be trusted, and for `repair index` to learn from an old index.
    pub fn pack_rows(&self, pack: PackId) -> Result<Vec<PackEntry>> {
        type Row = (Vec<u8>, [i64; 7]);
        let rows: Vec<Row> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT b.id, b.kind, b.offset, b.stored_len, b.frame_len, b.frame_offset, b.raw_len, b.compression \
                 FROM blobs_all b JOIN packs p ON p.pid = b.pid WHERE p.id = ?1 ORDER BY b.offset, b.frame_offset",
            )?;
            let rows = st.query_map([pack.as_bytes()], |r| {
                let mut n = [0i64; 7];
                for (i, v) in n.iter_mut().enumerate() {
                    *v = r.get(i + 1)?;
                }
                Ok((r.get(0)?, n))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut entries = Vec::with_capacity(rows.len());
        for (id, n) in rows {
            let id = BlobId::from_slice(&id).ok_or_else(|| self.bad_row("blob id"))?;
            entries.push(self.location(id, (pack.as_bytes().to_vec(), n))?.entry);
        }
        // Only the rows that locate their blob: an older row a newer copy shadows is not read.
        let ids: Vec<BlobId> = entries.iter().map(|e| e.id).collect();
        let newest = self.locate_many(&ids)?;
        Ok(entries
            .into_iter()
            .zip(newest)
            .filter(|(e, loc)| loc.as_ref().is_some_and(|l| l.pack == pack && l.entry == *e))
            .map(|(e, _)| e)
            .collect())
    }

    /// Records that a pack was read back and verified at `when` (Unix seconds).
    pub fn set_verified(&self, pack: PackId, when: i64) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE packs SET verified_at = ?1 WHERE id = ?2", params![when, pack.as_bytes()]).map(|_| ())
        })
    }

    /// Condemns a pack at `at_ns`: its rows stay (readers that found them keep working), but
    /// no deduplication lookup sees its blobs any more.
    pub fn condemn(&self, pack: PackId, at_ns: i64) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE packs SET condemned_at = ?1 WHERE id = ?2", params![at_ns, pack.as_bytes()]).map(|_| ())
        })
    }

    /// Condemned packs and when they were condemned, oldest first.
    pub fn condemned(&self) -> Result<Vec<(PackId, i64)>> {
        let rows = self.with(|c| {
            let mut st =
                c.prepare("SELECT id, condemned_at FROM packs WHERE condemned_at IS NOT NULL ORDER BY condemned_at")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(p, at)| Ok((PackId::from_slice(&p).ok_or_else(|| self.bad_row("pack id"))?, at)))
            .collect()
    }

    /// Removes a pack and the rows of `blobs` that name it, in every level (before its file is
    /// deleted); with no `blobs`, every row that names it.
    pub fn delete_pack(&self, pack: PackId, blobs: &[BlobId]) -> Result<()> {
        self.with(|c| {
            let tx = Self::write_tx(c)?;
            let pid: Option<i64> =
                tx.query_row("SELECT pid FROM packs WHERE id = ?1", [pack.as_bytes()], |r| r.get(0)).optional()?;
            if let Some(pid) = pid {
                for level in levels::LEVELS {
                    if blobs.is_empty() {
                        // The pack's trailer is unknown (its file is gone): a full scan, rare.
                        tx.execute(&format!("DELETE FROM {level} WHERE pid = ?1"), [pid])?;
                    } else {
                        let mut st = tx.prepare_cached(&format!("DELETE FROM {level} WHERE id = ?1 AND pid = ?2"))?;
                        for b in blobs {
                            st.execute(params![b.as_bytes(), pid])?;
                        }
                    }
                }
                tx.execute("DELETE FROM packs WHERE pid = ?1", [pid])?;
            }
            tx.commit()
        })
    }
}
