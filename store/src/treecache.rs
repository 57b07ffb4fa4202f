//! Tree packs of a remote repository, kept whole in its local state (`STATE/trees/<pack hex>`).
//!
//! Every snapshot reads its parent's trees (that is how it knows what did not change), and
//! restore, `ls`, `diff`, `find` and scrub walk trees: one small frame each, spread over the
//! tree packs of the snapshots that wrote them. From an object store each would be a request
//! (the no-change snapshot of the 30,000-file benchmark tree made 30 of them even with 2 MiB
//! read-ahead). Instead a tree pack is fetched whole the first time one of its trees is read (one
//! request), checked against its name and kept; the tree packs a snapshot uploads are kept as
//! they are written, so the next snapshot reads none. Tree packs hold no file content: they
//! are a few percent of a repository (chunk lists are most of a tree).
//!
//! It is a cache like the rest of the state: a copy's frames are checked against their IDs on
//! every read, as frames from the store are; a copy that fails is removed and the frame read
//! from the store (which then says whether the pack itself is damaged); copies of packs the
//! index no longer names (gc deleted them) are removed when the repository is opened.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::index::BlobLocation;
use crate::workers::lock;

/// Whole tree packs in a folder of the local state.
pub(crate) struct TreeCache {
    dir: PathBuf,
    /// Packs being fetched: a second reader of one waits for the first instead of fetching
    /// it again.
    fetching: Mutex<HashSet<PackId>>,
    fetched: Condvar,
}

/// Names temporaries uniquely within this process (the pid tells processes apart).
static TEMP: AtomicU64 = AtomicU64::new(0);

