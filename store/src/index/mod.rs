//! The SQLite index: where every blob lives, which packs exist, which snapshots exist.
//!
//! It is a cache: packs (trailers) and snapshot records are self-describing, so `rebuild` can
//! make it again from them. rusqlite is used nowhere else in the crate.

mod filter;
mod levels;
mod mark;
mod schema;
#[cfg(test)]
mod tests;

pub use mark::MarkSet;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::pack::{BlobKind, Compression, PackEntry};

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Its entry in that pack.
    pub entry: PackEntry,
}

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

fn insert_pack(
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

/// Counts and sizes of a set of blobs.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlobSums {
    /// Blobs.
    pub blobs: u64,
    /// Of which chunks.
    pub chunks: u64,
    /// Plaintext bytes.
    pub raw: u64,
    /// Stored bytes (a frame's bytes shared out by plaintext length).
    pub stored: u64,
}

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

/// A snapshot row: its ID and record bytes.
pub struct SnapshotRow {
    /// The snapshot's ID.
    pub id: SnapshotId,
    /// The framed record, as stored in `snapshots/<id>`.
    pub record: Vec<u8>,
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

/// SQLite page size of a new index file, in bytes.
const PAGE_SIZE: i64 = 4096;

/// The index database, shared by the threads of one process through a small connection pool.
pub struct Index {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    /// Rows each level but the last may hold (levels.rs).
    caps: [u64; 3],
    /// The blob filter this process has open, if any (filter.rs).
    filter: Mutex<Option<Arc<filter::Filter>>>,
    /// Permission bits of the repository's files, for the filter file.
    file_mode: u32,
    /// How connections are opened: `None` read-write; else the URI of a read-only open.
    read_only: Option<String>,
}

/// A new filter token: any value another filter file is unlikely to carry.
fn new_token() -> i64 {
    let seed = format!("{:?} {} {:?}", jiff::Timestamp::now(), std::process::id(), std::thread::current().id());
    let bytes = blake3::hash(seed.as_bytes());
    i64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or([0; 8])) & i64::MAX
}

