//! Pack files: many compressed blobs in one file, described by a trailer.
//!
//! ```text
//! "CAIRNPAK" ‖ version u32 LE            header, 12 bytes
//! blob 0 ‖ blob 1 ‖ ...                  stored bytes (zstd frame or raw), back to back
//! trailer                                bincode(PackTrailer)
//! trailer_len u32 LE ‖ BLAKE3(trailer) ‖ "CAIRNEND"   footer, 44 bytes
//! ```
//! The pack's ID (and file name) is the BLAKE3 of the whole file, so a scrub can check a pack
//! without the index, and `repair index` can rebuild the index from trailers alone, reading 44
//! bytes plus the trailer of each pack.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::codec::{self, HEADER_LEN};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};

const MAGIC: &[u8; 8] = b"CAIRNPAK";
const END_MAGIC: &[u8; 8] = b"CAIRNEND";
/// Newest pack format this build reads and the one it writes.
pub const PACK_VERSION: u32 = 1;
/// Length of the footer.
pub const FOOTER_LEN: usize = 4 + 32 + 8;
/// The largest blob (decompressed) we accept from disk: far above any chunk or tree we write.
pub const MAX_BLOB: u32 = 256 << 20;

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

/// How a blob's bytes are stored.
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
    /// BLAKE3 of the plaintext.
    pub id: BlobId,
    /// Byte offset of the stored bytes from the start of the pack.
    pub offset: u64,
    /// Length of the stored bytes.
    pub stored_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// How the stored bytes are encoded.
    pub compression: Compression,
}

#[derive(Deserialize)]
struct PackTrailer {
    entries: Vec<PackEntry>,
}

/// The encoding side of `PackTrailer` (a slice encodes exactly as a Vec).
#[derive(Serialize)]
struct PackTrailerRef<'a> {
    entries: &'a [PackEntry],
}

/// A compressed blob ready to be put in a pack.
#[derive(Debug)]
pub struct SealedBlob {
    /// Chunk or tree.
    pub kind: BlobKind,
    /// BLAKE3 of the plaintext.
    pub id: BlobId,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// Encoding of `data`.
    pub compression: Compression,
    /// The stored bytes.
    pub data: Vec<u8>,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses a blob with a per-thread reused zstd context; keeps it raw when zstd does not help.
pub fn seal(kind: BlobKind, id: BlobId, raw: &[u8], level: i32) -> SealedBlob {
    let raw_len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    let compressed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        slot.as_mut().and_then(|(_, c)| c.compress(raw).ok())
    });
    match compressed {
        Some(data) if data.len() < raw.len() => SealedBlob {
            kind,
            id,
            raw_len,
            compression: Compression::Zstd,
            data,
        },
        _ => SealedBlob {
            kind,
            id,
            raw_len,
            compression: Compression::None,
            data: raw.to_vec(),
        },
    }
}

/// Decodes a blob's stored bytes and checks them against its ID. Any damage is an error.
pub fn open_blob(entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
    if stored.len() != entry.stored_len as usize {
        return Err(Error::corrupt(format!("blob {}", entry.id), "short read"));
    }
    if entry.raw_len > MAX_BLOB {
        return Err(Error::corrupt(
            format!("blob {}", entry.id),
            "implausible length",
        ));
    }
    let raw = match entry.compression {
        Compression::None => stored.to_vec(),
        Compression::Zstd => DECOMPRESSOR
            .with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = zstd::bulk::Decompressor::new().ok();
                }
                let d = slot
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("no zstd context"))?;
                d.decompress(stored, entry.raw_len as usize)
            })
            .map_err(|e| Error::HashMismatch {
                what: "blob",
                id: format!("{} (undecompressable: {e})", entry.id),
            })?,
    };
    if raw.len() != entry.raw_len as usize || BlobId::of(&raw) != entry.id {
        return Err(Error::HashMismatch {
            what: "blob",
            id: entry.id.to_hex(),
        });
    }
    Ok(raw)
}

