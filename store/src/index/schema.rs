//! The index schema and its migrations. `PRAGMA user_version` carries the schema version.

use std::path::Path;

use rusqlite::Connection;

use super::levels::{COLUMNS, LEVELS};
use crate::error::Error;

/// The schema version this build creates and reads.
pub const INDEX_VERSION: i64 = 2;

pub(super) const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS packs(
    pid         INTEGER PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE,
    kind        INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    blobs       INTEGER NOT NULL,
    added_at    INTEGER NOT NULL,
    verified_at INTEGER,
    condemned_at INTEGER
);
CREATE TABLE IF NOT EXISTS blobs(
    id          BLOB PRIMARY KEY,
    kind        INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    stored_len  INTEGER NOT NULL,
    frame_len   INTEGER NOT NULL,
    frame_offset INTEGER NOT NULL,
    raw_len     INTEGER NOT NULL,
    compression INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots(
    id      BLOB PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    host    TEXT NOT NULL,
    label   TEXT,
    record  BLOB NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_by_time ON snapshots(time_ns);

";

/// Version 2: the blob map in levels (`levels.rs`); `blobs` becomes the last, oldest level, so a
/// version-1 index keeps every row where it is.
fn schema_v2() -> String {
    let mut sql = String::new();
    for level in &LEVELS[..LEVELS.len() - 1] {
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {level}(
                id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pid INTEGER NOT NULL, offset INTEGER NOT NULL,
                stored_len INTEGER NOT NULL, frame_len INTEGER NOT NULL, frame_offset INTEGER NOT NULL,
                raw_len INTEGER NOT NULL, compression INTEGER NOT NULL
            ) WITHOUT ROWID;\n"
        ));
    }
    let union: Vec<String> = LEVELS.iter().map(|l| format!("SELECT {COLUMNS} FROM {l}")).collect();
    sql.push_str(&format!("CREATE VIEW IF NOT EXISTS blobs_all AS {};\n", union.join(" UNION ALL ")));
    sql
}

pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > INDEX_VERSION {
        // Reported as UnsupportedVersion by `classify` through this sentinel.
        return Err(rusqlite::Error::IntegralValueOutOfRange(usize::MAX, version));
    }
    if version < INDEX_VERSION {
        let v2 = schema_v2();
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA_V1} {v2} PRAGMA user_version = {INDEX_VERSION}; COMMIT;"
        ))?;
    }
    Ok(())
}

/// Maps SQLite errors to the store's: a newer schema and a damaged file get their own variants.
pub(super) fn classify(path: &Path, source: rusqlite::Error) -> Error {
    match source {
        rusqlite::Error::IntegralValueOutOfRange(usize::MAX, found) => Error::UnsupportedVersion {
            what: format!("index {}", path.display()),
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: INDEX_VERSION as u32,
        },
        rusqlite::Error::SqliteFailure(ref e, _)
            if matches!(e.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) =>
        {
            Error::corrupt(
                format!("index {}", path.display()),
                format!("{source}; run `cairn repair index` to rebuild it from the packs"),
            )
        }
        other => Error::Index { path: path.to_path_buf(), source: other },
    }
}
