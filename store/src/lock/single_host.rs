//! Locks for a repository in an object store, kept on *this machine only*: `flock`ed files in
//! the repository's local cache folder. They exclude two processes of this machine from each
//! other exactly as [`FlockLocks`] does for a local repository, and see nothing of other
//! machines that write to the same bucket.
//!
//! That is enough for snapshots, restores and scrubs (content-addressed puts of two writers
//! never conflict), and not enough for gc, which must see every session that may have
//! deduplicated against a pack before it deletes it: so these locks say
//! [`Locks::sees_every_session`] is false and gc refuses. Lease objects in the bucket
//! (docs/GC.md, "Lease objects") are what replaces them.

use std::path::Path;

use super::{FlockLocks, Hold, Locks, SessionInfo};
use crate::backend::Modes;
use crate::error::Result;

/// `flock` locks in a local folder standing in for a remote repository's locks, for processes
/// of this machine only (see the module's notes).
pub struct SingleHostLocks {
    inner: FlockLocks,
}

impl SingleHostLocks {
    /// Locks kept in `dir` (created when first needed), files made with `modes`.
    #[must_use]
    pub fn new(dir: &Path, modes: Modes) -> Self {
        Self { inner: FlockLocks::new(dir, modes) }
    }
}

impl Locks for SingleHostLocks {
    fn start_session(&self, kind: &str) -> Result<Hold> {
        self.inner.start_session(kind)
    }

    fn live_sessions(&self) -> Result<Vec<SessionInfo>> {
        self.inner.live_sessions()
    }

    fn gc_lock(&self, what: &str) -> Result<Hold> {
        self.inner.gc_lock(what)
    }

    fn sees_every_session(&self) -> bool {
        false
    }
}
