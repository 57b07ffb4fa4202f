//! What a command costs on a store that bills by the request: the requests a remote backend
//! sends, by kind, and the bytes it moves. Counted with atomics as the requests go (every
//! attempt counts, retries too: each is billed), read by the caller when it wants them
//! ([`Repo::request_counter`](crate::Repo::request_counter)); the library never prints them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A kind of request to an object store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// A GET of a whole object.
    Get,
    /// A GET of a byte range (`Range:`).
    RangedGet,
    /// A PUT of an object.
    Put,
    /// A HEAD (does it exist, how large is it).
    Head,
    /// One page of a listing.
    List,
    /// A DELETE.
    Delete,
}

/// Running counts of one backend's requests (shared by the threads that send them).
#[derive(Debug, Default)]
pub struct RequestCounter {
    by_kind: [AtomicU64; 6],
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl RequestCounter {
    /// Counts one request of `kind` whose reply carried `down` bytes.
    pub fn count(&self, kind: RequestKind, down: u64) {
        self.by_kind[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
    }

    /// Counts `up` bytes sent (a PUT's body).
    pub fn sent(&self, up: u64) {
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
    }

    /// The counts so far.
    #[must_use]
    pub fn counts(&self) -> RequestCounts {
        let n = |k: RequestKind| self.by_kind[k as usize].load(Ordering::Relaxed);
        let mut c = RequestCounts {
            requests: 0,
            get: n(RequestKind::Get),
            ranged_get: n(RequestKind::RangedGet),
            put: n(RequestKind::Put),
            head: n(RequestKind::Head),
            list: n(RequestKind::List),
            delete: n(RequestKind::Delete),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        };
        c.requests = c.get + c.ranged_get + c.put + c.head + c.list + c.delete;
        c
    }
}

/// The requests a backend sent, as a command reports them (`s3_requests` in `--json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RequestCounts {
    /// All of them.
    pub requests: u64,
    /// GETs of whole objects (configs, snapshot records, leases, packs read whole).
    pub get: u64,
    /// GETs of byte ranges (frames of packs, pack trailers).
    pub ranged_get: u64,
    /// PUTs.
    pub put: u64,
    /// HEADs (a PUT of a name that may exist starts with one).
    pub head: u64,
    /// Pages of listings.
    pub list: u64,
    /// DELETEs.
    pub delete: u64,
    /// Bytes sent in request bodies.
    pub bytes_up: u64,
    /// Bytes received in reply bodies.
    pub bytes_down: u64,
}

impl std::ops::AddAssign for RequestCounts {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.get += o.get;
        self.ranged_get += o.ranged_get;
        self.put += o.put;
        self.head += o.head;
        self.list += o.list;
        self.delete += o.delete;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind_and_summed() {
        let c = RequestCounter::default();
        c.count(RequestKind::Put, 0);
        c.sent(100);
        c.count(RequestKind::Head, 0);
        c.count(RequestKind::RangedGet, 40);
        c.count(RequestKind::RangedGet, 2);
        c.count(RequestKind::List, 500);
        let mut got = c.counts();
        assert_eq!(
            (got.requests, got.put, got.head, got.ranged_get, got.list, got.get, got.delete),
            (5, 1, 1, 2, 1, 0, 0)
        );
        assert_eq!((got.bytes_up, got.bytes_down), (100, 542));
        got += c.counts();
        assert_eq!((got.requests, got.bytes_up), (10, 200));
    }
}
