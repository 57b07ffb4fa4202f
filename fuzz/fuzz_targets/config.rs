//! The repository config decoder must reject any bytes with an error, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_store::decode::config(data);
});
