//! Snapshot records: the small file that makes a snapshot exist. Written last, after every
//! object it names is durable; its ID is the BLAKE3 of the whole file.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::frame::{Domain, FrameCodec, ZstdFrames};
use crate::id::{SnapshotId, TreeId};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const TOMBSTONE_MAGIC: &[u8; 8] = b"CAIRNFGT";
/// Newest tombstone format this build writes (a tombstone's body, a time, is never needed).
pub const TOMBSTONE_VERSION: u32 = 1;
/// Newest snapshot record format this build reads. Version 2 added `pinned`, `original` and
/// `captures`; version 3 is version 2's body sealed, the record of an encrypted repository
/// (docs/ENCRYPTION.md). Versions 1 and 2 are still read; an unencrypted repository writes 2.
pub const RECORD_VERSION: u32 = 3;
const PLAIN_RECORD_VERSION: u32 = 2;
const SEALED_RECORD_VERSION: u32 = 3;

/// The tag of a restore's safety snapshot, reserved for them.
pub const SAFETY_TAG: &str = "safety";
/// The start of the label version-1 safety snapshots had (the restored snapshot's short ID
/// followed); safety snapshots have no label now, since labels are unique.
const SAFETY_LABEL_PREFIX: &str = "safety-before-restore-";

/// True for a restore's safety snapshot: tagged `safety` (a tag users cannot give), without a
/// label or with the label version-1 safety snapshots had.
fn is_safety(tags: &[String], label: Option<&str>) -> bool {
    tags.iter().any(|t| t == SAFETY_TAG) && label.is_none_or(|l| l.starts_with(SAFETY_LABEL_PREFIX))
}

/// Which earlier snapshot a snapshot trusted for change detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Trusts the newest snapshot of its group (the same host and paths unless told otherwise).
    #[default]
    Incremental,
    /// Trusts the newest full snapshot of its group.
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
    /// Never removed by a keep-policy (`forget --include-pinned` overrides), nor by `forget`
    /// naming it. A version-1 record with a label (other than a safety snapshot's) reads as
    /// pinned: version 1 kept labeled snapshots from every policy, and that promise holds.
    pub pinned: bool,
    /// The snapshot this record was first written as, when `cairn tag` wrote it again with
    /// other tags, label or pin (a record's ID is the hash of its bytes, so it changes).
    pub original: Option<SnapshotId>,
    /// The captures the snapshot ran (issue 18): each command's argv, how it ended, how long it
    /// took and the tail of its stderr; the output itself is a file under the captures
    /// directory of the snapshot's tree. Empty for version-1 records.
    pub captures: Vec<CaptureRecord>,
}

/// How a capture ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureExit {
    /// The command exited with this status (0: success).
    Code(i32),
    /// The command was ended by this signal, not by cairn.
    Signal(i32),
    /// cairn killed it, with its whole process group, at its timeout.
    TimedOut,
    /// It could not be started (the stderr tail says why).
    NotStarted,
    /// The standard input, read to its end (no command).
    Stdin,
}

/// One capture of a snapshot, as its record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRecord {
    /// Where the output is, relative to the captures directory (`/.cairn-captures`).
    pub path: String,
    /// The command run (no shell); empty for the standard input.
    pub argv: Vec<String>,
    /// How it ended.
    pub exit: CaptureExit,
    /// True when it did not succeed (a status other than 0, a signal, the timeout, not started,
    /// its output unreadable): its output is then not in the snapshot.
    pub failed: bool,
    /// Wall time from start to exit, milliseconds.
    pub duration_ms: u64,
    /// Bytes of output stored.
    pub size: u64,
    /// The last bytes (at most 4 KiB) of its standard error, lossily as UTF-8.
    pub stderr_tail: String,
}

