//! A backend that misbehaves as a remote object store does, for tests: every call is slow, some
//! fail with a transient error, and some "lose their response": the call was carried out (a put
//! is stored, a remove removed) but the caller hears a transient error, as after a timeout on a
//! reply that never came. That last case is the hard one for retries: whatever the engine does
//! again must be harmless when it already happened.
//!
//! Faults fall on numbered calls, not on chance, so a failing test fails the same way again:
//! with `transient_every: Some(3)` every third call fails, `seed` shifting which ones (two
//! wrappers, or two runs, can fail different calls). Judging a temporary
//! ([`Backend::is_abandoned`]) is no call to the store and is never faulted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{describe, Backend, FileKind, ObjectInfo};
use crate::error::{BackendError, BackendErrorKind, Result};

/// What a [`FaultyBackend`] does wrong.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FaultPlan {
    /// Added to every call (a round trip to a remote store).
    pub latency: Duration,
    /// Every n-th call fails with a transient error before it reaches the inner backend.
    pub transient_every: Option<u32>,
    /// Every n-th call is carried out, then fails with a transient error (a lost response).
    pub lose_response_every: Option<u32>,
    /// Shifts which calls are faulted.
    pub seed: u64,
}

impl FaultPlan {
    /// No latency, no faults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

/// Wraps a backend with the faults of a [`FaultPlan`].
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    calls: AtomicU64,
    faults: AtomicU64,
}

/// What happens to one call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pass,
    Fail,
    LoseResponse,
}

fn hits(every: Option<u32>, n: u64) -> bool {
    every.is_some_and(|e| e > 0 && n.is_multiple_of(u64::from(e)))
}

impl FaultyBackend {
    /// `inner`, misbehaving as `plan` says.
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Self {
        Self { inner, plan, calls: AtomicU64::new(0), faults: AtomicU64::new(0) }
    }

    /// Calls made so far.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Faults injected so far (failed calls and lost responses).
    #[must_use]
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    fn fate(&self) -> Fate {
        // Numbered from 1, so that `every: Some(3)` with seed 0 fails the third call.
        let n = self.calls.fetch_add(1, Ordering::Relaxed).wrapping_add(1).wrapping_add(self.plan.seed);
        let fate = if hits(self.plan.transient_every, n) {
            Fate::Fail
        } else if hits(self.plan.lose_response_every, n) {
            Fate::LoseResponse
        } else {
            Fate::Pass
        };
        if fate != Fate::Pass {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
        fate
    }

    /// Runs one call under the plan; `object` names it in the injected error (`label` when the
    /// call is about no one object).
    fn call<T>(
        &self,
        op: &str,
        object: Option<(FileKind, &str)>,
        label: &str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if !self.plan.latency.is_zero() {
            std::thread::sleep(self.plan.latency);
        }
        let fail = |what: &str| {
            let location = object.map_or_else(|| label.to_owned(), |(kind, name)| describe(kind, name));
            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{op}: injected fault ({what})"));
            let err = BackendError::new(BackendErrorKind::Transient, location, source);
            Err(match object {
                Some((kind, name)) => err.about(kind, name),
                None => err,
            }
            .into())
        };
        match self.fate() {
            Fate::Pass => f(),
            Fate::Fail => fail("request failed"),
            Fate::LoseResponse => {
                // Carried out, whatever its outcome; the caller hears only that it timed out.
                let _ = f();
                fail("response lost")
            }
        }
    }
}

impl Backend for FaultyBackend {
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.call("put", Some((kind, name)), "", || self.inner.put(kind, name, data))
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.call("get", Some((kind, name)), "", || self.inner.get(kind, name))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.call("get_range", Some((kind, name)), "", || self.inner.get_range(kind, name, offset, len))
    }

    /// One call, as one (multi-range) request would be.
    fn get_ranges(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) -> Result<Vec<Vec<u8>>> {
        self.call("get_ranges", Some((kind, name)), "", || self.inner.get_ranges(kind, name, ranges))
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.call("size", Some((kind, name)), "", || self.inner.size(kind, name))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        self.call("list", None, &format!("listing of {kind:?}"), || self.inner.list(kind))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.call("remove", Some((kind, name)), "", || self.inner.remove(kind, name))
    }

    fn quarantine(&self, kind: FileKind, name: &str) -> Result<()> {
        self.call("quarantine", Some((kind, name)), "", || self.inner.quarantine(kind, name))
    }

    fn temporaries(&self) -> Result<Vec<ObjectInfo>> {
        self.call("temporaries", None, "listing of temporaries", || self.inner.temporaries())
    }

    fn is_abandoned(&self, temp: &ObjectInfo, now_ns: i64) -> bool {
        self.inner.is_abandoned(temp, now_ns)
    }

    fn remove_temporary(&self, name: &str) -> Result<()> {
        self.call("remove_temporary", None, &format!("temporary {name}"), || self.inner.remove_temporary(name))
    }
}
