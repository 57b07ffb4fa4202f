//! A Bloom filter of every indexed blob ID, in a file beside the index (`index.sqlite-filter`).
//!
//! A new chunk is in no level, so without the filter its lookup probes all four (levels.rs), and
//! the large ones are far bigger than the page cache: a page read each. With the filter, a chunk
//! the index has never seen costs one 64-byte read; about one lookup in a hundred is a false
//! positive and goes on to the levels. The filter is read and written with positioned I/O, never
//! mapped or held in memory, so it costs the process no memory however large it grows (about
//! 1.25 bytes per indexed blob, twice that right after it is resized).
//!
//! It is a cache of the index: `meta.filter_token` names the filter file that matches the
//! index, and a file with another token, a bad header or the wrong length is not used and is
//! rebuilt from the levels by the next writer. Bits are only ever set, and always inside the
//! write transaction that adds the rows, before its commit: a killed process leaves bits for rows
//! that were never committed (a false positive, harmless). A filter that misses an indexed blob
//! (its last writes lost to a power cut, say) costs only deduplication: the blob is stored again
//! and the newer copy wins (levels.rs).
//!
//! Layout: a 64-byte header — `CAIRNFLT`, version u32, probes u32, token i64, blocks u64,
//! capacity u64, rows u64, zeros — then `blocks` blocks of 64 bytes (512 bits). A blob's block
//! is its first eight bytes scaled to the block count, so blocks follow key order and a level
//! scanned in key order fills the file front to back; its bits are `PROBES` nine-bit numbers
//! from its next bytes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::id::BlobId;

const MAGIC: &[u8; 8] = b"CAIRNFLT";
const VERSION: u32 = 1;
const HEADER: u64 = 64;
const BLOCK: u64 = 64;
/// Bits set per blob. With 10 bits per blob at capacity, the false-positive rate of a
/// 512-bit block filter is about 1%.
const PROBES: u32 = 7;
const BITS_PER_ROW: u64 = 10;
/// The smallest capacity, in blobs (a 1.25 MiB file).
const MIN_CAPACITY: u64 = 1 << 20;
/// Blocks read, merged and written back at once while building.
const WINDOW_BLOCKS: u64 = 1 << 14;

/// The filter file of the index at `db`.
pub(super) fn path_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-filter", db.display()))
}

/// Where a scan hands the IDs it reads, one at a time.
pub(super) type IdSink<'a> = dyn FnMut(&[u8; 32]) -> io::Result<()> + 'a;

/// An open filter file.
pub(super) struct Filter {
    file: File,
    token: i64,
    blocks: u64,
    capacity: u64,
    rows: AtomicU64,
}

fn block_of(id: &[u8; 32], blocks: u64) -> u64 {
    let prefix = u64::from_be_bytes(id[..8].try_into().unwrap_or([0; 8]));
    ((u128::from(prefix) * u128::from(blocks)) >> 64) as u64
}

/// The bit positions (0..512) of `id` within its block.
fn bits_of(id: &[u8; 32]) -> impl Iterator<Item = usize> + '_ {
    let tail = u128::from_le_bytes(id[8..24].try_into().unwrap_or([0; 16]));
    (0..PROBES).map(move |i| ((tail >> (9 * i)) & 511) as usize)
}

fn set_bits(block: &mut [u8], id: &[u8; 32]) {
    for b in bits_of(id) {
        block[b / 8] |= 1 << (b % 8);
    }
}

