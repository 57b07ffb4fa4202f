//! Pack header, footer and trailer parsing, and blob decoding of every entry it lists.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Name the pack by its own hash so the parser gets past the name check to the trailer.
    let name = cairn_store::PackId::of(data).to_hex();
    if let Ok(entries) = cairn_store::decode::check_pack(&name, data) {
        for e in entries {
            let start = e.offset as usize;
            if let Some(stored) = data.get(start..start + e.stored_len as usize) {
                let _ = cairn_store::open_blob(&e, stored);
            }
        }
    }
    // The footer and trailer parsers on their own, as `repair index` uses them.
    if data.len() >= cairn_store::decode::FOOTER_LEN {
        let (body, tail) = data.split_at(data.len() - cairn_store::decode::FOOTER_LEN);
        if let Ok(footer) = cairn_store::decode::parse_footer("fuzz", tail, data.len() as u64) {
            let start = footer.trailer_offset as usize;
            if let Some(trailer) = body.get(start..start + footer.trailer_len as usize) {
                let _ = cairn_store::decode::parse_trailer("fuzz", &footer, trailer);
            }
        }
    }
});
