//! The repository handle: one `Repo` per open repository, shared by all operations.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{Backend, FileKind, Location, Modes, Storage, CONFIG_COPY};
use crate::config::{ChunkerParams, RepoConfig};
use crate::crypto::keyfile::KdfParams;
use crate::crypto::putcache::PutRun;
use crate::crypto::{MasterKeys, Passphrase};
use crate::error::{Error, Result};
use crate::frame::{FrameCodec, ZstdFrames};
use crate::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::index::{BlobLocation, Index};
use crate::keyring::{PassphraseSource, Unlocked};
use crate::lock::{Hold, Locks};
use crate::pack::{self, BlobKind};
use crate::record::SnapshotRecord;
use crate::state::{IndexUse, StateDir};
use crate::tree::{Entry, Tree};
use crate::treecache::TreeCache;

/// How `Repo::init` sets up a repository.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InitOptions {
    /// Chunker parameters (fixed for the life of the repository).
    pub chunker: ChunkerParams,
    /// zstd level for new data.
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Let the owner's group read the repository (0640 files, 0750 folders) instead of the
    /// owner alone.
    pub group_readable: bool,
    /// Encrypt it (docs/ENCRYPTION.md): the first key file's passphrase.
    pub encrypt: Option<Passphrase>,
    /// How that passphrase is stretched (Argon2id parameters, recorded in the key file).
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_size: 16 << 20,
            group_readable: false,
            encrypt: None,
            kdf: KdfParams::default(),
        }
    }
}

/// How `Repo::open` opens a repository.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Open without writing anything. Chosen anyway when the repository cannot be written
    /// (read-only media, a repository this user may only read, a full disk).
    pub read_only: bool,
    /// Give back the space reserve when the disk is nearly full: for the commands that free
    /// space (`forget`, `gc`, `repair index`); see reserve.rs.
    pub use_reserve: bool,
    /// Where opening reports indexing packs it has not seen (a fresh cache of a bucket, a
    /// lost index, other machines' new packs).
    pub progress: Option<crate::progress::SharedProgress>,
    /// The passphrase of an encrypted repository, asked only when it is one.
    pub passphrase: Option<PassphraseSource>,
    /// The caller brought a passphrase on purpose (a file, a command): a repository that is
    /// not encrypted is then refused rather than written in clear.
    pub expect_encrypted: bool,
    /// For a repository in S3: the storage class new data packs go to (`--s3-storage-class`,
    /// one of [`STORAGE_CLASSES`](crate::STORAGE_CLASSES), checked when opening); tree packs
    /// and every other object stay STANDARD. A local repository ignores it.
    pub s3_storage_class: Option<String>,
}

/// A snapshot: its ID and record.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The ID.
    pub id: SnapshotId,
    /// The record.
    pub record: SnapshotRecord,
}

impl Snapshot {
    /// True for the snapshot a restore takes of what it is about to overwrite.
    #[must_use]
    pub fn is_safety(&self) -> bool {
        self.record.is_safety()
    }
}

/// What `rebuild_index` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RebuildReport {
    /// Packs indexed.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Snapshots indexed.
    pub snapshots: u64,
    /// Packs or records that could not be read, with the reason; their content is not indexed.
    pub damaged: Vec<String>,
}

/// An open repository.
pub struct Repo {
    pub(crate) location: Location,
    pub(crate) backend: Arc<dyn Backend>,
    /// This machine's rebuildable state: the index, scratch files, the reserve.
    pub(crate) state: StateDir,
    /// Sessions and the gc lock.
    pub(crate) locks: Arc<dyn Locks>,
    pub(crate) index: Index,
    pub(crate) config: RepoConfig,
    /// Seals and opens every stored frame, and names blobs (frame.rs).
    pub(crate) frames: Arc<dyn FrameCodec>,
    /// The keys of an encrypted repository and the key file that gave them (keyring.rs).
    pub(crate) unlocked: Option<Unlocked>,
    /// A put-only key's snapshot in progress: its parent's trees from the put cache, and the
    /// trees it names (crypto/putcache.rs).
    pub(crate) put_run: std::sync::RwLock<Option<Arc<PutRun>>>,
    /// What opening found that the user should hear about (a damaged config copy, a record
    /// file that vanished or cannot be read); the CLI prints them.
    pub(crate) notices: Vec<String>,
    /// Opened without the right (or the room) to write: nothing is written, not even a lock.
    pub(crate) read_only: bool,
    /// What a read-only open could not write into the index: record files it does not hold
    /// (added to the list) and snapshots being forgotten (left out of it).
    pub(crate) overlay: (Vec<Snapshot>, HashSet<SnapshotId>),
    /// The shared hold on the index that every open repository keeps (`repair index` swaps
    /// the index file only when nobody holds it).
    pub(crate) index_use: Option<IndexUse>,
    /// Whole tree packs kept locally, for a remote repository (treecache.rs).
    pub(crate) tree_cache: Option<TreeCache>,
}

