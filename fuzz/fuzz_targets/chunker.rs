//! The streaming chunker cuts any input into in-bounds chunks that cover it exactly, whatever
//! the read sizes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let params = cairn_store::ChunkerParams { min_size: 64, avg_size: 256, max_size: 1024 };
    let expected = cairn_store::boundaries(params, data);
    let mut chunker = cairn_store::Chunker::new(params, 0);
    let mut ends = Vec::new();
    let mut pos = 0usize;
    let mut reader = data;
    chunker
        .run::<_, std::io::Error>(&mut reader, u64::MAX, |_, cuts| {
            for &(s, e) in cuts {
                assert!(e > s && e - s <= 1024);
                pos += e - s;
                ends.push(pos);
            }
            Ok(())
        })
        .expect("reading a slice cannot fail");
    assert_eq!(ends, expected);
});
