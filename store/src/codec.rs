//! The one place where the byte layout of persisted structures is fixed.
//!
//! Every file cairn writes starts `MAGIC (8 bytes) ‖ version (u32 little-endian)`. Structured
//! bodies are bincode 2 with the configuration below (little-endian, fixed-width integers, a
//! size limit so that a hostile length prefix cannot make us allocate gigabytes). Framed files
//! (config, snapshot records) end with the BLAKE3 of everything before it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Length of a magic tag.
pub const MAGIC_LEN: usize = 8;
/// Length of `MAGIC ‖ version`.
pub const HEADER_LEN: usize = MAGIC_LEN + 4;
/// Largest structure bincode may decode (a tree of a huge directory, a pack trailer).
const DECODE_LIMIT: usize = 256 << 20;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<DECODE_LIMIT>,
>;

fn config() -> Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<DECODE_LIMIT>()
}

/// Encodes a value with cairn's bincode configuration.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail except past the size limit, which no value
    // we build approaches; an empty result would be caught by the decoder's checks.
    bincode::serde::encode_to_vec(value, config()).unwrap_or_default()
}

/// Decodes a value, requiring that every byte is consumed.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|source| Error::Undecodable { what: what.to_owned(), source })?;
    if used != bytes.len() {
        return Err(Error::corrupt(what, format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

/// Writes `MAGIC ‖ version`.
pub fn header(magic: &[u8; MAGIC_LEN], version: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..MAGIC_LEN].copy_from_slice(magic);
    out[MAGIC_LEN..].copy_from_slice(&version.to_le_bytes());
    out
}

/// Checks `MAGIC ‖ version` at the start of `bytes`; returns the version found.
pub fn check_header(what: &str, bytes: &[u8], magic: &[u8; MAGIC_LEN], supported: u32) -> Result<u32> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::corrupt(what, "shorter than its header"));
    }
    if &bytes[..MAGIC_LEN] != magic {
        return Err(Error::corrupt(what, "wrong magic bytes"));
    }
    let version = read_u32(&bytes[MAGIC_LEN..HEADER_LEN]);
    if version == 0 || version > supported {
        return Err(Error::UnsupportedVersion { what: what.to_owned(), found: version, supported });
    }
    Ok(version)
}

/// Reads a little-endian u32 from a 4-byte slice (callers slice exactly 4 bytes).
pub fn read_u32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(b)
}

/// Frames a body: `MAGIC ‖ version ‖ body ‖ BLAKE3(everything before)`.
pub fn frame(magic: &[u8; MAGIC_LEN], version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 32);
    out.extend_from_slice(&header(magic, version));
    out.extend_from_slice(body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Checks a framed file and returns `(version, body)`. The checksum is checked before the
/// version: every version's frame ends with the BLAKE3 of what precedes it (docs/FORMAT.md),
/// so a file whose checksum fails is damaged, whatever its version field says, and a flipped
/// version byte in one config copy is mended from the other instead of locking the user out.
pub fn unframe<'a>(what: &str, bytes: &'a [u8], magic: &[u8; MAGIC_LEN], supported: u32) -> Result<(u32, &'a [u8])> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::corrupt(what, "shorter than its header"));
    }
    if &bytes[..MAGIC_LEN] != magic {
        return Err(Error::corrupt(what, "wrong magic bytes"));
    }
    if bytes.len() < HEADER_LEN + 32 {
        return Err(Error::corrupt(what, "truncated"));
    }
    let (content, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(content).as_bytes() != sum {
        return Err(Error::corrupt(what, "checksum mismatch"));
    }
    let version = check_header(what, bytes, magic, supported)?;
    Ok((version, &content[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_damage() {
        let framed = frame(b"CAIRNTST", 1, b"body");
        let (v, body) = unframe("t", &framed, b"CAIRNTST", 1).unwrap();
        assert_eq!((v, body), (1, &b"body"[..]));
        let mut bad = framed.clone();
        bad[13] ^= 1;
        assert!(unframe("t", &bad, b"CAIRNTST", 1).is_err());
        assert!(matches!(
            unframe("t", &frame(b"CAIRNTST", 2, b"x"), b"CAIRNTST", 1),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        assert!(unframe("t", &framed[..10], b"CAIRNTST", 1).is_err());
    }

    #[test]
    fn decode_rejects_trailing_and_huge_lengths() {
        let bytes = encode(&(7u32, vec![1u8, 2, 3]));
        let (a, b): (u32, Vec<u8>) = decode("t", &bytes).unwrap();
        assert_eq!((a, b), (7, vec![1, 2, 3]));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<(u32, Vec<u8>)>("t", &longer).is_err());
        // A length prefix claiming 2^60 elements must fail cleanly, not allocate.
        let mut hostile = 7u32.to_le_bytes().to_vec();
        hostile.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<(u32, Vec<u8>)>("t", &hostile).is_err());
    }
}
