//! Salvage of a damaged pack (`repair index`): whatever the bytes, no panic, and every blob
//! it returns hashes to its ID.
#![no_main]
use cairn_store::decode::{blobs_of, scan, trailer_entries, Wanted};
use cairn_store::{BlobId, ChunkerParams};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let entries = trailer_entries(data);
    for b in blobs_of(data, &entries) {
        assert_eq!(BlobId::of(&b.data), b.id);
    }
    // Want a few stretches of the input itself, so that the scan has something to find.
    let mut wanted = Wanted::default();
    for (i, w) in data.chunks(97).enumerate().take(8) {
        if i % 2 == 0 {
            wanted.chunks.insert(BlobId::of(w), w.len() as u32);
        } else {
            wanted.trees.insert(BlobId::of(w));
        }
    }
    let params = ChunkerParams { min_size: 64, avg_size: 256, max_size: 1024 };
    for b in scan(data, &wanted, params) {
        assert_eq!(BlobId::of(&b.data), b.id);
        assert!(wanted.chunks.contains_key(&b.id) || wanted.trees.contains(&b.id));
    }
});
