//! Sending one snapshot's data: its trees are walked in the source, every blob is looked up in
//! the destination, and the ones it lacks are read from the source pack by pack (the frames of
//! one pack in one batched ranged read), checked against their IDs, sealed with the
//! destination's codec and handed to its pack writer (upload.rs), which makes packs durable
//! and indexes them, as a snapshot's are.
//!
//! Memory is bounded by the work in flight: a batch of trees being read, a plan of at most
//! `PLAN_BYTES` of frames to fetch, the writer's channel and packs. Trees already walked in this
//! run are remembered on disk (a mark set), not in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, TreeId};
use crate::index::{BlobLocation, MarkSet};
use crate::pack::{BlobKind, Member, PackEntry, SealedFrame};
use crate::progress::Progress;
use crate::repo::{missing, Repo, Snapshot};
use crate::tally::Counter;
use crate::tree::{EntryKind, Tree};
use crate::upload::Upload;
use crate::workers::{into_inner, lock};

/// Trees read from the source at once (in parallel): a walk that reads one tree at a time
/// pays a round trip per directory on a bucket.
const TREE_BATCH: usize = 64;
/// Stored bytes of frames planned before they are fetched: enough for a few packs' worth of
/// ranged reads in parallel, little beside the writer's own buffers.
const PLAN_BYTES: u64 = 32 << 20;
/// Blobs planned before they are fetched (many tiny chunks make little data but many rows).
const PLAN_BLOBS: usize = 32 * 1024;

/// What the sender counts besides the upload's counters (which count every blob and byte sent).
#[derive(Default)]
pub(super) struct SentTrees(pub(super) Counter);

/// One source frame's blobs the destination lacks.
struct PlannedFrame {
    stored_len: u32,
    entries: Vec<PackEntry>,
}

/// The chunks to fetch, by source pack (in the order the walk met them, so that the
/// destination's packs keep the source's order, which is the order files are restored in)
/// and by frame offset within a pack.
#[derive(Default)]
struct Plan {
    packs: Vec<(PackId, BTreeMap<u64, PlannedFrame>)>,
    slot: HashMap<PackId, usize>,
    bytes: u64,
    blobs: usize,
}

impl Plan {
    fn add(&mut self, loc: BlobLocation) {
        let slot = *self.slot.entry(loc.pack).or_insert_with(|| {
            self.packs.push((loc.pack, BTreeMap::new()));
            self.packs.len() - 1
        });
        let frame = self.packs[slot].1.entry(loc.entry.offset).or_insert_with(|| {
            self.bytes += u64::from(loc.entry.stored_len);
            PlannedFrame { stored_len: loc.entry.stored_len, entries: Vec::new() }
        });
        frame.entries.push(loc.entry);
        self.blobs += 1;
    }

    fn is_full(&self) -> bool {
        self.bytes >= PLAN_BYTES || self.blobs >= PLAN_BLOBS
    }

    fn ids(&self) -> Vec<BlobId> {
        self.packs.iter().flat_map(|(_, frames)| frames.values().flat_map(|f| f.entries.iter().map(|e| e.id))).collect()
    }
}

/// Sends the data of snapshots from `source` into the upload's repository.
pub(super) struct Sender<'a> {
    pub(super) source: &'a Repo,
    pub(super) dest: &'a Repo,
    pub(super) pool: &'a rayon::ThreadPool,
    pub(super) progress: &'a dyn Progress,
    pub(super) trees: &'a SentTrees,
    /// The two codecs seal alike (`FrameCodec::frame_format`): a frame may be sent as stored.
    pub(super) as_stored: bool,
}

