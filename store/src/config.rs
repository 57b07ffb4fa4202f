//! The repository config: fixed at `init`, read at every open.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNCFG";
/// Newest config format this build reads: version 2 is version 1 and an encryption scheme, and
/// is written only for encrypted repositories (docs/ENCRYPTION.md), which older builds then
/// refuse by its version; an unencrypted repository's config stays version 1.
pub const CONFIG_VERSION: u32 = 2;
const PLAIN_CONFIG_VERSION: u32 = 1;

/// Content-defined chunking parameters (FastCDC 2020, normalisation level 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// No chunk is shorter, except the last of a file.
    pub min_size: u32,
    /// The size the cut-point masks aim at.
    pub avg_size: u32,
    /// No chunk is longer.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 1 KiB / 4 KiB / 32 KiB, chosen by measurement (docs/FORMAT.md, "Chunk size"): a database
    /// dump with 0.1% of its rows changed then stores about a tenth again (8 KiB: 18%, 64 KiB:
    /// 74%, 1 MiB: all of it), while the per-chunk cost (index row, pack entry) stays small
    /// beside hashing and compression.
    fn default() -> Self {
        Self { min_size: 1024, avg_size: 4 * 1024, max_size: 32 * 1024 }
    }
}

impl ChunkerParams {
    /// Rejects parameters FastCDC cannot work with (it asserts on them).
    pub fn validate(&self) -> Result<()> {
        let ok = self.min_size >= 64
            && self.min_size <= 1 << 20
            && self.avg_size >= 256
            && self.avg_size <= 4 << 20
            && self.max_size >= 1024
            && self.max_size <= 16 << 20
            && self.min_size < self.avg_size
            && self.avg_size < self.max_size;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!("unusable chunker parameters {self:?}")))
        }
    }
}

/// What `config` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Random identity of this repository, hex.
    pub repo_id: String,
    /// When `init` ran, Unix seconds.
    pub created: i64,
    /// The chunker's parameters; changing them would break deduplication, so they are fixed.
    pub chunker: ChunkerParams,
    /// zstd level used for new blobs (any level reads back).
    pub compression_level: i32,
    /// Target size of a data pack, in bytes.
    pub pack_size: u32,
    /// The encryption scheme (`crypto::SCHEME_V1`) of an encrypted repository (config version
    /// 2, where it follows the fields above); `None` for an unencrypted one (version 1).
    #[serde(skip)]
    pub encryption: Option<u32>,
}

impl RepoConfig {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self.encryption {
            None => codec::frame(MAGIC, PLAIN_CONFIG_VERSION, &codec::encode(self)),
            // A tuple encodes as its fields back to back: version 1's fields, then the scheme.
            Some(scheme) => codec::frame(MAGIC, CONFIG_VERSION, &codec::encode(&(self, scheme))),
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let config: Self = match codec::unframe("repository config", bytes, MAGIC, CONFIG_VERSION)? {
            (1, body) => codec::decode("repository config", body)?,
            (_, body) => {
                let (mut config, scheme): (Self, u32) = codec::decode("repository config", body)?;
                if scheme != crate::crypto::SCHEME_V1 {
                    return Err(Error::UnsupportedVersion {
                        what: "the repository's encryption scheme".into(),
                        found: scheme,
                        supported: crate::crypto::SCHEME_V1,
                    });
                }
                config.encryption = Some(scheme);
                config
            }
        };
        config.chunker.validate().map_err(|e| Error::corrupt("repository config", e.to_string()))?;
        if !(1..=1 << 30).contains(&config.pack_size) || !(-7..=22).contains(&config.compression_level) {
            return Err(Error::corrupt("repository config", "pack size or compression level out of range"));
        }
        Ok(config)
    }
}
