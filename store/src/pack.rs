//! Pack files: compressed frames of blobs, described by a trailer.
//!
//! ```text
//! "CAIRNPAK" ‖ version u32 LE ‖ nonce     header, 28 bytes
//! frame 0 ‖ frame 1 ‖ ...                stored bytes (zstd frame or raw), back to back
//! trailer                                bincode(PackTrailer): one entry per blob
//! trailer_len u32 LE ‖ BLAKE3(trailer) ‖ "CAIRNEND"   footer, 44 bytes
//! ```
//! A frame holds one blob, or several consecutive new chunks of one file (up to
//! `FRAME_TARGET` bytes of plaintext) compressed together: zstd needs more context than one
//! 4 KiB chunk to compress well (measured in docs/FORMAT.md), while deduplication stays per
//! chunk. Each blob keeps its own ID; its entry says which frame holds it and where inside.
//!
//! The pack's ID (and file name) is the BLAKE3 of the whole file, so a scrub can check a pack
//! without the index, and `repair index` can rebuild the index from trailers alone, reading 44
//! bytes plus the trailer of each pack.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::frame::{Domain, FrameCodec};
use crate::id::{BlobId, PackId};

const MAGIC: &[u8; 8] = b"CAIRNPAK";
/// The footer's last bytes: salvage looks for them in a pack whose end is damaged.
pub(crate) const END_MAGIC: &[u8; 8] = b"CAIRNEND";
/// Newest pack format this build reads. Version 2 is an encrypted repository's: its frames and
/// its trailer are sealed (docs/ENCRYPTION.md); an unencrypted repository writes version 1.
pub const PACK_VERSION: u32 = 2;
const PLAIN_PACK_VERSION: u32 = 1;
const SEALED_PACK_VERSION: u32 = 2;
/// Length of the footer.
pub const FOOTER_LEN: usize = 4 + 32 + 8;
/// Length of the header: magic, version, and a 16-byte nonce that makes every pack file
/// unique, so that no writer can ever recreate (by identical content) a pack that gc has
/// condemned and is about to delete (docs/GC.md).
pub const PACK_HEADER_LEN: usize = codec::HEADER_LEN + 16;
/// Encoded length of one trailer entry (for size accounting).
pub const TRAILER_ENTRY_LEN: u64 = 64;

fn new_header(version: u32) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = codec::header(MAGIC, version).to_vec();
    let seed = format!(
        "{:?} {} {} {:?}",
        jiff::Timestamp::now(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::thread::current().id()
    );
    out.extend_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
    out
}
/// The largest frame (decompressed) we accept from disk: far above anything we write.
pub const MAX_FRAME: u32 = 256 << 20;
/// Consecutive new chunks of a file are compressed together up to this much plaintext.
pub const FRAME_TARGET: usize = 64 * 1024;

/// What a blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file content.
    Chunk = 0,
    /// A tree object (a directory).
    Tree = 1,
}

impl BlobKind {
    /// Stable number used in the index.
    #[must_use]
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The inverse of `code`.
    #[must_use]
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Chunk),
            1 => Some(Self::Tree),
            _ => None,
        }
    }
}

/// How a frame's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is (compression did not make it smaller).
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Stable number used in the index.
    #[must_use]
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The inverse of `code`.
    #[must_use]
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::None),
            1 => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Chunk or tree.
    pub kind: BlobKind,
    /// BLAKE3 of the blob's plaintext.
    pub id: BlobId,
    /// Byte offset of the frame holding the blob, from the start of the pack.
    pub offset: u64,
    /// Length of the frame's stored bytes.
    pub stored_len: u32,
    /// Length of the frame's plaintext.
    pub frame_len: u32,
    /// Where the blob starts in the frame's plaintext.
    pub frame_offset: u32,
    /// Length of the blob's plaintext.
    pub raw_len: u32,
    /// How the frame's stored bytes are encoded.
    pub compression: Compression,
}

