//! Retries of transient backend errors, for stores where a call can time out or be throttled.
//!
//! Retrying is safe because every call is idempotent, even when the first attempt was carried
//! out and only its response was lost: a `put` is of a name that is the hash of its content, so
//! doing it again stores the same bytes or finds them there (the config, not named by its hash,
//! is written again with the same bytes); a `remove`, `remove_temporary` or `quarantine` of
//! what is already gone succeeds; reads and listings change nothing. Only
//! [`BackendErrorKind::Transient`](crate::BackendErrorKind::Transient) errors are retried: a
//! missing object stays missing, and damage is never a reason to read again.
//!
//! What a store that stays down costs is bounded, and small: one call tries at most `attempts`
//! times, and starts no attempt once [`RETRY_BUDGET`] has passed since its first (each attempt
//! is bounded in turn by the backend's own timeouts). A call that gives up on a transient
//! error marks the store *down*: until a call succeeds (or gets an answer that is not
//! transient, such as "not found"), every call tries once, and calls waiting between attempts
//! give up at their next failure. So a command fails about one retry budget after the store
//! went away, not one budget per object it still had to read or write (a snapshot's packs, a
//! lease's removal on the way out).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Backend, FileKind, ObjectInfo, RequestCounter};
use crate::error::{Error, Result};

/// The longest wait between two attempts, however many there were.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long one call goes on trying: no attempt starts (and no wait begins) that would end
/// past this much time after the first attempt started.
pub const RETRY_BUDGET: Duration = Duration::from_secs(150);

/// Wraps a backend, trying each call again after a transient error.
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    attempts: u32,
    backoff: Duration,
    budget: Duration,
    /// A call gave up on a transient error, and no call has been answered since: calls try
    /// once (see the module's notes).
    down: AtomicBool,
}

impl RetryBackend {
    /// Makes each call up to `attempts` times in all (at least once), waiting `backoff` before
    /// the second attempt and twice as long before each next one (at most 30 s), within
    /// [`RETRY_BUDGET`].
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, attempts: u32, backoff: Duration) -> Self {
        Self { inner, attempts: attempts.max(1), backoff, budget: RETRY_BUDGET, down: AtomicBool::new(false) }
    }

    /// The same with another budget per call (tests shorten it).
    #[must_use]
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    fn retry<T>(&self, op: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            match f() {
                Err(e) if e.is_transient() => {
                    let down = self.down.load(Ordering::Relaxed);
                    if attempt >= self.attempts || down || started.elapsed() + wait > self.budget {
                        self.down.store(true, Ordering::Relaxed);
                        return Err(gave_up(e, attempt, started.elapsed(), down));
                    }
                    log::debug!("{op}: attempt {attempt} of {} failed ({e}); trying again in {wait:?}", self.attempts);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                other => {
                    // An answer (even "not found"): the store is there.
                    self.down.store(false, Ordering::Relaxed);
                    return other;
                }
            }
        }
    }
}

/// A transient error that is final, saying how long it was tried (or that the store was
/// already known to be down).
fn gave_up(e: Error, attempts: u32, took: Duration, was_down: bool) -> Error {
    let Error::Backend(mut b) = e else { return e };
    let how = if was_down && attempts == 1 {
        "not retried: an earlier call already gave up on the store".to_owned()
    } else if attempts > 1 {
        format!("gave up after {attempts} attempts in {:.0} s", took.as_secs_f64())
    } else {
        return Error::Backend(b);
    };
    b.source = format!("{} ({how})", b.source).into();
    Error::Backend(b)
}

impl Backend for RetryBackend {
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.retry("put", || self.inner.put(kind, name, data))
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.retry("get", || self.inner.get(kind, name))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.retry("get_range", || self.inner.get_range(kind, name, offset, len))
    }

    fn get_ranges(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) -> Result<Vec<Vec<u8>>> {
        self.retry("get_ranges", || self.inner.get_ranges(kind, name, ranges))
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.retry("size", || self.inner.size(kind, name))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        self.retry("list", || self.inner.list(kind))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.retry("remove", || self.inner.remove(kind, name))
    }

    fn quarantine(&self, kind: FileKind, name: &str) -> Result<()> {
        self.retry("quarantine", || self.inner.quarantine(kind, name))
    }

    fn temporaries(&self) -> Result<Vec<ObjectInfo>> {
        self.retry("temporaries", || self.inner.temporaries())
    }

    fn is_abandoned(&self, temp: &ObjectInfo, now_ns: i64) -> bool {
        self.inner.is_abandoned(temp, now_ns)
    }

    fn remove_temporary(&self, name: &str) -> Result<()> {
        self.retry("remove_temporary", || self.inner.remove_temporary(name))
    }

    fn requests(&self) -> Option<Arc<RequestCounter>> {
        self.inner.requests()
    }
}
