//! The SQLite index: where every blob lives, which packs exist, which snapshots exist.
//!
//! It is a cache: packs (trailers) and snapshot records are self-describing, so `rebuild` can
//! make it again from them. rusqlite is used nowhere else in the crate.

mod blobs;
mod filter;
mod levels;
mod mark;
mod packs;
mod schema;
mod snapshots;
#[cfg(test)]
mod tests;
mod usage;

pub use blobs::BlobLocation;
pub use mark::MarkSet;
pub use packs::PackRow;
pub use usage::PackUsage;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::workers::lock;

/// A path as the path part of an SQLite URI: every byte but the unreserved ones and `/` is
/// percent-encoded, so spaces, `?`, `#` and `%` in a repository path stay part of the path.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Bytes of the index a command that looks up every chunk of a snapshot (restore, read-data
/// scrub) reads through a memory map (`Index::map_for_reads`): all of an index of up to about
/// 400,000 chunks (the benchmark tree's 318,000 take 23 MB), and no more memory than that for a
/// larger one, whose other pages are read as before.
pub const READ_MAP: u64 = 32 << 20;

/// SQLite page size of a new index file, in bytes.
const PAGE_SIZE: i64 = 4096;

/// The index database, shared by the threads of one process through a small connection pool.
pub struct Index {
    path: PathBuf,
    /// Pooled connections, each with the `mmap_size` it was last given.
    pool: Mutex<Vec<(Connection, i64)>>,
    /// Bytes of the file its connections read through a memory map (`map_for_reads`).
    mapped: AtomicI64,
    /// Rows each level but the last may hold (levels.rs).
    caps: [u64; 3],
    /// The blob filter this process has open, if any (filter.rs).
    filter: Mutex<Option<Arc<filter::Filter>>>,
    /// Permission bits of the repository's files, for the filter file.
    file_mode: u32,
    /// How connections are opened: `None` read-write; else the URI of a read-only open.
    read_only: Option<String>,
}

