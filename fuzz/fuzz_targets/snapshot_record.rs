//! Snapshot record files decode to an error or a record, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let id = cairn_store::SnapshotId::of(data);
    let _ = cairn_store::SnapshotRecord::open(id, data);
});