impl TreeCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir, fetching: Mutex::default(), fetched: Condvar::new() }
    }

    fn path(&self, pack: PackId) -> PathBuf {
        self.dir.join(pack.to_hex())
    }

    /// The frame's stored bytes from the copy of its pack, if there is one and it is long
    /// enough.
    fn read_copy(&self, loc: &BlobLocation) -> Option<Vec<u8>> {
        let file = File::open(self.path(loc.pack)).ok()?;
        let mut buf = vec![0u8; loc.entry.stored_len as usize];
        file.read_exact_at(&mut buf, loc.entry.offset).ok()?;
        Some(buf)
    }

    /// The stored bytes of a tree's frame: from the copy of its pack, which is fetched whole
    /// from `backend` (and kept) when there is none.
    pub(crate) fn frame(&self, backend: &dyn Backend, loc: &BlobLocation) -> Result<Vec<u8>> {
        if let Some(bytes) = self.read_copy(loc) {
            return Ok(bytes);
        }
        {
            let mut fetching = lock(&self.fetching);
            while fetching.contains(&loc.pack) {
                fetching = self.fetched.wait(fetching).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if let Some(bytes) = self.read_copy(loc) {
                return Ok(bytes); // another thread fetched it meanwhile
            }
            fetching.insert(loc.pack);
        }
        let fetched = backend.get(FileKind::Pack, &loc.pack.to_hex());
        if let Ok(bytes) = &fetched {
            // A pack that is not what its name says is not kept: reading its frame from it
            // says what is wrong, as a read from the store would.
            if PackId::of(bytes) == loc.pack {
                if let Err(e) = self.keep_copy(loc.pack, bytes) {
                    log::debug!("tree pack {} not kept in {}: {e}", loc.pack, self.dir.display());
                }
            }
        }
        lock(&self.fetching).remove(&loc.pack);
        self.fetched.notify_all();
        let bytes = fetched?;
        let start = usize::try_from(loc.entry.offset).unwrap_or(usize::MAX);
        bytes.get(start..start.saturating_add(loc.entry.stored_len as usize)).map(<[u8]>::to_vec).ok_or_else(|| {
            Error::corrupt(
                format!("pack {}", loc.pack),
                format!("{} bytes at offset {start} asked, the pack has {}", loc.entry.stored_len, bytes.len()),
            )
        })
    }

    /// Keeps a tree pack this process just stored (best effort: a copy that cannot be written
    /// is fetched when it is needed).
    pub(crate) fn keep(&self, pack: PackId, bytes: &[u8]) {
        if let Err(e) = self.keep_copy(pack, bytes) {
            log::debug!("tree pack {pack} not kept in {}: {e}", self.dir.display());
        }
    }

    fn keep_copy(&self, pack: PackId, bytes: &[u8]) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{pack}.{}.{}.tmp", std::process::id(), TEMP.fetch_add(1, Ordering::Relaxed)));
        let written =
            File::create(&tmp).and_then(|mut f| f.write_all(bytes)).and_then(|()| fs::rename(&tmp, self.path(pack)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Removes the copy of `pack` (it failed a check).
    pub(crate) fn forget(&self, pack: PackId) {
        let _ = fs::remove_file(self.path(pack));
    }

    /// Removes the copies of packs `indexed` says the index no longer names, and leftover
    /// temporaries of processes that died writing one.
    pub(crate) fn prune(&self, indexed: &dyn Fn(PackId) -> bool) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let keep = match name.parse::<PackId>() {
                Ok(pack) => indexed(pack),
                // A temporary: kept while young, its writer may still be at it.
                Err(_) => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < std::time::Duration::from_secs(3600))),
            };
            if !keep {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::backend::{FaultPlan, FaultyBackend, Location, MemoryBackend, Modes, S3Location, Storage};
    use crate::lock::ObjectLocks;
    use crate::state::StateDir;
    use crate::{InitOptions, NoProgress, OpenOptions, Repo, SnapshotOptions};

    /// A repository that behaves as a remote one (its location is a bucket), its objects in
    /// memory behind a backend that counts calls.
    fn remote(state: &Path, backend: &Arc<FaultyBackend>) -> Storage {
        let location = Location::S3(S3Location::parse("http://127.0.0.1:9/bucket/repo").expect("location"));
        let modes = Modes::private();
        let state = StateDir::new(state, &state.join("hold"), modes);
        Storage::new(backend.clone(), state, Arc::new(ObjectLocks::new(backend.clone())), location)
    }

    #[test]
    fn a_no_change_snapshot_reads_its_parents_trees_from_the_copies_its_parent_kept() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        for d in 0..20 {
            let sub = src.join(format!("d{d}/e{}", d % 3));
            fs::create_dir_all(&sub).expect("mkdir");
            fs::write(sub.join("f"), format!("file {d}")).expect("write");
        }
        let memory = Arc::new(MemoryBackend::default());
        let backend = Arc::new(FaultyBackend::new(memory.clone(), FaultPlan::new()));
        let state = dir.path().join("state");
        let repo = Repo::init_storage(remote(&state, &backend), &InitOptions::default())?;
        repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress)?;
        let copies: Vec<_> = fs::read_dir(state.join("trees")).expect("kept").collect();
        assert_eq!(copies.len(), 1, "the one tree pack the snapshot wrote is kept");
        drop(repo);

        // The next snapshot (a new process) reads every tree of its parent, and none from the
        // store.
        let repo = Repo::open_storage(remote(&state, &backend), &OpenOptions::default())?;
        let calls = backend.calls();
        let report = repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress)?;
        assert_eq!(report.totals.files_new + report.totals.files_changed, 0, "{report:?}");
        let used = backend.calls() - calls;

        // Without the copies, the same snapshot reads its parent's trees from the store.
        fs::remove_dir_all(state.join("trees")).expect("rm");
        let calls = backend.calls();
        repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress)?;
        let fetched = backend.calls() - calls;
        assert_eq!(fetched, used + 1, "one more call: the tree pack, fetched whole once ({used} vs {fetched})");
        assert_eq!(fs::read_dir(state.join("trees")).expect("kept again").count(), 1);

        // A damaged copy is dropped and the tree read from the store: nothing is reported.
        let copy = fs::read_dir(state.join("trees")).expect("dir").next().expect("copy").expect("entry").path();
        let mut bytes = fs::read(&copy).expect("read");
        for b in &mut bytes[100..200] {
            *b ^= 0x55;
        }
        fs::write(&copy, &bytes).expect("damage");
        let report = repo.snapshot(&SnapshotOptions::new(vec![src]), &NoProgress)?;
        assert!(report.warnings.is_empty(), "{report:?}");
        assert!(repo.scrub(&crate::ScrubOptions::default(), &NoProgress)?.clean);

        // Copies of packs the index no longer names go when the repository is opened.
        drop(repo);
        let stale = state.join("trees").join("ab".repeat(32));
        fs::write(&stale, b"a pack gc deleted").expect("write");
        let _repo = Repo::open_storage(remote(&state, &backend), &OpenOptions::default())?;
        assert!(!stale.exists());
        assert!(copy.exists() || fs::read_dir(state.join("trees")).expect("dir").count() == 1);
        Ok(())
    }
}
