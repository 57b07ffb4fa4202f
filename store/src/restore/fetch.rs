//! File content on its way from the repository into restored files.
//!
//! The walk (job.rs) decides what each regular file needs (file.rs) and hands the files to
//! write to this pipeline as [`FileJob`]s. A file's chunks are located in the index and cut
//! into pieces of about [`Plan::batch_bytes`] of stored frames. Pieces gather in a window of
//! [`Plan::window`] batches' worth; a full window is sorted by where the pieces' frames lie
//! and cut into batches, so that a batch holds the frames of one stretch of a pack even though
//! the restore walks files in another order than the snapshot stored them (both walk in
//! parallel). From S3 the window is 64 MiB of frames: the 454 MB benchmark tree then came in
//! about 110 requests, against 150 with batches cut in walk order (a local repository, where a
//! read costs no round trip, keeps its batches in walk order). A worker fetches a batch's frames pack by pack, one `get_ranges` call a pack for
//! exactly the frames the batch needs of it (an object store serves a call in one request per
//! span of close frames, backend/s3.rs; the local directory reads them through one handle),
//! then writes the batch's pieces. The pieces of one large file go to several workers, which
//! download and write them at once.
//!
//! Memory is bounded whatever the size of the snapshot: only a batch a worker holds has its
//! frames in memory, about `batch_bytes` each (a batch closes before a piece would take it past
//! that; one piece of a small file is never cut, so a batch may exceed it by one small file's
//! frames), and batches that wait (the window, the queue) are lists of chunk locations. A
//! window or batch also closes at [`MAX_DIRS`] directories, which its files hold open until
//! they are written. A walk thread that finds the queue full waits for a worker.
//!
//! A file is placed (its metadata set and, when it was written under a temporary name, renamed
//! over its destination) when its last piece is written, by the worker that wrote it; a
//! directory's metadata is applied once the walk below it is done and the last file written
//! into it is placed (`Held::waiting`), so its times stay as stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::at;
use super::job::{Held, Job};
use super::RestoreAction;
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::index::BlobLocation;
use crate::repo::{missing, Repo};
use crate::tree::{ChunkRef, Entry};
use crate::workers::lock;

/// Stored frames a batch gathers from a local repository: reads cost no round trip, so
/// batches stay small (their memory is all they cost).
const LOCAL_BATCH: u64 = 2 << 20;
/// Stored frames a batch gathers from a remote one (S3): a batch's frames of one pack are one
/// request when they lie close together.
const REMOTE_BATCH: u64 = 4 << 20;
/// Batches' worth of pieces sorted together by where their frames lie, from a remote
/// repository (lists of chunk locations, not data: about 3 MiB for 64 MiB of frames).
const REMOTE_WINDOW: usize = 16;
/// Workers for a remote repository: requests in flight hide each other's latency.
const REMOTE_WORKERS: usize = 6;
/// Pieces in a batch at most (files without content weigh nothing).
const MAX_PIECES: usize = 1024;
/// Directories the files of a window (and so of a batch) are written into, at most: each is
/// held open until its files are written, so waiting batches must not hold thousands.
const MAX_DIRS: usize = 256;
/// Chunk IDs located in one index query.
const LOCATE_SLICE: usize = 4096;
/// Files of up to this many chunks are located together with their directory's others.
const AHEAD_CHUNKS: usize = 256;
/// Files up to this size, their chunks one after the other without holes, are assembled in
/// memory and written with one call (most files of a source tree are one to a few chunks).
const SMALL_FILE: u64 = 1 << 20;
/// Consecutive chunks of a larger file are written together up to this much.
const WRITE_RUN: usize = 1 << 20;

/// How a restore's pipeline is sized.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    /// Stored frames a batch gathers before it is sent to the workers.
    pub(super) batch_bytes: u64,
    /// Worker threads that fetch and write batches.
    pub(super) workers: usize,
    /// Batches waiting for a worker (chunk locations only: their frames are fetched by the
    /// worker that takes them).
    pub(super) queue: usize,
    /// Batches' worth of pieces sorted together by where their frames lie (1: batches are
    /// cut in the order the walk hands files over).
    pub(super) window: usize,
}

