//! The source scan of a snapshot: the source paths arranged as a tree from `/`, each directory
//! read through its open descriptor, excludes applied, every entry described; file content goes
//! to the upload (upload.rs).
//!
//! Directories are processed in parallel (rayon work stealing over the entries of each
//! directory, recursively). A file whose metadata matches the parent snapshot's entry keeps the
//! parent's chunk list without being read.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::capture::CAPTURES_DIR;
use crate::error::{Error, IoContext, Result};
use crate::exclude::Excludes;
use crate::fsmeta::{self, Meta, Names};
use crate::id::{FileHash, TreeId};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::report::Counters;
use crate::tally::{Counter, Warning, Warnings};
use crate::tree::{ChunkRef, Entry, EntryKind, Timestamp, Tree};
use crate::upload::{ReadError, Upload};
use crate::workers::lock;

/// The source paths as a snapshot records them: absolute, `.` and `..` taken lexically,
/// sorted, each once. A source that does not exist is an error, unless `ignore_missing`: then
/// it is left out with a warning (returned second), and only none existing is an error.
/// `captures_too`: the snapshot holds captures as well, so it needs no source path.
pub(crate) fn sources(
    paths: &[PathBuf],
    ignore_missing: bool,
    captures_too: bool,
) -> Result<(Vec<PathBuf>, Vec<Warning>)> {
    if paths.is_empty() && captures_too {
        return Ok((Vec::new(), Vec::new()));
    }
    if paths.is_empty() {
        return Err(Error::InvalidInput("no paths to snapshot".into()));
    }
    let mut paths = paths.iter().map(|p| normalise(p)).collect::<Result<Vec<_>>>()?;
    paths.sort();
    paths.dedup();
    let mut found = Vec::with_capacity(paths.len());
    let mut missing = Vec::new();
    for p in paths {
        match fs::symlink_metadata(&p) {
            Ok(_) => found.push(p),
            Err(e) if ignore_missing && e.kind() == io::ErrorKind::NotFound => {
                missing.push(Warning::new(&p, "does not exist: left out of the snapshot (--ignore-missing)"));
            }
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    if found.is_empty() && !captures_too {
        return Err(Error::InvalidInput(format!(
            "none of the paths to snapshot exists ({})",
            missing.iter().map(|w| w.path.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((found, missing))
}

/// Makes a path absolute and removes `.` and `..` lexically: the snapshot keeps the path as
/// given (a source that is a symlink is followed when it is read, but stored under its own path).
fn normalise(path: &Path) -> Result<PathBuf> {
    Ok(crate::tree::snapshot_path(&std::path::absolute(path).at(path)?))
}

/// The source paths arranged as a tree from `/`: inner nodes are directories above a source.
enum Node {
    Source,
    Inner(BTreeMap<Vec<u8>, Node>),
}

fn build_nodes(paths: &[PathBuf]) -> Node {
    let mut root = Node::Inner(BTreeMap::new());
    for p in paths {
        let names: Vec<Vec<u8>> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            return Node::Source; // `/` itself
        }
        let mut node = &mut root;
        for (i, name) in names.iter().enumerate() {
            let Node::Inner(children) = node else { break }; // an ancestor is already a source
            let last = i + 1 == names.len();
            node = children.entry(name.clone()).or_insert_with(|| {
                if last {
                    Node::Source
                } else {
                    Node::Inner(BTreeMap::new())
                }
            });
            if last {
                *node = Node::Source;
            }
        }
    }
    root
}

/// How a snapshot reads its sources, settled before the walk starts.
pub(crate) struct Scan {
    excludes: Excludes,
    one_file_system: bool,
    follow_sources: bool,
    full: bool,
    /// (st_dev, st_ino) of the repository's root: never entered, by whatever path it is met.
    repo_id: Option<(u64, u64)>,
}

impl Scan {
    /// The settings of a walk; `local_root` is the repository's folder when it is local (a
    /// source may hold it; it is never entered).
    pub(crate) fn new(
        excludes: &[String],
        one_file_system: bool,
        follow_sources: bool,
        full: bool,
        local_root: Option<&Path>,
        skip_captures_dir: bool,
    ) -> Result<Self> {
        let repo_root = local_root.and_then(|r| fs::canonicalize(r).ok());
        // A snapshot of `/` does not read a `/.cairn-captures` that `restore --captures` wrote:
        // the name holds this snapshot's own captures.
        let mut patterns = excludes.to_vec();
        if skip_captures_dir {
            patterns.push(format!("/{CAPTURES_DIR}"));
        }
        Ok(Self {
            excludes: Excludes::new(&patterns, repo_root)?,
            one_file_system,
            follow_sources,
            full,
            repo_id: local_root.and_then(|r| rustix::fs::stat(r).ok()).map(|st| {
                let m = Meta::from(&st);
                (m.dev, m.ino)
            }),
        })
    }
}

/// mtime and ctime of a hard-linked inode, to tell whether the cached content still applies.
type Timestamp2 = (Timestamp, Timestamp);

/// A hard-linked file's content as read in this run: chunks, hash, and the times it had.
type LinkedContent = (Vec<ChunkRef>, Option<FileHash>, Timestamp2);

/// The walk's state shared by the worker threads.
pub(crate) struct Walk<'a> {
    repo: &'a Repo,
    progress: &'a dyn Progress,
    scan: &'a Scan,
    upload: &'a Upload<'a>,
    counters: &'a Counters,
    /// The parent was indexed in the current generation: nothing it names can have left the
    /// index since (only a rebuild or repair removes what a snapshot needs, and they start a
    /// new generation; gc never deletes what a snapshot or a running session needs), so its
    /// chunk lists are reused without looking each chunk up.
    trusted_parent: bool,
    names: Names,
    warnings: Warnings,
    notes: Warnings,
    /// Hard-linked files already read in this run: (dev, inode) → content and hash.
    links: Mutex<HashMap<(u64, u64), LinkedContent>>,
    /// An entry the tree of `/` gets besides what the sources hold: the captures directory.
    root_entry: Option<Entry>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(
        repo: &'a Repo,
        progress: &'a dyn Progress,
        scan: &'a Scan,
        upload: &'a Upload<'a>,
        counters: &'a Counters,
        trusted_parent: bool,
    ) -> Self {
        Self {
            repo,
            progress,
            scan,
            upload,
            counters,
            trusted_parent,
            names: Names::default(),
            warnings: Warnings::default(),
            notes: Warnings::default(),
            links: Mutex::new(HashMap::new()),
            root_entry: None,
        }
    }

    /// Adds `entry` (the captures directory) to the tree of `/`, in place of any entry of that
    /// name.
    pub(crate) fn with_root_entry(mut self, entry: Option<Entry>) -> Self {
        self.root_entry = entry;
        self
    }

    /// The entries of a directory, with the root entry added when it is `/`.
    fn add_root_entry(&self, path: &Path, entries: &mut Vec<Entry>) {
        let Some(extra) = self.root_entry.as_ref().filter(|_| path == Path::new("/")) else {
            return;
        };
        match entries.binary_search_by(|e| e.name.as_slice().cmp(&extra.name)) {
            Ok(i) => entries[i] = extra.clone(),
            Err(i) => entries.insert(i, extra.clone()),
        }
    }

    /// What the walk has to say: (warnings, notes).
    pub(crate) fn into_findings(self) -> (Vec<Warning>, Vec<Warning>) {
        (self.warnings.into_vec(), self.notes.into_vec())
    }

    /// The tree of `/` holding the source paths, `parent` the parent snapshot's.
    pub(crate) fn root(&self, paths: &[PathBuf], parent: Option<&Tree>) -> Result<TreeId> {
        let root = rustix::fs::open("/", DIR_FLAGS, Mode::empty()).map_err(|e| Error::io(Path::new("/"), e.into()))?;
        match build_nodes(paths) {
            Node::Source => {
                let meta = fstat(&root).at("/")?;
                self.dir_tree(root.as_fd(), Path::new("/"), parent, None, meta.dev)
            }
            Node::Inner(children) => self.inner_tree(root.as_fd(), Path::new("/"), &children, parent),
        }
    }

    /// Notes and warnings go into the report, not the log: the caller prints the report, and
    /// a line in both would be said twice.
    fn note(&self, path: &Path, message: impl Into<String>) {
        self.notes.push(Warning::new(path, message));
    }

    fn warn(&self, path: &Path, message: impl Into<String>) {
        self.warnings.push(Warning::new(path, message));
    }

    /// The tree of the directories above the source paths, each opened relative to the one
    /// above it. The path as given names directories: a symlink on the way is followed, as the
    /// kernel follows it for any path (its entry gets the metadata of the directory it leads to).
    fn inner_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        children: &BTreeMap<Vec<u8>, Node>,
        parent: Option<&Tree>,
    ) -> Result<TreeId> {
        let entries: Vec<Option<Entry>> = children
            .par_iter()
            .map(|(name, node)| {
                let child_path = path.join(OsStr::from_bytes(name));
                let cname = CString::new(name.clone())
                    .map_err(|_| Error::InvalidInput(format!("{} has a NUL byte", child_path.display())))?;
                let parent_entry = parent.and_then(|t| t.get(name));
                match node {
                    Node::Source => {
                        let at = At { dir, name: &cname, path: &child_path, follow: false };
                        let (at, meta) = self.source_root(at)?;
                        self.entry(at, name, &meta, parent_entry, meta.dev)
                    }
                    Node::Inner(grand) => {
                        let fd = rustix::fs::openat(dir, cname.as_c_str(), DIR_FLAGS, Mode::empty())
                            .map_err(|e| Error::io(&child_path, e.into()))?;
                        let meta = fstat(&fd).map_err(|e| Error::io(&child_path, e))?;
                        let mut entry = Entry::new(name.clone(), EntryKind::Dir);
                        fsmeta::fill(&mut entry, &meta, || fsmeta::xattrs_of_fd(fd.as_fd()), &self.names, None);
                        let sub = self.parent_subtree(parent_entry);
                        entry.subtree =
                            Some(self.inner_tree(fd.as_fd(), &child_path, grand, sub.as_ref().map(|(_, t)| t))?);
                        Ok(Some(entry))
                    }
                }
            })
            .collect::<Result<_>>()?;
        let mut entries: Vec<Entry> = entries.into_iter().flatten().collect();
        self.add_root_entry(path, &mut entries);
        self.upload.store_tree(Tree { entries })
    }

    /// A source path as given: a symlink is followed (restic does the same), so that
    /// `cairn snapshot /opt/app` with `/opt/app -> /srv/app-v2` stores the target's contents
    /// under `/opt/app`, as a directory with the target's metadata; a note says so. Symlinks
    /// below a source are never followed. A link whose target cannot be reached is stored as
    /// the link.
    fn source_root<'b>(&self, at: At<'b>) -> Result<(At<'b>, Meta)> {
        let meta = stat_at(at).map_err(|e| Error::io(at.path, e))?; // a missing source is an error
        if meta.file_type() != rustix::fs::FileType::Symlink || !self.scan.follow_sources {
            return Ok((at, meta));
        }
        let target = rustix::fs::readlinkat(at.dir, at.name, Vec::new())
            .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned())
            .unwrap_or_default();
        let follow = At { follow: true, ..at };
        match stat_at(follow) {
            Ok(m) => {
                self.note(at.path, format!("a symlink to {target}: followed, its target is stored under this path"));
                Ok((follow, m))
            }
            Err(e) => {
                self.note(at.path, format!("a symlink to {target}, which cannot be reached ({e}): stored as the link"));
                Ok((at, meta))
            }
        }
    }

    fn parent_subtree(&self, parent_entry: Option<&Entry>) -> Option<(TreeId, Tree)> {
        let id = parent_entry.filter(|e| e.kind == EntryKind::Dir)?.subtree?;
        // A parent tree that cannot be read only costs change detection, never correctness.
        self.repo.load_tree(id).ok().map(|t| (id, t))
    }

    /// One directory's tree, read through its open descriptor: each child is stat'ed, opened
    /// and read relative to it, so no path longer than one name is ever handed to the kernel
    /// (a tree deeper than PATH_MAX is walked like any other) and a directory renamed or
    /// replaced meanwhile cannot redirect the walk. `parent_id` names `parent` when it is known.
    fn dir_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        parent: Option<&Tree>,
        parent_id: Option<TreeId>,
        dev: u64,
    ) -> Result<TreeId> {
        let mut names = match fsmeta::list_dir(dir) {
            Ok(names) => names,
            Err((names, e)) => {
                self.warn(path, format!("cannot list the whole directory: {e}"));
                names
            }
        };
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let entries: Vec<Option<Entry>> = names
            .par_iter()
            .map(|name| {
                let bytes = name.as_bytes();
                let child = path.join(OsStr::from_bytes(bytes));
                if self.scan.excludes.excluded(&child, bytes) {
                    return Ok(None);
                }
                let at = At { dir, name, path: &child, follow: false };
                let meta = match stat_at(at) {
                    Ok(m) => m,
                    Err(e) => {
                        self.warn(&child, format!("vanished or unreadable: {e}"));
                        return Ok(None);
                    }
                };
                self.entry(at, bytes, &meta, parent.and_then(|t| t.get(bytes)), dev)
            })
            .collect::<Result<_>>()?;
        let mut entries: Vec<Entry> = entries.into_iter().flatten().collect();
        self.add_root_entry(path, &mut entries);
        let tree = Tree { entries };
        // An unchanged directory keeps its parent's tree: no encoding, hashing or index lookup
        // (the parent is trusted, so its tree is indexed).
        if let (Some(p), Some(id)) = (parent, parent_id) {
            if self.trusted_parent && *p == tree {
                return Ok(id);
            }
        }
        self.upload.store_tree(tree)
    }

    /// The entry for one name (recursing into directories).
    fn entry(&self, at: At<'_>, name: &[u8], meta: &Meta, parent: Option<&Entry>, dev: u64) -> Result<Option<Entry>> {
        let Some(kind) = fsmeta::kind_of(meta) else {
            log::debug!("{}: socket skipped", at.path.display());
            return Ok(None);
        };
        let mut entry = Entry::new(name.to_vec(), kind);
        match kind {
            EntryKind::Dir => {
                // The path check in `Excludes` misses the repository reached by another path (a
                // bind mount, a symlinked source); its identity does not.
                if self.scan.repo_id == Some((meta.dev, meta.ino)) {
                    self.note(at.path, "the repository itself, reached under this path: left out");
                    return Ok(None);
                }
                self.counters.dirs.add(1);
                let sub = self.parent_subtree(parent);
                if self.scan.one_file_system && meta.dev != dev {
                    // A mount point: kept, not entered.
                    fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                    entry.subtree = Some(self.upload.store_tree(Tree::default())?);
                    return Ok(Some(entry));
                }
                match open_dir_at(at) {
                    Ok(fd) => {
                        // The directory as opened is the one described and read (it may have been
                        // replaced since it was listed).
                        let meta = fstat(&fd).unwrap_or(*meta);
                        fsmeta::fill(&mut entry, &meta, || fsmeta::xattrs_of_fd(fd.as_fd()), &self.names, parent);
                        let (sub_tree, sub_id) = (sub.as_ref().map(|(_, t)| t), sub.as_ref().map(|(id, _)| *id));
                        entry.subtree = Some(self.dir_tree(fd.as_fd(), at.path, sub_tree, sub_id, meta.dev)?);
                    }
                    Err(e) => {
                        self.warn(at.path, format!("cannot read directory: {e}"));
                        fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                        entry.subtree = Some(self.upload.store_tree(Tree::default())?);
                    }
                }
            }
            EntryKind::File => {
                fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                self.progress.item(&at.path.to_string_lossy());
                if !self.file_content(at, &mut entry, parent)? {
                    return Ok(None);
                }
                // Counted once stored, so the totals describe what the snapshot holds.
                self.counters.files.add(1);
                self.counters.bytes_total.add(entry.size);
            }
            EntryKind::Symlink => {
                fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                match rustix::fs::readlinkat(at.dir, at.name, Vec::new()) {
                    Ok(t) => entry.target = t.into_bytes(),
                    Err(e) => {
                        self.warn(at.path, format!("cannot read symlink: {}", io::Error::from(e)));
                        return Ok(None);
                    }
                }
                self.counters.symlinks.add(1);
            }
            _ => {
                fsmeta::fill(&mut entry, meta, || xattrs_at(at), &self.names, parent);
                self.counters.specials.add(1);
            }
        }
        Ok(Some(entry))
    }

    /// Fills a file entry's content: from the parent when its metadata is unchanged, else by
    /// reading it. False when the file could not be read (a warning was recorded; it is then
    /// counted neither as new nor as changed).
    fn file_content(&self, at: At<'_>, entry: &mut Entry, parent: Option<&Entry>) -> Result<bool> {
        let counter: &Counter = if let Some(p) = parent.filter(|p| p.kind == EntryKind::File) {
            let same =
                p.size == entry.size && p.mtime == entry.mtime && p.ctime == entry.ctime && p.inode == entry.inode;
            if same && !self.scan.full && (self.trusted_parent || self.upload.all_present(&p.content)?) {
                entry.content.clone_from(&p.content);
                entry.file_hash = p.file_hash;
                self.counters.files_unchanged.add(1);
                // Done with as surely as a file read: the bar's total counts every file.
                self.progress.inc(entry.size);
                return Ok(true);
            }
            &self.counters.files_changed
        } else {
            &self.counters.files_new
        };
        let key = (entry.dev, entry.inode);
        if entry.nlink > 1 {
            let links = lock(&self.links);
            if let Some((content, hash, times)) = links.get(&key) {
                if *times == (entry.mtime, entry.ctime) {
                    entry.content.clone_from(content);
                    entry.file_hash = *hash;
                    counter.add(1);
                    return Ok(true);
                }
            }
        }
        match self.read_file(at, entry) {
            Ok(()) => {}
            Err(ReadError::Warn(msg)) => {
                self.warn(at.path, msg);
                return Ok(false);
            }
            Err(ReadError::Fatal(e)) => return Err(e),
        }
        counter.add(1);
        if entry.nlink > 1 {
            lock(&self.links).insert(key, (entry.content.clone(), entry.file_hash, (entry.mtime, entry.ctime)));
        }
        Ok(true)
    }

    /// Reads a file, retrying once when it changes under us. The stored chunks and the file hash
    /// always come from the same bytes, so what is stored matches its hash even then.
    fn read_file(&self, at: At<'_>, entry: &mut Entry) -> Result<(), ReadError> {
        for attempt in 0..2 {
            let file = open_file_at(at).map_err(|e| ReadError::Warn(format!("cannot open: {e}")))?;
            let before = fstat(&file).map_err(|e| ReadError::Warn(format!("cannot stat: {e}")))?;
            // The name must still be a regular file, and (on the first attempt) the one that
            // was listed; a retry reads whatever replaced it.
            if !before.is_file() || (attempt == 0 && before.ino != entry.inode) {
                if attempt == 0 && before.is_file() {
                    continue;
                }
                return Err(ReadError::Warn("replaced by something else while being read; not stored".into()));
            }
            // Metadata is taken from the open file, so that it describes the bytes we read.
            fsmeta::fill(entry, &before, || fsmeta::xattrs_of_fd(file.as_fd()), &self.names, None);
            crate::failpoint::hit("snapshot.file_read");
            let (content, hash) = self.upload.chunk_file(&file, &before)?;
            let after = fstat(&file).map_err(|e| ReadError::Warn(format!("cannot stat: {e}")))?;
            let now = stat_at(at).ok();
            let stable = after.size == before.size
                && after.mtime == before.mtime
                && after.ctime == before.ctime
                && now.is_some_and(|m| m.ino == before.ino);
            entry.content = content;
            entry.file_hash = Some(hash);
            if stable {
                return Ok(());
            }
            if attempt == 1 {
                self.warn(
                    at.path,
                    "changed while being read (twice); stored as read, which may mix old and new content",
                );
            }
        }
        Ok(())
    }
}

/// Where an entry is found: a name in an open directory. The full path is only a label, for
/// messages, excludes and progress; it may be longer than any path the kernel takes.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    path: &'a Path,
    /// Follow a final symlink: only for a source path given as a symlink.
    follow: bool,
}

