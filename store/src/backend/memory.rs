//! An in-memory backend for tests. `put` is atomic: a file exists whole or not at all, so it
//! leaves no temporaries behind (tests that need a leftover of an interrupted write make one
//! with [`MemoryBackend::leave_temporary`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{epoch_ns, is_id_name, not_found, Backend, FileKind, ObjectInfo};
use crate::error::{Error, Result};

/// A stored file: its bytes and when it was put (ns since the Unix epoch).
struct Stored {
    data: Vec<u8>,
    modified: Option<i64>,
}

/// Files in a map.
#[derive(Default)]
pub struct MemoryBackend {
    files: Mutex<BTreeMap<(u8, String), Stored>>,
    temporaries: Mutex<BTreeMap<String, Stored>>,
}

fn key(kind: FileKind, name: &str) -> (u8, String) {
    let k = match kind {
        FileKind::Config => 0,
        FileKind::Pack => 1,
        FileKind::Snapshot => 2,
        FileKind::Tombstone => 3,
        FileKind::Quarantine => 4,
        FileKind::SessionLease => 5,
        FileKind::GcLease => 6,
        FileKind::Condemned => 7,
        FileKind::Key => 8,
    };
    (k, name.to_owned())
}

fn missing(kind: FileKind, name: &str) -> Error {
    not_found(kind, name, name)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryBackend {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<(u8, String), Stored>) -> T) -> T {
        f(&mut lock(&self.files))
    }

    /// Leaves a temporary as a write interrupted by a crash would, last written at
    /// `modified_ns` (ns since the Unix epoch): what `temporaries` then lists.
    pub fn leave_temporary(&self, name: &str, data: &[u8], modified_ns: i64) {
        lock(&self.temporaries).insert(name.to_owned(), Stored { data: data.to_vec(), modified: Some(modified_ns) });
    }
}

impl Backend for MemoryBackend {
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let stored = Stored { data: data.to_vec(), modified: epoch_ns(SystemTime::now()) };
        self.with(|m| {
            // Content-addressed, as on disk: an existing name keeps its bytes (and its time).
            if kind == FileKind::Config || !m.contains_key(&key(kind, name)) {
                m.insert(key(kind, name), stored);
            }
        });
        Ok(())
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.with(|m| m.get(&key(kind, name)).map(|s| s.data.clone())).ok_or_else(|| missing(kind, name))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.with(|m| {
            let data = &m.get(&key(kind, name)).ok_or_else(|| missing(kind, name))?.data;
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            data.get(start..start.saturating_add(len))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::corrupt(name, "short file"))
        })
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.with(|m| m.get(&key(kind, name)).map(|s| s.data.len() as u64)).ok_or_else(|| missing(kind, name))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        let k = key(kind, "").0;
        Ok(self.with(|m| {
            m.iter()
                .filter(|((kk, name), _)| *kk == k && is_id_name(name))
                .map(|((_, name), s)| ObjectInfo::new(name.clone(), s.data.len() as u64, s.modified))
                .collect()
        }))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.with(|m| m.remove(&key(kind, name)));
        Ok(())
    }

    fn temporaries(&self) -> Result<Vec<ObjectInfo>> {
        Ok(lock(&self.temporaries)
            .iter()
            .map(|(name, s)| ObjectInfo::new(name.clone(), s.data.len() as u64, s.modified))
            .collect())
    }

    fn remove_temporary(&self, name: &str) -> Result<()> {
        lock(&self.temporaries).remove(name);
        Ok(())
    }
}