impl Plan {
    /// The plan for `repo`, whose restore walks with `threads` threads (0: one per core).
    pub(super) fn for_repo(repo: &Repo, threads: usize) -> Self {
        let cores = crate::workers::count(threads);
        if repo.location.as_local().is_some() {
            Self { batch_bytes: LOCAL_BATCH, workers: cores, queue: 1, window: 1 }
        } else {
            let workers = REMOTE_WORKERS.max(cores);
            Self { batch_bytes: REMOTE_BATCH, workers, queue: REMOTE_WINDOW, window: REMOTE_WINDOW }
        }
    }
}

/// One regular file to write: what the walk decided, and its progress.
pub(super) struct FileJob {
    /// The directory it goes into (held open until it is placed).
    pub(super) held: Arc<Held>,
    pub(super) name: OsString,
    pub(super) dest: PathBuf,
    pub(super) entry: Entry,
    pub(super) action: RestoreAction,
    /// The hard-link group whose first member this is: its inode is recorded once placed.
    pub(super) link: Option<(u64, u64)>,
    /// Small and without holes: one piece, written in one call.
    dense: bool,
    state: Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    /// The file the pieces are written into, made by the first piece written, with its
    /// temporary name (`None`: made under its own name, in a directory this restore made; a
    /// temporary name there means something was put in its place meanwhile, and is replaced).
    temp: Option<(Arc<File>, Option<OsString>)>,
    /// The first thing that went wrong: the file is not placed.
    error: Option<Error>,
    /// Pieces not yet written, plus one while the walk is still cutting pieces.
    left: usize,
}

impl FileJob {
    pub(super) fn new(
        held: &Arc<Held>,
        name: &OsStr,
        dest: PathBuf,
        entry: &Entry,
        action: RestoreAction,
        link: Option<(u64, u64)>,
    ) -> Self {
        let mut next = 0u64;
        let dense = entry.size <= SMALL_FILE
            && entry.content.iter().all(|c| {
                let at = next;
                next = next.saturating_add(u64::from(c.len));
                c.offset == at
            })
            && next == entry.size;
        Self {
            held: Arc::clone(held),
            name: name.to_os_string(),
            dest,
            entry: entry.clone(),
            action,
            link,
            dense,
            state: Mutex::new(FileState { left: 1, ..FileState::default() }),
        }
    }

    /// Records what went wrong; the file will not be placed, so what its pieces wrote is given
    /// back at once (a full disk then costs only the files that do not fit).
    fn fail(&self, err: Error) {
        let mut s = lock(&self.state);
        if let Some((f, _)) = &s.temp {
            let _ = f.set_len(0);
        }
        s.error.get_or_insert(err);
    }

    fn failed(&self) -> bool {
        lock(&self.state).error.is_some()
    }
}

/// Chunks `chunks` of a file, with their locations.
struct Piece {
    file: Arc<FileJob>,
    chunks: Range<usize>,
    locs: Vec<Option<BlobLocation>>,
}

impl Piece {
    /// Where its first frame is, to write a batch's pieces in the order their frames lie (the
    /// frame decoded last is kept, so neighbours sharing one decode it once).
    fn first_frame(&self) -> Option<(PackId, u64)> {
        self.locs.iter().flatten().next().map(|l| (l.pack, l.entry.offset))
    }
}

/// Pieces gathered before they are sorted and cut into batches.
#[derive(Default)]
struct Window {
    pieces: Vec<Piece>,
    /// Stored bytes of their frames (a frame two pieces share counts twice).
    bytes: u64,
    dirs: HashSet<usize>,
}

