//! The blob map: where each blob lives. Lookups ask the levels newest first (levels.rs), and
//! the filter (filter.rs) before them; adding a pack writes its rows into the first level,
//! sets their filter bits, and merges the levels that have outgrown their capacity.

use std::sync::Arc;

use rusqlite::{params, OptionalExtension};

use super::{filter, levels, Index, MarkSet};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::pack::{BlobKind, Compression, PackEntry};
use crate::workers::lock;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Its entry in that pack.
    pub entry: PackEntry,
}

/// Counts and sizes of a set of blobs.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlobSums {
    /// Blobs.
    pub blobs: u64,
    /// Of which chunks.
    pub chunks: u64,
    /// Plaintext bytes.
    pub raw: u64,
    /// Of those, the chunks' plaintext bytes (file content, without trees).
    pub chunks_raw: u64,
    /// Stored bytes (a frame's bytes shared out by plaintext length).
    pub stored: u64,
}

pub(super) fn insert_pack(
    tx: &rusqlite::Transaction<'_>,
    id: PackId,
    size: u64,
    entries: &[PackEntry],
    now: i64,
) -> rusqlite::Result<()> {
    let kind = entries.first().map_or(0, |e| e.kind.code());
    tx.execute(
        "INSERT OR IGNORE INTO packs(id, kind, size, blobs, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id.as_bytes(), kind, size as i64, entries.len() as i64, now],
    )?;
    let pid: i64 = tx.query_row("SELECT pid FROM packs WHERE id = ?1", [id.as_bytes()], |r| r.get(0))?;
    // Into the first level, newest wins: a blob stored again while an older copy is indexed
    // (its pack condemned by gc, moved by a repack, or written by a racing process) is found
    // here first from now on, and a merge replaces the older row (levels.rs). In key order, so
    // that consecutive rows share the level's interior pages.
    let mut st = tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {}({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        levels::LEVELS[0],
        levels::COLUMNS
    ))?;
    for i in key_order(&entries.iter().map(|e| e.id).collect::<Vec<_>>()) {
        let e = &entries[i];
        st.execute(params![
            e.id.as_bytes(),
            e.kind.code(),
            pid,
            e.offset as i64,
            i64::from(e.stored_len),
            i64::from(e.frame_len),
            i64::from(e.frame_offset),
            i64::from(e.raw_len),
            e.compression.code()
        ])?;
    }
    Ok(())
}

/// The positions of `ids` in key order. Looking up a batch in key order walks the B-tree's
/// leaves left to right, so consecutive lookups find their pages in the cache instead of
/// fetching a random leaf each time.
fn key_order(ids: &[BlobId]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by_key(|&i| ids[i].as_bytes());
    order
}

/// For each of `ids` at the positions in `open` (in key order), `columns` of its newest row:
/// the levels are asked newest first (levels.rs), each for the blobs no newer level holds, with
/// the row's pack joined as `p` (its columns NULL when the pack has no row). Positions not in
/// `open`, and blobs in no level, get `None`.
fn newest_rows<T>(
    tx: &rusqlite::Transaction<'_>,
    ids: &[BlobId],
    mut open: Vec<usize>,
    columns: &str,
    read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<Option<T>>> {
    let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(ids.len()).collect();
    for level in levels::LEVELS {
        if open.is_empty() {
            break;
        }
        let mut st = tx.prepare_cached(&format!(
            "SELECT {columns} FROM {level} b LEFT JOIN packs p ON p.pid = b.pid WHERE b.id = ?1"
        ))?;
        let mut still = Vec::with_capacity(open.len());
        for i in open {
            match st.query_row([ids[i].as_bytes()], &read).optional()? {
                Some(row) => out[i] = Some(row),
                None => still.push(i),
            }
        }
        open = still;
    }
    Ok(out)
}

/// A new filter token: any value another filter file is unlikely to carry.
fn new_token() -> i64 {
    let seed = format!("{:?} {} {:?}", jiff::Timestamp::now(), std::process::id(), std::thread::current().id());
    let bytes = blake3::hash(seed.as_bytes());
    i64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or([0; 8])) & i64::MAX
}

