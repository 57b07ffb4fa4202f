//! A run whose lease on an object store is lost stops with `Error::LeaseLost` at the engine's
//! next step and writes nothing after: no snapshot record, no deletion (docs/GC.md, "Lease
//! objects"). Lease objects over the in-memory backend, with lease times shortened from
//! minutes to milliseconds.

// The helpers unwrap: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use cairn_store::{
    Backend, BackendError, BackendErrorKind, Error, FileKind, GcOptions, InitOptions, LeaseTiming, Location, Locks,
    MemoryBackend, Modes, NoProgress, ObjectInfo, ObjectLocks, OpenOptions, Repo, RestoreOptions, ScrubOptions,
    SnapshotOptions, StateDir, Storage,
};

/// Memory whose first pack upload, once armed, takes 300 ms, during which (and after which)
/// lease renewals fail: a store that became unreachable for leases while a put was in flight.
#[derive(Default)]
struct Outage {
    inner: MemoryBackend,
    armed: AtomicBool,
    leases_fail: AtomicBool,
}

impl Backend for Outage {
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> cairn_store::Result<()> {
        if kind == FileKind::SessionLease && self.leases_fail.load(Ordering::SeqCst) {
            return Err(BackendError::new(BackendErrorKind::Transient, "leases", "connection refused").into());
        }
        if kind == FileKind::Pack && self.armed.swap(false, Ordering::SeqCst) {
            self.leases_fail.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
        }
        self.inner.put(kind, name, data)
    }
    fn get(&self, kind: FileKind, name: &str) -> cairn_store::Result<Vec<u8>> {
        self.inner.get(kind, name)
    }
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> cairn_store::Result<Vec<u8>> {
        self.inner.get_range(kind, name, offset, len)
    }
    fn size(&self, kind: FileKind, name: &str) -> cairn_store::Result<u64> {
        self.inner.size(kind, name)
    }
    fn list(&self, kind: FileKind) -> cairn_store::Result<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }
    fn remove(&self, kind: FileKind, name: &str) -> cairn_store::Result<()> {
        self.inner.remove(kind, name)
    }
}

/// Lease times: renewed every `heartbeat`, lost after `give_up`, stale after `stale`.
fn timing(heartbeat_ms: u64, give_up_ms: u64, stale_ms: u64) -> LeaseTiming {
    let mut t = LeaseTiming::default();
    t.heartbeat = Duration::from_millis(heartbeat_ms);
    t.give_up_after = Duration::from_millis(give_up_ms);
    t.stale_after = Duration::from_millis(stale_ms);
    t.gc_settle = Duration::from_millis(10);
    t.min_condemned_age = Duration::ZERO;
    t
}

/// The repository's state in `scratch`, its objects and leases in `backend`.
fn storage(scratch: &Path, backend: &Arc<dyn Backend>, timing: LeaseTiming) -> Storage {
    let state = scratch.join("state");
    let locks: Arc<dyn Locks> = Arc::new(ObjectLocks::with_timing(Arc::clone(backend), timing));
    Storage::new(
        Arc::clone(backend),
        StateDir::new(&state, &state.join("index.lock"), Modes::private()),
        locks,
        Location::local(scratch.join("elsewhere")),
    )
}

/// Six files of 600 KiB of noise under `root/name`: several 1 MiB packs.
fn source(root: &Path, name: &str, seed: u64) -> PathBuf {
    let src = root.join(name);
    fs::create_dir_all(&src).unwrap();
    let mut x = seed | 1;
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), common::noise(&mut x, 600 << 10)).unwrap();
    }
    src
}

fn init(storage: Storage) -> Repo {
    let mut opts = InitOptions::default();
    opts.pack_size = 1 << 20;
    Repo::init_storage(storage, &opts).unwrap()
}