/// The trailer as it is decoded (salvage decodes it too, without its checksum).
#[derive(Deserialize)]
pub(crate) struct PackTrailer {
    pub(crate) entries: Vec<PackEntry>,
}

/// The encoding side of `PackTrailer` (a slice encodes exactly as a Vec).
#[derive(Serialize)]
struct PackTrailerRef<'a> {
    entries: &'a [PackEntry],
}

/// A blob inside a sealed frame.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// Chunk or tree.
    pub kind: BlobKind,
    /// BLAKE3 of its plaintext.
    pub id: BlobId,
    /// Where it starts in the frame's plaintext.
    pub offset: u32,
    /// Its length.
    pub len: u32,
}

/// One or more blobs compressed together, ready to be put in a pack.
#[derive(Debug)]
pub struct SealedFrame {
    /// The blobs it holds, in order.
    pub members: Vec<Member>,
    /// Length of the plaintext (all members).
    pub raw_len: u32,
    /// Encoding of `data`.
    pub compression: Compression,
    /// The stored bytes.
    pub data: Vec<u8>,
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The stored bytes of `entry`'s frame in a pack held whole; `None` when they lie outside it
/// (nothing read from disk is trusted to fit).
pub(crate) fn frame_in<'a>(pack: &'a [u8], entry: &PackEntry) -> Option<&'a [u8]> {
    let start = usize::try_from(entry.offset).ok()?;
    pack.get(start..start.checked_add(entry.stored_len as usize)?)
}

/// Builds one pack in memory.
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    /// The codec of an encrypted repository, which seals the trailer; `None` for a plain pack.
    sealer: Option<Arc<dyn FrameCodec>>,
}

impl Default for PackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PackWriter {
    /// An empty pack.
    #[must_use]
    pub fn new() -> Self {
        Self { buf: new_header(PLAIN_PACK_VERSION), entries: Vec::new(), sealer: None }
    }

    /// An empty pack for frames `codec` sealed: when it encrypts, the pack is version 2 and
    /// its trailer is sealed by it too.
    #[must_use]
    pub fn for_codec(codec: &Arc<dyn FrameCodec>, capacity: usize) -> Self {
        let mut w = Self::with_capacity(capacity);
        if codec.encrypted() {
            w.sealer = Some(Arc::clone(codec));
            w.buf.clear();
            w.buf.extend_from_slice(&new_header(SEALED_PACK_VERSION));
        }
        w
    }

    fn version(&self) -> u32 {
        if self.sealer.is_some() {
            SEALED_PACK_VERSION
        } else {
            PLAIN_PACK_VERSION
        }
    }

