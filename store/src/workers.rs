//! The worker threads of a snapshot, restore, scrub or repair: one pool setup for all, and the
//! way they share state.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};

/// Stack of each worker. Walks of snapshot and restore recurse once per directory level, on
/// these threads; rayon's 2 MiB default overflows near 500 levels, a depth real trees (build
/// caches, node_modules) reach. Untouched stack costs no memory.
const STACK: usize = 64 << 20;

/// A pool of `threads` workers (0: one per core).
pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(STACK)
        .build()
        .map_err(|source| Error::Workers { source })
}

/// How many workers `threads` asks for: itself, or (0) one per core.
pub(crate) fn count(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    } else {
        threads
    }
}

/// Locks state the workers share. A worker that panicked while holding it left it as valid as
/// any other moment does (every update is one step), and its panic surfaces when the pool
/// joins: the others go on rather than panic in turn.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What shared state holds once the workers are done (see `lock`).
pub(crate) fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner().unwrap_or_else(PoisonError::into_inner)
}
