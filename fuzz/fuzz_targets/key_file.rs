//! Key files decode to an error or a key file, never a panic (nor a huge allocation: the KDF
//! parameters are bounded before anything is derived).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_store::decode::key_file(data);
});