/// How every directory of the walk is opened: `O_NOFOLLOW` is added below a source, so a symlink
/// that replaced a directory after it was listed is never entered.
const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

fn nofollow(at: At<'_>) -> OFlags {
    if at.follow {
        OFlags::empty()
    } else {
        OFlags::NOFOLLOW
    }
}

fn stat_at(at: At<'_>) -> io::Result<Meta> {
    let flags = if at.follow { AtFlags::empty() } else { AtFlags::SYMLINK_NOFOLLOW };
    Ok(Meta::from(&rustix::fs::statat(at.dir, at.name, flags)?))
}

fn fstat(fd: impl AsFd) -> io::Result<Meta> {
    Ok(Meta::from(&rustix::fs::fstat(fd)?))
}

fn open_dir_at(at: At<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(at.dir, at.name, DIR_FLAGS | nofollow(at), Mode::empty())?)
}

/// Opens a source file without following a symlink (unless `at` says so) and, where allowed,
/// without updating its access time.
fn open_file_at(at: At<'_>) -> io::Result<File> {
    fsmeta::open_read_at(at.dir, at.name, nofollow(at))
}

/// The extended attributes of the entry `at` names (following it when `at` does).
fn xattrs_at(at: At<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if at.follow {
        // A followed source root: a path given on the command line, short enough to use.
        let Ok(names) = xattr::list_deref(at.path) else {
            return Vec::new();
        };
        let mut v: Vec<(Vec<u8>, Vec<u8>)> = names
            .filter_map(|n| Some((n.as_bytes().to_vec(), xattr::get_deref(at.path, &n).ok().flatten()?)))
            .collect();
        v.sort();
        return v;
    }
    fsmeta::xattrs_at(at.dir, at.name, at.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_is_lexical() {
        assert_eq!(normalise(Path::new("/a/./b/../c")).ok(), Some(PathBuf::from("/a/c")));
        assert_eq!(normalise(Path::new("/..")).ok(), Some(PathBuf::from("/")));
    }

    #[test]
    fn nested_sources_collapse_into_the_outer_one() {
        let Node::Inner(top) = build_nodes(&[PathBuf::from("/a/b"), PathBuf::from("/a/b/c"), PathBuf::from("/d")])
        else {
            panic!("root should be inner")
        };
        assert!(matches!(top.get(&b"d"[..]), Some(Node::Source)));
        let Some(Node::Inner(a)) = top.get(&b"a"[..]) else { panic!("a should be inner") };
        assert!(matches!(a.get(&b"b"[..]), Some(Node::Source)));
        assert!(matches!(build_nodes(&[PathBuf::from("/"), PathBuf::from("/x")]), Node::Source));
    }
}
