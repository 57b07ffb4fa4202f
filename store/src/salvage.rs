//! Getting blobs back out of a damaged pack, for `repair index`.
//!
//! A pack's frames are stored back to back and every blob is checked against its own ID, so
//! damage to the header, the trailer, the footer or a few bytes appended at the end leaves
//! every frame readable: only the map of where they are is at risk. This module finds them
//! from three kinds of evidence, weakest last, and trusts none of it: every blob it returns
//! hashes to its ID.
//!
//! 1. The trailer, read leniently: the footer is looked for at the end and at the last end
//!    marker in the file (bytes appended after it); the trailer is decoded without its
//!    checksum, and when its length prefix or the footer is damaged, its fixed-size entries
//!    (64 bytes each) are read one by one from its end, each kept only if it is plausible.
//! 2. Entries from elsewhere (the old index's rows for the pack), checked the same way.
//! 3. A scan of the frame area: zstd frames are found by their magic number and their own
//!    frame headers, the raw stretches between them are taken as they are, and each stretch of
//!    plaintext is cut into the blobs that are wanted (what the snapshots need and no index
//!    holds): a whole frame that hashes to a wanted tree or chunk, else chunks at the cut
//!    points the repository's chunker makes, else at the lengths of the wanted chunks.
//!
//! Everything here reads bytes of a damaged file: no slice, length or offset is trusted, and no
//! input makes it panic (the `salvage` fuzz target holds it to that).

use std::collections::{HashMap, HashSet};

use fastcdc::v2020::FastCDC;

use crate::codec;
use crate::config::ChunkerParams;
use crate::frame::{FrameCodec, ZstdFrames};
use crate::id::BlobId;
use crate::pack::{
    self, BlobKind, Compression, PackEntry, PackTrailer, END_MAGIC, FOOTER_LEN, MAX_FRAME, PACK_HEADER_LEN,
    TRAILER_ENTRY_LEN,
};

/// Salvage reads frames of unencrypted repositories; an encrypted one will hand its codec in
/// (the encryption issue), as everything else already does through `Repo::frames`.
const PLAIN: ZstdFrames = ZstdFrames::PLAIN;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The most entries a lenient trailer read believes (a 1 GiB pack of 256-byte blobs).
const MAX_ENTRIES: u64 = 1 << 22;

/// A blob got back, checked against its ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Chunk or tree.
    pub kind: BlobKind,
    /// Its ID (the BLAKE3 of `data`).
    pub id: BlobId,
    /// Its plaintext.
    pub data: Vec<u8>,
    /// Which frame of the damaged pack it came from (its offset), so that blobs that shared a
    /// frame share one again.
    pub frame: u64,
}

/// The entries the damaged pack's trailer still gives, read leniently (see the module docs).
/// Each entry is only plausible; `blobs_of` checks it.
#[must_use]
pub fn trailer_entries(bytes: &[u8]) -> Vec<PackEntry> {
    let mut found: Vec<PackEntry> = Vec::new();
    for body_end in footer_candidates(bytes) {
        // The trailer as the footer places it, decoded without its checksum.
        if let Some(len_bytes) = bytes.get(body_end..body_end + 4) {
            let len = codec::read_u32(len_bytes) as usize;
            if let Some(trailer) = body_end.checked_sub(len).and_then(|start| bytes.get(start..body_end)) {
                if let Ok(entries) = codec::decode::<PackTrailer>("trailer", trailer) {
                    found.extend(entries.entries.into_iter().filter(|e| plausible(e, body_end)));
                }
            }
        }
        found.extend(strided_entries(bytes, body_end));
    }
    found.sort_by_key(|e| (e.offset, e.frame_offset, e.id));
    found.dedup();
    found
}

/// Where the frames and trailer may end (the footer's start): before a footer at the very end,
/// and before the last end marker in the file (bytes appended after a whole pack).
fn footer_candidates(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if bytes.len() >= PACK_HEADER_LEN + FOOTER_LEN {
        out.push(bytes.len() - FOOTER_LEN);
    }
    if let Some(at) = bytes.windows(END_MAGIC.len()).rposition(|w| w == END_MAGIC) {
        if let Some(end) = (at + END_MAGIC.len()).checked_sub(FOOTER_LEN).filter(|e| *e >= PACK_HEADER_LEN) {
            if !out.contains(&end) {
                out.push(end);
            }
        }
    }
    out
}