impl Filter {
    /// The filter at `path` if its header says it is the one `token` names and it is whole.
    pub(super) fn open(path: &Path, token: i64) -> Option<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        let mut h = [0u8; HEADER as usize];
        file.read_exact_at(&mut h, 0).ok()?;
        let word = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
        let ok = &h[..8] == MAGIC
            && h[8..12] == VERSION.to_le_bytes()
            && h[12..16] == PROBES.to_le_bytes()
            && word(16) == token as u64;
        let (blocks, capacity, rows) = (word(24), word(32), word(40));
        let len = blocks.checked_mul(BLOCK).and_then(|b| b.checked_add(HEADER))?;
        if !ok || blocks == 0 || file.metadata().ok()?.len() != len {
            return None;
        }
        Some(Self { file, token, blocks, capacity, rows: AtomicU64::new(rows) })
    }

    /// The token this filter answers to.
    pub(super) fn token(&self) -> i64 {
        self.token
    }

    /// False when `id` is certainly not indexed. A read error answers true (ask the index).
    pub(super) fn may_contain(&self, id: BlobId) -> bool {
        let id = id.as_bytes();
        let mut block = [0u8; BLOCK as usize];
        if self.file.read_exact_at(&mut block, HEADER + block_of(id, self.blocks) * BLOCK).is_err() {
            return true;
        }
        bits_of(id).all(|b| block[b / 8] & (1 << (b % 8)) != 0)
    }

    /// Whether `more` blobs still fit the capacity.
    pub(super) fn has_room(&self, more: usize) -> bool {
        self.rows.load(Ordering::Relaxed).saturating_add(more as u64) <= self.capacity
    }

    /// Sets the bits of `ids`. The caller holds the index's write lock, so no other process
    /// writes the file meanwhile.
    pub(super) fn insert(&self, ids: &[BlobId]) -> io::Result<()> {
        let mut order: Vec<(u64, &[u8; 32])> =
            ids.iter().map(|i| (block_of(i.as_bytes(), self.blocks), i.as_bytes())).collect();
        order.sort_unstable_by_key(|(b, _)| *b);
        let mut block = [0u8; BLOCK as usize];
        let mut i = 0;
        while i < order.len() {
            let at = HEADER + order[i].0 * BLOCK;
            self.file.read_exact_at(&mut block, at)?;
            while i < order.len() && HEADER + order[i].0 * BLOCK == at {
                set_bits(&mut block, order[i].1);
                i += 1;
            }
            self.file.write_all_at(&block, at)?;
        }
        let rows = self.rows.fetch_add(ids.len() as u64, Ordering::Relaxed) + ids.len() as u64;
        self.file.write_all_at(&rows.to_le_bytes(), 40)
    }

    /// Builds a filter for `rows` blobs and room for as many again, answering to `token`, from
    /// `scans`: each a source of IDs in ascending order (the levels). Written beside `path` and
    /// renamed over it. Memory: one window of blocks.
    pub(super) fn build(
        path: &Path,
        token: i64,
        rows: u64,
        mode: u32,
        scans: &mut dyn FnMut(&mut IdSink<'_>) -> io::Result<()>,
    ) -> io::Result<Self> {
        let capacity = rows.saturating_mul(2).max(MIN_CAPACITY);
        let blocks = capacity.saturating_mul(BITS_PER_ROW).div_ceil(BLOCK * 8);
        let tmp = PathBuf::from(format!("{}.new", path.display()));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.set_len(HEADER + blocks * BLOCK)?;
        let mut h = [0u8; HEADER as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&PROBES.to_le_bytes());
        h[16..24].copy_from_slice(&token.to_le_bytes());
        h[24..32].copy_from_slice(&blocks.to_le_bytes());
        h[32..40].copy_from_slice(&capacity.to_le_bytes());
        h[40..48].copy_from_slice(&rows.to_le_bytes());
        file.write_all_at(&h, 0)?;
        // Each scan runs front to back through the file: a window of blocks is read, filled and
        // written back when the scan moves past it.
        let mut window = vec![0u8; (WINDOW_BLOCKS * BLOCK) as usize];
        let mut start: Option<u64> = None;
        let flush = |file: &File, window: &[u8], start: u64| -> io::Result<()> {
            let n = WINDOW_BLOCKS.min(blocks - start);
            file.write_all_at(&window[..(n * BLOCK) as usize], HEADER + start * BLOCK)
        };
        let load = |file: &File, window: &mut [u8], start: u64| -> io::Result<()> {
            let n = WINDOW_BLOCKS.min(blocks - start);
            file.read_exact_at(&mut window[..(n * BLOCK) as usize], HEADER + start * BLOCK)
        };
        scans(&mut |id: &[u8; 32]| {
            let b = block_of(id, blocks);
            let first = b - b % WINDOW_BLOCKS;
            if start != Some(first) {
                if let Some(s) = start {
                    flush(&file, &window, s)?;
                }
                load(&file, &mut window, first)?;
                start = Some(first);
            }
            let at = ((b - first) * BLOCK) as usize;
            set_bits(&mut window[at..at + BLOCK as usize], id);
            Ok(())
        })?;
        if let Some(s) = start {
            flush(&file, &window, s)?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(Self { file, token, blocks, capacity, rows: AtomicU64::new(rows) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> BlobId {
        BlobId::from_slice(blake3::hash(&n.to_le_bytes()).as_bytes()).unwrap()
    }

    fn build(path: &Path, token: i64, ids: &[BlobId]) -> Filter {
        let mut sorted: Vec<[u8; 32]> = ids.iter().map(|i| *i.as_bytes()).collect();
        sorted.sort_unstable();
        Filter::build(path, token, ids.len() as u64, 0o600, &mut |f| sorted.iter().try_for_each(&mut *f)).unwrap()
    }

    #[test]
    fn built_and_inserted_blobs_are_found_and_few_others_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let built: Vec<BlobId> = (0..200_000).map(id).collect();
        let filter = build(&path, 7, &built);
        let added: Vec<BlobId> = (200_000..300_000).map(id).collect();
        filter.insert(&added).unwrap();
        let reopened = Filter::open(&path, 7).expect("the filter it names");
        for f in [&filter, &reopened] {
            assert!(built.iter().chain(&added).all(|i| f.may_contain(*i)), "no false negatives");
            let false_positives = (1_000_000..1_100_000).filter(|n| f.may_contain(id(*n))).count();
            assert!(false_positives < 1_000, "{false_positives} false positives in 100,000");
        }
        assert!(reopened.has_room(700_000) && !reopened.has_room(1_000_000), "rows are counted");
    }

    #[test]
    fn a_filter_of_another_token_or_damaged_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        build(&path, 7, &[id(1)]);
        assert!(Filter::open(&path, 8).is_none(), "another token");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 1).unwrap();
        assert!(Filter::open(&path, 7).is_none(), "truncated");
        std::fs::write(&path, b"CAIRNFLT").unwrap();
        assert!(Filter::open(&path, 7).is_none(), "shorter than its header");
        assert!(Filter::open(&dir.path().join("missing"), 7).is_none());
    }
}