    /// An empty pack whose buffer holds `bytes` without growing: a pack filled to its target
    /// then never doubles its buffer (a 16 MiB pack would otherwise reserve 32 MiB) nor copies
    /// it on the way.
    #[must_use]
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes);
        buf.extend_from_slice(&new_header(PLAIN_PACK_VERSION));
        Self { buf, entries: Vec::new(), sealer: None }
    }

    /// Appends a frame.
    pub fn add(&mut self, frame: &SealedFrame) {
        let offset = self.buf.len() as u64;
        let stored_len = len32(frame.data.len());
        for m in &frame.members {
            self.entries.push(PackEntry {
                kind: m.kind,
                id: m.id,
                offset,
                stored_len,
                frame_len: frame.raw_len,
                frame_offset: m.offset,
                raw_len: m.len,
                compression: frame.compression,
            });
        }
        self.buf.extend_from_slice(&frame.data);
    }

    /// Bytes so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True before the first blob.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes trailer and footer; returns the pack's ID, bytes and entries, and resets.
    pub fn finish(&mut self) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let capacity = self.buf.capacity();
        let mut fresh = Vec::with_capacity(capacity);
        fresh.extend_from_slice(&new_header(self.version()));
        let entries = self.seal();
        let buf = std::mem::replace(&mut self.buf, fresh);
        (PackId::of(&buf), buf, entries)
    }

    /// Writes trailer and footer; returns the pack's ID, bytes and entries, and starts the next
    /// pack in `next` (a buffer a finished pack gave back, so that buffers are reused rather
    /// than freed and allocated again; see `finish_with`).
    pub fn finish_swap(&mut self, mut next: Vec<u8>) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        next.clear();
        next.extend_from_slice(&new_header(self.version()));
        let entries = self.seal();
        let buf = std::mem::replace(&mut self.buf, next);
        (PackId::of(&buf), buf, entries)
    }

    /// Writes trailer and footer and hands the finished pack to `f`, then starts the next pack
    /// in the same buffer. A writer that lives for a whole snapshot never frees and reallocates
    /// its 16 MiB: glibc raises its mmap threshold after such a free, and the heap fragmentation
    /// that followed cost a third of a snapshot's peak RSS.
    pub fn finish_with<T>(&mut self, f: impl FnOnce(PackId, &[u8], &[PackEntry]) -> T) -> T {
        let entries = self.seal();
        let out = f(PackId::of(&self.buf), &self.buf, &entries);
        self.buf.clear();
        self.buf.extend_from_slice(&new_header(self.version()));
        self.entries = entries;
        self.entries.clear();
        out
    }

    /// Appends trailer and footer to the buffer; returns the entries.
    fn seal(&mut self) -> Vec<PackEntry> {
        let entries = std::mem::take(&mut self.entries);
        let mut trailer = codec::encode(&PackTrailerRef { entries: &entries });
        if let Some(sealer) = &self.sealer {
            trailer = sealer.seal_object(Domain::Trailer, trailer);
        }
        // Exactly what the trailer and footer need: letting `extend` double a full 16 MiB
        // buffer for a 1 MiB trailer briefly held 50 MiB.
        self.buf.reserve_exact(trailer.len() + 4 + 32 + END_MAGIC.len());
        self.buf.extend_from_slice(&trailer);
        self.buf.extend_from_slice(&len32(trailer.len()).to_le_bytes());
        self.buf.extend_from_slice(blake3::hash(&trailer).as_bytes());
        self.buf.extend_from_slice(END_MAGIC);
        entries
    }
}

/// Where a pack's trailer lies, read from its footer.
#[derive(Debug, Clone, Copy)]
pub struct Footer {
    /// Offset of the trailer.
    pub trailer_offset: u64,
    /// Length of the trailer.
    pub trailer_len: u32,
    checksum: [u8; 32],
}

/// Parses the 44-byte footer of a pack of `pack_size` bytes.
pub fn parse_footer(name: &str, footer: &[u8], pack_size: u64) -> Result<Footer> {
    let what = format!("pack {name}");
    if footer.len() != FOOTER_LEN || pack_size < (PACK_HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(Error::corrupt(what, "too short to be a pack"));
    }
    if &footer[FOOTER_LEN - 8..] != END_MAGIC {
        return Err(Error::corrupt(
            what,
            "no end marker at the end of the file (truncated, or bytes appended after it?)",
        ));
    }
    let trailer_len = codec::read_u32(&footer[..4]);
    let mut checksum = [0u8; 32];
    checksum.copy_from_slice(&footer[4..36]);
    let body_end = pack_size - FOOTER_LEN as u64;
    let Some(trailer_offset) = body_end.checked_sub(u64::from(trailer_len)).filter(|o| *o >= PACK_HEADER_LEN as u64)
    else {
        return Err(Error::corrupt(what, "trailer length out of range"));
    };
    Ok(Footer { trailer_offset, trailer_len, checksum })
}

