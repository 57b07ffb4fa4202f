//! Where a repository is, and the three things a [`Repo`](crate::Repo) needs to reach it: the
//! [`Backend`] holding its objects, the [`StateDir`] holding this machine's rebuildable state,
//! and the [`Locks`] its processes coordinate through.
//!
//! A local repository keeps all three in one folder, as it always has:
//! `REPO/{config,packs,snapshots,forgotten,tmp}` through [`LocalBackend`], `REPO/index/` as
//! its state, `REPO/locks/` for its `flock`ed sessions and the index hold `REPO/locks/index`.
//! This module is the one place that knows that layout beside local.rs; the engine joins no
//! path under a repository's root.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Backend, FileKind, LocalBackend, Modes, CONFIG_COPY};
use crate::error::{Error, IoContext, Result};
use crate::lock::{FlockLocks, Locks};
use crate::state::StateDir;

/// Where a repository is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A folder on this machine.
    Local(PathBuf),
}

/// Schemes of remote repositories in peers' notation: refused by name rather than taken for a
/// relative folder called `s3:bucket`, which would be created and filled on the local disk.
const REMOTE_SCHEMES: &[&str] = &["s3", "sftp", "rest", "rclone", "b2", "gs", "azure", "swift"];

impl Location {
    /// A local folder.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self::Local(path.into())
    }

    /// Reads a location as a user writes it (`--repo`, `$CAIRN_REPO`): a path, or
    /// `local:<path>`. A remote scheme this build does not support is refused.
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(path) = text.strip_prefix("local:") {
            if path.is_empty() {
                return Err(Error::InvalidInput("`local:` needs a path after it".into()));
            }
            return Ok(Self::local(path));
        }
        if let Some((scheme, _)) = text.split_once(':') {
            if REMOTE_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Err(Error::InvalidInput(format!(
                    "{text:?}: repositories in {scheme} are not supported by this build of cairn \
                     (give a local path, or `local:{text}` for a folder named so)"
                )));
            }
        }
        Ok(Self::local(text))
    }

    /// The folder of a local repository.
    #[must_use]
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
        }
    }

    /// Whether a repository is there (its config, or the config's copy, exists).
    pub fn holds_repository(&self) -> Result<bool> {
        let backend = self.backend();
        for name in ["config", CONFIG_COPY] {
            match backend.size(FileKind::Config, name) {
                Ok(_) => return Ok(true),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    fn backend(&self) -> LocalBackend {
        match self {
            Self::Local(root) => LocalBackend::new(root),
        }
    }

    /// What an existing repository here is reached through.
    pub(crate) fn storage(&self) -> Storage {
        match self {
            Self::Local(root) => Storage::local(root, Modes::of(root), self.clone()),
        }
    }

    /// Makes the place of a new repository (which must not exist, or be an empty folder) and
    /// returns what it is reached through. The config is not written here: a place without it
    /// is not yet a repository.
    pub(crate) fn create(&self, modes: Modes) -> Result<Storage> {
        let Self::Local(path) = self;
        if self.holds_repository()? {
            return Err(Error::InvalidInput(format!("{} is already a cairn repository", path.display())));
        }
        if path.exists() {
            let mut rd = fs::read_dir(path).at(path)?;
            if rd.next().is_some() {
                return Err(Error::NotEmpty(path.clone()));
            }
            // An empty folder given to `init` becomes the repository's root and gets its mode,
            // as a root `init` creates does (a `mkdir` under umask 022 left it 0755). A folder
            // that is not empty is never touched (refused above). One this user does not own
            // (a shared mount point) keeps its mode, with a warning.
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(modes.dir)) {
                log::warn!("{}: cannot set the repository's mode {:o}: {e}", path.display(), modes.dir);
            }
        } else {
            // Parents are made as the umask says (they are the user's directories); the root
            // gets the repository's mode (docs/FORMAT.md), set after creation because the umask
            // may take bits from `DirBuilder::mode` (group-readable under umask 077).
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).at(parent)?;
            }
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            fs::DirBuilder::new().mode(modes.dir).create(path).at(path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(modes.dir)).at(path)?;
        }
        let local = LocalBackend::with_modes(path, modes);
        local.create_layout()?;
        Ok(Storage::local(path, modes, self.clone()))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Written so that it reads back as the same location: a folder whose name looks
            // like a scheme (or starts with `local:`) keeps its `local:`.
            Self::Local(p) => {
                let text = p.display().to_string();
                if Self::parse(&text).ok().as_ref() == Some(self) {
                    f.write_str(&text)
                } else {
                    write!(f, "local:{text}")
                }
            }
        }
    }
}

/// Everything an open repository is reached through.
#[derive(Clone)]
#[non_exhaustive]
pub struct Storage {
    /// Where the objects are.
    pub backend: Arc<dyn Backend>,
    /// Where this machine's state of the repository is.
    pub state: StateDir,
    /// What its processes coordinate through.
    pub locks: Arc<dyn Locks>,
    /// Where it is, for messages (and, when local, to keep a snapshot out of its own repository).
    pub location: Location,
}

impl Storage {
    /// Parts chosen by the caller: a test's in-memory or fault-injecting backend, with state
    /// and locks in a scratch folder.
    pub fn new(backend: Arc<dyn Backend>, state: StateDir, locks: Arc<dyn Locks>, location: Location) -> Self {
        Self { backend, state, locks, location }
    }

    /// A local repository's state and locks in their usual places under `root`, its objects
    /// in `backend` (a test's backend that loses what was not flushed, say).
    pub fn local_with(root: &Path, backend: Arc<dyn Backend>) -> Self {
        let mut storage = Self::local(root, Modes::of(root), Location::local(root));
        storage.backend = backend;
        storage
    }

    fn local(root: &Path, modes: Modes, location: Location) -> Self {
        let locks = root.join("locks");
        Self {
            backend: Arc::new(LocalBackend::with_modes(root, modes)),
            state: StateDir::new(&root.join("index"), &locks.join("index"), modes),
            locks: Arc::new(FlockLocks::new(&locks, modes)),
            location,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_reads_back_as_it_is_written() {
        for text in ["/var/backups/cairn", "relative/repo", "s3:x", "local:y", "a:b", "./s3:z"] {
            let Ok(location) = Location::parse(text) else {
                assert!(text.starts_with("s3:"), "{text} is refused");
                continue;
            };
            assert_eq!(Location::parse(&location.to_string()).unwrap(), location, "{text}");
        }
        assert_eq!(Location::parse("local:s3:x").unwrap().to_string(), "local:s3:x");
        assert_eq!(Location::parse("/srv/repo").unwrap().to_string(), "/srv/repo");
        assert!(Location::parse("local:").is_err());
        assert!(Location::parse("S3:bucket").is_err(), "schemes are refused in any case");
    }
}
