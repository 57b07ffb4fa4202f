//! Where repository files live. The engine sees only this trait; the local directory is the
//! default, the in-memory one serves tests, and an object store can be added behind it.
//!
//! The trait asks only for what an object store (S3 and its kin) can do: whole-object put, get
//! and ranged get, list, delete. There is no rename and no process ID in the contract;
//! quarantine is a copy then a delete, and leftover temporaries are judged by their age. A
//! backend may do better in its own implementation (the local directory renames, and knows
//! which process wrote a temporary), but the engine never relies on it.
//!
//! Contract:
//! - `put` returns only once the object is durable under its final name (for the local
//!   directory: written, synced, renamed, directory synced); a reader never sees a partial
//!   object under a final name.
//! - Names are content hashes, so `put` of an existing name is a no-op, never an overwrite
//!   (the config, the one file that is not named by its hash, is rewritten whole). Removing
//!   or quarantining what is already gone is no error either, so every call is safe to
//!   repeat, which [`RetryBackend`] relies on.
//! - Errors are [`Error::Backend`](crate::Error::Backend) with a
//!   [`BackendErrorKind`](crate::BackendErrorKind): `NotFound` for a missing object,
//!   `Transient` when the same call may succeed later, `Permanent` otherwise. A range past the
//!   end of an object is damage (`Error::Corrupt`), not a backend error: the object the index
//!   describes is shorter than it should be.

mod faulty;
mod local;
mod location;
mod memory;
mod requests;
mod retry;
mod s3;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use faulty::{FaultPlan, FaultyBackend};
pub(crate) use local::{create_dir_with, sync_dir};
pub use local::{LocalBackend, Modes};
pub use location::{Location, Storage};
pub use memory::MemoryBackend;
pub use requests::{RequestCounter, RequestCounts, RequestKind};
pub use retry::{RetryBackend, RETRY_BUDGET};
pub use s3::{parse_storage_class, S3Backend, S3Location, STORAGE_CLASSES};

use crate::error::{Error, Result};

/// The kinds of file a repository holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// Damaged files moved out of the way by [`Backend::quarantine`], under the name they had:
    /// kept for inspection, never read by the engine.
    Quarantine,
    /// A session's lease on a repository in an object store (`leases/sessions/<random hex>`):
    /// its holder, rewritten under a new name by its heartbeat (`lock::ObjectLocks`).
    SessionLease,
    /// A collector's lease, the gc lock of an object store (`leases/gc/<random hex>`).
    GcLease,
    /// Packs a collector condemned, published for writers on other machines
    /// (`condemned/<random hex>`, docs/GC.md).
    Condemned,
    /// Key files of an encrypted repository (`keys/<64 hex>`, docs/ENCRYPTION.md): the master
    /// key set wrapped by one passphrase each.
    Key,
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

/// How old a leftover temporary must be before a backend that cannot tell whether its writer
/// is alive judges it abandoned (see [`Backend::is_abandoned`]).
pub const TEMPORARY_GRACE: Duration = Duration::from_secs(3600);