impl Index {
    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let root = path.parent().and_then(Path::parent).unwrap_or(path);
        let file_mode = crate::backend::Modes::of(root).file;
        let index = Self {
            path: path.to_path_buf(),
            pool: Mutex::new(Vec::new()),
            mapped: AtomicI64::new(0),
            caps: levels::caps(),
            filter: Mutex::new(None),
            file_mode,
            read_only: None,
        };
        let conn = index.connect()?;
        // Private like every repository file; SQLite gives its WAL and shm files the same mode.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode));
        }
        schema::migrate(&conn).map_err(|e| index.err(e))?;
        lock(&index.pool).push((conn, 0));
        Ok(index)
    }

    /// Opens the index at `path` without writing anything: for a repository this user may not
    /// write (read-only media, a group-readable repository read by the group) and for reading an
    /// old index as evidence. A WAL database is opened read-only where SQLite can share its
    /// memory index; where it cannot (no `-shm` and no right to create one), and there is no
    /// write-ahead log with content that would be missed, it is opened as immutable.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let uri = |query: &str| format!("file:{}?{query}", uri_path(path));
        let wal = std::fs::metadata(format!("{}-wal", path.display())).map(|m| m.len()).unwrap_or(0);
        let mut last = None;
        for query in ["mode=ro", "immutable=1"] {
            if query == "immutable=1" && wal > 0 {
                break; // the log holds commits an immutable open would not see
            }
            let index = Self {
                path: path.to_path_buf(),
                pool: Mutex::new(Vec::new()),
                mapped: AtomicI64::new(0),
                caps: levels::caps(),
                filter: Mutex::new(None),
                file_mode: 0o600,
                read_only: Some(uri(query)),
            };
            match index.connect().and_then(|c| {
                let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| index.err(e))?;
                Ok((c, version))
            }) {
                Ok((c, version)) if version == schema::INDEX_VERSION => {
                    lock(&index.pool).push((c, 0));
                    return Ok(index);
                }
                Ok((_, version)) => {
                    return Err(Error::UnsupportedVersion {
                        what: format!("index {} (opened read-only, so it cannot be upgraded)", path.display()),
                        found: u32::try_from(version).unwrap_or(u32::MAX),
                        supported: schema::INDEX_VERSION as u32,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::corrupt(format!("index {}", path.display()), "cannot be opened read-only")))
    }

    /// Reads the first `bytes` of the index file through a memory map from now on (0: not at
    /// all, SQLite's default). A restore or a read-data scrub looks up every chunk of a snapshot
    /// at random places of the file: through the map a page read is a memory access, not a
    /// system call copying it into the page cache of each connection (that copying was 16% of
    /// a full restore's CPU). The map is bounded, so memory stays flat with the repository:
    /// beyond `bytes` pages are read as before.
    /// Connections in the pool take it at once (0 unmaps what they mapped); those in use, when
    /// they are next used.
    pub fn map_for_reads(&self, bytes: u64) {
        let want = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.mapped.store(want, Ordering::Relaxed);
        for (conn, mapped) in lock(&self.pool).iter_mut() {
            if *mapped != want && conn.pragma_update(None, "mmap_size", want).is_ok() {
                *mapped = want;
            }
        }
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        schema::classify(&self.path, source)
    }

    fn connect(&self) -> Result<Connection> {
        if let Some(uri) = &self.read_only {
            use rusqlite::OpenFlags;
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(uri, flags).map_err(|e| self.err(e))?;
            conn.busy_timeout(Duration::from_secs(60)).map_err(|e| self.err(e))?;
            conn.pragma_update(None, "cache_size", -4096).map_err(|e| self.err(e))?;
            return Ok(conn);
        }
        let conn = Connection::open(&self.path).map_err(|e| self.err(e))?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(|e| self.err(e))?;
        // WAL: readers never block the writer. synchronous=FULL: a committed row survives power
        // loss, so a snapshot record never outlives the index rows of the chunks it names.
        // Small pages for a new index (an existing one keeps its own): a snapshot inserts rows
        // with random keys, so every row dirties a page of its own once the table is large, and
        // each commit writes every dirty page; a 1 KiB page writes a quarter of what a 4 KiB one
        // does. Must come before WAL mode, which fixes the page size of an empty database.
        conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(|e| self.err(e))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| self.err(e))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| self.err(e))?;
        // 4 MiB of page cache per connection (SQLite's default is 2 MiB): lookups of random
        // chunk IDs touch pages all over the blobs table, and a re-read page is a syscall. A few
        // pooled connections keep this well inside the memory budget.
        conn.pragma_update(None, "cache_size", -4096).map_err(|e| self.err(e))?;
        // A snapshot commits once per pack, and random IDs dirty pages all over the table: with
        // checkpoints every 32 MiB of WAL instead of 4 MiB, a page rewritten by several commits
        // is copied back once. Measured on the 1.3 GB benchmark tree, with the larger cache:
        // full snapshot 17.8 s -> 11.7 s, system time 9.9 s -> 6.2 s, peak RSS 71 -> 78 MiB.
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        conn.pragma_update(None, "wal_autocheckpoint", (32 << 20) / page.max(512)).map_err(|e| self.err(e))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `f` on a pooled connection. SQLite's busy handler does not cover every contended
    /// case in WAL mode (a read transaction that must become a write one, recovery after a
    /// killed writer), so busy and locked errors are retried here with backoff for up to a
    /// minute: another process's work never surfaces as "database is locked".
    fn with<T>(&self, mut f: impl FnMut(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let pooled = lock(&self.pool).pop();
        let (mut conn, mut mapped) = match pooled {
            Some(c) => c,
            None => (self.connect()?, 0),
        };
        let want = self.mapped.load(Ordering::Relaxed);
        if want != mapped {
            conn.pragma_update(None, "mmap_size", want).map_err(|e| self.err(e))?;
            mapped = want;
        }
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        let result = loop {
            match f(&mut conn) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                        && started.elapsed() < Duration::from_secs(60) =>
                {
                    // A failed statement may leave a transaction open on this connection.
                    let _ = conn.execute_batch("ROLLBACK");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => break other.map_err(|e| self.err(e)),
            }
        };
        lock(&self.pool).push((conn, mapped));
        result
    }

    /// A write transaction that reads first: taken IMMEDIATE, so that it holds the write lock
    /// from the start instead of failing to upgrade when another process committed meanwhile.
    fn write_tx(c: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

    fn bad_row(&self, what: &str) -> Error {
        Error::corrupt(format!("index {}", self.path.display()), format!("invalid {what}"))
    }

    /// SQLite's own consistency check: an empty list when the database is sound.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let rows = self.with(|c| {
            let mut st = c.prepare("PRAGMA integrity_check")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    /// True when the index holds no pack and no snapshot.
    pub fn is_empty(&self) -> Result<bool> {
        self.with(|c| {
            c.query_row("SELECT NOT EXISTS (SELECT 1 FROM packs) AND NOT EXISTS (SELECT 1 FROM snapshots)", [], |r| {
                r.get(0)
            })
        })
    }

    /// The repository this index was made for (its config's ID), when it says; indexes made
    /// before the key existed do not.
    pub(crate) fn repo_id(&self) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = 'repo_id'", [], |r| r.get::<_, Vec<u8>>(0))
                .optional()
                .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
        })
    }

    /// Records the repository this index belongs to, once (a blob: the column's integer
    /// affinity must not turn an all-digit ID into a number).
    pub(crate) fn set_repo_id(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('repo_id', ?1)", [id.as_bytes()]).map(|_| ())
        })
    }

    /// The index generation: bumped whenever blobs a snapshot may need can have left the index
    /// (a rebuild or repair), so that snapshots recorded before then are not trusted blindly.
    pub fn generation(&self) -> Result<i64> {
        self.with(|c| {
            c.query_row("SELECT coalesce(max(value), 0) FROM meta WHERE key = 'generation'", [], |r| r.get(0))
        })
    }

    /// Starts a new generation (after a rebuild or repair has re-added the snapshots).
    pub fn bump_generation(&self) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta(key, value) VALUES ('generation', 1) \
                 ON CONFLICT(key) DO UPDATE SET value = value + 1",
                [],
            )
            .map(|_| ())
        })
    }

    /// Removes every row (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.with(|c| {
            for level in levels::LEVELS {
                c.execute(&format!("DELETE FROM {level}"), [])?;
            }
            c.execute_batch("DELETE FROM packs; DELETE FROM snapshots;")
        })
    }
}

/// True for an SQLite error that says the index cannot be written here (read-only media, no
/// permission, a full disk): then the repository is opened read-only instead.
pub(crate) fn cannot_write(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, C::ReadOnly | C::CannotOpen | C::DiskFull | C::SystemIoFailure | C::PermissionDenied))
}