/// A version-1 record: the fields of version 2 but the last two.
#[derive(Deserialize)]
struct RecordV1 {
    time_ns: i64,
    host: String,
    user: String,
    paths: Vec<Vec<u8>>,
    kind: SnapshotKind,
    parent: Option<SnapshotId>,
    label: Option<String>,
    tags: Vec<String>,
    excludes: Vec<String>,
    root: TreeId,
    totals: SnapshotTotals,
    warnings: u64,
    duration_ms: u64,
    cairn_version: String,
}

impl From<RecordV1> for SnapshotRecord {
    fn from(v1: RecordV1) -> Self {
        Self {
            pinned: v1.label.is_some() && !is_safety(&v1.tags, v1.label.as_deref()),
            original: None,
            captures: Vec::new(),
            time_ns: v1.time_ns,
            host: v1.host,
            user: v1.user,
            paths: v1.paths,
            kind: v1.kind,
            parent: v1.parent,
            label: v1.label,
            tags: v1.tags,
            excludes: v1.excludes,
            root: v1.root,
            totals: v1.totals,
            warnings: v1.warnings,
            duration_ms: v1.duration_ms,
            cairn_version: v1.cairn_version,
        }
    }
}

impl SnapshotRecord {
    /// Encodes the record file of an unencrypted repository; returns its ID and bytes.
    #[must_use]
    pub fn seal(&self) -> (SnapshotId, Vec<u8>) {
        self.seal_with(&ZstdFrames::PLAIN)
    }

    /// Encodes the record file for a repository whose codec is `codec`: sealed (version 3)
    /// when it encrypts. The ID is the BLAKE3 of the file as stored, so it is checked without
    /// the key.
    #[must_use]
    pub fn seal_with(&self, codec: &dyn FrameCodec) -> (SnapshotId, Vec<u8>) {
        let bytes = if codec.encrypted() {
            codec::frame(MAGIC, SEALED_RECORD_VERSION, &codec.seal_object(Domain::Record, codec::encode(self)))
        } else {
            codec::frame(MAGIC, PLAIN_RECORD_VERSION, &codec::encode(self))
        };
        (SnapshotId::of(&bytes), bytes)
    }

    /// Decodes a record file of an unencrypted repository and checks it against its ID.
    pub fn open(id: SnapshotId, bytes: &[u8]) -> Result<Self> {
        Self::open_with(id, bytes, &ZstdFrames::PLAIN)
    }

    /// Decodes a record file of a repository whose codec is `codec`, and checks it against its
    /// ID. An unsealed record in an encrypted repository is damage (nobody with the key wrote
    /// it); a sealed one without the key says a key is needed.
    pub fn open_with(id: SnapshotId, bytes: &[u8], codec: &dyn FrameCodec) -> Result<Self> {
        if SnapshotId::of(bytes) != id {
            return Err(Error::HashMismatch { what: "snapshot record", id: id.to_hex() });
        }
        let what = format!("snapshot {id}");
        let (version, body) = codec::unframe(&what, bytes, MAGIC, RECORD_VERSION)?;
        match (version, codec.encrypted()) {
            (SEALED_RECORD_VERSION, true) => {
                let body = codec.open_object(Domain::Record, &format!("snapshot record {id}"), body)?;
                codec::decode(&what, &body)
            }
            // A sealed record in an unencrypted repository: of a format it does not have.
            (SEALED_RECORD_VERSION, false) => Err(Error::UnsupportedVersion {
                what: format!("{what} (sealed, as an encrypted repository's)"),
                found: version,
                supported: PLAIN_RECORD_VERSION,
            }),
            (_, true) => Err(Error::corrupt(what, "is not sealed, in an encrypted repository")),
            (1, false) => codec::decode::<RecordV1>(&what, body).map(Self::from),
            (_, false) => codec::decode(&what, body),
        }
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

    /// True for a restore's safety snapshot.
    #[must_use]
    pub fn is_safety(&self) -> bool {
        is_safety(&self.tags, self.label.as_deref())
    }

    /// Source paths as text (lossy), for display.
    #[must_use]
    pub fn paths_lossy(&self) -> Vec<String> {
        self.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
    }
}
