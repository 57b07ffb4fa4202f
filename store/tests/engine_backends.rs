//! The engine over backends other than the local folder: what the end-to-end tests do through
//! the binary (snapshot, incremental snapshot, restore, scrub, forget, gc, repair), done here
//! through the library on an in-memory backend, so that nothing in the engine leans on the
//! repository being a local folder. The state (index) and locks live in a scratch folder, as
//! they will for a repository in an object store.

// The helpers unwrap: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use cairn_store::{
    Backend, FaultPlan, FaultyBackend, FileKind, FlockLocks, GcOptions, Hold, InitOptions, Location, Locks,
    MemoryBackend, Modes, NoProgress, OpenOptions, PackId, Repo, RestoreOptions, RetryBackend, ScrubOptions,
    SessionInfo, SnapshotKind, SnapshotOptions, StateDir, Storage,
};

/// A backend under test, with a name for failure messages.
type Make = (&'static str, fn() -> Arc<dyn Backend>);

fn backends() -> Vec<Make> {
    vec![("memory", || Arc::new(MemoryBackend::default())), ("memory with faults, retried", faulty_memory)]
}

/// Memory as a remote store behaves: slow, with a transient failure on one call in five and a
/// lost response (done, but answered with a failure) on one in seven, behind the retry
/// wrapper. The engine must come through all of it as if nothing happened.
fn faulty_memory() -> Arc<dyn Backend> {
    let mut plan = FaultPlan::new();
    plan.latency = Duration::from_micros(100);
    plan.transient_every = Some(5);
    plan.lose_response_every = Some(7);
    let faulty = FaultyBackend::new(Arc::new(MemoryBackend::default()), plan);
    Arc::new(RetryBackend::new(Arc::new(faulty), 12, Duration::from_millis(1)))
}

/// State and locks of the repository in `scratch`, objects in `backend`.
fn storage(scratch: &Path, backend: &Arc<dyn Backend>) -> Storage {
    let state = scratch.join("state");
    Storage::new(
        Arc::clone(backend),
        StateDir::new(&state, &state.join("index.lock"), Modes::private()),
        Arc::new(FlockLocks::new(&scratch.join("locks"), Modes::private())),
        // Named for messages only: nothing is stored under it.
        Location::local(scratch.join("elsewhere")),
    )
}

/// A tree with small and large files (several chunks, several packs), a subfolder, an empty
/// folder, a symlink and distinct modes.
fn source(root: &Path) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("etc/app")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..24u64 {
        let len = if i % 6 == 0 { 3 << 20 } else { 1 + i as usize * 977 };
        let data = common::noise(&mut x, len);
        let path = src.join(if i % 3 == 0 { "etc/app" } else { "." }).join(format!("f{i}"));
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(if i % 2 == 0 { 0o640 } else { 0o755 })).unwrap();
    }
    std::os::unix::fs::symlink("etc/app/f0", src.join("link")).unwrap();
    src
}

/// Every entry under `root`: kind, mode, size, mtime, contents or link target.
fn describe(root: &Path) -> BTreeMap<PathBuf, (String, u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let (kind, body) = if meta.is_symlink() {
                ("link", fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes())
            } else if meta.is_dir() {
                stack.push(path.clone());
                ("dir", Vec::new())
            } else {
                ("file", fs::read(&path).unwrap())
            };
            let mtime = if meta.is_dir() { 0 } else { meta.mtime() }; // a folder's changes as it is filled
            out.insert(rel, (kind.to_owned(), meta.mode(), mtime, body));
        }
    }
    out
}

fn restore_latest(repo: &Repo, target: &Path) -> PathBuf {
    let snap = repo.resolve("latest").unwrap();
    let mut opts = RestoreOptions::default();
    opts.target = target.to_path_buf();
    let report = repo.restore(&snap, &opts, &NoProgress).unwrap();
    assert!(!report.is_incomplete(), "{report:?}");
    target.to_path_buf()
}

fn assert_clean(repo: &Repo, name: &str) {
    let mut opts = ScrubOptions::default();
    opts.read_data = true;
    let report = repo.scrub(&opts, &NoProgress).unwrap();
    assert!(report.clean, "{name}: {:?}", report.damage);
}

#[test]
fn snapshot_restore_scrub_gc_and_repair_run_over_every_backend() {
    for (name, make) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let backend = make();
        let mut init = InitOptions::default();
        init.pack_size = 1 << 20; // several packs, so that gc has some to judge
        let repo = Repo::init_storage(storage(dir.path(), &backend), &init).unwrap();
        let first = repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress).unwrap();
        assert_eq!(first.totals.files, 24, "{name}");

        // A change, then an incremental snapshot that stores only it.
        fs::write(src.join("f1"), b"changed\n").unwrap();
        fs::remove_file(src.join("f2")).unwrap();
        let second = repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress).unwrap();
        let t = &second.totals;
        assert!(t.files == 23 && t.files_changed == 1 && t.data_added < 64 << 10, "{name}: {t:?}");
        assert!(backend.list(FileKind::Pack).unwrap().len() >= 3, "{name}");

        let out = restore_latest(&repo, &dir.path().join("out"));
        let restored = out.join(src.strip_prefix("/").unwrap());
        assert_eq!(describe(&restored), describe(&src), "{name}: restored tree differs");
        assert_clean(&repo, name);
        drop(repo);

        // Opened again from the objects alone: a lost state folder is rebuilt from them.
        fs::remove_dir_all(dir.path().join("state")).unwrap();
        let repo = Repo::open_storage(storage(dir.path(), &backend), &OpenOptions::default()).unwrap();
        assert_eq!(repo.snapshots().unwrap().len(), 2, "{name}");

        // Forget the first snapshot and collect: the big files it alone held were changed
        // only in small ones, so gc frees little, but it must delete nothing still needed.
        let oldest = repo.snapshots().unwrap()[0].id;
        repo.forget(&[oldest]).unwrap();
        let mut gc = GcOptions::default();
        gc.max_unused = 0.0;
        let report = repo.gc(&gc, &NoProgress).unwrap();
        assert!(report.packs_repacked + report.packs_unused >= 1, "{name}: {report:?}");
        assert_clean(&repo, name);
        let again = restore_latest(&repo, &dir.path().join("out2"));
        assert_eq!(describe(&again.join(src.strip_prefix("/").unwrap())), describe(&src), "{name}: after gc");
        drop(repo);

        // And the index rebuilt by repair verifies every pack it reads.
        let (repo, report) =
            Repo::repair_index_storage(storage(dir.path(), &backend), &Default::default(), &NoProgress).unwrap();
        assert!(report.complete(), "{name}: {report:?}");
        assert_eq!(repo.snapshots().unwrap().len(), 1, "{name}");
        assert_clean(&repo, name);
        assert!(!dir.path().join("elsewhere").exists(), "{name}: the engine wrote beside its backend");
    }
}