/// Checks and decodes a trailer. Frames must be back to back in file order, inside the frame
/// area; blobs of one frame share its offset and lie inside its plaintext.
pub fn parse_trailer(name: &str, footer: &Footer, trailer: &[u8]) -> Result<Vec<PackEntry>> {
    parse_trailer_with(name, footer, trailer, &crate::frame::ZstdFrames::PLAIN)
}

/// `parse_trailer` for a pack of a repository whose codec is `codec`: an encrypted
/// repository's trailers are sealed (the footer's checksum is of the sealed bytes, so a pack
/// can be checked without the key).
pub fn parse_trailer_with(
    name: &str,
    footer: &Footer,
    trailer: &[u8],
    codec: &dyn FrameCodec,
) -> Result<Vec<PackEntry>> {
    let what = format!("pack {name}");
    if blake3::hash(trailer).as_bytes() != &footer.checksum {
        return Err(Error::corrupt(what, "trailer checksum mismatch"));
    }
    let trailer = codec.open_object(Domain::Trailer, &format!("the trailer of pack {name}"), trailer)?;
    let PackTrailer { entries } = codec::decode(&what, &trailer)?;
    let mut frame: Option<(u64, u32, u32)> = None; // offset, stored_len, frame_len
    let mut next_free = PACK_HEADER_LEN as u64;
    for e in &entries {
        let same_frame = frame == Some((e.offset, e.stored_len, e.frame_len));
        let end = e.offset.checked_add(u64::from(e.stored_len));
        let placed = same_frame || e.offset >= next_free;
        let inside = u64::from(e.frame_offset) + u64::from(e.raw_len) <= u64::from(e.frame_len);
        if !placed || !inside || end.is_none_or(|end| end > footer.trailer_offset) || e.frame_len > MAX_FRAME {
            return Err(Error::corrupt(what, format!("entry {} out of bounds", e.id)));
        }
        frame = Some((e.offset, e.stored_len, e.frame_len));
        next_free = e.offset + u64::from(e.stored_len);
    }
    Ok(entries)
}

/// Checks a whole pack held in memory: header, name = hash, footer, trailer. Returns its entries.
///
/// The hash is checked first: a pack that is not what it was written as is damaged, whatever
/// its header says (a flipped version byte must not pass for a newer format), and only an
/// intact pack of a newer format is refused as such.
pub fn check_pack(name: &str, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    check_pack_with(name, bytes, &crate::frame::ZstdFrames::PLAIN)
}

/// `check_pack` for a pack of a repository whose codec is `codec`.
pub fn check_pack_with(name: &str, bytes: &[u8], codec: &dyn FrameCodec) -> Result<Vec<PackEntry>> {
    if PackId::of(bytes).to_hex() != name {
        return Err(Error::corrupt(format!("pack {name}"), "content does not hash to its name"));
    }
    check_pack_layout(name, bytes, codec)
}

/// Parses a pack's header, footer and trailer without checking its hash (a damaged pack's
/// blobs can still be checked one by one against their own IDs). A plain pack in an encrypted
/// repository is refused (nobody with the key wrote it), and so is a sealed one without a key.
pub fn check_pack_layout(name: &str, bytes: &[u8], codec: &dyn FrameCodec) -> Result<Vec<PackEntry>> {
    let what = format!("pack {name}");
    let version = codec::check_header(&what, bytes, MAGIC, PACK_VERSION)?;
    match (version == SEALED_PACK_VERSION, codec.encrypted()) {
        // To an unencrypted repository a sealed pack is of a format it does not have: refused
        // as a newer one is, so that gc, repair and scrub never take it for garbage.
        (true, false) => {
            return Err(Error::UnsupportedVersion {
                what: format!("{what} (sealed, as an encrypted repository's)"),
                found: version,
                supported: PLAIN_PACK_VERSION,
            })
        }
        (false, true) => return Err(Error::corrupt(what, "is not sealed, in an encrypted repository")),
        _ => {}
    }
    read_trailer(name, bytes.len() as u64, codec, |offset, len| {
        usize::try_from(offset)
            .ok()
            .and_then(|start| bytes.get(start..start.checked_add(len)?))
            .ok_or_else(|| Error::corrupt(name, "trailer out of range"))
    })
}

