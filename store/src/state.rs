//! The local state of a repository: everything this machine keeps about it that can be
//! rebuilt from the stored objects (invariant 3). That is the SQLite index (and its WAL and
//! blob filter), scratch files (gc's and inspect's mark sets, a rebuild in progress), the space
//! reserve, and the hold that `repair index` takes alone while it swaps the index file.
//!
//! For a local repository the state directory is `REPO/index/`, where it has always been, so
//! repositories made by earlier builds open unchanged. For a repository in an object store it
//! is a folder of the user's cache directory named by the repository's ID ([`StateDir::cache_for`]):
//! two locations of one repository share it, two repositories never do. Nothing here is
//! authoritative; losing the folder costs a rebuild, never data.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::backend::Modes;
use crate::error::{Error, Result};
use crate::lock::Locks;

/// Where a repository's local state lives.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// The file whose `flock` says who uses the index (see [`IndexUse`]).
    hold: PathBuf,
    modes: Modes,
}

/// A hold on the index: shared by every open repository, exclusive for `repair index`, which
/// replaces the index file (and removes its WAL) under every connection; a process that had it
/// open across the swap would read or write a WAL that no longer belongs to the file. Released
/// when dropped or when the process dies.
pub struct IndexUse {
    _file: File,
}

impl StateDir {
    /// State kept in `dir`, the index hold taken on `hold`, files made with `modes`.
    #[must_use]
    pub fn new(dir: &Path, hold: &Path, modes: Modes) -> Self {
        Self { dir: dir.to_path_buf(), hold: hold.to_path_buf(), modes }
    }