/// Flock locks that also play the part of a collector on another machine: what gc publishes is
/// recorded, and what `elsewhere` holds is handed to writers as published condemnations.
struct Published {
    inner: FlockLocks,
    recorded: Mutex<Vec<(PackId, i64)>>,
    elsewhere: Mutex<Vec<(PackId, i64)>>,
}

impl Locks for Published {
    fn start_session(&self, kind: &str) -> cairn_store::Result<Hold> {
        self.inner.start_session(kind)
    }
    fn live_sessions(&self) -> cairn_store::Result<Vec<SessionInfo>> {
        self.inner.live_sessions()
    }
    fn gc_lock(&self, what: &str) -> cairn_store::Result<Hold> {
        self.inner.gc_lock(what)
    }
    fn publish_condemned(&self, packs: &[(PackId, i64)]) -> cairn_store::Result<()> {
        self.recorded.lock().unwrap().extend_from_slice(packs);
        Ok(())
    }
    fn published_condemned(&self) -> cairn_store::Result<Vec<(PackId, i64)>> {
        Ok(self.elsewhere.lock().unwrap().clone())
    }
}

#[test]
fn condemnations_go_through_the_locks_seam_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let locks = Arc::new(Published {
        inner: FlockLocks::new(&dir.path().join("locks"), Modes::private()),
        recorded: Mutex::new(Vec::new()),
        elsewhere: Mutex::new(Vec::new()),
    });
    let mut parts = storage(dir.path(), &backend);
    parts.locks = locks.clone();
    let repo = Repo::init_storage(parts, &InitOptions::default()).unwrap();
    let full = || {
        let mut o = SnapshotOptions::new(vec![src.clone()]);
        o.kind = SnapshotKind::Full; // every byte read again, every chunk looked up
        repo.snapshot(&o, &NoProgress).unwrap().totals
    };
    // Chunks of 24 files, against at most the 7 trees of the folders on the way (those above
    // the source may change meanwhile: other tests make their folders in the same /tmp).
    let (chunks_at_least, trees_at_most) = (24, 7);
    assert!(full().blobs_new >= chunks_at_least);
    assert!(full().blobs_new <= trees_at_most, "unchanged data deduplicates");

    // A collector elsewhere condemned every pack: a writer starting now stores fresh copies
    // rather than lean on packs that may be gone before it commits.
    let packs: Vec<(PackId, i64)> =
        backend.list(FileKind::Pack).unwrap().iter().map(|o| (o.name.parse().unwrap(), 1)).collect();
    *locks.elsewhere.lock().unwrap() = packs;
    assert!(full().blobs_new >= chunks_at_least, "a published condemnation stops deduplication");
    locks.elsewhere.lock().unwrap().clear();

    // And this machine's gc publishes what it condemns, before it waits and deletes.
    let snaps = repo.snapshots().unwrap();
    repo.forget(&snaps[..snaps.len() - 1].iter().map(|s| s.id).collect::<Vec<_>>()).unwrap();
    let report = repo.gc(&GcOptions::default(), &NoProgress).unwrap();
    let recorded = locks.recorded.lock().unwrap().clone();
    assert!(report.packs_deleted > 0 && recorded.len() as u64 >= report.packs_deleted, "{report:?} {recorded:?}");
    assert_clean(&repo, "memory");
}

/// What a snapshot tells its progress: the parent's size as the total (so a terminal shows a
/// bar with an ETA, issue 15 item 12), and a count that reaches it when nothing changed.
#[derive(Default)]
struct Recorded {
    starts: Mutex<Vec<(String, Option<u64>)>>,
    done: std::sync::atomic::AtomicU64,
}

impl cairn_store::Progress for Recorded {
    fn start(&self, phase: &str, len: Option<u64>, _unit: cairn_store::Unit) {
        self.starts.lock().unwrap().push((phase.to_owned(), len));
        self.done.store(0, std::sync::atomic::Ordering::SeqCst);
    }
    fn inc(&self, n: u64) {
        self.done.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_snapshot_with_a_parent_counts_toward_the_parents_size() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let repo = Repo::init_storage(storage(dir.path(), &backend), &InitOptions::default()).unwrap();
    let first = Recorded::default();
    let total = repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &first).unwrap().totals.bytes_total;
    assert_eq!(first.starts.lock().unwrap()[0], ("snapshot".to_owned(), None), "no parent, no total");
    let second = Recorded::default();
    repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &second).unwrap();
    assert_eq!(second.starts.lock().unwrap()[0], ("snapshot".to_owned(), Some(total)));
    assert_eq!(second.done.load(std::sync::atomic::Ordering::SeqCst), total, "unchanged files count as done");
}
