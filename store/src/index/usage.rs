//! What gc asks of the blob map against its mark set: how much of each pack is reachable, and
//! which condemned packs go. Both walk every level and the mark set side by side in key order
//! (a merge), so their cost is one sequential read of each, whatever the number of packs: a
//! B-tree lookup per row costs several times a step to the next row, and per-pack work would
//! read the same leaves once per pack (before: 42 condemned packs of a 1-million-chunk index
//! took 10 s of an 18 s gc; benches/README.md, "gc at scale").

use std::collections::{HashMap, HashSet};

use rusqlite::{Rows, Transaction};

use super::{levels, Index, MarkSet};
use crate::error::Result;
use crate::id::PackId;

/// How much of a pack is still needed.
#[derive(Clone, Copy, Debug)]
pub struct PackUsage {
    /// The pack.
    pub id: PackId,
    /// Its size.
    pub size: u64,
    /// Of those, the reachable ones.
    pub live_blobs: u64,
    /// Stored bytes of the reachable ones (a frame's bytes shared out by plaintext length).
    pub live_bytes: u64,
    /// Indexed blobs in it (for the size of its trailer).
    pub blobs: u64,
}

/// What a sweep did with the condemned packs it was given.
#[derive(Clone, Debug, Default)]
pub struct Swept {
    /// Packs whose rows are gone: their files are to be deleted.
    pub deleted: Vec<PackId>,
    /// Packs put back: a reachable blob's newest indexed copy is in them.
    pub rescued: Vec<PackId>,
}

/// One row of a level: its pack and its share of its frame's stored bytes.
#[derive(Clone, Copy)]
struct Row {
    /// Which of `levels::LEVELS` holds it.
    level: usize,
    pid: i64,
    stored: i64,
}

/// A cursor over one sorted stream of IDs (a level, or the mark set) and the row it stands on.
struct Head<'s> {
    rows: Rows<'s>,
    id: Vec<u8>,
    row: Row,
    done: bool,
}

impl<'s> Head<'s> {
    fn new(rows: Rows<'s>, level: usize) -> rusqlite::Result<Self> {
        let mut head = Self { rows, id: Vec::with_capacity(32), row: Row { level, pid: 0, stored: 0 }, done: false };
        head.advance()?;
        Ok(head)
    }

    fn advance(&mut self) -> rusqlite::Result<()> {
        match self.rows.next()? {
            Some(r) => {
                self.id.clear();
                self.id.extend_from_slice(r.get_ref(0)?.as_blob()?);
                if r.as_ref().column_count() > 1 {
                    self.row.pid = r.get(1)?;
                    self.row.stored = r.get(2)?;
                }
            }
            None => self.done = true,
        }
        Ok(())
    }
}

/// Calls `visit` for every blob in the levels, in key order, with its rows newest level first
/// and whether the mark set holds it. Memory: one row per level.
fn merge_walk(tx: &Transaction<'_>, mut visit: impl FnMut(&[Row], bool)) -> rusqlite::Result<()> {
    let mut statements = Vec::with_capacity(levels::LEVELS.len());
    for level in levels::LEVELS {
        statements.push(
            tx.prepare(&format!("SELECT id, pid, stored_len * raw_len / max(frame_len, 1) FROM {level} ORDER BY id"))?,
        );
    }
    let mut mark_statement = tx.prepare("SELECT id FROM mark.reachable ORDER BY id")?;
    let mut heads = Vec::with_capacity(statements.len());
    for (level, st) in statements.iter_mut().enumerate() {
        heads.push(Head::new(st.query([])?, level)?);
    }
    let mut mark = Head::new(mark_statement.query([])?, 0)?;
    let mut rows: Vec<Row> = Vec::with_capacity(heads.len());
    let mut least: Vec<u8> = Vec::with_capacity(32);
    while let Some(min) = heads.iter().filter(|h| !h.done).map(|h| &h.id).min() {
        least.clone_from(min);
        while !mark.done && mark.id < least {
            mark.advance()?;
        }
        let marked = !mark.done && mark.id == least;
        rows.clear();
        for h in heads.iter_mut().filter(|h| !h.done && h.id == least) {
            rows.push(h.row);
            h.advance()?;
        }
        visit(&rows, marked);
    }
    Ok(())
}