/// Reads fixed-size entries backwards from `body_end`: all of them when a count prefix that
/// fits is found, else as many as look plausible (a damaged count or length).
fn strided_entries(bytes: &[u8], body_end: usize) -> Vec<PackEntry> {
    let stride = TRAILER_ENTRY_LEN as usize;
    let entry_at = |start: usize| -> Option<PackEntry> {
        let e: PackEntry = codec::decode("trailer entry", bytes.get(start..start + stride)?).ok()?;
        plausible(&e, body_end).then_some(e)
    };
    let limit = (body_end.saturating_sub(PACK_HEADER_LEN) / stride).min(MAX_ENTRIES as usize);
    // A count prefix that matches the number of entries before the footer.
    for n in 1..=limit {
        let Some(count_at) = body_end.checked_sub(n * stride + 8) else { break };
        let Some(count) = bytes.get(count_at..count_at + 8) else { break };
        if u64::from_le_bytes(count.try_into().unwrap_or([0; 8])) == n as u64 {
            let entries: Vec<PackEntry> = (0..n).filter_map(|i| entry_at(count_at + 8 + i * stride)).collect();
            if !entries.is_empty() {
                return entries;
            }
        }
    }
    // No usable count: walk back while the entries look like entries.
    let mut out = Vec::new();
    for k in 1..=limit {
        match entry_at(body_end - k * stride) {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

/// An entry that could be one: its codes are valid and its frame lies inside the frame area.
fn plausible(e: &PackEntry, body_end: usize) -> bool {
    let end = e.offset.checked_add(u64::from(e.stored_len));
    e.offset >= PACK_HEADER_LEN as u64
        && end.is_some_and(|end| end <= body_end as u64)
        && e.frame_len <= MAX_FRAME
        && u64::from(e.frame_offset) + u64::from(e.raw_len) <= u64::from(e.frame_len)
        && e.stored_len > 0
}

/// The blobs of `entries` that verify in `bytes`: each frame is decoded once, and each blob is
/// kept only if it hashes to its entry's ID.
#[must_use]
pub fn blobs_of(bytes: &[u8], entries: &[PackEntry]) -> Vec<Blob> {
    blobs_of_with(bytes, entries, &PLAIN)
}

/// `blobs_of` for a repository whose codec is `codec` (an encrypted one's frames are sealed).
pub(crate) fn blobs_of_with(bytes: &[u8], entries: &[PackEntry], codec: &dyn FrameCodec) -> Vec<Blob> {
    let mut out = Vec::new();
    let mut frames: HashMap<(u64, u32, u32, u8), Option<Vec<u8>>> = HashMap::new();
    for e in entries {
        let key = (e.offset, e.stored_len, e.frame_len, e.compression as u8);
        let frame = frames.entry(key).or_insert_with(|| codec.open(e, pack::frame_in(bytes, e)?).ok());
        if let Some(data) = frame.as_deref().and_then(|f| codec.blob_from_frame(e, f).ok()) {
            out.push(Blob { kind: e.kind, id: e.id, data, frame: e.offset });
        }
    }
    out.sort_by_key(|b| (b.frame, b.id));
    out.dedup_by_key(|b| b.id);
    out
}

/// What a scan looks for: blobs the snapshots need that no index holds.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    /// Missing chunks and their lengths (from the trees that name them).
    pub chunks: HashMap<BlobId, u32>,
    /// Missing trees (their lengths are unknown: a tree is a frame of its own).
    pub trees: HashSet<BlobId>,
}

impl Wanted {
    /// True when nothing is wanted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.trees.is_empty()
    }
}

/// A stretch of plaintext found in the frame area: a zstd frame decoded, or raw bytes.
struct Region {
    offset: u64,
    plaintext: Vec<u8>,
}

/// Scans the frame area of a damaged pack for wanted blobs (see the module docs).
#[must_use]
pub fn scan(bytes: &[u8], wanted: &Wanted, params: ChunkerParams) -> Vec<Blob> {
    if wanted.is_empty() || params.validate().is_err() {
        return Vec::new();
    }
    let mut lengths: Vec<u32> = wanted.chunks.values().copied().collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut out = Vec::new();
    for region in regions(bytes) {
        extract(&region, wanted, &lengths, params, &mut out);
    }
    out.sort_by_key(|b| (b.frame, b.id));
    out.dedup_by_key(|b| b.id);
    out
}

/// The zstd frames and the raw stretches between them, from the end of the header on.
fn regions(bytes: &[u8]) -> Vec<Region> {
    let mut out = Vec::new();
    let mut pos = PACK_HEADER_LEN.min(bytes.len());
    let mut raw_start = pos;
    while pos < bytes.len() {
        let Some(next) = find_magic(bytes, pos) else { break };
        match decode_frame(&bytes[next..]) {
            Some((len, plaintext)) => {
                if next > raw_start {
                    out.push(Region { offset: raw_start as u64, plaintext: bytes[raw_start..next].to_vec() });
                }
                out.push(Region { offset: next as u64, plaintext });
                pos = next + len;
                raw_start = pos;
            }
            // Not a frame after all (raw bytes that happen to hold the magic, or a frame too
            // damaged to decode): it stays part of the raw stretch.
            None => pos = next + 1,
        }
    }
    if bytes.len() > raw_start {
        out.push(Region { offset: raw_start as u64, plaintext: bytes[raw_start..].to_vec() });
    }
    out
}

fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes.get(from..)?.windows(4).position(|w| w == ZSTD_MAGIC).map(|p| p + from)
}

