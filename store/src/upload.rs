//! The snapshot's way into the repository: file content is chunked, hashed and compressed
//! (rayon), and new blobs go through a bounded channel to one writer thread, which fills packs,
//! makes each durable and indexes it.
//!
//! The chunks of one large file are hashed and compressed in parallel one buffer at a time.
//! Memory is bounded by the work in flight: a read buffer per file being read, the channel, and
//! the two packs being filled. A blob is stored once per repository: one that is indexed, or
//! already on its way to the writer, is only named.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::backend::FileKind;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::fsmeta::Meta;
use crate::id::{BlobId, ChunkId, FileHash, PackId, TreeId};
use crate::pack::{BlobKind, PackEntry, PackWriter, SealedFrame, FRAME_TARGET};
use crate::progress::Progress;
use crate::repo::{now_secs, Repo};
use crate::report::Counters;
use crate::tree::{ChunkRef, Tree};
use crate::workers::lock;

/// Read buffer of one file being chunked. Large enough for several chunks, so that the chunks of
/// one buffer can be compressed in parallel.
const READ_BUFFER: usize = 4 << 20;
/// Blobs waiting for the writer thread (each at most `max_size` bytes).
const CHANNEL_DEPTH: usize = 64;

/// Stores what a walk reads, from its worker threads.
pub(crate) struct Upload<'a> {
    repo: &'a Repo,
    progress: &'a dyn Progress,
    counters: &'a Counters,
    /// Blobs sent to the writer but not yet indexed (cleared as packs are indexed).
    pending: Arc<Mutex<HashSet<BlobId>>>,
    /// The writer's channel; none on a dry run, which only counts what it would store.
    sender: Option<SyncSender<SealedFrame>>,
    chunkers: Mutex<Vec<Chunker>>,
    /// New chunks too few to fill a frame of their own (small files, file tails), one gatherer
    /// per worker thread: they are compressed together with the same thread's next files, so a
    /// small file gets the context zstd needs (docs/FORMAT.md, "Frames") and restore, which
    /// walks files in the same order, still finds them in the frame it decoded last.
    gathers: Vec<Mutex<Gather>>,
}

/// Small new chunks waiting for a shared frame.
#[derive(Default)]
struct Gather {
    blobs: Vec<(BlobId, Vec<u8>)>,
    len: usize,
}