impl Index {
    /// Runs `f` in one transaction (a write one when `write`) with the mark set attached as
    /// `mark`.
    fn with_mark<T>(
        &self,
        mark: &MarkSet,
        write: bool,
        mut f: impl FnMut(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mark_path = mark.path()?.to_string_lossy().into_owned();
        self.with(|c| {
            c.execute("ATTACH DATABASE ?1 AS mark", [&mark_path])?;
            let tx = if write { Self::write_tx(c) } else { c.transaction() };
            let result = tx.and_then(|tx| {
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            });
            c.execute("DETACH DATABASE mark", [])?;
            result
        })
    }

    /// Per indexed pack not yet condemned: its size, and how many of its indexed blobs (and
    /// roughly how many of its stored bytes) the mark set holds. Every row counts against its
    /// pack, also one a newer copy shadows. Memory: one sum per pack.
    pub fn pack_usage(&self, mark: &MarkSet) -> Result<Vec<PackUsage>> {
        let mut sums: HashMap<i64, [i64; 3]> = HashMap::new();
        let packs = self.with_mark(mark, false, |tx| {
            sums.clear();
            merge_walk(tx, |rows, marked| {
                for r in rows {
                    let s = sums.entry(r.pid).or_default();
                    s[0] += 1;
                    if marked {
                        s[1] += 1;
                        s[2] += r.stored;
                    }
                }
            })?;
            let mut st = tx.prepare("SELECT pid, id, size FROM packs WHERE condemned_at IS NULL ORDER BY pid")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        packs
            .into_iter()
            .map(|(pid, id, size)| {
                let [blobs, live, live_bytes] = sums.get(&pid).copied().unwrap_or_default();
                Ok(PackUsage {
                    id: PackId::from_slice(&id).ok_or_else(|| self.bad_row("pack id"))?,
                    size: u64::try_from(size).unwrap_or(0),
                    live_blobs: u64::try_from(live).unwrap_or(0),
                    live_bytes: u64::try_from(live_bytes).unwrap_or(0),
                    blobs: u64::try_from(blobs).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Finishes condemned packs in one transaction, the point of commit of a sweep: a pack
    /// holding the newest indexed row of a blob in `mark` is rescued (an ordinary pack again)
    /// when `rescuable` says it can be (its file is there and readable: asked only of such
    /// packs, which are rare); every other one loses its row and every row that names it, in
    /// every level (also one a newer copy shadows). Returns the packs whose rows went, for the
    /// caller to delete their files, and the rescued.
    pub fn sweep_condemned(
        &self,
        packs: &[PackId],
        mark: &MarkSet,
        rescuable: &mut dyn FnMut(PackId) -> bool,
    ) -> Result<Swept> {
        let rows = self.with_mark(mark, true, |tx| {
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS gc_doomed(pid INTEGER PRIMARY KEY);
                 DELETE FROM temp.gc_doomed;",
            )?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO temp.gc_doomed(pid) SELECT pid FROM packs WHERE id = ?1 AND condemned_at IS NOT NULL",
                )?;
                for pack in packs {
                    st.execute([pack.as_bytes()])?;
                }
            }
            let doomed: HashSet<i64> =
                tx.prepare("SELECT pid FROM temp.gc_doomed")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            // A blob's newest row is its place: the pack holding it goes only with the blob.
            let mut needed: HashSet<i64> = HashSet::new();
            // Rows per level, and of those the doomed packs' (for how to delete them, below).
            let mut counts = [[0u64; 2]; levels::LEVELS.len()];
            if !doomed.is_empty() {
                merge_walk(tx, |rows, marked| {
                    if let (true, Some(newest)) = (marked, rows.first()) {
                        if doomed.contains(&newest.pid) {
                            needed.insert(newest.pid);
                        }
                    }
                    for r in rows {
                        counts[r.level][0] += 1;
                        counts[r.level][1] += u64::from(doomed.contains(&r.pid));
                    }
                })?;
            }
            let mut rescued = Vec::new();
            for pid in &needed {
                let id: Vec<u8> = tx.query_row("SELECT id FROM packs WHERE pid = ?1", [pid], |r| r.get(0))?;
                match PackId::from_slice(&id) {
                    Some(pack) if rescuable(pack) => {}
                    _ => continue,
                }
                tx.execute("DELETE FROM temp.gc_doomed WHERE pid = ?1", [pid])?;
                tx.execute("UPDATE packs SET condemned_at = NULL WHERE pid = ?1", [pid])?;
                rescued.push(id);
            }
            for (level, [rows, doomed_rows]) in levels::LEVELS.iter().zip(counts) {
                if doomed_rows == 0 {
                    continue;
                }
                if doomed_rows * 2 > rows {
                    // Most of the level goes: the rows that stay are copied out, the level
                    // emptied at once and the rows put back in key order (appends), instead of
                    // a descent and a rebalance per row deleted.
                    tx.execute_batch(&format!(
                        "DROP TABLE IF EXISTS temp.gc_keep;
                         CREATE TEMP TABLE gc_keep AS SELECT {c} FROM {level} \
                           WHERE pid NOT IN (SELECT pid FROM temp.gc_doomed) ORDER BY id;
                         DELETE FROM {level};
                         INSERT INTO {level}({c}) SELECT {c} FROM temp.gc_keep ORDER BY rowid;
                         DROP TABLE temp.gc_keep;",
                        c = levels::COLUMNS
                    ))?;
                } else {
                    tx.execute(&format!("DELETE FROM {level} WHERE pid IN (SELECT pid FROM temp.gc_doomed)"), [])?;
                }
            }
            let deleted: Vec<Vec<u8>> = tx
                .prepare("DELETE FROM packs WHERE pid IN (SELECT pid FROM temp.gc_doomed) RETURNING id")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            tx.execute("DROP TABLE temp.gc_doomed", [])?;
            Ok((deleted, rescued))
        })?;
        let ids = |v: Vec<Vec<u8>>| {
            v.into_iter()
                .map(|p| PackId::from_slice(&p).ok_or_else(|| self.bad_row("pack id")))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Swept { deleted: ids(rows.0)?, rescued: ids(rows.1)? })
    }
}
