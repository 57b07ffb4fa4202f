//! The frame codec: the one place where blobs become a frame's stored bytes and back, and where
//! a blob's ID is computed and checked.
//!
//! A frame is one or more blobs sealed together (pack.rs places frames in packs; the trailer
//! says where each blob's frame starts, how long it is, and where the blob lies inside the
//! opened frame). Because a frame is sealed and opened whole, a reader that knows a blob's
//! trailer entry fetches exactly that frame's bytes with one ranged read, whatever the codec:
//! compression alone today ([`ZstdFrames`]); compression then authenticated encryption, with
//! blob IDs from a keyed hash so that they say nothing about the plaintext, when a repository
//! is encrypted. The engine holds one codec per open repository (`Repo::frames`) and never
//! calls zstd or computes a blob ID any other way.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::pack::{BlobKind, Compression, Member, PackEntry, SealedFrame, MAX_FRAME};

/// Seals blobs into frames and opens them again.
///
/// Contract: `open(entry, seal(blobs).data)` gives back the blobs' bytes back to back for the
/// entry of any blob of the frame; anything else given to `open` (damaged, truncated, of
/// another codec) is an error, never a panic. `id_of` is the ID function every blob is named
/// and checked by.
pub trait FrameCodec: Send + Sync {
    /// The ID of a blob's plaintext.
    fn id_of(&self, plaintext: &[u8]) -> BlobId;

    /// Seals blobs (kind, ID, bytes) into one frame.
    fn seal(&self, blobs: &[(BlobKind, BlobId, &[u8])]) -> SealedFrame;

    /// Opens a frame's stored bytes, as described by the trailer entry of any blob in it.
    fn open(&self, entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>>;

    /// Names the frames this codec seals: two codecs of the same name open each other's
    /// frames (the same compression; no key, or the same key), so `cairn copy` may move a
    /// frame between their repositories as stored instead of sealing it again.
    fn frame_format(&self) -> String;

    /// Takes a blob out of its opened frame and checks it against its ID.
    fn blob_from_frame(&self, entry: &PackEntry, frame: &[u8]) -> Result<Vec<u8>> {
        let start = entry.frame_offset as usize;
        let blob = frame
            .get(start..start.saturating_add(entry.raw_len as usize))
            .ok_or_else(|| Error::HashMismatch { what: "blob", id: format!("{} (outside its frame)", entry.id) })?;
        if self.id_of(blob) != entry.id {
            return Err(Error::HashMismatch { what: "blob", id: entry.id.to_hex() });
        }
        Ok(blob.to_vec())
    }

    /// Opens a blob from its frame's stored bytes and checks it. Any damage is an error.
    fn open_blob(&self, entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
        self.blob_from_frame(entry, &self.open(entry, stored)?)
    }

    /// Seals a pack trailer or a snapshot record's body (the plain codec keeps them as they are).
    fn seal_object(&self, _domain: Domain, plain: Vec<u8>) -> Vec<u8> {
        plain
    }

    /// Opens what `seal_object` sealed; damage is an error naming `what`.
    fn open_object<'a>(&self, _domain: Domain, _what: &str, stored: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        Ok(Cow::Borrowed(stored))
    }

    /// True when this codec seals (an encrypted repository's): packs are then written as
    /// version 2 and records as version 3 (docs/FORMAT.md).
    fn encrypted(&self) -> bool {
        false
    }

    /// True for an encrypted repository opened with a put-only key: it seals, and opens nothing.
    fn put_only(&self) -> bool {
        false
    }
}

/// What a sealed object is: its associated data, so that none passes for another.
#[derive(Clone, Copy, Debug)]
pub enum Domain {
    /// A pack trailer.
    Trailer,
    /// A snapshot record's body.
    Record,
}

impl Domain {
    /// The associated data sealed with an object of this kind.
    #[must_use]
    pub fn aad(self) -> &'static [u8] {
        match self {
            Self::Trailer => b"cairn trailer",
            Self::Record => b"cairn record",
        }
    }
}

/// Frames compressed with zstd (kept raw when that does not make them smaller), blobs named
/// by their plain BLAKE3: the codec of every unencrypted repository.
#[derive(Clone, Copy, Debug)]
pub struct ZstdFrames {
    level: i32,
}

impl ZstdFrames {
    /// The default level (3), as a constant.
    pub const PLAIN: Self = Self { level: 3 };

    /// Seals at zstd `level` (opening needs no level).
    #[must_use]
    pub fn new(level: i32) -> Self {
        Self { level }
    }
}

impl Default for ZstdFrames {
    fn default() -> Self {
        Self::PLAIN
    }
}

