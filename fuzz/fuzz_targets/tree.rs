//! Tree objects from a hostile repository decode to an error or a tree, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let id = cairn_store::TreeId::of(data);
    if let Ok(tree) = cairn_store::Tree::decode(id, data) {
        for e in &tree.entries {
            let _ = e.has_safe_name();
        }
    }
});