/// One zstd frame at the start of `bytes`: its stored length and plaintext, when its header
/// gives a plausible size and it decodes to exactly that.
fn decode_frame(bytes: &[u8]) -> Option<(usize, Vec<u8>)> {
    let len = zstd::zstd_safe::find_frame_compressed_size(bytes).ok()?;
    let stored = bytes.get(..len)?;
    let size = zstd::zstd_safe::get_frame_content_size(stored).ok()??;
    if size > u64::from(MAX_FRAME) {
        return None;
    }
    let entry = PackEntry {
        kind: BlobKind::Chunk,
        id: BlobId::of(&[]),
        offset: 0,
        stored_len: u32::try_from(len).ok()?,
        frame_len: u32::try_from(size).ok()?,
        frame_offset: 0,
        raw_len: 0,
        compression: Compression::Zstd,
    };
    PLAIN.open(&entry, stored).ok().map(|p| (len, p))
}

/// Takes the wanted blobs out of one stretch of plaintext.
fn extract(region: &Region, wanted: &Wanted, lengths: &[u32], params: ChunkerParams, out: &mut Vec<Blob>) {
    let p = &region.plaintext;
    let mut take = |kind: BlobKind, id: BlobId, data: &[u8]| {
        out.push(Blob { kind, id, data: data.to_vec(), frame: region.offset });
    };
    // A frame holding one tree or one chunk.
    let whole = BlobId::of(p);
    if wanted.trees.contains(&whole) {
        take(BlobKind::Tree, whole, p);
        return;
    }
    // Chunks in order: where the chunker cuts (a chunk starts where the previous one ended, so
    // its cut is the one the snapshot made), else, at a position known to start a chunk, at
    // the length of each wanted chunk (a file's last chunk ends where the file did).
    let cdc = FastCDC::new(p, params.min_size, params.avg_size, params.max_size);
    let mut pos = 0usize;
    let mut known_start = true;
    while pos < p.len() {
        let (_, cut) = cdc.cut(pos, p.len() - pos);
        let cut = cut.clamp(pos + 1, p.len());
        let id = BlobId::of(&p[pos..cut]);
        if wanted.chunks.get(&id).is_some_and(|&len| len as usize == cut - pos) {
            take(BlobKind::Chunk, id, &p[pos..cut]);
            pos = cut;
            known_start = true;
            continue;
        }
        if known_start {
            let hit = lengths.iter().map(|&l| l as usize).filter(|&l| l > 0 && pos + l <= p.len()).find_map(|l| {
                let id = BlobId::of(&p[pos..pos + l]);
                (wanted.chunks.get(&id) == Some(&(l as u32))).then_some((id, l))
            });
            if let Some((id, l)) = hit {
                take(BlobKind::Chunk, id, &p[pos..pos + l]);
                pos += l;
                continue;
            }
        }
        // Not wanted (a chunk some index holds, or bytes of no blob): step over it at the cut;
        // content-defined cuts fall back into step with the real boundaries within a chunk or
        // two when this one was not a real start.
        pos = cut;
        known_start = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::seal_frame;
    use crate::pack::PackWriter;

    fn sample() -> (Vec<u8>, Vec<PackEntry>, Vec<Vec<u8>>) {
        let mut w = PackWriter::new();
        let mut blobs = Vec::new();
        let mut seed = 7u64;
        for i in 0..12u32 {
            let mut data = Vec::new();
            for _ in 0..(500 + i * 97) {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                // Half text-like (compresses), half random (stays raw).
                data.push(if i % 2 == 0 { b"abcdefgh"[(seed >> 61) as usize] } else { (seed >> 56) as u8 });
            }
            blobs.push(data);
        }
        for pair in blobs.chunks(2) {
            let members: Vec<(BlobKind, BlobId, &[u8])> =
                pair.iter().map(|d| (BlobKind::Chunk, BlobId::of(d), d.as_slice())).collect();
            w.add(&seal_frame(&members, 3));
        }
        // A frame zstd cannot shrink is stored raw, with no magic number to find it by.
        let random: Vec<u8> = (0..700)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (seed >> 56) as u8
            })
            .collect();
        let raw = seal_frame(&[(BlobKind::Chunk, BlobId::of(&random), &random)], 3);
        assert_eq!(raw.compression, Compression::None, "the sample needs a raw frame");
        w.add(&raw);
        blobs.push(random);
        let (_, bytes, entries) = w.finish();
        (bytes, entries, blobs)
    }

    #[test]
    fn a_damaged_footer_trailer_checksum_or_appended_bytes_lose_no_blob() {
        let (bytes, entries, blobs) = sample();
        let n = bytes.len();
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut end_marker = bytes.clone();
        end_marker[n - 3] ^= 0x20;
        cases.push(("end marker", end_marker));
        let mut checksum = bytes.clone();
        checksum[n - 20] ^= 1;
        cases.push(("trailer checksum", checksum));
        let mut length = bytes.clone();
        length[n - FOOTER_LEN] ^= 0x10;
        cases.push(("trailer length", length));
        let mut count = bytes.clone();
        count[n - FOOTER_LEN - entries.len() * 64 - 8] ^= 0x04;
        cases.push(("entry count", count));
        let mut appended = bytes.clone();
        appended.extend_from_slice(b"garbage after the end");
        cases.push(("appended bytes", appended));
        let mut magic = bytes.clone();
        magic[0] ^= 0xff;
        cases.push(("header magic", magic));
        for (what, damaged) in cases {
            let got = blobs_of(&damaged, &trailer_entries(&damaged));
            let ids: HashSet<BlobId> = got.iter().map(|b| b.id).collect();
            for b in &blobs {
                assert!(ids.contains(&BlobId::of(b)), "{what}: a blob was lost");
            }
            assert!(got.iter().all(|b| BlobId::of(&b.data) == b.id), "{what}: every blob verifies");
        }
    }

    #[test]
    fn one_damaged_entry_costs_only_its_blob_and_a_scan_finds_it_again() {
        let (bytes, entries, blobs) = sample();
        let n = bytes.len();
        let mut damaged = bytes.clone();
        // The ID field of the third entry (4 bytes of kind first).
        let at = n - FOOTER_LEN - (entries.len() - 2) * 64 + 4;
        damaged[at] ^= 0xff;
        let got = blobs_of(&damaged, &trailer_entries(&damaged));
        assert_eq!(got.len(), blobs.len() - 1, "only the blob whose entry lies is not taken on its word");
        let lost = BlobId::of(&blobs[2]);
        assert!(got.iter().all(|b| b.id != lost));
        // A scan that wants it finds it in its frame.
        let wanted = Wanted { chunks: [(lost, blobs[2].len() as u32)].into(), trees: HashSet::new() };
        let params = ChunkerParams { min_size: 64, avg_size: 256, max_size: 1024 };
        let found = scan(&damaged, &wanted, params);
        assert_eq!(found.iter().map(|b| b.id).collect::<Vec<_>>(), vec![lost]);
        assert_eq!(found[0].data, blobs[2]);
    }

    #[test]
    fn a_scan_without_any_trailer_finds_wanted_blobs_by_their_lengths() {
        let (bytes, entries, blobs) = sample();
        // Keep only the frames: the trailer and footer are gone.
        let frames_end = entries.iter().map(|e| e.offset + u64::from(e.stored_len)).max().unwrap() as usize;
        let cut = &bytes[..frames_end];
        let wanted =
            Wanted { chunks: blobs.iter().map(|b| (BlobId::of(b), b.len() as u32)).collect(), trees: HashSet::new() };
        let params = ChunkerParams { min_size: 64, avg_size: 256, max_size: 1024 };
        let found = scan(cut, &wanted, params);
        let ids: HashSet<BlobId> = found.iter().map(|b| b.id).collect();
        for b in &blobs {
            assert!(ids.contains(&BlobId::of(b)), "a blob of {} bytes was not found", b.len());
        }
        assert!(found.iter().all(|b| BlobId::of(&b.data) == b.id));
    }

    #[test]
    fn hostile_bytes_give_nothing_and_do_not_panic() {
        let wanted = Wanted { chunks: [(BlobId::of(b"x"), 1)].into(), trees: [BlobId::of(b"y")].into() };
        let params = ChunkerParams::default();
        for bytes in [vec![], vec![0u8; 10], b"CAIRNEND".repeat(20), [ZSTD_MAGIC.to_vec(), vec![0xff; 100]].concat()] {
            assert!(blobs_of(&bytes, &trailer_entries(&bytes)).is_empty());
            let _ = scan(&bytes, &wanted, params);
        }
    }
}