impl Index {
    /// The filter that matches the index as `tx` sees it, opening it again when another
    /// process has rebuilt it; none when there is no usable one.
    fn current_filter(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Option<Arc<filter::Filter>>> {
        // Cached: asked once per lookup batch, and preparing it costs more than running it.
        let token: Option<i64> = tx
            .prepare_cached("SELECT value FROM meta WHERE key = 'filter_token'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        let mut held = lock(&self.filter);
        if held.as_ref().map(|f| f.token()) != token {
            *held = token.and_then(|t| filter::Filter::open(&filter::path_of(&self.path), t)).map(Arc::new);
        }
        Ok(held.clone())
    }

    /// Sets the filter bits of a pack's blobs, inside the transaction that indexes them; builds
    /// the filter again when there is none or it is full. A filter that cannot be written is
    /// disowned (its token removed) rather than trusted: lookups then ask the levels.
    pub(super) fn filter_add(&self, tx: &rusqlite::Transaction<'_>, entries: &[PackEntry]) -> rusqlite::Result<()> {
        let ids: Vec<BlobId> = entries.iter().map(|e| e.id).collect();
        if let Some(f) = self.current_filter(tx)? {
            if f.has_room(ids.len()) {
                if let Err(e) = f.insert(&ids) {
                    log::warn!("index filter: {e}; lookups go to the index until it is rebuilt");
                    tx.execute("DELETE FROM meta WHERE key = 'filter_token'", [])?;
                }
                return Ok(());
            }
        }
        let mut rows: u64 = 0;
        for level in levels::LEVELS {
            rows += levels::rows(tx, level)?;
        }
        let token = new_token();
        let path = filter::path_of(&self.path);
        let built = filter::Filter::build(&path, token, rows, self.file_mode, &mut |add| {
            for level in levels::LEVELS {
                let mut st =
                    tx.prepare(&format!("SELECT id FROM {level} ORDER BY id")).map_err(std::io::Error::other)?;
                let mut found = st.query([]).map_err(std::io::Error::other)?;
                while let Some(row) = found.next().map_err(std::io::Error::other)? {
                    if let Ok(id) =
                        <[u8; 32]>::try_from(row.get_ref(0).map_err(std::io::Error::other)?.as_bytes().unwrap_or(&[]))
                    {
                        add(&id)?;
                    }
                }
            }
            Ok(())
        });
        match built {
            Ok(f) => {
                tx.execute(
                    "INSERT INTO meta(key, value) VALUES ('filter_token', ?1) \
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [token],
                )?;
                *lock(&self.filter) = Some(Arc::new(f));
            }
            Err(e) => {
                log::warn!("index filter {}: {e}; lookups go to the index", path.display());
                tx.execute("DELETE FROM meta WHERE key = 'filter_token'", [])?;
            }
        }
        Ok(())
    }

    /// Moves every level that holds its capacity or more into the next one (levels.rs). A
    /// level only grows when the one before it is merged, so this stops at the first level
    /// under its capacity.
    pub(super) fn settle(&self) -> Result<()> {
        for (k, cap) in self.caps.iter().enumerate() {
            let rows = self.with(|c| levels::rows(c, levels::LEVELS[k]))?;
            if rows < *cap {
                break;
            }
            let slices = (rows / levels::SLICE_ROWS).clamp(1, 1 << 16);
            for s in 0..slices {
                let (lo, hi) = levels::slice_bounds(s, slices);
                self.with(|c| {
                    let tx = Self::write_tx(c)?;
                    levels::move_slice(&tx, k, &lo, hi.as_deref())?;
                    tx.commit()
                })?;
                crate::failpoint::hit("index.merge_slice");
            }
        }
        Ok(())
    }

    /// Whether each blob is indexed in a pack that is not condemned, in one read transaction
    /// (one lock, not one per blob).
    pub fn has_blobs(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(ids.len());
            {
                // Deduplication must not lean on data gc has condemned: such a blob counts as
                // absent, and the caller stores a fresh copy. The newest level's row decides.
                // A blob the filter has never seen is in no level.
                let mut open = key_order(ids);
                if let Some(f) = self.current_filter(&tx)? {
                    open.retain(|&i| f.may_contain(ids[i]));
                }
                let found = newest_rows(&tx, ids, open, "p.pid IS NOT NULL AND p.condemned_at IS NULL", |r| r.get(0))?;
                out.extend(found.into_iter().map(|usable: Option<bool>| usable.unwrap_or(false)));
            }
            tx.commit()?;
            Ok(out)
        })
    }

    /// Where a blob is stored, if it is indexed.
    pub fn locate(&self, id: BlobId) -> Result<Option<BlobLocation>> {
        Ok(self.locate_many(&[id])?.pop().flatten())
    }