/// A pack's entries from its footer and trailer alone, its bytes as `read(offset, len)` gives
/// them: ranged reads of a stored pack (44 bytes, then the trailer), or slices of one held whole.
pub(crate) fn read_trailer<B: AsRef<[u8]>>(
    name: &str,
    size: u64,
    codec: &dyn FrameCodec,
    mut read: impl FnMut(u64, usize) -> Result<B>,
) -> Result<Vec<PackEntry>> {
    let tail = read(size.saturating_sub(FOOTER_LEN as u64), FOOTER_LEN.min(size as usize))?;
    let footer = parse_footer(name, tail.as_ref(), size)?;
    let trailer = read(footer.trailer_offset, footer.trailer_len as usize)?;
    parse_trailer_with(name, &footer, trailer.as_ref(), codec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{open_blob, seal_frame};

    #[test]
    fn pack_round_trip() {
        let mut w = PackWriter::new();
        let a = b"hello hello hello hello hello hello".repeat(10);
        let b = b"x".to_vec();
        let c = b"another chunk of the same file".repeat(5);
        w.add(&seal_frame(&[(BlobKind::Chunk, BlobId::of(&a), &a), (BlobKind::Chunk, BlobId::of(&c), &c)], 3));
        w.add(&seal_frame(&[(BlobKind::Tree, BlobId::of(&b), &b)], 3));
        let (id, bytes, entries) = w.finish();
        assert!(w.is_empty());
        let parsed = check_pack(&id.to_hex(), &bytes).unwrap();
        assert_eq!(parsed, entries);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].offset, parsed[1].offset, "a and c share a frame");
        assert_eq!(parsed[0].compression, Compression::Zstd);
        assert_eq!(parsed[2].compression, Compression::None);
        let stored_of = |e: &PackEntry| &bytes[e.offset as usize..e.offset as usize + e.stored_len as usize];
        for (e, want) in parsed.iter().zip([&a, &c, &b]) {
            assert_eq!(&open_blob(e, stored_of(e)).unwrap(), want);
        }
        // Any flipped byte is caught: in a frame by the blob hash, anywhere by the pack hash.
        let e = parsed[0];
        let mut damaged = stored_of(&e).to_vec();
        damaged[5] ^= 0x40;
        assert!(open_blob(&e, &damaged).is_err());
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(check_pack(&id.to_hex(), &bad).is_err());
        assert!(check_pack(&id.to_hex(), &bytes[..bytes.len() - 3]).is_err());
        // An entry pointing outside its frame is an error, not a panic.
        let mut outside = parsed[0];
        outside.frame_offset = outside.frame_len;
        assert!(open_blob(&outside, stored_of(&e)).is_err());
    }

    #[test]
    fn a_reused_writer_makes_whole_distinct_packs() {
        let mut w = PackWriter::with_capacity(1 << 16);
        let mut seen = Vec::new();
        for round in 0..3u8 {
            let data = vec![round; 1000 + usize::from(round)];
            w.add(&seal_frame(&[(BlobKind::Chunk, BlobId::of(&data), &data)], 3));
            let (id, entries) = w.finish_with(|id, bytes, entries| {
                let parsed = check_pack(&id.to_hex(), bytes).unwrap();
                assert_eq!(parsed, entries);
                let e = parsed[0];
                let stored = &bytes[e.offset as usize..e.offset as usize + e.stored_len as usize];
                assert_eq!(open_blob(&e, stored).unwrap(), data);
                (id, entries.len())
            });
            assert_eq!(entries, 1, "round {round}: only this round's blob");
            assert!(w.is_empty());
            seen.push(id);
        }
        seen.dedup();
        assert_eq!(seen.len(), 3, "three packs, three names");
    }
}
