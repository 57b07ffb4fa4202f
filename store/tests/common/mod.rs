//! What the store's integration tests share.

/// `len` bytes of xorshift noise (incompressible, so every file is its own chunks), continuing
/// from `state`.
pub fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state >> 24) as u8
        })
        .collect()
}