    /// Where each blob is stored, in one read transaction.
    pub fn locate_many(&self, ids: &[BlobId]) -> Result<Vec<Option<BlobLocation>>> {
        type Row = (Option<Vec<u8>>, [i64; 7]);
        let rows: Vec<Option<Row>> = self.with(|c| {
            let tx = c.transaction()?;
            let out = newest_rows(
                &tx,
                ids,
                key_order(ids),
                "p.id, b.kind, b.offset, b.stored_len, b.frame_len, b.frame_offset, b.raw_len, b.compression",
                |r| {
                    let mut n = [0i64; 7];
                    for (i, v) in n.iter_mut().enumerate() {
                        *v = r.get(i + 1)?;
                    }
                    Ok((r.get(0)?, n))
                },
            )?;
            tx.commit()?;
            Ok(out)
        })?;
        // A row whose pack has no row of its own places nothing.
        ids.iter()
            .zip(rows)
            .map(|(id, row)| match row {
                Some((Some(pack), n)) => self.location(*id, (pack, n)).map(Some),
                _ => Ok(None),
            })
            .collect()
    }

    pub(super) fn location(&self, id: BlobId, (pack, n): (Vec<u8>, [i64; 7])) -> Result<BlobLocation> {
        let [kind, offset, stored_len, frame_len, frame_offset, raw_len, compression] = n;
        let bad = || Error::corrupt(format!("index {}", self.path.display()), format!("row of blob {id} is invalid"));
        let u32_of = |v: i64| u32::try_from(v).map_err(|_| bad());
        Ok(BlobLocation {
            pack: PackId::from_slice(&pack).ok_or_else(bad)?,
            entry: PackEntry {
                kind: BlobKind::from_code(kind).ok_or_else(bad)?,
                id,
                offset: u64::try_from(offset).map_err(|_| bad())?,
                stored_len: u32_of(stored_len)?,
                frame_len: u32_of(frame_len)?,
                frame_offset: u32_of(frame_offset)?,
                raw_len: u32_of(raw_len)?,
                compression: Compression::from_code(compression).ok_or_else(bad)?,
            },
        })
    }

    /// Rows in every level of the blob map (a blob stored twice counts twice).
    pub fn blob_count(&self) -> Result<u64> {
        self.with(|c| {
            let mut n = 0;
            for level in levels::LEVELS {
                n += levels::rows(c, level)?;
            }
            Ok(n)
        })
    }

    /// Blobs whose indexed place does not fit inside their pack (the index disagrees with it).
    pub fn blobs_out_of_bounds(&self) -> Result<Vec<(BlobId, PackId)>> {
        self.blob_pairs(
            "SELECT b.id, p.id FROM blobs_all b JOIN packs p ON p.pid = b.pid \
             WHERE b.offset < 28 OR b.offset + b.stored_len > p.size - 44 \
             OR b.frame_offset + b.raw_len > b.frame_len",
            &[],
        )
    }

    fn blob_pairs(&self, sql: &str, args: &[&[u8]]) -> Result<Vec<(BlobId, PackId)>> {
        let rows = self.with(|c| {
            let mut st = c.prepare(sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(b, p)| {
                Ok((
                    BlobId::from_slice(&b).ok_or_else(|| self.bad_row("blob id"))?,
                    PackId::from_slice(&p).ok_or_else(|| self.bad_row("pack id"))?,
                ))
            })
            .collect()
    }

    /// Counts and sizes of the indexed blobs in `mark`, leaving out those in `except`.
    pub fn stored_size_of(&self, mark: &MarkSet, except: Option<&MarkSet>) -> Result<BlobSums> {
        let m = mark.path()?.to_string_lossy().into_owned();
        let x = match except {
            Some(x) => Some(x.path()?.to_string_lossy().into_owned()),
            None => None,
        };
        let row = self.with(|c| {
            c.execute("ATTACH DATABASE ?1 AS m", [&m])?;
            if let Some(x) = &x {
                c.execute("ATTACH DATABASE ?1 AS x", [x])?;
            }
            let filter =
                if x.is_some() { "WHERE NOT EXISTS (SELECT 1 FROM x.reachable e WHERE e.id = r.id)" } else { "" };
            let result = c.query_row(
                &format!(
                    "SELECT count(*), coalesce(sum(b.kind = 0), 0), coalesce(sum(b.raw_len), 0), \
                     coalesce(sum(b.stored_len * b.raw_len / max(b.frame_len, 1)), 0), \
                     coalesce(sum(CASE WHEN b.kind = 0 THEN b.raw_len ELSE 0 END), 0) \
                     FROM m.reachable r JOIN blobs_all b ON b.id = r.id {filter}"
                ),
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            );
            c.execute("DETACH DATABASE m", [])?;
            if x.is_some() {
                c.execute("DETACH DATABASE x", [])?;
            }
            result
        })?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(BlobSums { blobs: u(row.0), chunks: u(row.1), raw: u(row.2), stored: u(row.3), chunks_raw: u(row.4) })
    }
}
