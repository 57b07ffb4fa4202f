//! Where a repository is, and the three things a [`Repo`](crate::Repo) needs to reach it: the
//! [`Backend`] holding its objects, the [`StateDir`] holding this machine's rebuildable state,
//! and the [`Locks`] its processes coordinate through.
//!
//! A local repository keeps all three in one folder, as it always has:
//! `REPO/{config,packs,snapshots,forgotten,tmp}` through [`LocalBackend`], `REPO/index/` as
//! its state, `REPO/locks/` for its `flock`ed sessions and the index hold `REPO/locks/index`.
//! This module is the one place that knows that layout beside local.rs; the engine joins no
//! path under a repository's root.
//!
//! A repository in an S3 bucket (`s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`) keeps its objects
//! in the bucket through [`S3Backend`] (behind [`RetryBackend`]), its state in the user's cache
//! directory keyed by the repository's ID ([`StateDir::cache_for`]), and its locks as lease
//! objects in the bucket ([`ObjectLocks`]), which every machine writing the bucket sees, so gc
//! runs there too (with a 24-hour minimum condemned age; docs/GC.md, docs/S3.md).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Backend, FileKind, LocalBackend, Modes, RetryBackend, S3Backend, S3Location, CONFIG_COPY};
use crate::config::RepoConfig;
use crate::error::{Error, IoContext, Result};
use crate::lock::{FlockLocks, LeaseTiming, Locks, ObjectLocks};
use crate::state::StateDir;

/// Where a repository is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A folder on this machine.
    Local(PathBuf),
    /// A bucket (and a folder in it) of an S3 server.
    S3(S3Location),
}

/// How often an S3 call is tried before its transient error is reported (`CAIRN_S3_ATTEMPTS`
/// changes it), and the first wait (doubling, at most 30 s): about two minutes of a server that
/// stays down, then a clear error (within [`RETRY_BUDGET`](super::RETRY_BUDGET) per call, and
/// about one budget per command: retry.rs).
const S3_ATTEMPTS: u32 = 10;
const S3_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

/// Schemes of remote repositories in peers' notation that this build does not support: refused
/// by name rather than taken for a relative folder called `sftp:host`, which would be created
/// and filled on the local disk.
const REMOTE_SCHEMES: &[&str] = &["sftp", "rest", "rclone", "b2", "gs", "azure", "swift"];