fn restores(repo: &Repo, src: &Path, target: &Path) {
    let snap = repo.resolve("latest").unwrap();
    let mut opts = RestoreOptions::default();
    opts.target = target.to_path_buf();
    let report = repo.restore(&snap, &opts, &NoProgress).unwrap();
    assert!(!report.is_incomplete(), "{report:?}");
    let restored = target.join(src.strip_prefix("/").unwrap());
    for i in 0..6 {
        let name = format!("f{i}");
        assert_eq!(fs::read(restored.join(&name)).unwrap(), fs::read(src.join(&name)).unwrap(), "{name}");
    }
    let mut scrub = ScrubOptions::default();
    scrub.read_data = true;
    let scrubbed = repo.scrub(&scrub, &NoProgress).unwrap();
    assert!(scrubbed.clean, "{:?}", scrubbed.damage);
}

#[test]
fn a_snapshot_that_loses_its_lease_stops_with_an_error_and_writes_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), "src", 7);
    let outage = Arc::new(Outage::default());
    let backend: Arc<dyn Backend> = outage.clone();
    // Renewed every 20 ms, lost after 150 ms without a renewal.
    let repo = init(storage(dir.path(), &backend, timing(20, 150, 10_000)));

    outage.armed.store(true, Ordering::SeqCst);
    let err = repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress).expect_err("lease lost");
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert!(err.to_string().starts_with("lease lost: "), "{err}");
    assert!(backend.list(FileKind::Snapshot).unwrap().is_empty(), "no record after the lease was lost");
    assert!(repo.snapshots().unwrap().is_empty());
    let packs = backend.list(FileKind::Pack).unwrap().len();
    assert!(packs >= 1, "the pack in flight when the lease went was stored");

    // The store answers again: the next run holds a fresh lease, reuses what was stored, and
    // its snapshot restores byte for byte.
    outage.leases_fail.store(false, Ordering::SeqCst);
    let report = repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress).unwrap();
    assert!(report.id.is_some());
    assert!(backend.list(FileKind::Pack).unwrap().len() >= packs);
    restores(&repo, &src, &dir.path().join("out"));
}

#[test]
fn a_gc_that_loses_its_lease_while_it_waits_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (source(dir.path(), "a", 11), source(dir.path(), "b", 13));
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let steady = timing(60_000, 120_000, 300_000);
    let repo = init(storage(dir.path(), &backend, steady.clone()));
    let first = repo.snapshot(&SnapshotOptions::new(vec![a]), &NoProgress).unwrap().id.unwrap();
    repo.snapshot(&SnapshotOptions::new(vec![b.clone()]), &NoProgress).unwrap();
    repo.forget(&[first.parse().unwrap()]).unwrap();
    drop(repo);

    // A session on another machine that started before gc and never renews: gc waits for it
    // until it turns stale (600 ms), and by then gc's own lease (never renewed either: the
    // heartbeat is a minute away) has gone unrenewed past its 300 ms.
    let elsewhere = ObjectLocks::with_timing(Arc::clone(&backend), timing(60_000, 120_000, 600));
    let older = elsewhere.start_session("snapshot").unwrap();
    let repo =
        Repo::open_storage(storage(dir.path(), &backend, timing(60_000, 300, 600)), &OpenOptions::default()).unwrap();
    let packs_before = backend.list(FileKind::Pack).unwrap();
    let mut gc = GcOptions::default();
    gc.max_wait = Duration::from_secs(20);
    let err = repo.gc(&gc, &NoProgress).expect_err("lease lost");
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(backend.list(FileKind::Pack).unwrap(), packs_before, "nothing deleted after the lease was lost");
    drop((older, repo));

    // A gc that keeps its lease finishes the job, and what is left restores.
    let repo = Repo::open_storage(storage(dir.path(), &backend, steady), &OpenOptions::default()).unwrap();
    let report = repo.gc(&GcOptions::default(), &NoProgress).unwrap();
    assert!(report.packs_deleted > 0, "{report:?}");
    restores(&repo, &b, &dir.path().join("out"));
}
