//! Sealed snapshot records and pack trailers (an encrypted repository's) decode to an error
//! or a value, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // One codec for the run: making one draws a session key pair (a Diffie-Hellman each).
    static CODEC: std::sync::OnceLock<Option<Box<dyn cairn_store::FrameCodec>>> = std::sync::OnceLock::new();
    let Some(codec) = CODEC.get_or_init(|| cairn_store::decode::sealed_codec_for_fuzzing().ok()) else { return };
    let id = cairn_store::SnapshotId::of(data);
    let _ = cairn_store::SnapshotRecord::open_with(id, data, codec.as_ref());
    let _ = codec.open_object(cairn_store::Domain::Record, "fuzz", data);
    let name = cairn_store::PackId::of(data).to_hex();
    let _ = cairn_store::check_pack_with(&name, data, codec.as_ref());
});