thread_local! {
    // Reused per thread: a zstd context costs more to make than a small frame to compress.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl FrameCodec for ZstdFrames {
    fn id_of(&self, plaintext: &[u8]) -> BlobId {
        BlobId::of(plaintext)
    }

    fn frame_format(&self) -> String {
        // The level is the sealer's choice: any level's frame opens the same way.
        "zstd".to_owned()
    }

    fn seal(&self, blobs: &[(BlobKind, BlobId, &[u8])]) -> SealedFrame {
        let mut raw = Vec::with_capacity(blobs.iter().map(|b| b.2.len()).sum());
        let mut members = Vec::with_capacity(blobs.len());
        for &(kind, id, data) in blobs {
            members.push(Member { kind, id, offset: len32(raw.len()), len: len32(data.len()) });
            raw.extend_from_slice(data);
        }
        let raw_len = len32(raw.len());
        let level = self.level;
        let compressed = COMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
            }
            slot.as_mut().and_then(|(_, c)| c.compress(&raw).ok())
        });
        match compressed {
            Some(data) if data.len() < raw.len() => {
                SealedFrame { members, raw_len, compression: Compression::Zstd, data }
            }
            _ => SealedFrame { members, raw_len, compression: Compression::None, data: raw },
        }
    }

    fn open(&self, entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
        let damaged = |why: String| Error::HashMismatch { what: "blob", id: format!("{} ({why})", entry.id) };
        if stored.len() != entry.stored_len as usize {
            return Err(damaged("short read of its frame".into()));
        }
        if entry.frame_len > MAX_FRAME {
            return Err(damaged("implausible frame length".into()));
        }
        let raw = match entry.compression {
            Compression::None => stored.to_vec(),
            Compression::Zstd => DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = zstd::bulk::Decompressor::new().ok();
                    }
                    let d = slot.as_mut().ok_or_else(|| std::io::Error::other("no zstd context"))?;
                    d.decompress(stored, entry.frame_len as usize)
                })
                .map_err(|e| damaged(format!("frame does not decompress: {e}")))?,
        };
        if raw.len() != entry.frame_len as usize {
            return Err(damaged("frame has the wrong length".into()));
        }
        Ok(raw)
    }
}

/// Seals blobs into one frame with the plain codec at zstd `level`, for callers without a
/// repository (tests, fuzz targets).
pub fn seal_frame(blobs: &[(BlobKind, BlobId, &[u8])], level: i32) -> SealedFrame {
    ZstdFrames::new(level).seal(blobs)
}

/// Opens a blob from its frame's stored bytes with the plain codec and checks it.
pub fn open_blob(entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
    ZstdFrames::default().open_blob(entry, stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A codec of the shape encryption will have: the plain frame, then a transform only the
    /// key undoes, and IDs from a keyed hash.
    struct Keyed {
        key: [u8; 32],
    }

    impl FrameCodec for Keyed {
        fn id_of(&self, plaintext: &[u8]) -> BlobId {
            BlobId::from_hash(blake3::keyed_hash(&self.key, plaintext))
        }
        fn seal(&self, blobs: &[(BlobKind, BlobId, &[u8])]) -> SealedFrame {
            let mut frame = ZstdFrames::default().seal(blobs);
            frame.data.iter_mut().zip(self.key.iter().cycle()).for_each(|(b, k)| *b ^= k);
            frame
        }
        fn open(&self, entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
            let plain: Vec<u8> = stored.iter().zip(self.key.iter().cycle()).map(|(b, k)| b ^ k).collect();
            ZstdFrames::default().open(entry, &plain)
        }
        fn frame_format(&self) -> String {
            format!("zstd+xor:{}", hex::encode(blake3::hash(&self.key).as_bytes()))
        }
    }

    fn entries(frame: &SealedFrame) -> Vec<PackEntry> {
        frame
            .members
            .iter()
            .map(|m| PackEntry {
                kind: m.kind,
                id: m.id,
                offset: 0,
                stored_len: len32(frame.data.len()),
                frame_len: frame.raw_len,
                frame_offset: m.offset,
                raw_len: m.len,
                compression: frame.compression,
            })
            .collect()
    }

    #[test]
    fn every_codec_opens_what_it_sealed_and_refuses_what_it_did_not() {
        let a = vec![7u8; 5000];
        let b: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 251) as u8).collect();
        let plain = ZstdFrames::default();
        let keyed = Keyed { key: [9; 32] };
        let other = Keyed { key: [10; 32] };
        for codec in [&plain as &dyn FrameCodec, &keyed] {
            let blobs = [(BlobKind::Chunk, codec.id_of(&a), &a[..]), (BlobKind::Tree, codec.id_of(&b), &b[..])];
            let frame = codec.seal(&blobs);
            let entries = entries(&frame);
            for (e, want) in entries.iter().zip([&a, &b]) {
                assert_eq!(&codec.open_blob(e, &frame.data).unwrap(), want);
                assert!(codec.open_blob(e, &frame.data[1..]).is_err(), "a short frame is damage");
            }
            // A flipped byte is damage to the blob it falls in (every blob, when compressed).
            for at in [0, frame.data.len() / 2, frame.data.len() - 1] {
                let mut damaged = frame.data.clone();
                damaged[at] ^= 1;
                assert!(entries.iter().any(|e| codec.open_blob(e, &damaged).is_err()), "byte {at}");
            }
        }
        // Frames move between repositories as stored only where both codecs seal alike.
        assert_eq!(plain.frame_format(), ZstdFrames::new(19).frame_format(), "the level is the sealer's choice");
        assert_ne!(keyed.frame_format(), plain.frame_format());
        assert_ne!(keyed.frame_format(), other.frame_format());
        // IDs of one key mean nothing under another: a blob is checked by its codec's ID.
        let frame = keyed.seal(&[(BlobKind::Chunk, keyed.id_of(&a), &a[..])]);
        let e = entries(&frame)[0];
        assert_ne!(keyed.id_of(&a), plain.id_of(&a));
        assert!(other.open_blob(&e, &frame.data).is_err());
        assert!(plain.blob_from_frame(&e, &keyed.open(&e, &frame.data).unwrap()).is_err());
    }
}