impl Window {
    /// Adds a piece; true when the window is full.
    fn add(&mut self, piece: Piece, plan: &Plan) -> bool {
        let mut seen = HashSet::new();
        self.bytes += piece
            .locs
            .iter()
            .flatten()
            .filter(|l| seen.insert((l.pack, l.entry.offset)))
            .map(|l| u64::from(l.entry.stored_len))
            .sum::<u64>();
        self.dirs.insert(Arc::as_ptr(&piece.file.held) as usize);
        self.pieces.push(piece);
        self.bytes >= plan.window as u64 * plan.batch_bytes
            || self.pieces.len() >= plan.window * MAX_PIECES
            || self.dirs.len() >= MAX_DIRS
    }

    /// Its pieces in the order their frames lie, cut into batches.
    fn into_batches(self, batch_bytes: u64) -> Vec<Batch> {
        let mut pieces = self.pieces;
        pieces.sort_by_key(|p| {
            let first = p.first_frame();
            (first.is_none(), first)
        });
        let mut out = Vec::new();
        let mut batch = Batch::default();
        for piece in pieces {
            let over = batch.bytes + batch.extra(&piece) > batch_bytes || batch.pieces.len() >= MAX_PIECES;
            if over && !batch.pieces.is_empty() {
                out.push(std::mem::take(&mut batch));
            }
            batch.add(piece);
        }
        if !batch.pieces.is_empty() {
            out.push(batch);
        }
        out
    }
}

/// Pieces whose frames are fetched together.
#[derive(Default)]
struct Batch {
    pieces: Vec<Piece>,
    /// The distinct frames its pieces need, with their stored lengths.
    frames: HashMap<(PackId, u64), u32>,
    bytes: u64,
}

impl Batch {
    /// The stored bytes `piece` would add (frames this batch does not need yet).
    fn extra(&self, piece: &Piece) -> u64 {
        let mut seen = HashSet::new();
        piece
            .locs
            .iter()
            .flatten()
            .filter(|l| !self.frames.contains_key(&(l.pack, l.entry.offset)) && seen.insert((l.pack, l.entry.offset)))
            .map(|l| u64::from(l.entry.stored_len))
            .sum()
    }

    fn add(&mut self, piece: Piece) {
        for l in piece.locs.iter().flatten() {
            if self.frames.insert((l.pack, l.entry.offset), l.entry.stored_len).is_none() {
                self.bytes += u64::from(l.entry.stored_len);
            }
        }
        self.pieces.push(piece);
    }
}

/// The pipeline's shared state, in the job.
pub(super) struct Pipeline {
    plan: Plan,
    /// The pieces the walk is gathering.
    window: Mutex<Window>,
    /// The workers' queue while they run; without it pieces are written by the caller.
    sender: Mutex<Option<SyncSender<Batch>>>,
}

impl Pipeline {
    pub(super) fn new(plan: Plan) -> Self {
        Self { plan, window: Mutex::default(), sender: Mutex::new(None) }
    }
}

/// A batch's frames, as fetched.
struct Fetched {
    stored: HashMap<(PackId, u64), Vec<u8>>,
    /// Packs that could not be read for a reason other than damage (the store is down, access
    /// is refused): what the files needing them fail with.
    failed: HashMap<PackId, String>,
}