impl Sender<'_> {
    /// Sends every blob of `snap` that the destination neither holds nor has been sent in this
    /// run, skipping the trees `done` holds (walked earlier in this run: their blobs are all
    /// held or sent). Returns once everything is handed to the writer; on an error, the claims
    /// on blobs not sent are given back.
    pub(super) fn snapshot(&self, up: &Upload<'_>, snap: &Snapshot, done: &MarkSet) -> Result<()> {
        let mut plan = Plan::default();
        let result = self.walk(up, snap, done, &mut plan);
        if result.is_err() {
            up.unclaim(&plan.ids());
        }
        result
    }

    fn walk(&self, up: &Upload<'_>, snap: &Snapshot, done: &MarkSet, plan: &mut Plan) -> Result<()> {
        let mut stack: Vec<TreeId> = vec![snap.record.root];
        while !stack.is_empty() {
            let mut batch = Vec::with_capacity(TREE_BATCH);
            while batch.len() < TREE_BATCH {
                let Some(t) = stack.pop() else { break };
                if done.visit_tree(t)? {
                    batch.push(t);
                }
            }
            let read: Vec<(TreeId, Vec<u8>, Tree)> = self.pool.install(|| {
                batch
                    .par_iter()
                    .map(|&t| {
                        let bytes = self.source.read_blob(t.into(), "tree")?;
                        let tree = Tree::decode(t, &bytes)?;
                        Ok((t, bytes, tree))
                    })
                    .collect::<Result<_>>()
            })?;
            for (t, bytes, tree) in read {
                let mut ids = vec![BlobId::from(t)];
                let mut size = 0;
                for e in &tree.entries {
                    if let Some(sub) = e.subtree {
                        stack.push(sub);
                    }
                    if e.kind == EntryKind::File {
                        size += e.size;
                    }
                    ids.extend(e.content.iter().map(|c| BlobId::from(c.id)));
                }
                let fresh = up.claim_many(&ids)?;
                if fresh[0] {
                    // The tree's bytes are at hand (and checked against its ID): sent as read.
                    up.send(self.dest.frames.seal(&[(BlobKind::Tree, ids[0], &bytes)]))?;
                    self.trees.0.add(1);
                }
                let wanted: Vec<BlobId> =
                    ids.iter().zip(&fresh).skip(1).filter(|(_, f)| **f).map(|(id, _)| *id).collect();
                for (id, loc) in wanted.iter().zip(self.source.index.locate_many(&wanted)?) {
                    match loc {
                        Some(loc) => plan.add(loc),
                        None => {
                            // Claimed, and not sent: given back (those planned, with the plan).
                            up.unclaim(&wanted);
                            return Err(Error::Missing { what: "chunk", id: id.to_hex() });
                        }
                    }
                }
                if plan.is_full() {
                    self.fetch(up, plan)?;
                }
                self.progress.inc(size);
            }
        }
        self.fetch(up, plan)
    }

    /// Fetches the planned frames, pack by pack in parallel, and sends their blobs. A pack is
    /// read and checked whole before any of its blobs is sent, so a damaged one sends nothing
    /// and its claims are given back; the first error is returned.
    fn fetch(&self, up: &Upload<'_>, plan: &mut Plan) -> Result<()> {
        let packs = std::mem::take(&mut plan.packs);
        plan.slot.clear();
        plan.bytes = 0;
        plan.blobs = 0;
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        self.pool.install(|| {
            packs.par_iter().for_each(|(pack, frames)| {
                if let Err((e, unsent)) = self.fetch_pack(up, *pack, frames) {
                    up.unclaim(&unsent);
                    lock(&failed).get_or_insert(e);
                }
            });
        });
        match into_inner(failed) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads the planned frames of one source pack (one batched ranged read) and sends their
    /// blobs frame by frame. On an error, returns it with the blobs not sent.
    fn fetch_pack(
        &self,
        up: &Upload<'_>,
        pack: PackId,
        frames: &BTreeMap<u64, PlannedFrame>,
    ) -> std::result::Result<(), (Error, Vec<BlobId>)> {
        let from = |k: usize| frames.values().skip(k).flat_map(|f| f.entries.iter().map(|e| e.id)).collect();
        let ranges: Vec<(u64, usize)> = frames.iter().map(|(o, f)| (*o, f.stored_len as usize)).collect();
        let stored = self.source.backend.get_ranges(FileKind::Pack, &pack.to_hex(), &ranges).map_err(|e| {
            let e = if missing(&e) { Error::Missing { what: "pack", id: pack.to_hex() } } else { e };
            (e, from(0))
        })?;
        for (k, (planned, bytes)) in frames.values().zip(&stored).enumerate() {
            self.send_frame(up, planned, bytes).map_err(|e| (e, from(k)))?;
        }
        Ok(())
    }

    /// Opens one source frame and checks every wanted blob in it against its ID (damage is
    /// never copied). A frame the destination lacks whole, between repositories whose codecs
    /// seal alike, is sent as stored: checked, not compressed again. Otherwise the wanted
    /// blobs are sealed with the destination's codec, together (per kind), so that they keep
    /// the context zstd had in the source. Nothing of the frame is sent unless all of it
    /// reads back.
    fn send_frame(&self, up: &Upload<'_>, planned: &PlannedFrame, stored: &[u8]) -> Result<()> {
        let mut entries = planned.entries.clone();
        entries.sort_by_key(|e| e.frame_offset);
        let opened = self.source.frames.open(&entries[0], stored)?;
        if self.as_stored && whole_frame(&entries) {
            for e in &entries {
                let start = e.frame_offset as usize;
                let blob = opened.get(start..start + e.raw_len as usize);
                if blob.is_none_or(|b| self.source.frames.id_of(b) != e.id) {
                    return Err(Error::HashMismatch { what: "blob", id: e.id.to_hex() });
                }
            }
            let members = entries
                .iter()
                .map(|e| Member { kind: e.kind, id: e.id, offset: e.frame_offset, len: e.raw_len })
                .collect();
            let first = &entries[0];
            return up.send(SealedFrame {
                members,
                raw_len: first.frame_len,
                compression: first.compression,
                data: stored.to_vec(),
            });
        }
        let mut blobs: Vec<(BlobKind, BlobId, Vec<u8>)> = Vec::with_capacity(entries.len());
        for e in &entries {
            blobs.push((e.kind, e.id, self.source.frames.blob_from_frame(e, &opened)?));
        }
        drop(opened);
        for kind in [BlobKind::Chunk, BlobKind::Tree] {
            let group: Vec<(BlobKind, BlobId, &[u8])> =
                blobs.iter().filter(|b| b.0 == kind).map(|(k, id, data)| (*k, *id, data.as_slice())).collect();
            if !group.is_empty() {
                up.send(self.dest.frames.seal(&group))?;
            }
        }
        Ok(())
    }
}

