//! Power loss, simulated at the backend: a backend that keeps only the first N writes and
//! silently loses every later one, as a machine that lost power after N durable writes would.
//! For every N, the repository seen afterwards is consistent: every snapshot record that
//! survived names only objects that survived (the record is written last, invariant 1), and the
//! index rebuilds from what is there (invariant 3). The redb `crash_consistency` style.

// The simulated backend and its helpers unwrap: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

mod common;

use cairn_store::{
    Backend, FileKind, InitOptions, Location, MemoryBackend, NoProgress, ObjectInfo, OpenOptions, Repo, Result,
    ScrubOptions, SnapshotOptions, Storage,
};

/// Keeps the first `keep` writes; later ones "succeed" and vanish.
struct LosesLaterWrites {
    inner: Arc<MemoryBackend>,
    keep: usize,
    writes: AtomicUsize,
}

impl Backend for LosesLaterWrites {
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        if self.writes.fetch_add(1, Ordering::SeqCst) < self.keep {
            self.inner.put(kind, name, data)?;
        }
        Ok(())
    }
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.inner.get(kind, name)
    }
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.get_range(kind, name, offset, len)
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }
    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.remove(kind, name)
    }
    fn quarantine(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.quarantine(kind, name)
    }
}

fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut x = 7u64;
    for i in 0..12 {
        let data = common::noise(&mut x, 20_000 + i * 9_000);
        std::fs::write(src.join(if i % 2 == 0 { "sub" } else { "." }).join(format!("f{i}")), data).unwrap();
    }
    src
}

#[test]
fn a_snapshot_cut_off_after_any_number_of_writes_leaves_a_consistent_repository() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    // A config to start from, made by a real init.
    let config = {
        let mut o = InitOptions::default();
        o.pack_size = 64 << 10; // many packs: many cut points
        Repo::init(&Location::local(dir.path().join("template")), &o).unwrap();
        std::fs::read(dir.path().join("template/config")).unwrap()
    };
    let mut total = None;
    let mut n = 0;
    loop {
        let store = Arc::new(MemoryBackend::default());
        store.put(FileKind::Config, "config", &config).unwrap();
        let lossy = Arc::new(LosesLaterWrites { inner: Arc::clone(&store), keep: n, writes: AtomicUsize::new(0) });
        let live = dir.path().join(format!("live-{n}"));
        let repo = Repo::open_storage(Storage::local_with(&live, lossy.clone()), &OpenOptions::default()).unwrap();
        repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress).unwrap();
        let writes = lossy.writes.load(Ordering::SeqCst);
        total.get_or_insert(writes);
        drop(repo);

        // After the power loss: a fresh machine sees only what was kept (and no index).
        let after = Repo::open_storage(
            Storage::local_with(&dir.path().join(format!("after-{n}")), store.clone()),
            &OpenOptions::default(),
        )
        .unwrap();
        let snaps = after.snapshots().unwrap();
        assert!(snaps.len() <= 1);
        if n >= writes {
            assert_eq!(snaps.len(), 1, "every write kept: the snapshot exists");
        }
        let report = after.scrub(&ScrubOptions::default(), &NoProgress).unwrap();
        assert!(report.clean, "cut after {n} of {writes} writes: {:?}", report.damage);
        if n >= total.unwrap_or(0) {
            break;
        }
        n += 1;
    }
    assert!(total.unwrap() >= 5, "the snapshot wrote {total:?} files: too few cut points to mean anything");
}
