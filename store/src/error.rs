//! Typed errors of the store. Corrupt bytes on disk are always an error, never a panic; each
//! variant carries the path or ID an operator needs to act on it.

use std::path::PathBuf;

use crate::backend::FileKind;

/// Result alias for the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the repository does not have the shape its format requires.
    #[error("{what} is corrupt: {detail}")]
    Corrupt {
        /// What was being read (a pack, a tree, the config, ...).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Bytes of a repository file do not decode as the format says (bincode's own reason is
    /// the source).
    #[error("{what} is corrupt: undecodable: {source}")]
    Undecodable {
        /// What was being read.
        what: String,
        /// What the decoder found (in the message, so not also a `#[source]`: the CLI prints
        /// the chain of sources, and the reason would be said twice).
        source: bincode::error::DecodeError,
    },
    /// A file was written by a newer (or unknown) format version.
    #[error(
        "{what} has format version {found}; this cairn reads versions up to {supported} \
         (upgrade cairn to read it)"
    )]
    UnsupportedVersion {
        /// What was being read.
        what: String,
        /// The version found in the file.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// Bytes read back do not hash to the ID they are stored under.
    #[error("{what} {id} fails its hash check (stored data is damaged)")]
    HashMismatch {
        /// The kind of object.
        what: &'static str,
        /// Its ID in hex.
        id: String,
    },
    /// An object the repository should hold is not there.
    #[error("{what} {id} is missing from the repository")]
    Missing {
        /// The kind of object.
        what: &'static str,
        /// Its ID in hex.
        id: String,
    },
    /// `init` was pointed at something that is not an empty directory.
    #[error("{0} is not empty and is not a cairn repository; refusing to initialise it")]
    NotEmpty(PathBuf),
    /// `open` was pointed at a directory that holds no repository.
    #[error("{0} is not a cairn repository (no config file); run `cairn init` first")]
    NotARepository(PathBuf),
    /// A string is not a valid hexadecimal ID.
    #[error("{0:?} is not a valid ID")]
    BadId(String),
    /// A snapshot reference matched nothing.
    #[error("no snapshot matches {0:?}")]
    NoSuchSnapshot(String),
    /// Paths given by the caller (`restore --include`, `ls`, `cat`, `diff`) are not in the
    /// snapshot: acting on nothing and saying "done" would hide a typo.
    #[error("{paths} {} not in snapshot {snapshot}", if paths.contains(", ") { "are" } else { "is" })]
    NotInSnapshot {
        /// The paths, comma-separated.
        paths: String,
        /// The snapshot's short ID.
        snapshot: String,
    },
    /// A path given to `log` is in no snapshot at all.
    #[error("{0} is in no snapshot")]
    InNoSnapshot(String),
    /// A snapshot prefix matched several snapshots.
    #[error("{prefix:?} is ambiguous: it matches {count} snapshots; give more characters")]
    AmbiguousSnapshot {
        /// The prefix given.
        prefix: String,
        /// How many snapshots it matched.
        count: usize,
    },
    /// A snapshot reference is both a label and the start of another snapshot's ID: acting on
    /// either could touch the snapshot the user did not mean (`forget c3ed`).
    #[error(
        "{spec:?} is ambiguous: it is the label of snapshot {labelled} and the start of the ID of {ids}; \
         give the full ID, or more of it"
    )]
    LabelOrId {
        /// The reference given.
        spec: String,
        /// The (short) ID of the newest snapshot with that label.
        labelled: String,
        /// The (short) IDs that start with it, comma-separated.
        ids: String,
    },
    /// A command that writes was given a repository opened read-only.
    #[error(
        "{what} needs to write to the repository, which is open read-only (read-only media, no \
         write permission, or a full disk)"
    )]
    ReadOnly {
        /// The command or step that needed to write.
        what: String,
    },
    /// The index cannot be opened read-only, and a read-only repository cannot rebuild it.
    #[error(
        "the index {} cannot be opened read-only (missing or damaged), and a read-only repository \
         cannot rebuild it: run `cairn repair index` where the repository can be written",
        path.display()
    )]
    IndexUnavailable {
        /// The index file.
        path: PathBuf,
    },
    /// The worker threads of a snapshot, restore or scrub could not be started.
    #[error("cannot start worker threads: {source}")]
    Workers {
        /// rayon's reason (in the message, so not also a `#[source]`).
        source: rayon::ThreadPoolBuildError,
    },
    /// The snapshot's pack-writer thread stopped (it panicked, or its channel closed); no
    /// snapshot was recorded.
    #[error("{0}")]
    Writer(&'static str),
    /// An argument from the caller is unusable.
    #[error("{0}")]
    InvalidInput(String),
    /// A capture whose `on_failure` is `fail` did not succeed: no snapshot was recorded.
    #[error("capture {path} ({command}) {how}{}", tail_of(stderr_tail))]
    CaptureFailed {
        /// The capture's path among the snapshot's captures.
        path: String,
        /// Its command line, as shown to the user.
        command: String,
        /// How it ended: "exited with status 2", "was killed at its timeout of 5s", ...
        how: String,
        /// The end of its standard error.
        stderr_tail: String,
    },
    /// A command that deletes or rewrites data stops, changing nothing, because part of the
    /// repository cannot be read: deleting on a guess could destroy what that part needs.
    #[error("{reason}; nothing was changed")]
    Refused {
        /// Why, naming the object that cannot be read and what to do.
        reason: String,
    },
    /// The gc lock is held: another gc (or a `repair index`, which takes the same lock) is
    /// running. Nothing was changed; the caller may run gc again later.
    #[error("another {holder} is running on this repository (pid {pid}) and holds the gc lock; try again when it has finished")]
    GcRunning {
        /// The holder's process ID, as its lock file names it (empty when unreadable).
        pid: String,
        /// What the holder is doing (`gc` or `repair index`), as its lock file says.
        holder: String,
    },
    /// This run's lease on a repository in an object store went unrenewed for so long that
    /// other machines may soon count the run as ended (and gc delete what it uses): it stopped
    /// between two steps, and wrote nothing after (no snapshot record, no deletion). What it
    /// stored before is reused by the next run or settled by gc.
    #[error("lease lost: {reason}; stopped, and nothing more was written (run it again)")]
    LeaseLost {
        /// Why, and for how long the lease went unrenewed.
        reason: String,
    },
    /// Another command holds what this one needs alone (`repair index` and everything else);
    /// nothing was changed.
    #[error("{reason}; nothing was changed")]
    Busy {
        /// Who holds it and what to do.
        reason: String,
    },
    /// A backend could not do what was asked; its kind tells the engine whether the object is
    /// absent, whether trying again may help, or neither. Shown as the object's location and
    /// the underlying error, as an I/O error on a path is.
    #[error(transparent)]
    Backend(Box<BackendError>),
    /// No key file of an encrypted repository opens with the passphrase given
    /// (docs/ENCRYPTION.md). Nothing was read but the config and the key files.
    #[error("wrong passphrase: it opens none of the {tried} key files of this repository")]
    WrongPassphrase {
        /// How many key files were tried.
        tried: usize,
    },
    /// The repository is encrypted and this command has no key for it: no passphrase source,
    /// or no key file in the repository.
    #[error("{reason}")]
    KeyNeeded {
        /// What is missing and what to do.
        reason: String,
    },
    /// The key in use is put-only: it can add snapshots, never read or remove what is stored.
    #[error("this key is put-only: it cannot {what} (use a full key)")]
    PutOnly {
        /// What was asked ("read snapshot records", "forget", ...).
        what: String,
    },
    /// The SQLite index reported an error.
    #[error("index {path}: {source}")]
    Index {
        /// The index database.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
}

/// A capture's stderr tail as the end of its error message.
fn tail_of(tail: &str) -> String {
    let t = tail.trim_end();
    if t.is_empty() {
        "; it wrote nothing to stderr".into()
    } else {
        format!("; the end of its stderr:\n{t}")
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into(), detail: detail.into() }
    }

    /// True when a backend (or the file system) says the object or file asked for is not
    /// there. Not damage by itself: a listing may be older than the read (gc or forget removed
    /// the file meanwhile); the caller knows whether the object should have been there.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Backend(b) => b.kind == BackendErrorKind::NotFound,
            Self::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// True when a backend says that trying the same call again may succeed (a timeout, a
    /// busy server, an interrupted call).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Backend(b) if b.kind == BackendErrorKind::Transient)
    }

    /// The operating-system error underneath, when there is one (an I/O error on a path, or a
    /// local backend's): what tells "may not write here" from other failures.
    #[must_use]
    pub fn os_error(&self) -> Option<&std::io::Error> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Backend(b) => b.source.downcast_ref::<std::io::Error>(),
            _ => None,
        }
    }

    /// True for errors that mean stored data is damaged or missing (exit code 4 territory),
    /// as opposed to errors of the environment or of the caller.
    #[must_use]
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Self::Corrupt { .. } | Self::Undecodable { .. } | Self::HashMismatch { .. } | Self::Missing { .. }
        )
    }
}

