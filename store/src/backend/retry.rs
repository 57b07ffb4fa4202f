//! Retries of transient backend errors, for stores where a call can time out or be throttled.
//!
//! Retrying is safe because every call is idempotent, even when the first attempt was carried
//! out and only its response was lost: a `put` is of a name that is the hash of its content, so
//! doing it again stores the same bytes or finds them there (the config, not named by its hash,
//! is written again with the same bytes); a `remove`, `remove_temporary` or `quarantine` of
//! what is already gone succeeds; reads and listings change nothing. Only
//! [`BackendErrorKind::Transient`](crate::BackendErrorKind::Transient) errors are retried: a
//! missing object stays missing, and damage is never a reason to read again.

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, FileKind, ObjectInfo};
use crate::error::Result;

/// The longest wait between two attempts, however many there were.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Wraps a backend, trying each call again after a transient error.
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    attempts: u32,
    backoff: Duration,
}

impl RetryBackend {
    /// Makes each call up to `attempts` times in all (at least once), waiting `backoff` before
    /// the second attempt and twice as long before each next one (at most 30 s).
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, attempts: u32, backoff: Duration) -> Self {
        Self { inner, attempts: attempts.max(1), backoff }
    }

    fn retry<T>(&self, op: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            match f() {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    log::debug!("{op}: attempt {attempt} of {} failed ({e}); trying again in {wait:?}", self.attempts);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
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
}
