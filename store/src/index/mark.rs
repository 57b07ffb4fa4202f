//! The mark set of a garbage collection: every reachable blob and visited tree, in a scratch
//! SQLite file beside the index, so that gc of a repository with tens of millions of chunks
//! runs in the same small memory as one with thousands (invariant 7).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

use super::schema::classify;
use crate::error::Result;
use crate::id::{BlobId, TreeId};
use crate::workers::lock;

/// Blobs marked but not yet written: a bounded buffer (8 MiB of IDs).
const PENDING_MAX: usize = 1 << 18;

/// A set of blob IDs on disk; the file is removed when the set is dropped.
pub struct MarkSet {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Marked blobs not yet in the table, written sorted once there are `PENDING_MAX` of them
    /// or the set is read.
    pending: Mutex<Vec<BlobId>>,
}

impl Drop for MarkSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl MarkSet {
    /// A new, empty set in `path` (an old file there is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(path);
        let err = |e| classify(path, e);
        let conn = Connection::open(path).map_err(err)?;
        // Scratch data: no journal, no fsync; a crash just means the next gc marks again.
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -16000;
             CREATE TABLE reachable(id BLOB PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE trees(id BLOB PRIMARY KEY) WITHOUT ROWID;",
        )
        .map_err(err)?;
        Ok(Self { path: path.to_path_buf(), conn: Mutex::new(conn), pending: Mutex::new(Vec::new()) })
    }

    /// The scratch file, with every marked blob written (attached by the index to join against).
    pub fn path(&self) -> Result<&Path> {
        self.flush()?;
        Ok(&self.path)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut c = lock(&self.conn);
        f(&mut c).map_err(|e| classify(&self.path, e))
    }

    /// Records a tree as visited; false when it was already.
    pub fn visit_tree(&self, id: TreeId) -> Result<bool> {
        self.with(|c| c.prepare_cached("INSERT OR IGNORE INTO trees(id) VALUES (?1)")?.execute([id.as_bytes()]))
            .map(|n| n == 1)
    }

    /// Marks blobs reachable. They are gathered and written in key order, many at a time: a
    /// tree's few thousand IDs land on as many random leaves of a large set, a quarter of a
    /// million sorted ones on consecutive ones, so each leaf is read and written once per batch
    /// rather than once per blob.
    pub fn add(&self, ids: impl IntoIterator<Item = BlobId>) -> Result<()> {
        for id in ids {
            let full = {
                let mut pending = lock(&self.pending);
                pending.push(id);
                pending.len() >= PENDING_MAX
            };
            if full {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes the pending blobs into the table.
    fn flush(&self) -> Result<()> {
        let mut sorted = std::mem::take(&mut *lock(&self.pending));
        if sorted.is_empty() {
            return Ok(());
        }
        sorted.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        sorted.dedup();
        let written = self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT OR IGNORE INTO reachable(id) VALUES (?1)")?;
                for id in &sorted {
                    st.execute([id.as_bytes()])?;
                }
            }
            tx.commit()
        });
        if written.is_err() {
            // Still marked: a set that lost blobs on a failed write would let gc delete them.
            lock(&self.pending).extend(sorted);
        }
        written
    }

    /// Whether each blob is marked: one read transaction (a statement outside one takes and
    /// drops the file lock each time), asked in key order.
    pub fn contains(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        self.flush()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&i| ids[i].as_bytes());
        self.with(|c| {
            let tx = c.transaction()?;
            let mut out = vec![false; ids.len()];
            {
                let mut st = tx.prepare_cached("SELECT 1 FROM reachable WHERE id = ?1")?;
                for i in order {
                    out[i] = st.query_row([ids[i].as_bytes()], |_| Ok(())).optional()?.is_some();
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    /// How many blobs are marked.
    pub fn len(&self) -> Result<u64> {
        self.flush()?;
        self.with(|c| c.query_row("SELECT count(*) FROM reachable", [], |r| r.get::<_, i64>(0)))
            .map(|n| u64::try_from(n).unwrap_or(0))
    }
}
