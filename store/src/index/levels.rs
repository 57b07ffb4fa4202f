//! The blob map in levels, newest first: `blobs_l0`, `blobs_l1`, `blobs_l2`, then `blobs`.
//!
//! Blob IDs are uniformly random, so in one large B-tree every new row lands on a leaf of its
//! own: once the table outgrows the page cache, each row costs a page read, a page written to
//! the WAL and the same page copied back at the checkpoint. Measured on a 10.3-million-chunk
//! index, a gigabyte of new data (860,000 chunks) wrote 26 GB to the index that way.
//!
//! So new rows go into the small first level, whose pages stay in the cache. A level that
//! reaches its capacity is moved into the next one in key order, a slice of the key space per
//! transaction: each leaf of the next level is then read and rewritten once for the several rows
//! it receives, and the largest level only takes rows in batches of millions. Capacities grow
//! eightfold from level to level.
//!
//! A blob has at most one row per level. When two levels hold one (the blob was stored again
//! while an older copy was indexed: gc condemned the old pack, a repack moved it, or two
//! processes raced), the newer level's row is the blob's place and a merge replaces the older
//! row with it. Lookups therefore ask the levels newest first and stop at the first row.

use rusqlite::{params, Transaction};

/// The level tables, newest first. The last one holds everything older and has no capacity.
pub(super) const LEVELS: [&str; 4] = ["blobs_l0", "blobs_l1", "blobs_l2", "blobs"];

/// The columns of a level table, in order.
pub(super) const COLUMNS: &str = "id, kind, pid, offset, stored_len, frame_len, frame_offset, raw_len, compression";

/// Rows a level may hold before it is moved into the next one. The first level stays inside one
/// connection's page cache (4 MiB); at 4 KiB pages a leaf of the next level holds about 55 rows,
/// so an eightfold ratio brings each of its leaves about seven new rows per merge.
pub(super) const DEFAULT_CAPS: [u64; 3] = [1 << 16, 1 << 19, 1 << 22];

/// Rows moved per transaction by a merge: other writers wait at most this long (about a second).
pub(super) const SLICE_ROWS: u64 = 1 << 18;

/// The level capacities: `DEFAULT_CAPS`, or for tests `CAIRN_INDEX_LEVEL_ROWS=N` (the first
/// level holds N rows, each next one eight times more), so that a small repository exercises
/// every merge.
pub(super) fn caps() -> [u64; 3] {
    match std::env::var("CAIRN_INDEX_LEVEL_ROWS").ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(n) if n > 0 => [n, n.saturating_mul(8), n.saturating_mul(64)],
        _ => DEFAULT_CAPS,
    }
}

/// The key range of slice `s` of `n` equal slices of the ID space: from `lo` (inclusive) to
/// `hi` (exclusive; none for the last slice). Bounds are two-byte prefixes, which sort before
/// every 32-byte ID that starts with them.
pub(super) fn slice_bounds(s: u64, n: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    let bound = |i: u64| u16::try_from(i * 65_536 / n).unwrap_or(u16::MAX).to_be_bytes().to_vec();
    (bound(s), (s + 1 < n).then(|| bound(s + 1)))
}

/// Rows in `level` (one of `LEVELS`).
pub(super) fn rows(c: &rusqlite::Connection, level: &str) -> rusqlite::Result<u64> {
    let n: i64 = c.query_row(&format!("SELECT count(*) FROM {level}"), [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Moves the rows of level `k` in `[lo, hi)` into level `k + 1`, replacing older rows of the
/// same blobs. Part of the caller's transaction: a row is always in exactly one of the two.
pub(super) fn move_slice(tx: &Transaction<'_>, k: usize, lo: &[u8], hi: Option<&[u8]>) -> rusqlite::Result<usize> {
    let (upper, lower) = (LEVELS[k], LEVELS[k + 1]);
    let range = if hi.is_some() { "id >= ?1 AND id < ?2" } else { "id >= ?1" };
    let copy =
        format!("INSERT OR REPLACE INTO {lower}({COLUMNS}) SELECT {COLUMNS} FROM {upper} WHERE {range} ORDER BY id");
    let delete = format!("DELETE FROM {upper} WHERE {range}");
    let moved = match hi {
        Some(hi) => {
            tx.execute(&copy, params![lo, hi])?;
            tx.execute(&delete, params![lo, hi])?
        }
        None => {
            tx.execute(&copy, params![lo])?;
            tx.execute(&delete, params![lo])?
        }
    };
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_id_space_in_order_without_overlap() {
        for n in [1, 2, 3, 16, 255, 65_536] {
            let mut prev_hi: Option<Vec<u8>> = None;
            for s in 0..n {
                let (lo, hi) = slice_bounds(s, n);
                match &prev_hi {
                    None => assert_eq!(lo, vec![0, 0], "n={n}: the first slice starts at the bottom"),
                    Some(p) => assert_eq!(&lo, p, "n={n} s={s}: slices meet"),
                }
                if let Some(h) = &hi {
                    assert!(h > &lo, "n={n} s={s}: a slice is not empty");
                }
                prev_hi = hi;
            }
            assert!(prev_hi.is_none(), "n={n}: the last slice is open above");
        }
    }
}