/// Runs `walk` with an upload for what it reads, on `workers` threads, and returns once every
/// blob it stored is in a pack that is durable and indexed (on a dry run, nothing is stored).
pub(crate) fn run<T>(
    repo: &Repo,
    progress: &dyn Progress,
    counters: &Counters,
    workers: usize,
    dry_run: bool,
    walk: impl FnOnce(&Upload<'_>) -> Result<T>,
) -> Result<T> {
    run_as("snapshot", repo, progress, counters, workers, dry_run, walk)
}

/// `run` for the operation `kind` (`snapshot`, `copy`), which names the writer's fail-points
/// (`KIND.pack_written`, `KIND.pack_indexed`).
pub(crate) fn run_as<T>(
    kind: &'static str,
    repo: &Repo,
    progress: &dyn Progress,
    counters: &Counters,
    workers: usize,
    dry_run: bool,
    walk: impl FnOnce(&Upload<'_>) -> Result<T>,
) -> Result<T> {
    let upload = |sender| Upload {
        repo,
        progress,
        counters,
        pending: Arc::default(),
        sender,
        chunkers: Mutex::new(Vec::new()),
        gathers: (0..=workers).map(|_| Mutex::default()).collect(),
    };
    // What the gatherers still hold is sealed before the writer is told to finish.
    let walk = |u: &Upload<'_>| walk(u).and_then(|out| u.flush_gathered().map(|()| out));
    if dry_run {
        return walk(&upload(None));
    }
    let (tx, rx) = sync_channel(CHANNEL_DEPTH);
    let upload = upload(Some(tx));
    std::thread::scope(|s| {
        let pending = Arc::clone(&upload.pending);
        let handle = s.spawn(move || writer(kind, repo, rx, &pending));
        let walked = walk(&upload);
        drop(upload); // closes the channel: the writer flushes and ends
        let written = handle.join().unwrap_or_else(|_| Err(Error::Writer("pack writer panicked")));
        // A write error is the cause of a walk error ("writer stopped"): report it first.
        written.and(walked)
    })
}

impl Upload<'_> {
    /// Registers a blob as needed by this run; true when it must be stored (neither indexed nor
    /// already on its way to the writer).
    fn claim(&self, id: BlobId) -> Result<bool> {
        Ok(self.claim_many(&[id])?[0])
    }

    /// `claim` for many blobs, with one index transaction for those not pending.
    pub(crate) fn claim_many(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        let pending: Vec<bool> = {
            let p = lock(&self.pending);
            ids.iter().map(|id| p.contains(id)).collect()
        };
        let unknown: Vec<BlobId> = ids.iter().zip(&pending).filter(|(_, p)| !**p).map(|(id, _)| *id).collect();
        let mut indexed = self.repo.index.has_blobs(&unknown)?.into_iter();
        let mut p = lock(&self.pending);
        Ok(ids
            .iter()
            .zip(pending)
            .map(|(id, was_pending)| !was_pending && !indexed.next().unwrap_or(true) && p.insert(*id))
            .collect())
    }

    /// Gives back claims on blobs that will not be sent after all (a copy that could not read
    /// them): they count as absent again, so that a later claim sends them.
    pub(crate) fn unclaim(&self, ids: &[BlobId]) {
        let mut p = lock(&self.pending);
        for id in ids {
            p.remove(id);
        }
    }

    /// True when every chunk is still indexed, so reusing the parent's list keeps the snapshot
    /// complete (a chunk lost to damage and dropped by `repair index` is read and stored again).
    pub(crate) fn all_present(&self, content: &[ChunkRef]) -> Result<bool> {
        let ids: Vec<BlobId> = content.iter().map(|c| BlobId::from(c.id)).collect();
        let indexed = self.repo.index.has_blobs(&ids)?;
        let pending = lock(&self.pending);
        Ok(ids.iter().zip(indexed).all(|(id, known)| known || pending.contains(id)))
    }

    /// Hands a sealed frame to the pack writer (or, on a dry run, only counts it).
    pub(crate) fn send(&self, frame: SealedFrame) -> Result<()> {
        self.counters.blobs_new.add(frame.members.len() as u64);
        self.counters.data_added.add(u64::from(frame.raw_len));
        self.counters.data_stored.add(frame.data.len() as u64);
        match &self.sender {
            Some(tx) => tx.send(frame).map_err(|_| Error::Writer("the pack writer stopped")),
            None => Ok(()),
        }
    }

    /// Stores the new chunks among one buffer's chunks: consecutive new chunks are compressed
    /// together in frames of up to `FRAME_TARGET` bytes, frames in parallel.
    fn store_chunks(&self, buf: &[u8], cuts: &[(usize, usize)], ids: &[ChunkId]) -> Result<()> {
        let blob_ids: Vec<BlobId> = ids.iter().map(|id| BlobId::from(*id)).collect();
        let fresh = self.claim_many(&blob_ids)?;
        let mut frames: Vec<Vec<usize>> = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut current_len = 0;
        for (i, _) in fresh.iter().enumerate().filter(|(_, f)| **f) {
            let len = cuts[i].1 - cuts[i].0;
            if !current.is_empty() && current_len + len > FRAME_TARGET {
                frames.push(std::mem::take(&mut current));
                current_len = 0;
            }
            current.push(i);
            current_len += len;
        }
        if !current.is_empty() {
            frames.push(current);
        }
        let seal = |members: &Vec<usize>| {
            let blobs: Vec<(BlobKind, BlobId, &[u8])> =
                members.iter().map(|&i| (BlobKind::Chunk, BlobId::from(ids[i]), &buf[cuts[i].0..cuts[i].1])).collect();
            if blobs.iter().map(|b| b.2.len()).sum::<usize>() < FRAME_TARGET / 2 {
                return self.gather(&blobs);
            }
            self.send(self.repo.frames.seal(&blobs))
        };
        if frames.len() > 1 {
            frames.par_iter().try_for_each(seal)
        } else {
            frames.iter().try_for_each(seal)
        }
    }

    /// Adds small new chunks to this thread's gatherer; seals it once it holds a frame's worth.
    fn gather(&self, blobs: &[(BlobKind, BlobId, &[u8])]) -> Result<()> {
        let slot = rayon::current_thread_index().map_or(0, |i| i + 1) % self.gathers.len();
        let full = {
            let mut g = lock(&self.gathers[slot]);
            for &(_, id, data) in blobs {
                g.len += data.len();
                g.blobs.push((id, data.to_vec()));
            }
            (g.len >= FRAME_TARGET).then(|| std::mem::take(&mut *g))
        };
        full.map_or(Ok(()), |g| self.seal_gathered(&g))
    }

    fn seal_gathered(&self, g: &Gather) -> Result<()> {
        let blobs: Vec<(BlobKind, BlobId, &[u8])> =
            g.blobs.iter().map(|(id, data)| (BlobKind::Chunk, *id, data.as_slice())).collect();
        self.send(self.repo.frames.seal(&blobs))
    }

    /// Seals what the gatherers still hold.
    fn flush_gathered(&self) -> Result<()> {
        for slot in &self.gathers {
            let g = std::mem::take(&mut *lock(slot));
            if !g.blobs.is_empty() {
                self.seal_gathered(&g)?;
            }
        }
        Ok(())
    }

    /// Stores a directory's tree, unless the repository has it already.
    pub(crate) fn store_tree(&self, tree: Tree) -> Result<TreeId> {
        let bytes = tree.encode();
        let id = self.repo.frames.id_of(&bytes).as_tree();
        if let Some(run) = self.repo.put_run() {
            run.keep(id, &bytes);
        }
        if self.claim(id.into())? {
            self.send(self.repo.frames.seal(&[(BlobKind::Tree, id.into(), &bytes)]))?;
        }
        Ok(id)
    }

    fn take_chunker(&self) -> Chunker {
        lock(&self.chunkers).pop().unwrap_or_else(|| Chunker::new(self.repo.config.chunker, READ_BUFFER))
    }

    fn give_chunker(&self, c: Chunker) {
        lock(&self.chunkers).push(c);
    }

    /// Chunks, hashes and stores an open file; sparse files by their data segments only.
    pub(crate) fn chunk_file(&self, file: &File, meta: &Meta) -> Result<(Vec<ChunkRef>, FileHash), ReadError> {
        let size = meta.size;
        let segments = if meta.blocks.saturating_mul(512) < size { data_segments(file, size) } else { vec![(0, size)] };
        let mut chunker = self.take_chunker();
        let mut hasher = blake3::Hasher::new();
        let mut content = Vec::new();
        let mut pos = 0u64; // how far the whole-file hash has got
        let mut reader = file;
        let result = (|| {
            for (start, end) in segments {
                hash_zeros(&mut hasher, start - pos);
                reader.seek(SeekFrom::Start(start)).map_err(|e| ReadError::Warn(format!("cannot seek: {e}")))?;
                let read = self.chunk_run(&mut chunker, &mut reader, end - start, start, &mut hasher, &mut content)?;
                pos = start + read;
                if read < end - start {
                    break; // the file shrank; the stat check after reading reports it
                }
            }
            // A trailing hole (or bytes lost to shrinking) restores as zeros up to `size`: the
            // hash covers exactly what a restore produces.
            hash_zeros(&mut hasher, size.saturating_sub(pos));
            Ok::<_, ReadError>(())
        })();
        self.give_chunker(chunker);
        result?;
        Ok((content, FileHash::from_hash(hasher.finalize())))
    }

    /// Chunks, hashes and stores a stream read to its end (a capture's pipe): one read buffer
    /// in memory, whatever the stream's length. Returns the chunks, the hash and the length.
    pub(crate) fn chunk_stream(&self, reader: &mut impl Read) -> Result<(Vec<ChunkRef>, FileHash, u64), ReadError> {
        let mut chunker = self.take_chunker();
        let mut hasher = blake3::Hasher::new();
        let mut content = Vec::new();
        let result = self.chunk_run(&mut chunker, reader, u64::MAX, 0, &mut hasher, &mut content);
        self.give_chunker(chunker);
        let len = result?;
        Ok((content, FileHash::from_hash(hasher.finalize()), len))
    }

    /// The one way content becomes chunks: up to `limit` bytes of `reader`, which start at
    /// `offset` of the file, are hashed into `hasher`, stored, and appended to `content`.
    /// Returns the bytes read.
    fn chunk_run(
        &self,
        chunker: &mut Chunker,
        reader: &mut impl Read,
        limit: u64,
        mut offset: u64,
        hasher: &mut blake3::Hasher,
        content: &mut Vec<ChunkRef>,
    ) -> Result<u64, ReadError> {
        chunker.run::<_, ReadError>(reader, limit, |buf, cuts| {
            hasher.update(&buf[cuts[0].0..cuts[cuts.len() - 1].1]);
            let ids: Vec<ChunkId> = if cuts.len() > 4 {
                cuts.par_iter().map(|&(s, e)| self.repo.frames.id_of(&buf[s..e]).as_chunk()).collect()
            } else {
                cuts.iter().map(|&(s, e)| self.repo.frames.id_of(&buf[s..e]).as_chunk()).collect()
            };
            self.store_chunks(buf, cuts, &ids)?;
            for (id, &(s, e)) in ids.into_iter().zip(cuts) {
                content.push(ChunkRef { id, offset, len: (e - s) as u32 });
                offset += (e - s) as u64;
            }
            let n = (cuts[cuts.len() - 1].1 - cuts[0].0) as u64;
            self.counters.bytes_read.add(n);
            self.progress.inc(n);
            Ok(())
        })
    }
}

/// Why a file could not be read into the snapshot.
pub(crate) enum ReadError {
    /// This file is left out (or stored as read) with a warning; the snapshot goes on.
    Warn(String),
    /// The snapshot cannot go on (repository write failed).
    Fatal(Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Warn(format!("read error: {e}"))
    }
}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        Self::Fatal(e)
    }
}

fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The data ranges of a sparse file, from SEEK_DATA / SEEK_HOLE; the whole file when the
/// filesystem cannot tell.
fn data_segments(file: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::SeekFrom as RSeek;
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let Ok(start) = rustix::fs::seek(file, RSeek::Data(pos)) else {
            break;
        }; // ENXIO: only a hole remains
        let Ok(end) = rustix::fs::seek(file, RSeek::Hole(start)) else {
            return vec![(0, size)];
        };
        let end = end.min(size);
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    out
}

/// What the packs uploaded at once to a remote repository (S3) may hold, besides the one being
/// filled: an upload waits on the network, and the packs after it need not wait for it. Each
/// holds a pack buffer (about 18.5 MiB for the default 16 MiB packs: three uploads at once);
/// however large the packs, one upload runs beside the filling.
const UPLOAD_BUDGET: usize = 64 << 20;
/// The most uploads at once.
const MAX_UPLOADS: usize = 3;

/// A finished pack on its way to the backend.
type Finished = (PackId, Vec<u8>, Vec<PackEntry>);

/// The writer thread: fills packs, makes each durable, indexes it, then forgets its blobs from
/// the pending set (after the index commit, so a blob is always either pending or indexed).
/// A local repository's packs are written by this thread, one after the other; a remote
/// repository's are handed to uploaders (as many as [`UPLOAD_BUDGET`] holds, 1 to
/// [`MAX_UPLOADS`]), so that the next pack is filled (and the one after uploaded) while one is
/// on the network.
fn writer(kind: &str, repo: &Repo, rx: Receiver<SealedFrame>, pending: &Mutex<HashSet<BlobId>>) -> Result<()> {
    let (written, indexed) = (format!("{kind}.pack_written"), format!("{kind}.pack_indexed"));
    let target = repo.config.pack_size as usize;
    // Room for a full pack, the frame that tips it over and the trailer (64 bytes a blob: an
    // eighth of the pack covers blobs stored in 512 bytes or more), so the buffer never grows.
    let capacity = target + target / 8 + 2 * FRAME_TARGET + 4096;
    let store = |id: PackId, bytes: &[u8], entries: &[PackEntry]| -> Result<()> {
        repo.check_lease()?;
        repo.backend.put(FileKind::Pack, &id.to_hex(), bytes)?;
        crate::failpoint::hit(&written);
        repo.index.add_pack(id, bytes.len() as u64, entries, now_secs())?;
        crate::failpoint::hit(&indexed);
        // The next snapshot reads these trees first: a remote repository keeps them here.
        if let Some(cache) = repo.tree_cache.as_ref().filter(|_| entries.iter().all(|e| e.kind == BlobKind::Tree)) {
            cache.keep(id, bytes);
        }
        let mut p = lock(pending);
        for e in entries {
            p.remove(&e.id);
        }
        Ok(())
    };
    if repo.location.as_local().is_some() {
        let mut packs = Packs::new(repo, capacity);
        let mut flush = |w: &mut PackWriter| w.finish_with(|id, bytes, entries| store(id, bytes, entries));
        return packs.fill(rx, target, &mut flush);
    }
    let uploaders = (UPLOAD_BUDGET / capacity).clamp(1, MAX_UPLOADS);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    // A rendezvous: a finished pack is handed over only when an uploader is free, so at most
    // `uploaders` packs are in flight; their buffers come back to be filled again.
    let (to_upload, uploads) = sync_channel::<Finished>(0);
    let (give_back, spares) = std::sync::mpsc::channel::<Vec<u8>>();
    let uploads = Mutex::new(uploads);
    let filled = std::thread::scope(|s| {
        for _ in 0..uploaders {
            let give_back = give_back.clone();
            let (uploads, failure, store) = (&uploads, &failure, &store);
            s.spawn(move || loop {
                let next = lock(uploads).recv();
                let Ok((id, bytes, entries)) = next else { return };
                if lock(failure).is_none() {
                    if let Err(e) = store(id, &bytes, &entries) {
                        lock(failure).get_or_insert(e);
                    }
                }
                let _ = give_back.send(bytes);
            });
        }
        drop(give_back);
        let mut packs = Packs::new(repo, capacity);
        let mut made = 1; // buffers: the one being filled
        let mut flush = |w: &mut PackWriter| -> Result<()> {
            if lock(&failure).is_some() {
                return Err(Error::Writer("a pack upload failed")); // replaced by its error below
            }
            let spare = match spares.try_recv() {
                Ok(b) => b,
                Err(_) if made <= uploaders => {
                    made += 1;
                    Vec::with_capacity(capacity)
                }
                Err(_) => spares.recv().map_err(|_| Error::Writer("the pack uploaders stopped"))?,
            };
            to_upload.send(w.finish_swap(spare)).map_err(|_| Error::Writer("the pack uploaders stopped"))
        };
        let filled = packs.fill(rx, target, &mut flush);
        drop(to_upload); // the uploaders end once they are done
        filled
    });
    // An upload's own error says more than the writer's "an upload failed".
    match crate::workers::into_inner(failure) {
        Some(e) => Err(e),
        None => filled,
    }
}

/// The two packs being filled: data, and trees (kept apart, so that the tree walks of later
/// snapshots read small tree packs).
struct Packs {
    data: PackWriter,
    trees: PackWriter,
}

impl Packs {
    fn new(repo: &Repo, capacity: usize) -> Self {
        Self { data: PackWriter::for_codec(&repo.frames, capacity), trees: PackWriter::for_codec(&repo.frames, 0) }
    }

    /// Adds every frame the channel brings, handing each full pack to `flush`, and the last
    /// ones once the channel is closed.
    fn fill(
        &mut self,
        rx: Receiver<SealedFrame>,
        target: usize,
        flush: &mut dyn FnMut(&mut PackWriter) -> Result<()>,
    ) -> Result<()> {
        for frame in rx {
            let is_tree = frame.members.first().is_some_and(|m| m.kind == BlobKind::Tree);
            let w = if is_tree { &mut self.trees } else { &mut self.data };
            w.add(&frame);
            if w.len() >= target {
                flush(w)?;
            }
        }
        for w in [&mut self.data, &mut self.trees] {
            if !w.is_empty() {
                flush(w)?;
            }
        }
        Ok(())
    }
}