/// Storage for repository files.
pub trait Backend: Send + Sync {
    /// Stores `data` durably under `name` (see the module contract).
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;
    /// Reads a whole file.
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; a short file is damage (`Error::Corrupt`).
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Reads several `(offset, len)` ranges of one file, in the order given (they may overlap
    /// or repeat); one short range makes the whole call damage, as `get_range` would.
    ///
    /// The caller batches what it needs of one file, so that a backend with a high latency per
    /// request pays it once: an object store fetches one range spanning them (when they lie
    /// close together) or sends one multi-range request; the local directory reads them through
    /// one open handle. The default reads them one by one.
    fn get_ranges(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) -> Result<Vec<Vec<u8>>> {
        ranges.iter().map(|&(offset, len)| self.get_range(kind, name, offset, len)).collect()
    }
    /// The size of a file.
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    /// The files of a kind, sorted by name, with sizes and modification times; names that are
    /// not 64 hex digits are skipped (the config, whose names are fixed, lists nothing).
    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>>;
    /// Removes a file; removing a missing file is not an error.
    fn remove(&self, kind: FileKind, name: &str) -> Result<()>;
    /// Moves a damaged file out of the way, to [`FileKind::Quarantine`] under the same name
    /// (kept for inspection, never read again); quarantining a missing file is not an error.
    ///
    /// The default copies, then removes: a crash between the two leaves the original in place
    /// and a copy in quarantine, and running it again finishes the job (the copy's `put` is a
    /// no-op). A backend that can move a file (the local directory renames) does that instead.
    fn quarantine(&self, kind: FileKind, name: &str) -> Result<()> {
        let data = match self.get(kind, name) {
            Ok(data) => data,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        // A name damaged twice keeps both copies: the second goes under `<name>.1`, and so on.
        let mut to = name.to_owned();
        for n in 1.. {
            match self.get(FileKind::Quarantine, &to) {
                Ok(held) if held != data => to = format!("{name}.{n}"),
                Ok(_) => break, // this very copy, from a run that crashed before the removal
                Err(e) if e.is_not_found() => break,
                Err(e) => return Err(e),
            }
        }
        self.put(FileKind::Quarantine, &to, &data)?;
        self.remove(kind, name)
    }
    /// Temporaries of writes, leftovers of interrupted ones and those of writes in flight alike
    /// (scrub lists them; gc removes the ones [`Backend::is_abandoned`] calls abandoned). A
    /// backend whose puts are atomic and leave nothing behind has none.
    fn temporaries(&self) -> Result<Vec<ObjectInfo>> {
        Ok(Vec::new())
    }
    /// True when a temporary (as `temporaries` listed it) belongs to no write in flight and may
    /// be removed; `now_ns` is the caller's clock, in nanoseconds since the Unix epoch.
    ///
    /// The default judges by age: a temporary last written more than [`TEMPORARY_GRACE`] ago
    /// is abandoned, one of unknown age never is. Age is safe because a write in flight keeps
    /// its temporary young (it is created when the `put` starts, and a `put` of one bounded
    /// pack takes seconds, not an hour; the hour also absorbs skew between the caller's clock
    /// and an object store's), and because removing the temporary of a write that is somehow
    /// still running can only make that `put` fail: nothing ever appears partial under a final
    /// name (the local rename, or an upload's completion, finds its temporary gone). A backend
    /// that knows more (the local directory knows the writer's process) may judge better.
    fn is_abandoned(&self, temp: &ObjectInfo, now_ns: i64) -> bool {
        older_than(temp, now_ns, TEMPORARY_GRACE)
    }
    /// Removes a leftover temporary (named as `temporaries` lists it); removing a missing one
    /// is not an error.
    fn remove_temporary(&self, _name: &str) -> Result<()> {
        Ok(())
    }
    /// The counts of the requests this backend sent, for a backend that talks to a store
    /// billed by the request (S3); none for the local directory and the test backends.
    fn requests(&self) -> Option<Arc<RequestCounter>> {
        None
    }
}

/// True when `info` was last written more than `grace` before `now_ns` (never when its age is
/// unknown).
pub(crate) fn older_than(info: &ObjectInfo, now_ns: i64, grace: Duration) -> bool {
    let grace = i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX);
    info.modified.is_some_and(|m| now_ns.saturating_sub(m) > grace)
}

/// A time as nanoseconds since the Unix epoch (`None` before it or past 2262).
pub(crate) fn epoch_ns(t: SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_nanos()).ok())
}

/// How an object is named in errors when the backend has no better location (a path, a key).
pub(crate) fn describe(kind: FileKind, name: &str) -> String {
    match kind {
        FileKind::Config => name.to_owned(),
        FileKind::Pack => format!("pack {name}"),
        FileKind::Snapshot => format!("snapshot record {name}"),
        FileKind::Tombstone => format!("tombstone {name}"),
        FileKind::Quarantine => format!("quarantined file {name}"),
        FileKind::SessionLease => format!("session lease {name}"),
        FileKind::GcLease => format!("gc lease {name}"),
        FileKind::Condemned => format!("condemnation record {name}"),
        FileKind::Key => format!("key file {name}"),
    }
}

/// The error for an object that is not there, for backends without an OS error of their own.
pub(crate) fn not_found(kind: FileKind, location: &str, name: &str) -> Error {
    crate::error::BackendError::from_io(location, std::io::Error::from(std::io::ErrorKind::NotFound))
        .about(kind, name)
        .into()
}

/// The folder of a kind of file under a repository's root (none for the config, which sits at
/// the root): the one layout the local directory and an object store's keys both follow, so a
/// local repository and a bucket holding the same repository hold the same relative names.
pub(crate) fn folder(kind: FileKind) -> Option<&'static str> {
    match kind {
        FileKind::Config => None,
        FileKind::Pack => Some("packs"),
        FileKind::Snapshot => Some("snapshots"),
        FileKind::Tombstone => Some("forgotten"),
        FileKind::Quarantine => Some("quarantine"),
        FileKind::SessionLease => Some("leases/sessions"),
        FileKind::GcLease => Some("leases/gc"),
        FileKind::Condemned => Some("condemned"),
        FileKind::Key => Some("keys"),
    }
}

/// Where a file is under a repository's root, `/`-separated: `config`, `config.copy`,
/// `packs/<2 hex>/<64 hex>` (packs are spread over 256 folders), `snapshots/<64 hex>`, ...
pub(crate) fn relative_path(kind: FileKind, name: &str) -> String {
    match (kind, folder(kind)) {
        // Two copies of the config; any other name still means the main one.
        (FileKind::Config, _) if name == CONFIG_COPY => CONFIG_COPY.to_owned(),
        (_, None) => "config".to_owned(),
        (FileKind::Pack, Some(dir)) => format!("{dir}/{}/{name}", name.get(..2).unwrap_or("xx")),
        (_, Some(dir)) => format!("{dir}/{name}"),
    }
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