/// True when `entries` (sorted by their place in the frame) are the whole frame: one kind,
/// back to back from its start to its end, so no other blob shares it.
fn whole_frame(entries: &[PackEntry]) -> bool {
    let Some(first) = entries.first() else { return false };
    let mut at: u64 = 0;
    for e in entries {
        if e.kind != first.kind || u64::from(e.frame_offset) != at || e.frame_len != first.frame_len {
            return false;
        }
        at += u64::from(e.raw_len);
    }
    at == u64::from(first.frame_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Compression;

    fn entry(kind: BlobKind, frame_offset: u32, raw_len: u32, frame_len: u32) -> PackEntry {
        let id = BlobId::of(&frame_offset.to_le_bytes());
        PackEntry {
            kind,
            id,
            offset: 28,
            stored_len: 10,
            frame_len,
            frame_offset,
            raw_len,
            compression: Compression::Zstd,
        }
    }

    #[test]
    fn a_frame_is_sent_as_stored_only_when_every_blob_of_it_is_wanted() {
        let c = BlobKind::Chunk;
        assert!(whole_frame(&[entry(c, 0, 10, 30), entry(c, 10, 20, 30)]));
        assert!(whole_frame(&[entry(c, 0, 30, 30)]));
        assert!(!whole_frame(&[]));
        assert!(!whole_frame(&[entry(c, 0, 10, 30)]), "the rest of the frame is not wanted");
        assert!(!whole_frame(&[entry(c, 10, 20, 30)]), "its start is not wanted");
        assert!(!whole_frame(&[entry(c, 0, 10, 30), entry(c, 15, 15, 30)]), "a gap");
        assert!(!whole_frame(&[entry(c, 0, 10, 30), entry(BlobKind::Tree, 10, 20, 30)]), "two kinds");
        assert!(!whole_frame(&[entry(c, 0, 10, 30), entry(c, 10, 20, 31)]), "two frame lengths");
    }
}
