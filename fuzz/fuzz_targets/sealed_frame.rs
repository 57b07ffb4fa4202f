//! Sealed frames (an encrypted repository's): any bytes open to an error, never a panic; a
//! frame sealed from the input opens to the input, and with any one byte flipped it does not.
#![no_main]
use cairn_store::{BlobKind, PackEntry};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // One codec for the run: making one draws a session key pair (a Diffie-Hellman each).
    static CODEC: std::sync::OnceLock<Option<Box<dyn cairn_store::FrameCodec>>> = std::sync::OnceLock::new();
    let Some(codec) = CODEC.get_or_init(|| cairn_store::decode::sealed_codec_for_fuzzing().ok()) else { return };
    let (head, blob) = data.split_at(data.len().min(8));
    let mut h = [0u8; 8];
    h[..head.len()].copy_from_slice(head);
    let id = codec.id_of(blob);
    let frame = codec.seal(&[(BlobKind::Chunk, id, blob)]);
    let m = frame.members[0];
    let entry = PackEntry {
        kind: m.kind,
        id: m.id,
        offset: 0,
        stored_len: frame.data.len() as u32,
        frame_len: frame.raw_len,
        frame_offset: m.offset,
        raw_len: m.len,
        compression: frame.compression,
    };
    assert_eq!(codec.open_blob(&entry, &frame.data).ok().as_deref(), Some(blob));
    let mut bad = frame.data.clone();
    let at = u64::from_le_bytes(h) as usize % bad.len();
    bad[at] ^= 1 | head.first().copied().unwrap_or(1);
    assert!(codec.open_blob(&entry, &bad).is_err(), "a flipped byte at {at} went unnoticed");
    // The raw input as a frame's stored bytes, described by an entry made of its first bytes.
    let mut lying = entry;
    lying.stored_len = data.len() as u32;
    lying.frame_len = u32::from_le_bytes([h[0], h[1], h[2], 0]);
    lying.raw_len = u32::from(h[3]);
    let _ = codec.open_blob(&lying, data);
});