/// What a backend's failure means for the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The object does not exist (a local `ENOENT`, an HTTP 404).
    NotFound,
    /// Trying the same call again may succeed: a timeout, an interrupted or would-block call, a
    /// busy or throttling server (HTTP 503, 429), a connection reset.
    Transient,
    /// Anything else: trying again fails the same way (no permission, a full disk, a broken
    /// disk, a bad request).
    Permanent,
}

/// A failed backend call: what it means ([`BackendErrorKind`]), which object it was about, and
/// the backend's own error as the source.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {source}")]
#[non_exhaustive]
pub struct BackendError {
    /// What the failure means for the caller.
    pub kind: BackendErrorKind,
    /// The object the call was about (none for a listing).
    pub object: Option<(FileKind, String)>,
    /// Where the backend keeps it, as the user knows it: a path for the local directory, a
    /// key or URL for an object store.
    pub location: String,
    /// The backend's own error (an `io::Error` for the local directory).
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl BackendError {
    /// An error of `kind` at `location`.
    pub fn new(
        kind: BackendErrorKind,
        location: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self { kind, object: None, location: location.into(), source: source.into() }
    }

    /// An operating-system error, its kind read from the error: a missing file is
    /// [`BackendErrorKind::NotFound`]; an interrupted, would-block or timed-out call
    /// [`BackendErrorKind::Transient`]; anything else [`BackendErrorKind::Permanent`].
    pub fn from_io(location: impl Into<String>, source: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match source.kind() {
            K::NotFound => BackendErrorKind::NotFound,
            K::Interrupted | K::WouldBlock | K::TimedOut => BackendErrorKind::Transient,
            _ => BackendErrorKind::Permanent,
        };
        Self::new(kind, location, source)
    }

    /// Names the object the call was about.
    #[must_use]
    pub fn about(mut self, kind: FileKind, name: &str) -> Self {
        self.object = Some((kind, name.to_owned()));
        self
    }
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Adds a path to a bare `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
