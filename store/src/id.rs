//! Typed 32-byte identifiers. Every hash cairn stores has its own newtype so that a chunk ID can
//! never be passed where a tree or pack ID is expected; raw `[u8; 32]` stays inside this module.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Length in bytes of every identifier (a BLAKE3 digest).
pub const ID_LEN: usize = 32;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name([u8; ID_LEN]);

        impl $name {
            /// The ID of `data`: its BLAKE3 digest.
            #[must_use]
            pub fn of(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }

            /// Wraps a digest computed elsewhere (a streaming hasher).
            #[must_use]
            pub fn from_hash(hash: blake3::Hash) -> Self {
                Self(*hash.as_bytes())
            }

            /// The raw bytes, for storage in the index.
            #[must_use]
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// Rebuilds an ID from bytes read back from the index; `None` when the length is wrong.
            #[must_use]
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; ID_LEN]>::try_from(bytes).ok().map(Self)
            }

            /// Lower-case hex, 64 characters.
            #[must_use]
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first `n` hex characters, for tables.
            #[must_use]
            pub fn short(&self, n: usize) -> String {
                let mut s = self.to_hex();
                s.truncate(n);
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short(12))
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out).map_err(|_| Error::BadId(s.to_owned()))?;
                Ok(Self(out))
            }
        }
    };
}

id_type!(
    /// A chunk of file content: BLAKE3 of its plaintext.
    ChunkId
);
id_type!(
    /// A directory (tree object): BLAKE3 of its encoded bytes.
    TreeId
);
id_type!(
    /// A pack file: BLAKE3 of the whole file, which is also its name.
    PackId
);
id_type!(
    /// A snapshot record: BLAKE3 of the whole record file, which is also its name.
    SnapshotId
);
id_type!(
    /// The BLAKE3 of a whole file's content, as `b3sum` prints it.
    FileHash
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        let back: ChunkId = id.to_hex().parse().unwrap();
        assert_eq!(id, back);
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        assert!("zz".parse::<ChunkId>().is_err());
        assert!(ChunkId::from_slice(&[0u8; 31]).is_none());
    }
}

id_type!(
    /// Any blob in a pack (a chunk or a tree); the index is keyed by it.
    BlobId
);

impl From<ChunkId> for BlobId {
    fn from(id: ChunkId) -> Self {
        Self(id.0)
    }
}

impl From<TreeId> for BlobId {
    fn from(id: TreeId) -> Self {
        Self(id.0)
    }
}

impl BlobId {
    /// The same bytes seen as a chunk ID.
    #[must_use]
    pub fn as_chunk(self) -> ChunkId {
        ChunkId(self.0)
    }

    /// The same bytes seen as a tree ID.
    #[must_use]
    pub fn as_tree(self) -> TreeId {
        TreeId(self.0)
    }
}