impl Location {
    /// A local folder.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self::Local(path.into())
    }

    /// Reads a location as a user writes it (`--repo`, `$CAIRN_REPO`): a path, `local:<path>`,
    /// or `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`. A remote scheme this build does not
    /// support is refused.
    pub fn parse(text: &str) -> Result<Self> {
        if let Some((scheme, rest)) = text.split_once(':') {
            if scheme.eq_ignore_ascii_case("s3") {
                return Ok(Self::S3(S3Location::parse(rest)?));
            }
        }
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
            Self::S3(_) => None,
        }
    }

    /// True for a repository other machines may write to at the same time (a bucket): its
    /// local index is a cache that must catch up with what they stored.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::S3(_))
    }

    /// Whether a repository is there (its config, or the config's copy, exists).
    pub fn holds_repository(&self) -> Result<bool> {
        holds_repository(self.backend()?.as_ref())
    }

    /// What an existing repository here is reached through, or `None` when there is none.
    /// One backend serves both questions, so that its request counts cover the whole command.
    /// New data packs go to `storage_class` (S3 only; see `backend_with`).
    pub(crate) fn existing_storage_with(&self, storage_class: Option<&str>) -> Result<Option<Storage>> {
        let backend = self.backend_with(storage_class)?;
        if !holds_repository(backend.as_ref())? {
            return Ok(None);
        }
        self.storage_with(backend).map(Some)
    }

    /// The objects alone (for mending a config, which comes before knowing the state's place).
    pub(crate) fn backend(&self) -> Result<Arc<dyn Backend>> {
        self.backend_with(None)
    }

    /// The objects, new data packs going to `storage_class` when they are in S3 (a local
    /// folder has no storage classes: it is ignored there).
    fn backend_with(&self, storage_class: Option<&str>) -> Result<Arc<dyn Backend>> {
        Ok(match self {
            Self::Local(root) => Arc::new(LocalBackend::new(root)),
            Self::S3(s3) => {
                let attempts =
                    std::env::var("CAIRN_S3_ATTEMPTS").ok().and_then(|a| a.parse().ok()).unwrap_or(S3_ATTEMPTS);
                let s3 = S3Backend::from_env(s3)?.with_storage_class(storage_class)?;
                Arc::new(RetryBackend::new(Arc::new(s3), attempts, S3_BACKOFF))
            }
        })
    }

    /// What an existing repository here is reached through. For a repository in a bucket that
    /// reads its config first: the local state's place is named by the repository's ID.
    pub(crate) fn storage(&self) -> Result<Storage> {
        self.storage_with(self.backend()?)
    }

    /// `storage` through `backend` (this location's, from [`Location::backend`]).
    fn storage_with(&self, backend: Arc<dyn Backend>) -> Result<Storage> {
        match self {
            Self::Local(root) => Ok(Storage::local(root, Modes::of(root), self.clone())),
            Self::S3(_) => {
                let read = |name: &str| backend.get(FileKind::Config, name).and_then(|b| RepoConfig::decode(&b));
                let config = match read("config") {
                    Ok(c) => c,
                    // The damaged or missing main copy is reported and mended by the opening.
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => read(CONFIG_COPY).map_err(|_| e)?,
                };
                Ok(Storage::cached(backend, &config.repo_id, self.clone())?)
            }
        }
    }

    /// Makes the place of a new repository (which must not exist, or be an empty folder) and
    /// returns what it is reached through. The config is not written here: a place without it
    /// is not yet a repository.
    pub(crate) fn create(&self, modes: Modes, repo_id: &str) -> Result<Storage> {
        let path = match self {
            Self::Local(path) => path,
            Self::S3(_) => {
                let backend = self.backend()?;
                if holds_repository(backend.as_ref())? {
                    return Err(Error::InvalidInput(format!("{self} is already a cairn repository")));
                }
                for kind in [FileKind::Pack, FileKind::Snapshot] {
                    if !backend.list(kind)?.is_empty() {
                        return Err(Error::InvalidInput(format!(
                            "{self} holds {} but no config; refusing to initialise it",
                            super::folder(kind).unwrap_or("objects")
                        )));
                    }
                }
                return Storage::cached(backend, repo_id, self.clone());
            }
        };
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

/// Whether `backend` holds a repository (its config, or the config's copy, exists).
fn holds_repository(backend: &dyn Backend) -> Result<bool> {
    for name in ["config", CONFIG_COPY] {
        match backend.size(FileKind::Config, name) {
            Ok(_) => return Ok(true),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
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
            Self::S3(s3) => s3.fmt(f),
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

    /// A repository whose objects are elsewhere: its state in the user's cache directory,
    /// keyed by the repository's ID, and its locks as lease objects beside the objects
    /// ([`ObjectLocks`]), seen by every machine.
    fn cached(backend: Arc<dyn Backend>, repo_id: &str, location: Location) -> Result<Self> {
        let state = StateDir::cache_for(repo_id)?;
        let mut timing = LeaseTiming::default();
        // For tests of gc on a real bucket only: the 24 hours are what keeps a stalled writer's
        // data (docs/GC.md), and nothing but a test should shorten them.
        if let Some(secs) = std::env::var("CAIRN_TEST_MIN_CONDEMNED_AGE_SECS").ok().and_then(|s| s.parse().ok()) {
            timing.min_condemned_age = std::time::Duration::from_secs(secs);
        }
        // For tests of a lost lease through the binary only: `HEARTBEAT,GIVE_UP,STALE` in ms.
        if let Ok(spec) = std::env::var("CAIRN_TEST_LEASE_MS") {
            let ms: Vec<u64> = spec.split(',').filter_map(|v| v.trim().parse().ok()).collect();
            if let [heartbeat, give_up, stale] = ms[..] {
                timing.heartbeat = std::time::Duration::from_millis(heartbeat);
                timing.give_up_after = std::time::Duration::from_millis(give_up);
                timing.stale_after = std::time::Duration::from_millis(stale);
            }
        }
        let locks = Arc::new(ObjectLocks::with_timing(backend.clone(), timing));
        Ok(Self { backend, state, locks, location })
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
        for text in
            ["/var/backups/cairn", "relative/repo", "s3:x", "local:y", "a:b", "./s3:z", "s3:http://h:1/b/p", "sftp:h"]
        {
            let Ok(location) = Location::parse(text) else {
                assert!(text == "s3:x" || text == "sftp:h", "{text} is refused");
                continue;
            };
            assert_eq!(Location::parse(&location.to_string()).unwrap(), location, "{text}");
        }
        assert_eq!(Location::parse("local:s3:x").unwrap().to_string(), "local:s3:x");
        assert_eq!(Location::parse("/srv/repo").unwrap().to_string(), "/srv/repo");
        assert!(Location::parse("local:").is_err());
        assert!(Location::parse("SFTP:host").is_err(), "schemes are refused in any case");
        assert!(matches!(Location::parse("S3:http://h/b"), Ok(Location::S3(_))));
    }
}