/// A frame's place: its pack and its offset there.
type FrameKey = (PackId, u64);

thread_local! {
    /// The frame this thread decoded last: (pack, frame offset) and its plaintext.
    static LAST_FRAME: RefCell<Option<(FrameKey, Rc<Vec<u8>>)>> = const { RefCell::new(None) };
}

/// True for an error that says this process may not (or cannot) write there: then a
/// repository is opened read-only instead.
fn cannot_write(e: &Error) -> bool {
    match e {
        Error::Io { .. } | Error::Backend(_) => {
            e.os_error().is_some_and(|source| matches!(source.raw_os_error(), Some(13 | 30 | 28 | 1 | 122)))
        }
        Error::Index { source, .. } => crate::index::cannot_write(source),
        _ => false,
    }
}

fn read_only_without_index(path: &Path) -> Error {
    Error::IndexUnavailable { path: path.to_path_buf() }
}

/// True for a file that is not there (removed between a listing and the read).
pub(crate) fn missing(e: &Error) -> bool {
    e.is_not_found() || matches!(e, Error::Missing { .. })
}

/// Reads the config, from its copy when the first is damaged or gone (and then writes the
/// first again from the copy), and writes the copy when it is missing or damaged: each copy
/// is checked by its own checksum, so a good one is as good as the other. A config of a newer
/// format is refused, never replaced by an older copy.
pub(crate) fn load_config(location: &Location, backend: &dyn Backend, mend: bool) -> Result<(RepoConfig, Vec<String>)> {
    let read = |name: &str| backend.get(FileKind::Config, name).and_then(|b| RepoConfig::decode(&b));
    let (main, copy) = (read("config"), read(CONFIG_COPY));
    let mut notices = Vec::new();
    let config = match (main, copy) {
        (Err(e @ Error::UnsupportedVersion { .. }), _) | (_, Err(e @ Error::UnsupportedVersion { .. })) => {
            return Err(e)
        }
        (Ok(c), copy) => {
            if copy.as_ref().is_ok_and(|k| *k != c) || copy.as_ref().is_err_and(|e| !missing(e)) {
                notices.push(format!("the config's copy {CONFIG_COPY} was damaged; written again from config"));
            }
            if copy.as_ref().is_ok_and(|k| *k == c) || !mend {
                // Nothing to mend, or no right to.
            } else if let Err(e) = backend.put(FileKind::Config, CONFIG_COPY, &c.encode()) {
                log::warn!("cannot write {CONFIG_COPY}: {e}");
            }
            c
        }
        (Err(e), Ok(c)) => {
            let mended = if mend {
                backend.put(FileKind::Config, "config", &c.encode()).map_err(|w| w.to_string())
            } else {
                Err("the repository is open read-only".to_owned())
            };
            notices.push(match mended {
                Ok(()) => format!("the repository config was damaged ({e}); written again from its copy {CONFIG_COPY}"),
                Err(w) => format!(
                    "the repository config is damaged ({e}); using its copy {CONFIG_COPY} (cannot mend it: {w})"
                ),
            });
            c
        }
        (Err(e), Err(_)) if missing(&e) => return Err(Error::NotARepository(location.to_string().into())),
        (Err(e), Err(f)) => {
            return Err(Error::corrupt(
                "repository config",
                format!("config ({e}) and its copy {CONFIG_COPY} ({f}) are both unreadable; run `cairn repair config`"),
            ))
        }
    };
    Ok((config, notices))
}

/// A new random repository identity, 32 hex digits.
pub(crate) fn new_repo_id() -> String {
    let seed = format!("{:?} {} {:?}", jiff::Timestamp::now(), std::process::id(), std::thread::current().id());
    hex::encode(&blake3::hash(seed.as_bytes()).as_bytes()[..16])
}

