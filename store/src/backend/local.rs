//! The local directory backend.
//!
//! ```text
//! REPO/config
//! REPO/packs/<2 hex>/<64 hex>
//! REPO/snapshots/<64 hex>
//! REPO/forgotten/<64 hex>  tombstones of snapshots being forgotten
//! REPO/quarantine/<64 hex>  damaged files moved out of the way
//! REPO/tmp/            files being written (name.pid.n.tmp); renamed into place when durable
//! REPO/index/          the SQLite index (not managed by the backend)
//! ```
//!
//! Every error of a backend call is an [`Error::Backend`] naming the path, with the OS error as
//! its source (shown exactly as an I/O error on that path would be); the helpers below speak
//! `Error::Io`, and each trait method turns that into the typed error once, at its end.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{epoch_ns, is_id_name, older_than, Backend, FileKind, ObjectInfo, CONFIG_COPY, TEMPORARY_GRACE};
use crate::error::{BackendError, Error, IoContext, Result};

/// Open pack handles kept for ranged reads (restore reads many small ranges of few packs).
const HANDLE_CACHE: usize = 64;

/// File and folder modes of a repository's files: private (0600/0700) unless the repository
/// was made group-readable (0640/0750). What `init` made carries the choice: whatever creates a
/// repository file reads it here, so nothing can drift from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    /// Mode of new files.
    pub file: u32,
    /// Mode of new folders.
    pub dir: u32,
}

impl Modes {
    /// Owner only.
    #[must_use]
    pub fn private() -> Self {
        Self { file: 0o600, dir: 0o700 }
    }

    /// Owner, and read for the group (e.g. a backup-reader group).
    #[must_use]
    pub fn group_readable() -> Self {
        Self { file: 0o640, dir: 0o750 }
    }

    /// The modes of the repository at `root`, as `init` made them: group-readable when its
    /// config lets the group read it and others not (0640) and its top folder lets the group in
    /// (0750); private otherwise. A copy that lost its modes (`config` 0644 and folders 0755,
    /// from a copy under umask 022 that does not keep modes) was not made so by `init`, and
    /// is private: new files never become readable by more than `init` allowed, and never by
    /// everyone.
    #[must_use]
    pub fn of(root: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).map(|m| m.permissions().mode()).ok();
        let config = mode(&root.join("config")).or_else(|| mode(&root.join(CONFIG_COPY)));
        let group_config = config.is_some_and(|m| m & 0o044 == 0o040);
        let group_root = mode(root).is_some_and(|m| m & 0o010 != 0);
        if group_config && group_root {
            Self::group_readable()
        } else {
            Self::private()
        }
    }
}

/// Files in a local directory.
pub struct LocalBackend {
    root: PathBuf,
    modes: Modes,
    handles: Mutex<HashMap<PathBuf, Arc<File>>>,
    counter: AtomicU64,
}

impl LocalBackend {
    /// A backend over `root` (which must exist; `create_layout` makes the folders).
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self::with_modes(root, Modes::of(root))
    }

    /// A backend creating files and folders with the given modes (for `init`).
    #[must_use]
    pub fn with_modes(root: &Path, modes: Modes) -> Self {
        Self { root: root.to_path_buf(), modes, handles: Mutex::new(HashMap::new()), counter: AtomicU64::new(0) }
    }

    /// Creates the folders of a new repository (private to the owner).
    pub fn create_layout(&self) -> Result<()> {
        for sub in ["packs", "snapshots", "tmp", "index"] {
            let dir = self.root.join(sub);
            fs::create_dir_all(&dir).at(&dir)?;
            set_dir_mode(&dir, self.modes)?;
        }
        sync_dir(&self.root)
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        self.root.join(super::relative_path(kind, name))
    }

    fn forget_handle(&self, path: &Path) {
        self.handles.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(path);
    }

    fn handle(&self, path: &Path) -> Result<Arc<File>> {
        let mut cache = self.handles.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = cache.get(path) {
            return Ok(Arc::clone(f));
        }
        let file = Arc::new(File::open(path).at(path)?);
        if cache.len() >= HANDLE_CACHE {
            cache.clear();
        }
        cache.insert(path.to_path_buf(), Arc::clone(&file));
        Ok(file)
    }
}

