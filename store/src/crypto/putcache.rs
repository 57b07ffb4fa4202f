//! The put cache (docs/ENCRYPTION.md, "Put-only keys"): what a put-only key needs from its
//! last snapshot to take the next one cheaply, kept on this machine because the key cannot
//! read it back from the repository: the snapshot's ID and record, and the plaintext of every
//! tree it names.
//!
//! `STATE/putcache/<group>`, one file per group (the BLAKE3 of host and sorted paths, 32 hex):
//! `"CAIRNPUT" ‖ version u32 ‖ bincode(PutCache) ‖ BLAKE3`, written to a temporary, fsynced
//! and renamed after the snapshot is committed. A missing or damaged file costs one full read
//! of the sources, never correctness: every snapshot stands alone.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::id::{SnapshotId, TreeId};
use crate::record::SnapshotRecord;

const MAGIC: &[u8; 8] = b"CAIRNPUT";
const VERSION: u32 = 1;

/// A put cache file's body.
#[derive(Serialize, Deserialize)]
pub(crate) struct PutCache {
    pub(crate) snapshot: SnapshotId,
    pub(crate) record: SnapshotRecord,
    pub(crate) trees: Vec<(TreeId, Vec<u8>)>,
}

/// The file of the group of `host` and `paths` (sorted, as records keep them).
pub(crate) fn path_for(state_dir: &Path, host: &str, paths: &[Vec<u8>]) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(&codec::encode(&(host, paths)));
    state_dir.join("putcache").join(&h.finalize().to_hex()[..32])
}

/// Reads a group's cache; `None` when there is none or it is damaged (said in the log).
pub(crate) fn load(path: &Path) -> Option<PutCache> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("put cache {}: {e}; every file is read this time", path.display());
            return None;
        }
    };
    let what = format!("put cache {}", path.display());
    match codec::unframe(&what, &bytes, MAGIC, VERSION).and_then(|(_, body)| codec::decode::<PutCache>(&what, body)) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("{e}; every file is read this time");
            None
        }
    }
}

/// Writes a group's cache durably (temporary, fsync, rename, fsync of the folder).
pub(crate) fn store(path: &Path, cache: &PutCache) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let bytes = codec::frame(MAGIC, VERSION, &codec::encode(cache));
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // Plaintext trees of this machine's files: for its owner alone.
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| Error::io(path, e))
}

/// A put-only snapshot in progress: the parent's trees to compare against, and every tree the
/// new snapshot names (new or not), for the next cache.
#[derive(Default)]
pub(crate) struct PutRun {
    parent: HashMap<TreeId, Vec<u8>>,
    made: Mutex<HashMap<TreeId, Vec<u8>>>,
}

impl PutRun {
    pub(crate) fn new(parent: Option<&mut PutCache>) -> Self {
        let parent = parent.map(|c| std::mem::take(&mut c.trees).into_iter().collect()).unwrap_or_default();
        Self { parent, made: Mutex::new(HashMap::new()) }
    }

    /// A tree of the parent, in plaintext.
    pub(crate) fn tree(&self, id: TreeId) -> Option<&[u8]> {
        self.parent.get(&id).map(Vec::as_slice)
    }

    /// Notes a tree the new snapshot names.
    pub(crate) fn keep(&self, id: TreeId, bytes: &[u8]) {
        crate::workers::lock(&self.made).entry(id).or_insert_with(|| bytes.to_vec());
    }

    /// The trees the new snapshot names.
    pub(crate) fn into_trees(self) -> Vec<(TreeId, Vec<u8>)> {
        let mut trees: Vec<_> =
            self.made.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).into_iter().collect();
        trees.sort_by_key(|(id, _)| *id);
        trees
    }
}
