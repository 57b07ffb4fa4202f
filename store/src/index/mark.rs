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

/// A set of blob IDs on disk; the file is removed when the set is dropped.
pub struct MarkSet {
    path: PathBuf,
    conn: Mutex<Connection>,
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
        Ok(Self { path: path.to_path_buf(), conn: Mutex::new(conn) })
    }

    /// The scratch file (attached by the index to join against).
    pub fn path(&self) -> &Path {
        &self.path
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

    /// Marks blobs reachable. In key order: consecutive inserts then share the B-tree's pages
    /// instead of each fetching a random leaf.
    pub fn add(&self, ids: &[BlobId]) -> Result<()> {
        let mut sorted: Vec<&BlobId> = ids.iter().collect();
        sorted.sort_unstable_by_key(|id| id.as_bytes());
        sorted.dedup();
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT OR IGNORE INTO reachable(id) VALUES (?1)")?;
                for id in &sorted {
                    st.execute([id.as_bytes()])?;
                }
            }
            tx.commit()
        })
    }

    /// Whether each blob is marked: one read transaction (a statement outside one takes and
    /// drops the file lock each time), asked in key order.
    pub fn contains(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
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
        self.with(|c| c.query_row("SELECT count(*) FROM reachable", [], |r| r.get::<_, i64>(0)))
            .map(|n| u64::try_from(n).unwrap_or(0))
    }
}