/// Creates a folder (and its parents) of the repository at `root`, with its folder mode.
fn create_repo_dir(root: &Path, dir: &Path) -> Result<()> {
    create_dir_with(dir, Modes::of(root))
}

/// Creates a folder (and its parents) with the folder mode of `modes`.
pub(crate) fn create_dir_with(dir: &Path, modes: Modes) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(modes.dir).create(dir).at(dir)
}

fn set_dir_mode(dir: &Path, modes: Modes) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(modes.dir)).at(dir)
}

/// fsyncs a directory so that renames and creations in it survive power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl LocalBackend {
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let dest = self.path(kind, name);
        if kind != FileKind::Config && dest.exists() {
            return Ok(()); // content-addressed: same name, same bytes
        }
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        if !parent.exists() {
            fs::create_dir_all(&parent).at(&parent)?;
            set_dir_mode(&parent, self.modes)?;
            sync_dir(parent.parent().unwrap_or(&self.root))?;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp_dir = self.root.join("tmp");
        let tmp = tmp_dir.join(format!("{name}.{}.{n}.tmp", std::process::id()));
        let result = (|| {
            let create = || OpenOptions::new().write(true).create_new(true).mode(self.modes.file).open(&tmp);
            let mut f = match create() {
                // A repository copied without its empty folders (git keeps none) has no tmp/.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    create_repo_dir(&self.root, &tmp_dir)?;
                    create()
                }
                other => other,
            }
            .at(&tmp)?;
            if self.modes.file & 0o040 != 0 {
                // The umask may have taken the group bit: the repository's choice wins.
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(fs::Permissions::from_mode(self.modes.file)).at(&tmp)?;
            }
            f.write_all(data).at(&tmp)?;
            f.sync_all().at(&tmp)?;
            drop(f);
            fs::rename(&tmp, &dest).at(&dest)?;
            sync_dir(&parent)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn scan(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut scan = |dir: &Path| -> Result<()> {
            let rd = match fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(dir, e)),
            };
            for entry in rd {
                let entry = entry.at(dir)?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if is_id_name(name) {
                    if let Ok(meta) = entry.metadata() {
                        if meta.is_file() {
                            out.push(ObjectInfo::new(name, meta.len(), meta.modified().ok().and_then(epoch_ns)));
                        }
                    }
                }
            }
            Ok(())
        };
        match kind {
            FileKind::Config => {}
            FileKind::Snapshot => scan(&self.root.join("snapshots"))?,
            FileKind::Tombstone => scan(&self.root.join("forgotten"))?,
            FileKind::Quarantine => scan(&self.root.join("quarantine"))?,
            FileKind::SessionLease | FileKind::GcLease | FileKind::Condemned | FileKind::Key => {
                scan(&self.root.join(super::folder(kind).unwrap_or("")))?;
            }
            FileKind::Pack => {
                let packs = self.root.join("packs");
                let shards = match fs::read_dir(&packs) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(Error::io(&packs, e)),
                };
                for shard in shards {
                    let shard = shard.at(&packs)?;
                    if shard.file_type().is_ok_and(|t| t.is_dir()) {
                        scan(&shard.path())?;
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn rename_to_quarantine(&self, kind: FileKind, name: &str) -> Result<()> {
        let from = self.path(kind, name);
        let dir = self.root.join("quarantine");
        create_repo_dir(&self.root, &dir)?;
        self.forget_handle(&from);
        // A name damaged twice keeps both copies (rename would replace the first).
        let mut to = self.path(FileKind::Quarantine, name);
        let mut n = 0;
        while to.symlink_metadata().is_ok() {
            n += 1;
            to = self.path(FileKind::Quarantine, &format!("{name}.{n}"));
        }
        match fs::rename(&from, &to) {
            Ok(()) => sync_dir(&dir).and_then(|()| sync_dir(from.parent().unwrap_or(&self.root))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&from, e)),
        }
    }

    fn list_temporaries(&self) -> Result<Vec<ObjectInfo>> {
        let dir = self.root.join("tmp");
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(&dir) {
            for entry in rd.flatten() {
                let meta = entry.metadata().ok();
                out.push(ObjectInfo::new(
                    entry.file_name().to_string_lossy(),
                    meta.as_ref().map_or(0, fs::Metadata::len),
                    meta.and_then(|m| m.modified().ok()).and_then(epoch_ns),
                ));
            }
        }
        Ok(out)
    }
}

/// Reads `len` bytes at `offset` of an open file; a file too short for it is damage.
fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            Error::corrupt(format!("{}", path.display()), format!("shorter than {} bytes", offset + len as u64))
        } else {
            Error::io(path, e)
        }
    })?;
    Ok(buf)
}