    /// The state of the repository with ID `repo_id` under the user's cache directory
    /// (`$XDG_CACHE_HOME/cairn/<repo_id>`, else `~/.cache/cairn/<repo_id>`): for repositories
    /// whose objects are not on this machine's filesystem.
    pub fn cache_for(repo_id: &str) -> Result<Self> {
        if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!("{repo_id:?} is not a repository ID")));
        }
        let base = cache_base(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
            .ok_or_else(|| Error::InvalidInput("no cache directory known for this user (set $HOME)".into()))?;
        let dir = base.join("cairn").join(repo_id);
        Ok(Self::new(&dir, &dir.join("index.lock"), Modes::private()))
    }

    /// The folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The modes the repository's files are made with (the state follows them).
    pub(crate) fn modes(&self) -> Modes {
        self.modes
    }

    /// Makes the folder when missing.
    pub(crate) fn create(&self) -> Result<()> {
        crate::backend::create_dir_with(&self.dir, self.modes)
    }

    /// The SQLite index.
    pub(crate) fn index_path(&self) -> PathBuf {
        self.dir.join("index.sqlite")
    }

    /// Where an index being rebuilt is written before it replaces the index.
    pub(crate) fn rebuild_path(&self) -> PathBuf {
        self.dir.join("index.sqlite.rebuild")
    }

    /// A scratch file named `name` (mark sets): in the state folder, or in the system's
    /// temporary folder when the repository is open read-only.
    pub(crate) fn scratch(&self, name: &str, read_only: bool) -> PathBuf {
        if read_only {
            std::env::temp_dir().join(name)
        } else {
            self.dir.join(name)
        }
    }

    /// Whole tree packs of a remote repository (treecache.rs).
    pub(crate) fn trees_dir(&self) -> PathBuf {
        self.dir.join("trees")
    }

    /// The space reserve (reserve.rs).
    pub(crate) fn reserve_path(&self) -> PathBuf {
        self.dir.join("reserve")
    }

    /// The bytes the index's files take.
    pub(crate) fn index_size(&self) -> u64 {
        ["index.sqlite", "index.sqlite-wal"]
            .iter()
            .map(|name| fs::metadata(self.dir.join(name)).map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Puts the index built at `rebuild_path` in force. The old index's WAL must never be
    /// applied to the new file, so it goes first; the new index's blob filter comes along (its
    /// token is in the new index; were it missing, the next writer would build one).
    pub(crate) fn swap_in_rebuilt(&self) -> Result<()> {
        let (fresh, live) = (self.rebuild_path(), self.index_path());
        for suffix in ["-wal", "-shm", "-filter"] {
            remove_file_if_any(&with_suffix(&live, suffix))?;
        }
        fs::rename(&fresh, &live).map_err(|e| Error::io(&live, e))?;
        let _ = fs::rename(with_suffix(&fresh, "-filter"), with_suffix(&live, "-filter"));
        crate::backend::sync_dir(&self.dir)
    }

    fn hold_file(&self) -> Option<File> {
        let created = self
            .hold
            .parent()
            .map_or(Ok(()), |p| crate::backend::create_dir_with(p, self.modes))
            .and_then(|()| crate::lock::lock_file(&self.hold, self.modes))
            .ok();
        // A repository this user cannot write (read-only media) cannot be repaired either: its
        // readers need no hold when the file cannot be made.
        created.or_else(|| File::open(&self.hold).ok())
    }

    /// Takes the shared hold of an open repository; refuses while `repair index` runs.
    pub(crate) fn share_index(&self) -> Result<Option<IndexUse>> {
        let Some(file) = self.hold_file() else { return Ok(None) };
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(IndexUse { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy {
                reason: "`cairn repair index` is rebuilding this repository's index; try again when it has finished"
                    .into(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&self.hold, e)),
        }
    }

    /// Takes the hold alone, for `repair index`; refuses while any other command has the
    /// repository open, naming the sessions `locks` can see.
    pub(crate) fn own_index(&self, locks: &dyn Locks) -> Result<IndexUse> {
        let file = self
            .hold_file()
            .ok_or_else(|| Error::io(&self.hold, std::io::Error::from(std::io::ErrorKind::PermissionDenied)))?;
        match file.try_lock() {
            Ok(()) => Ok(IndexUse { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                let who: Vec<String> =
                    locks.live_sessions()?.iter().map(|s| format!("{} (pid {})", s.kind, s.pid)).collect();
                let who = if who.is_empty() { "another cairn command".to_owned() } else { who.join(", ") };
                Err(Error::Busy {
                    reason: format!(
                        "{who} has this repository open; `repair index` replaces the index and needs it alone: \
                         try again when it has finished"
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&self.hold, e)),
        }
    }
}

/// The user's cache directory as the XDG base-directory rules say: `$XDG_CACHE_HOME` when it
/// is an absolute path (a relative one is to be ignored), else `$HOME/.cache`.
fn cache_base(xdg: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> Option<PathBuf> {
    xdg.map(PathBuf::from).filter(|p| p.is_absolute()).or_else(|| home.map(|h| PathBuf::from(h).join(".cache")))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

fn remove_file_if_any(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Removes an index database and its WAL, shared-memory and filter files.
pub(crate) fn remove_db(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-filter"] {
        remove_file_if_any(&with_suffix(path, suffix))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_repository_keeps_its_state_in_the_users_cache_by_its_id() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(cache_base(os("/xdg"), os("/home/u")), Some(PathBuf::from("/xdg")));
        assert_eq!(cache_base(os("relative"), os("/home/u")), Some(PathBuf::from("/home/u/.cache")));
        assert_eq!(cache_base(None, os("/home/u")), Some(PathBuf::from("/home/u/.cache")));
        assert_eq!(cache_base(None, None), None);
        // An ID is never a path: nothing but hex digits becomes a folder name.
        for bad in ["", "../etc", "ab/cd", "zz"] {
            assert!(StateDir::cache_for(bad).is_err(), "{bad:?}");
        }
        if std::env::var_os("HOME").is_some() {
            let state = StateDir::cache_for("0123abcd").unwrap();
            assert!(state.dir().ends_with("cairn/0123abcd") && state.index_path().starts_with(state.dir()));
        }
    }
}