/// Builds one pack in memory.
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
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
        Self {
            buf: codec::header(MAGIC, PACK_VERSION).to_vec(),
            entries: Vec::new(),
        }
    }

    /// Appends a blob.
    pub fn add(&mut self, blob: &SealedBlob) {
        self.entries.push(PackEntry {
            kind: blob.kind,
            id: blob.id,
            offset: self.buf.len() as u64,
            stored_len: u32::try_from(blob.data.len()).unwrap_or(u32::MAX),
            raw_len: blob.raw_len,
            compression: blob.compression,
        });
        self.buf.extend_from_slice(&blob.data);
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
        let entries = std::mem::take(&mut self.entries);
        let mut buf = std::mem::replace(&mut self.buf, codec::header(MAGIC, PACK_VERSION).to_vec());
        let trailer = codec::encode(&PackTrailerRef { entries: &entries });
        buf.extend_from_slice(&trailer);
        buf.extend_from_slice(
            &u32::try_from(trailer.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        buf.extend_from_slice(blake3::hash(&trailer).as_bytes());
        buf.extend_from_slice(END_MAGIC);
        (PackId::of(&buf), buf, entries)
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
    if footer.len() != FOOTER_LEN || pack_size < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(Error::corrupt(what, "too short to be a pack"));
    }
    if &footer[FOOTER_LEN - 8..] != END_MAGIC {
        return Err(Error::corrupt(what, "no end marker (truncated?)"));
    }
    let trailer_len = codec::read_u32(&footer[..4]);
    let mut checksum = [0u8; 32];
    checksum.copy_from_slice(&footer[4..36]);
    let body_end = pack_size - FOOTER_LEN as u64;
    let Some(trailer_offset) = body_end
        .checked_sub(u64::from(trailer_len))
        .filter(|o| *o >= HEADER_LEN as u64)
    else {
        return Err(Error::corrupt(what, "trailer length out of range"));
    };
    Ok(Footer {
        trailer_offset,
        trailer_len,
        checksum,
    })
}

/// Checks and decodes a trailer; every entry must lie inside the blob area, in order.
pub fn parse_trailer(name: &str, footer: &Footer, trailer: &[u8]) -> Result<Vec<PackEntry>> {
    let what = format!("pack {name}");
    if blake3::hash(trailer).as_bytes() != &footer.checksum {
        return Err(Error::corrupt(what, "trailer checksum mismatch"));
    }
    let PackTrailer { entries } = codec::decode(&what, trailer)?;
    let mut pos = HEADER_LEN as u64;
    for e in &entries {
        let end = e.offset.checked_add(u64::from(e.stored_len));
        if e.offset < pos
            || end.is_none_or(|end| end > footer.trailer_offset)
            || e.raw_len > MAX_BLOB
        {
            return Err(Error::corrupt(
                what,
                format!("entry {} out of bounds", e.id),
            ));
        }
        pos = e.offset + u64::from(e.stored_len);
    }
    Ok(entries)
}

/// Checks a whole pack held in memory: header, name = hash, footer, trailer. Returns its entries.
pub fn check_pack(name: &str, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    codec::check_header(&format!("pack {name}"), bytes, MAGIC, PACK_VERSION)?;
    if PackId::of(bytes).to_hex() != name {
        return Err(Error::corrupt(
            format!("pack {name}"),
            "content does not hash to its name",
        ));
    }
    let size = bytes.len() as u64;
    let footer = parse_footer(
        name,
        bytes
            .get(bytes.len().saturating_sub(FOOTER_LEN)..)
            .unwrap_or(&[]),
        size,
    )?;
    let start = usize::try_from(footer.trailer_offset).unwrap_or(usize::MAX);
    let trailer = bytes
        .get(start..start + footer.trailer_len as usize)
        .ok_or_else(|| Error::corrupt(name, "trailer out of range"))?;
    parse_trailer(name, &footer, trailer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip() {
        let mut w = PackWriter::new();
        let a = b"hello hello hello hello hello hello".repeat(10);
        let b = b"x".to_vec();
        w.add(&seal(BlobKind::Chunk, BlobId::of(&a), &a, 3));
        w.add(&seal(BlobKind::Tree, BlobId::of(&b), &b, 3));
        let (id, bytes, entries) = w.finish();
        assert!(w.is_empty());
        let parsed = check_pack(&id.to_hex(), &bytes).unwrap();
        assert_eq!(parsed, entries);
        assert_eq!(parsed[0].compression, Compression::Zstd);
        assert_eq!(parsed[1].compression, Compression::None);
        for (e, want) in parsed.iter().zip([&a, &b]) {
            let stored = &bytes[e.offset as usize..e.offset as usize + e.stored_len as usize];
            assert_eq!(&open_blob(e, stored).unwrap(), want);
        }
        // Any flipped byte is caught: in a blob by its hash, anywhere by the pack hash.
        let e = parsed[0];
        let mut damaged =
            bytes[e.offset as usize..e.offset as usize + e.stored_len as usize].to_vec();
        damaged[5] ^= 0x40;
        assert!(open_blob(&e, &damaged).is_err());
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(check_pack(&id.to_hex(), &bad).is_err());
        assert!(check_pack(&id.to_hex(), &bytes[..bytes.len() - 3]).is_err());
    }
}