impl Index {
    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let root = path.parent().and_then(Path::parent).unwrap_or(path);
        let file_mode = crate::backend::Modes::of(root).file;
        let index = Self {
            path: path.to_path_buf(),
            pool: Mutex::new(Vec::new()),
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
        index.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
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
                    index.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c);
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
        let pooled = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
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
        self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
        result
    }

    /// A write transaction that reads first: taken IMMEDIATE, so that it holds the write lock
    /// from the start instead of failing to upgrade when another process committed meanwhile.
    fn write_tx(c: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

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

    /// The filter that matches the index as `tx` sees it, opening it again when another
    /// process has rebuilt it; none when there is no usable one.
    fn current_filter(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Option<Arc<filter::Filter>>> {
        // Cached: asked once per lookup batch, and preparing it costs more than running it.
        let token: Option<i64> = tx
            .prepare_cached("SELECT value FROM meta WHERE key = 'filter_token'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        let mut held = self.filter.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.as_ref().map(|f| f.token()) != token {
            *held = token.and_then(|t| filter::Filter::open(&filter::path_of(&self.path), t)).map(Arc::new);
        }
        Ok(held.clone())
    }

    /// Sets the filter bits of a pack's blobs, inside the transaction that indexes them; builds
    /// the filter again when there is none or it is full. A filter that cannot be written is
    /// disowned (its token removed) rather than trusted: lookups then ask the levels.
    fn filter_add(&self, tx: &rusqlite::Transaction<'_>, entries: &[PackEntry]) -> rusqlite::Result<()> {
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
                *self.filter.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(f));
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
    fn settle(&self) -> Result<()> {
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

    fn location(&self, id: BlobId, (pack, n): (Vec<u8>, [i64; 7])) -> Result<BlobLocation> {
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

    /// IDs of the snapshots in the index (to reconcile with the snapshot files).
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.snapshots()?.into_iter().map(|r| r.id).collect())
    }

    /// True when the index holds no pack and no snapshot.
    pub fn is_empty(&self) -> Result<bool> {
        self.with(|c| {
            c.query_row("SELECT NOT EXISTS (SELECT 1 FROM packs) AND NOT EXISTS (SELECT 1 FROM snapshots)", [], |r| {
                r.get(0)
            })
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

    /// SQLite's own consistency check: an empty list when the database is sound.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let rows = self.with(|c| {
            let mut st = c.prepare("PRAGMA integrity_check")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
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

    fn bad_row(&self, what: &str) -> Error {
        Error::corrupt(format!("index {}", self.path.display()), format!("invalid {what}"))
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

    /// Records that a pack was read back and verified at `when` (Unix seconds).
    pub fn set_verified(&self, pack: PackId, when: i64) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE packs SET verified_at = ?1 WHERE id = ?2", params![when, pack.as_bytes()]).map(|_| ())
        })
    }

    /// Forgets a snapshot (its record file is removed first by the caller).
    pub fn delete_snapshot(&self, id: SnapshotId) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM snapshots WHERE id = ?1", [id.as_bytes()]).map(|_| ()))
    }

    /// Per indexed pack not yet condemned: its size, and how many of its indexed blobs (and roughly how many of
    /// its stored bytes) the mark set holds.
    pub fn pack_usage(&self, mark: &MarkSet) -> Result<Vec<PackUsage>> {
        let mark_path = mark.path().to_string_lossy().into_owned();
        let rows = self.with(|c| {
            c.execute("ATTACH DATABASE ?1 AS mark", [&mark_path])?;
            let result = (|| {
                let mut st = c.prepare(
                    "SELECT p.id, p.size, count(b.id), count(m.id), \
                     coalesce(sum(CASE WHEN m.id IS NULL THEN 0 ELSE b.stored_len * b.raw_len / max(b.frame_len, 1) END), 0) \
                     FROM packs p LEFT JOIN blobs_all b ON b.pid = p.pid LEFT JOIN mark.reachable m ON m.id = b.id \
                     WHERE p.condemned_at IS NULL GROUP BY p.pid",
                )?;
                let rows = st.query_map([], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })();
            c.execute("DETACH DATABASE mark", [])?;
            result
        })?;
        rows.into_iter()
            .map(|(id, size, blobs, live, live_bytes)| {
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

    /// Counts and sizes of the indexed blobs in `mark`, leaving out those in `except`.
    pub fn stored_size_of(&self, mark: &MarkSet, except: Option<&MarkSet>) -> Result<BlobSums> {
        let m = mark.path().to_string_lossy().into_owned();
        let x = except.map(|x| x.path().to_string_lossy().into_owned());
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
                     coalesce(sum(b.stored_len * b.raw_len / max(b.frame_len, 1)), 0) \
                     FROM m.reachable r JOIN blobs_all b ON b.id = r.id {filter}"
                ),
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?)),
            );
            c.execute("DETACH DATABASE m", [])?;
            if x.is_some() {
                c.execute("DETACH DATABASE x", [])?;
            }
            result
        })?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(BlobSums { blobs: u(row.0), chunks: u(row.1), raw: u(row.2), stored: u(row.3) })
    }

    /// Condemns a pack at `at_ns`: its rows stay (readers that found them keep working), but
    /// no deduplication lookup sees its blobs any more.
    pub fn condemn(&self, pack: PackId, at_ns: i64) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE packs SET condemned_at = ?1 WHERE id = ?2", params![at_ns, pack.as_bytes()]).map(|_| ())
        })
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

    /// A condemned pack turned out to be needed: it is an ordinary pack again.
    pub fn rescue(&self, pack: PackId) -> Result<()> {
        self.with(|c| c.execute("UPDATE packs SET condemned_at = NULL WHERE id = ?1", [pack.as_bytes()]).map(|_| ()))
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

    /// Whether each blob's indexed copy is in `pack` (and so goes with it).
    pub fn indexed_in(&self, pack: PackId, ids: &[BlobId]) -> Result<Vec<bool>> {
        Ok(self.locate_many(ids)?.into_iter().map(|l| l.is_some_and(|l| l.pack == pack)).collect())
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

    /// The generation a snapshot was indexed in, if it is indexed.
    pub fn snapshot_generation(&self, id: SnapshotId) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row("SELECT generation FROM snapshots WHERE id = ?1", [id.as_bytes()], |r| r.get(0)).optional()
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