impl Job<'_> {
    /// Runs `walk` with the pipeline's workers beside it, then writes what is left; returns
    /// once every file handed to the pipeline is placed or has failed.
    pub(super) fn with_workers(&self, walk: impl FnOnce()) {
        if self.opts.dry_run {
            return walk(); // a dry run writes nothing
        }
        let plan = self.pipeline.plan;
        let (tx, rx) = sync_channel::<Batch>(plan.queue);
        let rx = Mutex::new(rx);
        std::thread::scope(|s| {
            for _ in 0..plan.workers {
                s.spawn(|| self.work(&rx));
            }
            *lock(&self.pipeline.sender) = Some(tx);
            walk();
            let last = std::mem::take(&mut *lock(&self.pipeline.window));
            for batch in last.into_batches(plan.batch_bytes) {
                self.dispatch(batch);
            }
            // Closing the queue ends the workers once it is empty.
            lock(&self.pipeline.sender).take();
        });
    }

    fn work(&self, rx: &Mutex<Receiver<Batch>>) {
        loop {
            let next = lock(rx).recv();
            match next {
                Ok(batch) => self.write_batch(batch),
                Err(_) => return,
            }
        }
    }

    /// Locates the chunks of the small files of a directory this restore made (all of them
    /// will be written) with one index query for many files instead of one each: the keys are
    /// looked up in order, in one read transaction. A failure here changes nothing: each file
    /// is then located on its own, and fails on its own.
    pub(super) fn locate_ahead<'e>(&self, held: &Held, files: impl Iterator<Item = &'e Entry>) {
        let mut names: Vec<(&'e Entry, usize)> = Vec::new();
        let mut ids: Vec<BlobId> = Vec::new();
        let flush = |names: &mut Vec<(&Entry, usize)>, ids: &mut Vec<BlobId>| {
            if let Ok(mut locs) = self.repo.index.locate_many(ids) {
                let mut located = lock(&held.located);
                for (e, n) in names.drain(..).rev() {
                    let rest = locs.split_off(locs.len() - n);
                    located.insert(OsStr::from_bytes(&e.name).to_os_string(), rest);
                }
            }
            names.clear();
            ids.clear();
        };
        for e in files.filter(|e| !e.content.is_empty() && e.content.len() <= AHEAD_CHUNKS) {
            if ids.len() + e.content.len() > LOCATE_SLICE {
                flush(&mut names, &mut ids);
            }
            ids.extend(e.content.iter().map(|c| BlobId::from(c.id)));
            names.push((e, e.content.len()));
        }
        if !ids.is_empty() {
            flush(&mut names, &mut ids);
        }
    }

    /// Hands a file to the pipeline: its chunks are located and cut into pieces, which join
    /// the window (or, without workers, are written at once).
    pub(super) fn enqueue(&self, job: FileJob) {
        lock(&job.held.waiting).files += 1;
        let job = Arc::new(job);
        let limit = self.pipeline.plan.batch_bytes;
        let mut piece = Piece { file: Arc::clone(&job), chunks: 0..0, locs: Vec::new() };
        let mut frames = HashSet::new();
        let mut bytes = 0u64;
        let mut sent = false;
        // Located with its directory's other files already (`locate_ahead`), or here.
        let ahead = lock(&job.held.located).remove(&job.name).filter(|l| l.len() == job.entry.content.len());
        let located = (|| -> Result<()> {
            for (i, slice) in job.entry.content.chunks(LOCATE_SLICE).enumerate() {
                let locs: std::borrow::Cow<'_, [Option<BlobLocation>]> = match &ahead {
                    Some(all) => all[i * LOCATE_SLICE..][..slice.len()].into(),
                    None => {
                        let ids: Vec<BlobId> = slice.iter().map(|c| BlobId::from(c.id)).collect();
                        self.repo.index.locate_many(&ids)?.into()
                    }
                };
                for &loc in locs.iter() {
                    if let Some(l) = &loc {
                        if frames.insert((l.pack, l.entry.offset)) {
                            bytes += u64::from(l.entry.stored_len);
                        }
                    }
                    piece.locs.push(loc);
                    piece.chunks.end += 1;
                    if bytes >= limit && !job.dense {
                        let end = piece.chunks.end;
                        let next = Piece { file: Arc::clone(&job), chunks: end..end, locs: Vec::new() };
                        self.push(std::mem::replace(&mut piece, next));
                        sent = true;
                        frames.clear();
                        bytes = 0;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = located {
            job.fail(e);
        }
        // A file without content (or the rest of one) is still one piece: it makes the file.
        if !piece.chunks.is_empty() || !sent {
            self.push(piece);
        }
        self.piece_done(&job); // the walk's own share
    }

    fn push(&self, piece: Piece) {
        lock(&piece.file.state).left += 1;
        if lock(&self.pipeline.sender).is_none() {
            let mut batch = Batch::default();
            batch.add(piece);
            return self.write_batch(batch);
        }
        let limit = self.pipeline.plan.batch_bytes;
        let full = {
            let mut window = lock(&self.pipeline.window);
            window.add(piece, &self.pipeline.plan).then(|| std::mem::take(&mut *window))
        };
        for batch in full.map(|w| w.into_batches(limit)).unwrap_or_default() {
            self.dispatch(batch);
        }
    }

    /// Sends a batch to the workers (waiting while the queue is full), or writes it here when
    /// they are gone.
    fn dispatch(&self, batch: Batch) {
        let tx = lock(&self.pipeline.sender).clone();
        match tx {
            Some(tx) => {
                if let Err(back) = tx.send(batch) {
                    self.write_batch(back.0);
                }
            }
            None => self.write_batch(batch),
        }
    }

    fn write_batch(&self, batch: Batch) {
        if self.stopped() {
            return;
        }
        let fetched = self.fetch(&batch);
        for piece in batch.pieces {
            let file = self.temp_of(&piece.file);
            if let Some(file) = file {
                if let Err(e) = self.fill(&piece, &file, &fetched) {
                    piece.file.fail(e);
                }
            }
            self.piece_done(&piece.file);
        }
    }

    /// Fetches a batch's frames, one `get_ranges` call per pack.
    fn fetch(&self, batch: &Batch) -> Fetched {
        let mut by_pack: BTreeMap<PackId, Vec<(u64, usize)>> = BTreeMap::new();
        for (&(pack, offset), &len) in &batch.frames {
            by_pack.entry(pack).or_default().push((offset, len as usize));
        }
        let mut out = Fetched { stored: HashMap::with_capacity(batch.frames.len()), failed: HashMap::new() };
        for (pack, mut ranges) in by_pack {
            ranges.sort_unstable();
            match self.repo.backend.get_ranges(FileKind::Pack, &pack.to_hex(), &ranges) {
                Ok(frames) => {
                    for (&(offset, _), stored) in ranges.iter().zip(frames) {
                        out.stored.insert((pack, offset), stored);
                    }
                }
                // Damaged or missing: each frame is read on its own as it is needed, so each
                // file is judged by its own frames.
                Err(e) if e.is_damage() || missing(&e) => {}
                Err(e) => {
                    out.failed.insert(pack, e.to_string());
                }
            }
        }
        out
    }

    /// The file a job's pieces are written into, made by the first piece; `None` once the job
    /// has failed. In a directory this restore made the file is made under its own name (one
    /// call less to create it, and no rename); elsewhere, and when something is there after
    /// all, under a temporary name that is renamed over the destination once it is written.
    fn temp_of(&self, job: &FileJob) -> Option<Arc<File>> {
        let mut s = lock(&job.state);
        if s.error.is_some() {
            return None;
        }
        if let Some((f, _)) = &s.temp {
            return Some(Arc::clone(f));
        }
        let d = &job.held.dir;
        let direct = match job.held.fresh.then(|| d.create_new(&job.name)) {
            Some(Ok(f)) => Some(Ok((f, None))),
            Some(Err(e)) if e.kind() == io::ErrorKind::AlreadyExists => None,
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        let made = direct.unwrap_or_else(|| d.create_temp(&self.tmp_counter).map(|(f, n)| (f, Some(n))));
        let made = made.and_then(|(f, name)| {
            if job.dense {
                return Ok((f, name));
            }
            // Holes stay holes: only data is written into a file of the full length.
            match f.set_len(job.entry.size) {
                Ok(()) => Ok((f, name)),
                Err(e) => {
                    let _ = d.remove_file(name.as_deref().unwrap_or(&job.name));
                    Err(e)
                }
            }
        });
        match made {
            Ok((f, name)) => {
                let f = Arc::new(f);
                s.temp = Some((Arc::clone(&f), name));
                Some(f)
            }
            Err(e) => {
                s.error = Some(Error::io(&job.dest, e));
                None
            }
        }
    }

    /// Writes a piece's chunks into the file.
    fn fill(&self, piece: &Piece, file: &File, fetched: &Fetched) -> Result<()> {
        let job = &piece.file;
        let e = &job.entry;
        let io_err = |err: io::Error| Error::io(&job.dest, err);
        let read = |c: &ChunkRef, loc: &Option<BlobLocation>| -> Result<Vec<u8>> {
            let loc = loc.as_ref().ok_or_else(|| Error::Missing { what: "chunk", id: c.id.to_hex() })?;
            if let Some(why) = fetched.failed.get(&loc.pack) {
                return Err(io_err(io::Error::other(why.clone())));
            }
            let stored = fetched.stored.get(&(loc.pack, loc.entry.offset)).map(Vec::as_slice);
            let data = self.repo.read_located_in(loc, stored)?;
            if data.len() != c.len as usize {
                return Err(misfit(c));
            }
            Ok(data)
        };
        let chunks = &e.content[piece.chunks.clone()];
        if job.dense {
            let mut buf = Vec::with_capacity(usize::try_from(e.size).unwrap_or(0));
            for (c, loc) in chunks.iter().zip(&piece.locs) {
                buf.extend_from_slice(&read(c, loc)?);
            }
            file.write_all_at(&buf, 0).map_err(io_err)?;
            self.progress.inc(e.size);
            return Ok(());
        }
        let mut run: Vec<u8> = Vec::new();
        let mut run_at = 0u64;
        for (c, loc) in chunks.iter().zip(&piece.locs) {
            let data = read(c, loc)?;
            if c.offset.checked_add(u64::from(c.len)).is_none_or(|end| end > e.size) {
                return Err(misfit(c));
            }
            if !run.is_empty() && (run_at + run.len() as u64 != c.offset || run.len() >= WRITE_RUN) {
                if job.failed() {
                    return Ok(()); // another piece failed it: nothing more is written
                }
                file.write_all_at(&run, run_at).map_err(io_err)?;
                self.progress.inc(run.len() as u64);
                run.clear();
            }
            if run.is_empty() {
                run_at = c.offset;
            }
            run.extend_from_slice(&data);
        }
        if !run.is_empty() {
            file.write_all_at(&run, run_at).map_err(io_err)?;
            self.progress.inc(run.len() as u64);
        }
        Ok(())
    }

    /// Counts a piece of `job` done; the last one places the file (or reports why not).
    fn piece_done(&self, job: &FileJob) {
        let (temp, error) = {
            let mut s = lock(&job.state);
            s.left -= 1;
            if s.left > 0 {
                return;
            }
            (s.temp.take(), s.error.take())
        };
        let outcome = match (temp, error) {
            (Some((file, tmp)), None) => self.place(job, &file, tmp.as_deref()),
            (temp, error) => {
                if let Some((_, tmp)) = temp {
                    let _ = job.held.dir.remove_file(tmp.as_deref().unwrap_or(&job.name));
                }
                Err(error.unwrap_or(Error::Writer("a restored file was never written")))
            }
        };
        match outcome {
            Ok(Some(inode)) => {
                if let Some(key) = job.link {
                    if let Some(src) = lock(&self.links).get_mut(&key) {
                        src.written = Some(inode);
                    }
                }
            }
            Ok(None) => {}
            Err(err) => self.fail_at(&job.dest, err),
        }
        self.file_done(&job.held);
    }

    /// Verifies (with `verify`) and sets the metadata of a written file, and renames it over
    /// its destination when it was written under the temporary name `tmp`; the (dev, inode)
    /// now there, for the first member of a hard-link group (others need not know it).
    fn place(&self, job: &FileJob, file: &File, tmp: Option<&OsStr>) -> Result<Option<(u64, u64)>> {
        let (e, d, dest) = (&job.entry, &job.held.dir, &job.dest);
        let io_err = |err: io::Error| Error::io(dest, err);
        // Checked before it replaces anything: a file that fails its hash is never put in place.
        let verified = if self.opts.verify {
            match at::hash_open_file(file) {
                Ok(h) if Some(h) == e.file_hash => Ok(true),
                Ok(_) => Err(Error::HashMismatch {
                    what: "restored file (its stored BLAKE3 differs)",
                    id: dest.display().to_string(),
                }),
                Err(err) => Err(io_err(err)),
            }
        } else {
            Ok(false)
        };
        let placed = verified.and_then(|verified| {
            // setuid/setgid only once the file is in place and whole: a killed restore never
            // leaves a set-id copy under a temporary name, nor a half-written set-id file.
            self.apply_file_meta(file, e, dest, e.mode & !0o6000);
            crate::failpoint::hit("restore.temp_written");
            match tmp {
                Some(tmp) => d.rename(tmp, &job.name).map_err(io_err).map(|()| verified),
                None => Ok(verified),
            }
        });
        let verified = match placed {
            Ok(v) => v,
            Err(err) => {
                let _ = d.remove_file(tmp.unwrap_or(&job.name));
                return Err(err);
            }
        };
        crate::failpoint::hit("restore.file_written");
        // In a directory this restore made, a temporary name means something was in the way.
        let replaced = job.held.fresh && tmp.is_some();
        self.change(dest, if replaced { RestoreAction::Overwrite } else { job.action });
        if e.mode & 0o6000 != 0 {
            use std::os::unix::fs::PermissionsExt;
            if let Err(err) = file.set_permissions(std::fs::Permissions::from_mode(e.mode)) {
                self.warnings.add(dest, format!("cannot set mode: {err}"));
            }
        }
        self.counts.files_written.add(1);
        self.counts.bytes_written.add(e.size);
        if verified {
            self.counts.files_verified.add(1);
        }
        if job.link.is_none() {
            return Ok(None);
        }
        let st = rustix::fs::fstat(file).map_err(|e| io_err(e.into()))?;
        Ok(Some((st.st_dev, st.st_ino)))
    }

    /// A file written into `held` is placed (or failed): the last one applies the directory's
    /// metadata, when its walk is done.
    fn file_done(&self, held: &Held) {
        let meta = {
            let mut w = lock(&held.waiting);
            w.files -= 1;
            if w.files > 0 {
                return;
            }
            w.meta.take()
        };
        if let Some(e) = meta {
            self.apply_dir_meta(&held.dir, &e);
        }
    }

    /// The walk below `held` is done: its metadata now, or once the files still being
    /// written into it are placed.
    pub(super) fn dir_done(&self, held: &Held, e: &Entry) {
        {
            let mut w = lock(&held.waiting);
            if w.files > 0 {
                w.meta = Some(e.clone());
                return;
            }
        }
        self.apply_dir_meta(&held.dir, e);
    }
}

pub(super) fn misfit(c: &ChunkRef) -> Error {
    Error::corrupt(format!("chunk {}", c.id), "does not fit the file it belongs to")
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::backend::{Backend, LocalBackend, ObjectInfo, Storage};
    use crate::{InitOptions, Location, NoProgress, OpenOptions, RestoreOptions, SnapshotOptions};

    /// Counts the calls that read packs, and the most one `get_ranges` call asked for.
    struct Counting {
        inner: LocalBackend,
        single: AtomicU64,
        batched: AtomicU64,
        largest: AtomicU64,
    }

    impl Backend for Counting {
        fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
            self.inner.put(kind, name, data)
        }
        fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.inner.get(kind, name)
        }
        fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            if kind == FileKind::Pack {
                self.single.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.get_range(kind, name, offset, len)
        }
        fn get_ranges(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) -> Result<Vec<Vec<u8>>> {
            if kind == FileKind::Pack {
                self.batched.fetch_add(1, Ordering::Relaxed);
                let asked: usize = ranges.iter().map(|r| r.1).sum();
                self.largest.fetch_max(asked as u64, Ordering::Relaxed);
            }
            self.inner.get_ranges(kind, name, ranges)
        }
        fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
            self.inner.size(kind, name)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
            self.inner.list(kind)
        }
        fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
            self.inner.remove(kind, name)
        }
    }

    fn noise(n: usize, seed: &mut u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 32) as u8
            })
            .collect()
    }

    /// Every file below `a` is below `b` with the same bytes.
    fn same_files(a: &Path, b: &Path) {
        for entry in std::fs::read_dir(a).expect("list") {
            let entry = entry.expect("entry");
            let other = b.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                same_files(&entry.path(), &other);
            } else {
                let want = std::fs::read(entry.path()).expect("read source");
                assert!(std::fs::read(&other).expect("read restored") == want, "{} differs", other.display());
            }
        }
    }

    #[test]
    fn a_restore_reads_the_frames_of_a_pack_in_batches_not_frame_by_frame() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for d in 0..8 {
            let sub = src.join(format!("d{d}"));
            std::fs::create_dir_all(&sub).expect("mkdir");
            for f in 0..60 {
                // Text-like (compressible) and different in every file: small frames.
                let words: Vec<u8> =
                    noise(400 + 97 * f, &mut seed).iter().map(|b| b"abcdefgh \n"[usize::from(b % 10)]).collect();
                std::fs::write(sub.join(format!("f{f}.txt")), words).expect("write");
            }
        }
        // Larger than a batch: written in pieces, by several workers.
        std::fs::write(src.join("big.bin"), noise(5 << 20, &mut seed)).expect("write");
        std::fs::write(src.join("empty"), b"").expect("write");
        let sparse = std::fs::File::create(src.join("sparse")).expect("create");
        sparse.set_len(3 << 20).expect("set_len");
        sparse.write_all_at(b"in the middle", 1 << 20).expect("write");
        drop(sparse);

        let root = dir.path().join("repo");
        let repo = Repo::init(&Location::local(&root), &InitOptions::default())?;
        repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress)?;
        let frames: HashSet<(PackId, u64)> = repo
            .index
            .packs()?
            .into_iter()
            .flat_map(|p| repo.index.pack_rows(p.id).unwrap_or_default().into_iter().map(move |e| (p.id, e)))
            .filter(|(_, e)| e.kind == crate::pack::BlobKind::Chunk)
            .map(|(p, e)| (p, e.offset))
            .collect();
        drop(repo);

        let counting = Arc::new(Counting {
            inner: LocalBackend::new(&root),
            single: AtomicU64::new(0),
            batched: AtomicU64::new(0),
            largest: AtomicU64::new(0),
        });
        let repo = Repo::open_storage(Storage::local_with(&root, counting.clone()), &OpenOptions::default())?;
        let snapshot = repo.snapshots()?.pop().expect("a snapshot");
        let target = dir.path().join("target");
        let opts = RestoreOptions { target: target.clone(), ..RestoreOptions::default() };
        let report = repo.restore(&snapshot, &opts, &NoProgress)?;
        assert!(!report.is_incomplete(), "{report:?}");
        same_files(&src, &target.join(src.strip_prefix("/").expect("absolute")));

        let (single, batched) = (counting.single.load(Ordering::Relaxed), counting.batched.load(Ordering::Relaxed));
        // One read a tree (the twelve directories from `/` down to d0..d7); the data comes in
        // batches of about LOCAL_BATCH: about 5 MiB of the big file and under 2 MiB of text
        // make a handful, where one read a frame would make over a hundred.
        assert!(frames.len() > 100, "{} frames: the test needs many", frames.len());
        assert!(single <= 12, "{single} single reads of packs");
        assert!((3..=12).contains(&batched), "{batched} batched reads for {} frames", frames.len());
        let largest = counting.largest.load(Ordering::Relaxed);
        assert!(largest <= LOCAL_BATCH + (64 << 10), "one call asked for {largest} bytes");
        Ok(())
    }
}
