//! What a run over many files counts and lists while its workers go: counters they add to,
//! and the paths it has something to say about. Snapshot, restore and scrub report them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::workers;

/// A count that worker threads add to. Relaxed: it is read once the workers are done (the pool's
/// join orders it), never to coordinate them.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A path and what happened to it: a file left out of a snapshot or stored with a caveat, a
/// file a restore could not write.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Warning {
    /// The path (lossy UTF-8).
    pub path: String,
    /// What went wrong.
    pub message: String,
}

impl Warning {
    pub(crate) fn new(path: &Path, message: impl Into<String>) -> Self {
        Self { path: path.to_string_lossy().into_owned(), message: message.into() }
    }
}

/// A list of warnings that worker threads add to.
#[derive(Debug, Default)]
pub(crate) struct Warnings(Mutex<Vec<Warning>>);

impl Warnings {
    pub(crate) fn push(&self, warning: Warning) {
        workers::lock(&self.0).push(warning);
    }

    /// Adds a warning about `path`.
    pub(crate) fn add(&self, path: &Path, message: impl Into<String>) {
        self.push(Warning::new(path, message));
    }

    pub(crate) fn into_vec(self) -> Vec<Warning> {
        workers::into_inner(self.0)
    }
}
