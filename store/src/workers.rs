//! The worker threads of a snapshot, restore or scrub: one pool setup for all three.

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
