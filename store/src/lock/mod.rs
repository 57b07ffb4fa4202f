//! Mutual exclusion between the processes (and, later, machines) that share a repository.
//!
//! gc's safety argument (docs/GC.md) needs two things from this seam: the *sessions* that are
//! running (every snapshot, restore and scrub holds one while it may use objects gc could
//! delete, with the time it started), and one *gc lock* that two collectors never hold at once.
//! [`FlockLocks`] gives both with `flock` on files beside a local repository: the kernel drops
//! a dead process's locks, so a crash never leaves a lock to clear by hand. A store with no
//! `flock` and no rename (an object store) uses [`ObjectLocks`]: lease objects that carry a
//! heartbeat and are judged stale by the server's clock; docs/GC.md ("Lease objects") writes
//! down that design and why gc stays safe with it.

mod flock;
mod object;

pub(crate) use flock::lock_file;
pub use flock::FlockLocks;
pub use object::{LeaseTiming, ObjectLocks};

use crate::error::Result;
use crate::id::PackId;

/// A lock or session held until dropped (or until its process dies).
pub struct Hold {
    _inner: Box<dyn std::any::Any + Send + Sync>,
}

impl Hold {
    /// Wraps whatever keeps the lock alive (a locked file, a lease's heartbeat thread).
    pub fn new(inner: impl std::any::Any + Send + Sync) -> Self {
        Self { _inner: Box::new(inner) }
    }

    /// What keeps it alive, when it is a `T`.
    pub(crate) fn inner<T: 'static>(&self) -> Option<&T> {
        self._inner.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

/// A session another process holds.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// snapshot, restore, scrub, ...
    pub kind: String,
    /// Process ID.
    pub pid: u32,
    /// Start time, ns since the epoch.
    pub started_ns: i64,
}

/// The sessions and the gc lock of one repository.
///
/// Contract, which gc relies on: a session returned by `start_session` is visible to
/// `live_sessions` from the moment `start_session` returns until the hold is dropped, with a
/// start time no later than that moment; a session whose holder died stops being listed
/// (at once for `flock`, after the lease's stale age for lease objects); `gc_lock` is held by
/// at most one holder at a time and says who holds it when refused (`Error::GcRunning`).
pub trait Locks: Send + Sync {
    /// Starts a session of `kind` (snapshot, restore, scrub); it ends when the hold is dropped.
    fn start_session(&self, kind: &str) -> Result<Hold>;
    /// The sessions alive now; what dead holders left behind is cleared on the way.
    fn live_sessions(&self) -> Result<Vec<SessionInfo>>;
    /// Takes the gc lock for `what` (`gc`, `repair index`), or fails with `Error::GcRunning`.
    fn gc_lock(&self, what: &str) -> Result<Hold>;

    /// Makes packs gc has condemned (with the time) known to every writer, before gc waits
    /// for the sessions older than the condemnation. With `flock` every writer is on this
    /// machine and reads the one index, where gc has already set `condemned_at`: nothing more
    /// to publish. Lease locks write them into the repository (docs/GC.md).
    fn publish_condemned(&self, _packs: &[(PackId, i64)]) -> Result<()> {
        Ok(())
    }

    /// Takes back the condemnation of a pack gc rescued (a snapshot turned out to need it).
    fn withdraw_condemned(&self, _pack: PackId) -> Result<()> {
        Ok(())
    }

    /// The condemnations published by collectors elsewhere, which a writer loads into its
    /// index when it starts a session, before it deduplicates against anything.
    fn published_condemned(&self) -> Result<Vec<(PackId, i64)>> {
        Ok(Vec::new())
    }

    /// True when `live_sessions` sees every session of every process that can use the
    /// repository: what gc's safety stands on. Locks that see only this machine's sessions
    /// (say `flock` files in a cache folder for a repository other machines write) must say
    /// no, and gc refuses to run on them.
    fn sees_every_session(&self) -> bool {
        true
    }

    /// How long a pack stays condemned before gc may delete it, whatever the sessions say.
    /// Nothing more than the wait for older sessions is needed with `flock` (a session is seen
    /// from the moment it starts until its process is gone); lease locks keep 24 hours, which
    /// covers what leases cannot see (docs/GC.md, "Why gc stays safe").
    fn min_condemned_age(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// How long gc waits before it asks `live_sessions` again, after `polls` polls: asking a
    /// `flock` costs a few system calls, so every 100 ms; lease objects back off.
    fn poll_interval(&self, _polls: u32) -> std::time::Duration {
        std::time::Duration::from_millis(100)
    }

    /// Fails with `Error::LeaseLost` once a session or gc lock this process holds can no longer
    /// be trusted to be seen by others (a lease that went unrenewed too long): the engine asks
    /// between its steps and stops there. A `flock` is held as long as its process lives.
    fn check_held(&self) -> Result<()> {
        Ok(())
    }
}

pub(crate) fn now_ns() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}
