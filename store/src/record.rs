//! Snapshot records: the small file that makes a snapshot exist. Written last, after every
//! object it names is durable; its ID is the BLAKE3 of the whole file.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::id::{SnapshotId, TreeId};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const TOMBSTONE_MAGIC: &[u8; 8] = b"CAIRNFGT";
/// Newest tombstone format this build writes (a tombstone's body, a time, is never needed).
pub const TOMBSTONE_VERSION: u32 = 1;
/// Newest snapshot record format this build reads and the one it writes.
pub const RECORD_VERSION: u32 = 1;

/// Which earlier snapshot a snapshot trusted for change detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Trusts the newest snapshot of the same host and paths.
    #[default]
    Incremental,
    /// Trusts the newest full snapshot of the same host and paths.
    Differential,
    /// Trusts nothing: every byte is read again.
    Full,
}

impl SnapshotKind {
    /// Lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incremental => "incremental",
            Self::Differential => "differential",
            Self::Full => "full",
        }
    }
}

/// Counts and byte totals of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTotals {
    /// Regular files.
    pub files: u64,
    /// Directories (the source roots and everything below them).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// FIFOs and device nodes.
    pub specials: u64,
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files in the parent whose metadata changed (read again).
    pub files_changed: u64,
    /// Files whose size, mtime, ctime and inode matched the parent (not read).
    pub files_unchanged: u64,
    /// Sum of the sizes of all files: what a restore writes.
    pub bytes_total: u64,
    /// File content actually read.
    pub bytes_read: u64,
    /// Chunks and trees this snapshot added to the repository.
    pub blobs_new: u64,
    /// Plaintext size of what this snapshot added.
    pub data_added: u64,
    /// Stored (compressed) size of what this snapshot added.
    pub data_stored: u64,
}

/// A snapshot's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// When the snapshot started, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// Host name.
    pub host: String,
    /// User that ran it.
    pub user: String,
    /// Absolute source paths as given (raw bytes).
    pub paths: Vec<Vec<u8>>,
    /// Change-detection kind.
    pub kind: SnapshotKind,
    /// The snapshot trusted for change detection.
    pub parent: Option<SnapshotId>,
    /// Optional label (restore by label).
    pub label: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Exclude patterns used.
    pub excludes: Vec<String>,
    /// The tree of `/`, holding the source paths.
    pub root: TreeId,
    /// Counts and totals.
    pub totals: SnapshotTotals,
    /// Files that could not be read (the snapshot is complete but for them).
    pub warnings: u64,
    /// Wall time of the run, milliseconds.
    pub duration_ms: u64,
    /// The cairn version that wrote it.
    pub cairn_version: String,
}

impl SnapshotRecord {
    /// Encodes the record file; returns its ID and bytes.
    #[must_use]
    pub fn seal(&self) -> (SnapshotId, Vec<u8>) {
        let bytes = codec::frame(MAGIC, RECORD_VERSION, &codec::encode(self));
        (SnapshotId::of(&bytes), bytes)
    }

    /// Decodes a record file and checks it against its ID.
    pub fn open(id: SnapshotId, bytes: &[u8]) -> Result<Self> {
        if SnapshotId::of(bytes) != id {
            return Err(Error::HashMismatch { what: "snapshot record", id: id.to_hex() });
        }
        let what = format!("snapshot {id}");
        let (_, body) = codec::unframe(&what, bytes, MAGIC, RECORD_VERSION)?;
        codec::decode(&what, body)
    }

    /// The bytes of a tombstone: written before a record is removed, it says the record was
    /// forgotten on purpose (`forgotten/<id>`, docs/FORMAT.md).
    #[must_use]
    pub fn tombstone(time_ns: i64) -> Vec<u8> {
        codec::frame(TOMBSTONE_MAGIC, TOMBSTONE_VERSION, &codec::encode(&time_ns))
    }

    /// True when `bytes` are a tombstone (its magic and checksum verify; a newer version's is
    /// one too): an empty or garbled file in `forgotten/` is not, and forgets nothing.
    #[must_use]
    pub fn is_tombstone(bytes: &[u8]) -> bool {
        matches!(
            codec::unframe("tombstone", bytes, TOMBSTONE_MAGIC, TOMBSTONE_VERSION),
            Ok(_) | Err(Error::UnsupportedVersion { .. })
        )
    }

    /// Source paths as text (lossy), for display.
    #[must_use]
    pub fn paths_lossy(&self) -> Vec<String> {
        self.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
    }
}