/// Removes a file; one that is already gone is fine.
fn remove_path(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Turns the `Error::Io` of a backend call into the typed backend error (the same text: the
/// path, then the OS error); damage and other errors pass as they are.
fn typed<T>(result: Result<T>, object: Option<(FileKind, &str)>) -> Result<T> {
    result.map_err(|e| match e {
        Error::Io { path, source } => {
            let err = BackendError::from_io(path.display().to_string(), source);
            match object {
                Some((kind, name)) => err.about(kind, name).into(),
                None => err.into(),
            }
        }
        other => other,
    })
}

/// The process that wrote a temporary, from its name (`<name>.<pid>.<n>.tmp`).
fn temp_writer(name: &str) -> Option<rustix::process::Pid> {
    name.rsplit('.').nth(2).and_then(|p| p.parse::<i32>().ok()).and_then(rustix::process::Pid::from_raw)
}

impl Backend for LocalBackend {
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        typed(self.write(kind, name, data), Some((kind, name)))
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let path = self.path(kind, name);
        typed(fs::read(&path).at(&path), Some((kind, name)))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.path(kind, name);
        typed(self.handle(&path).and_then(|file| read_at(&file, &path, offset, len)), Some((kind, name)))
    }

    fn get_ranges(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) -> Result<Vec<Vec<u8>>> {
        // One handle for all of them: a local read costs no round trip, so each range is read
        // on its own (a spanning read would read the gaps too).
        let path = self.path(kind, name);
        let read = self
            .handle(&path)
            .and_then(|file| ranges.iter().map(|&(offset, len)| read_at(&file, &path, offset, len)).collect());
        typed(read, Some((kind, name)))
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let path = self.path(kind, name);
        typed(fs::metadata(&path).at(&path).map(|m| m.len()), Some((kind, name)))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        typed(self.scan(kind), None)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.path(kind, name);
        self.forget_handle(&path);
        typed(remove_path(&path), Some((kind, name)))
    }

    /// A rename, not the trait's copy and delete: one atomic step on a local disk.
    fn quarantine(&self, kind: FileKind, name: &str) -> Result<()> {
        typed(self.rename_to_quarantine(kind, name), Some((kind, name)))
    }

    fn temporaries(&self) -> Result<Vec<ObjectInfo>> {
        typed(self.list_temporaries(), None)
    }

    /// Judged by the writer's process, which a local temporary's name carries: the process
    /// that made it may still be writing to it only while it runs, so a temporary of a
    /// process that is gone is abandoned at once, and one of a live process (this one among
    /// them) never is, however old (a stopped or very slow writer keeps it). A process ID
    /// reused by another process keeps a leftover until that one ends. A name without a
    /// process ID was not made by this backend; it is judged by age, as any backend's
    /// temporaries are.
    fn is_abandoned(&self, temp: &ObjectInfo, now_ns: i64) -> bool {
        match temp_writer(&temp.name) {
            Some(pid) if pid.as_raw_nonzero().get() == i32::try_from(std::process::id()).unwrap_or(0) => false,
            // Only "no such process" means gone: a process of another user answers "not
            // permitted", and is alive.
            Some(pid) => rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH),
            None => older_than(temp, now_ns, TEMPORARY_GRACE),
        }
    }

    fn remove_temporary(&self, name: &str) -> Result<()> {
        if name.contains('/') || name.starts_with('.') {
            return Ok(()); // never a path outside tmp/
        }
        typed(remove_path(&self.root.join("tmp").join(name)), None)
    }
}