pub(crate) fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Repo {
    /// Creates a repository at `location` (a local folder must not exist, or be empty).
    pub fn init(location: &Location, opts: &InitOptions) -> Result<Self> {
        opts.chunker.validate()?;
        let modes = if opts.group_readable { Modes::group_readable() } else { Modes::private() };
        // The ID comes first: a repository in a bucket keeps its local state under it.
        let repo_id = new_repo_id();
        Self::init_with_id(location.create(modes, &repo_id)?, opts, repo_id)
    }

    /// Creates a repository in storage the caller assembled (a test's backend).
    pub fn init_storage(storage: Storage, opts: &InitOptions) -> Result<Self> {
        Self::init_with_id(storage, opts, new_repo_id())
    }

    fn init_with_id(storage: Storage, opts: &InitOptions, repo_id: String) -> Result<Self> {
        opts.chunker.validate()?;
        opts.kdf.validate()?;
        let config = RepoConfig {
            repo_id,
            created: now_secs(),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
            encryption: opts.encrypt.as_ref().map(|_| crate::crypto::SCHEME_V1),
        };
        // The key file before the config: a place without a config is not (yet) a repository,
        // and an encrypted one must never exist without a key.
        let unlocked = match &opts.encrypt {
            Some(pass) => {
                let keys = MasterKeys::generate()?;
                let key_name = crate::keyring::write_key_file(&storage, &keys, pass, opts.kdf)?;
                Some(Unlocked { keys, key_name })
            }
            None => None,
        };
        storage.state.create()?;
        let index_path = storage.state.index_path();
        let index = Index::open(&index_path)?;
        // The config is written last (its copy first): a place without it is not (yet) a
        // repository.
        let bytes = config.encode();
        storage.backend.put(FileKind::Config, CONFIG_COPY, &bytes)?;
        storage.backend.put(FileKind::Config, "config", &bytes)?;
        {
            // The index was created before the config that carries the repository's modes.
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&index_path, fs::Permissions::from_mode(storage.state.modes().file));
        }
        crate::reserve::top_up(&storage.state, crate::reserve::size_for(0));
        let mut repo = Self::assemble(storage, index, config);
        repo.install_keys(unlocked)?;
        Ok(repo)
    }

    /// A handle with nothing found yet and full rights.
    pub(crate) fn assemble(storage: Storage, index: Index, config: RepoConfig) -> Self {
        let tree_cache = storage.location.is_shared().then(|| TreeCache::new(storage.state.trees_dir()));
        Self {
            location: storage.location,
            backend: storage.backend,
            state: storage.state,
            locks: storage.locks,
            index,
            frames: Arc::new(ZstdFrames::new(config.compression_level)),
            unlocked: None,
            put_run: std::sync::RwLock::new(None),
            config,
            notices: Vec::new(),
            read_only: false,
            overlay: (Vec::new(), HashSet::new()),
            index_use: None,
            tree_cache,
        }
    }

    /// Opens the repository at `location`.
    pub fn open(location: &Location, opts: &OpenOptions) -> Result<Self> {
        // Nothing (not even a lock file) is made where no repository is.
        let storage = location
            .existing_storage_with(opts.s3_storage_class.as_deref())?
            .ok_or_else(|| Error::NotARepository(location.to_string().into()))?;
        Self::open_storage(storage, opts)
    }

    /// Opens a repository in storage the caller assembled (a test's backend). An index that
    /// is lost (deleted, or emptied: a 0-byte file, or one that holds no pack and no snapshot
    /// while record files exist) is rebuilt from the pack trailers, since the index is only a
    /// cache (invariant 3). When the repository cannot be written, it is opened read-only
    /// instead, and nothing is written at all.
    pub fn open_storage(storage: Storage, opts: &OpenOptions) -> Result<Self> {
        // An encrypted repository is unlocked first: a wrong passphrase does no work at all.
        let unlocked = crate::keyring::unlock(&storage, opts)?;
        Self::open_unlocked(storage, opts, unlocked)
    }

    /// `open_storage` with the keys already unlocked (`repair index` opens twice).
    pub(crate) fn open_unlocked(storage: Storage, opts: &OpenOptions, unlocked: Option<Unlocked>) -> Result<Self> {
        // Before the index is touched: a `repair index` swapping it under us must not start,
        // and one that is running makes this open wait for nothing and say so.
        let index_use = storage.state.share_index()?;
        if opts.use_reserve && !opts.read_only && crate::reserve::release_if_short(&storage.state) {
            log::warn!("the disk is nearly full: the space reserve was given back so that this command can run");
        }
        let path = storage.state.index_path();
        let emptied = fs::metadata(&path).is_ok_and(|m| m.len() == 0);
        if emptied && !opts.read_only {
            crate::state::remove_db(&path)?;
        }
        let existed = path.exists();
        let writable = if opts.read_only {
            Err(Error::ReadOnly { what: "opening the index for writing".into() })
        } else {
            storage.state.create().and_then(|()| Index::open(&path))
        };
        let (index, read_only) = match writable {
            Ok(index) => (index, false),
            Err(e) if opts.read_only || cannot_write(&e) => match Index::open_read_only(&path) {
                Ok(index) => (index, true),
                Err(_) if opts.read_only => return Err(read_only_without_index(&path)),
                Err(_) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let (config, mut notices) = load_config(&storage.location, storage.backend.as_ref(), !read_only)?;
        let mut repo = Self::assemble(storage, index, config);
        repo.install_keys(unlocked)?;
        repo.read_only = read_only;
        repo.index_use = index_use;
        if !read_only {
            repo.index.set_repo_id(&repo.config.repo_id)?;
            let lost = !existed || (repo.index.is_empty()? && !repo.backend.list(FileKind::Snapshot)?.is_empty());
            let progress: &dyn crate::progress::Progress =
                opts.progress.as_ref().map_or(&crate::progress::NoProgress, |p| p.0.as_ref());
            if repo.is_put_only() {
                // A put-only key reads no trailer and no record: the index is this machine's
                // own record of what it stored, and is never rebuilt from the repository.
                if repo.location.is_shared() {
                    // Needs no key: the packs a collector deleted leave this index, so that
                    // nothing is deduplicated against them.
                    repo.forget_collected_packs()?;
                }
                if lost && !repo.backend.list(FileKind::Pack)?.is_empty() {
                    notices.push(
                        "this key is put-only: the index of this machine cannot be rebuilt from the repository, \
                         so this snapshot stores what it reads again (later ones deduplicate as usual)"
                            .into(),
                    );
                }
            } else if lost && repo.location.is_shared() {
                // A bucket seen from a new machine (or a cache that was cleared): the normal
                // first open, not damage.
                let built = repo.rebuild_index_reporting(progress)?;
                log::info!(
                    "built this machine's cache of the repository's index from {} packs and {} snapshots (their trailers, read by range) in {}",
                    built.packs,
                    built.snapshots,
                    path.display()
                );
                for damaged in &built.damaged {
                    log::warn!("not indexed: {damaged}");
                }
            } else if lost && !repo.backend.list(FileKind::Pack)?.is_empty() {
                notices.push(format!(
                    "the index {} was {}; it was rebuilt from the packs",
                    path.display(),
                    if emptied {
                        "empty (0 bytes)"
                    } else if existed {
                        "empty"
                    } else {
                        "missing"
                    }
                ));
                repo.rebuild_index_reporting(progress)?;
            } else if repo.location.is_shared() {
                // Other machines write to a bucket too: what they stored since this cache last
                // looked is indexed from the packs' trailers (ranged reads), so their snapshots
                // restore here and scrub does not mistake their packs for unindexed leftovers.
                let caught_up = repo.index_from_files(&[], now_secs(), progress, pack_trailer)?;
                if caught_up.packs > 0 {
                    log::info!("indexed {} packs written elsewhere since this cache last looked", caught_up.packs);
                }
                for damaged in &caught_up.damaged {
                    log::warn!("not indexed: {damaged}");
                }
                repo.forget_collected_packs()?;
                if let Some(cache) = &repo.tree_cache {
                    let packs: HashSet<PackId> = repo.index.packs()?.into_iter().map(|p| p.id).collect();
                    cache.prune(&|p| packs.contains(&p));
                }
            }
        }
        if !repo.is_put_only() {
            notices.extend(repo.reconcile_snapshots()?);
        }
        repo.notices = notices;
        Ok(repo)
    }

    /// The counts of the requests sent to the repository's store so far, for a store billed by
    /// the request (a bucket); `None` for a local repository. The handle stays valid after the
    /// repository is dropped, so a caller can read what closing it cost too.
    #[must_use]
    pub fn request_counter(&self) -> Option<Arc<crate::backend::RequestCounter>> {
        self.backend.requests()
    }

    /// True when the repository was opened read-only (see `OpenOptions::read_only`).
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// On a repository other machines write: the packs a collector elsewhere condemned and
    /// has since deleted leave this cache's index (their rows would read as missing packs).
    /// Only condemned packs go (condemned here, or in a published condemnation): a pack that
    /// vanished without being condemned is damage, and scrub reports it. A cache that missed
    /// two gc runs may no longer find the condemnation published; `repair index` settles those.
    fn forget_collected_packs(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let published = self.locks.published_condemned()?;
        let mut condemned: HashSet<PackId> = self.index.condemned()?.into_iter().map(|(p, _)| p).collect();
        condemned.extend(published.iter().map(|(p, _)| *p));
        if condemned.is_empty() {
            return Ok(());
        }
        let present: HashSet<String> = self.backend.list(FileKind::Pack)?.into_iter().map(|o| o.name).collect();
        for pack in condemned {
            if !present.contains(&pack.to_hex()) {
                self.index.delete_pack(pack, &[])?;
            }
        }
        Ok(())
    }

    /// Registers a session of `kind` (gc waits for sessions, docs/GC.md); none in a read-only
    /// repository, where nothing can be written, not even a lock file.
    pub(crate) fn session(&self, kind: &str) -> Result<Option<Hold>> {
        if self.read_only {
            return Ok(None);
        }
        let session = self.locks.start_session(kind)?;
        // Condemnations made by a collector on another machine count from now on (docs/GC.md).
        for (pack, at_ns) in self.locks.published_condemned()? {
            self.index.condemn(pack, at_ns)?;
        }
        Ok(Some(session))
    }

    /// Fails once this process's session or gc lease is lost (`Locks::check_held`): asked
    /// before each step that writes or deletes what others rely on.
    pub(crate) fn check_lease(&self) -> Result<()> {
        self.locks.check_held()
    }

    /// `result`, unless the lease was lost meanwhile: then that is the error, since what a
    /// reader found (a pack gone) may be gc's work on a run it counted as ended.
    pub(crate) fn leased<T>(&self, result: Result<T>) -> Result<T> {
        self.check_lease().and(result)
    }

    /// A scratch file (a mark set): beside the index, or in the system's temporary folder when
    /// the repository is read-only.
    pub(crate) fn scratch_path(&self, name: &str) -> PathBuf {
        self.state.scratch(name, self.read_only)
    }

    /// Fails when the repository was opened read-only, naming what needed to write.
    pub(crate) fn writable(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly { what: what.to_owned() });
        }
        Ok(())
    }

    /// Grows the space reserve with the index, when there is room (reserve.rs).
    pub(crate) fn top_up_reserve(&self) {
        if self.read_only {
            return;
        }
        if let Ok(blobs) = self.index.blob_count() {
            crate::reserve::top_up(&self.state, crate::reserve::size_for(blobs));
        }
    }

    /// Where the repository is.
    #[must_use]
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The config fixed at `init`.
    #[must_use]
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// What opening found that the user should hear about.
    #[must_use]
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// Reads a blob back, checking it against its ID. The last frame each thread decoded is
    /// kept, so the consecutive chunks of a file that share a frame decompress it once.
    pub(crate) fn read_blob(&self, id: BlobId, what: &'static str) -> Result<Vec<u8>> {
        let loc = self.index.locate(id)?.ok_or_else(|| Error::Missing { what, id: id.to_hex() })?;
        self.read_located(&loc)
    }

    /// Reads a blob whose location was looked up already (in a batch).
    pub(crate) fn read_located(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        self.read_located_in(loc, None)
    }

    /// Reads a blob whose location was looked up already, from `stored` (its frame's stored
    /// bytes, when the caller fetched them with others of the same pack) or else from the
    /// backend.
    pub(crate) fn read_located_in(&self, loc: &BlobLocation, stored: Option<&[u8]>) -> Result<Vec<u8>> {
        if let (None, Some(cache), BlobKind::Tree) = (stored, &self.tree_cache, loc.entry.kind) {
            match cache.frame(self.backend.as_ref(), loc).and_then(|s| self.blob_in(loc, Some(&s))) {
                Ok(blob) => return Ok(blob),
                // The copy (or the pack) is damaged or gone: read from the store, which says.
                Err(e) if e.is_damage() || missing(&e) => cache.forget(loc.pack),
                Err(e) => return Err(e),
            }
        }
        self.blob_in(loc, stored)
    }

    /// A blob from its frame's stored bytes (`stored`, or else read from the backend), the
    /// frame this thread decoded last being kept.
    fn blob_in(&self, loc: &BlobLocation, stored: Option<&[u8]>) -> Result<Vec<u8>> {
        let key = (loc.pack, loc.entry.offset);
        let cached = LAST_FRAME.with(|c| c.borrow().as_ref().filter(|(k, _)| *k == key).map(|(_, f)| Rc::clone(f)));
        let frame = match cached {
            Some(f) => f,
            None => {
                let fetched;
                let stored = match stored {
                    Some(s) => s,
                    None => {
                        fetched = self
                            .backend
                            .get_range(
                                FileKind::Pack,
                                &loc.pack.to_hex(),
                                loc.entry.offset,
                                loc.entry.stored_len as usize,
                            )
                            .map_err(|e| {
                                // A pack the index names but the disk lacks is missing data, not
                                // a fault of the environment: the reader goes on with what it
                                // can read.
                                if missing(&e) {
                                    Error::Missing { what: "pack", id: loc.pack.to_hex() }
                                } else {
                                    e
                                }
                            })?;
                        &fetched
                    }
                };
                let f = Rc::new(self.frames.open(&loc.entry, stored)?);
                LAST_FRAME.with(|c| *c.borrow_mut() = Some((key, Rc::clone(&f))));
                f
            }
        };
        self.frames.blob_from_frame(&loc.entry, &frame)
    }

    /// Decodes a snapshot record file (sealed in an encrypted repository) and checks it
    /// against its ID.
    pub(crate) fn open_record(&self, id: SnapshotId, bytes: &[u8]) -> Result<SnapshotRecord> {
        SnapshotRecord::open_with(id, bytes, self.frames.as_ref())
    }

    /// The put-only snapshot in progress, if any.
    pub(crate) fn put_run(&self) -> Option<Arc<PutRun>> {
        self.put_run.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Loads and decodes a tree.
    pub fn load_tree(&self, id: TreeId) -> Result<Tree> {
        if let Some(run) = self.put_run() {
            // A put-only key reads its parent's trees from its own cache, and nothing else.
            if let Some(bytes) = run.tree(id).filter(|b| self.frames.id_of(b) == id.into()) {
                return Tree::decode(id, bytes);
            }
        }
        let bytes = self.read_blob(id.into(), "tree")?;
        Tree::decode(id, &bytes)
    }

    /// The entry at an absolute `path` in the tree rooted at `root` (the root itself has no
    /// entry: `None` for `/`).
    pub fn find_entry(&self, root: TreeId, path: &Path) -> Result<Option<Entry>> {
        let mut tree = self.load_tree(root)?;
        let mut names = path.components().filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_encoded_bytes().to_vec()),
            _ => None,
        });
        let Some(mut name) = names.next() else {
            return Ok(None);
        };
        loop {
            let Some(entry) = tree.get(&name).cloned() else {
                return Ok(None);
            };
            match names.next() {
                None => return Ok(Some(entry)),
                Some(next) => {
                    let Some(sub) = entry.subtree else {
                        return Ok(None);
                    };
                    tree = self.load_tree(sub)?;
                    name = next;
                }
            }
        }
    }

    /// A pack's trailer entries, read from its footer (44 bytes) and trailer alone.
    pub(crate) fn pack_trailer(&self, name: &str, size: u64) -> Result<Vec<pack::PackEntry>> {
        read_pack_trailer(self.backend.as_ref(), name, size, self.frames.as_ref())
    }
}

/// A pack's trailer entries, read from its footer and trailer alone (ranged reads).
fn read_pack_trailer(
    backend: &dyn Backend,
    name: &str,
    size: u64,
    codec: &dyn FrameCodec,
) -> Result<Vec<pack::PackEntry>> {
    pack::read_trailer(name, size, codec, |offset, len| backend.get_range(FileKind::Pack, name, offset, len))
}

/// For `index_from_files`: a pack's trailer entries; a pack whose trailer cannot be read is
/// named as not indexed, the run goes on.
#[allow(clippy::unnecessary_wraps)] // the shape index_from_files takes
pub(crate) fn pack_trailer(
    backend: &dyn Backend,
    codec: &dyn FrameCodec,
    name: &str,
    size: u64,
) -> Result<Result<Vec<pack::PackEntry>>> {
    Ok(read_pack_trailer(backend, name, size, codec))
}
