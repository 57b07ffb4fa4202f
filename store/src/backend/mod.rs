//! Where repository files live. The engine sees only this trait; the local directory is the
//! default, the in-memory one serves tests, and an object store can be added behind it.
//!
//! Contract: `put` returns only once the file is durable under its final name (written, synced,
//! renamed, directory synced); a reader never sees a partial file under a final name. Names are
//! content hashes, so `put` of an existing name is a no-op, never an overwrite.
//!
//! Errors are [`Error::Backend`](crate::Error::Backend) with a
//! [`BackendErrorKind`](crate::BackendErrorKind): `NotFound` for a missing object, `Transient`
//! when the same call may succeed later, `Permanent` otherwise. A range past the end of an
//! object is damage (`Error::Corrupt`), not a backend error: the object the index describes is
//! shorter than it should be.

mod local;
mod location;
mod memory;

pub(crate) use local::{create_dir_with, sync_dir};
pub use local::{LocalBackend, Modes};
pub use location::{Location, Storage};
pub use memory::MemoryBackend;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The kinds of file a repository holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The repository config (one file, named `config`).
    Config,
    /// Pack files, named by their hex ID.
    Pack,
    /// Snapshot records, named by their hex ID.
    Snapshot,
    /// Tombstones of snapshots being forgotten, named by the snapshot's hex ID: written before
    /// the record is removed, so that a record file that is gone can be told apart from one
    /// that was forgotten (docs/FORMAT.md, "Forgetting").
    Tombstone,
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// Its name (for packs and snapshots: 64 hex digits).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, in nanoseconds since the Unix epoch, as the backend's clock
    /// says (a file's mtime, an object's `Last-Modified`); `None` when the backend cannot say.
    pub modified: Option<i64>,
}

impl ObjectInfo {
    /// An entry of a listing.
    #[must_use]
    pub fn new(name: impl Into<String>, size: u64, modified: Option<i64>) -> Self {
        Self { name: name.into(), size, modified }
    }
}

/// Storage for repository files.
pub trait Backend: Send + Sync {
    /// Stores `data` durably under `name` (see the module contract).
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;
    /// Reads a whole file.
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; a short file is an error.
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// The size of a file.
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    /// The files of a kind, sorted by name, with sizes and modification times; names that are
    /// not 64 hex digits are skipped (the config, whose names are fixed, lists nothing).
    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>>;
    /// Removes a file; removing a missing file is not an error.
    fn remove(&self, kind: FileKind, name: &str) -> Result<()>;
    /// Moves a damaged file out of the way (kept for inspection, never read again).
    fn quarantine(&self, kind: FileKind, name: &str) -> Result<()>;
    /// Leftover temporary files of interrupted writes (with sizes and times), for scrub and gc.
    fn temporaries(&self) -> Result<Vec<ObjectInfo>> {
        Ok(Vec::new())
    }
    /// Removes a leftover temporary file (named as `temporaries` lists it).
    fn remove_temporary(&self, _name: &str) -> Result<()> {
        Ok(())
    }
}

/// A time as nanoseconds since the Unix epoch (`None` before it or past 2262).
pub(crate) fn epoch_ns(t: SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_nanos()).ok())
}

/// The error for an object that is not there, for backends without an OS error of their own.
pub(crate) fn not_found(kind: FileKind, location: &str, name: &str) -> Error {
    crate::error::BackendError::from_io(location, std::io::Error::from(std::io::ErrorKind::NotFound))
        .about(kind, name)
        .into()
}

/// The name of the config's second copy (`FileKind::Config`); the first is `config`. Both
/// hold the same bytes, so one damaged copy never makes a repository unopenable.
pub const CONFIG_COPY: &str = "config.copy";

/// True when `name` is a 64-digit lower-case hex ID, the only names packs and snapshots have.
/// Anything else in those folders is ignored, so a hostile file name cannot become a path.
#[must_use]
pub fn is_id_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
