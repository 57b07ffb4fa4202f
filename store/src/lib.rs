//! cairn's engine: a content-addressed, deduplicating snapshot store.
//!
//! A [`Repo`] holds snapshots of directory trees. Files are cut into content-defined chunks
//! (FastCDC), each named by its BLAKE3 ([`ChunkId`]), compressed with zstd and packed into pack
//! files; directories become tree objects ([`TreeId`]) naming their entries' chunks and
//! subtrees, so unchanged subtrees are shared between snapshots. A snapshot is a root tree plus
//! a small record ([`SnapshotRecord`]), written only after everything it names is durable. A
//! SQLite index maps every blob to its pack; it is a cache, rebuildable from the packs and
//! records ([`Repo::rebuild_index`]).
//!
//! ```
//! use cairn_store::{InitOptions, Location, NoProgress, Repo, RestoreOptions, SnapshotOptions};
//! # fn main() -> Result<(), cairn_store::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let src = dir.path().join("src");
//! std::fs::create_dir_all(src.join("conf")).unwrap();
//! std::fs::write(src.join("conf/app.toml"), b"port = 8080\n").unwrap();
//!
//! let repo = Repo::init(&Location::local(dir.path().join("repo")), &InitOptions::default())?;
//! let report = repo.snapshot(&SnapshotOptions::new(vec![src.clone()]), &NoProgress)?;
//! assert_eq!(report.totals.files, 1);
//!
//! let snap = repo.resolve("latest")?;
//! let mut opts = RestoreOptions::default();
//! opts.target = dir.path().join("out");
//! repo.restore(&snap, &opts, &NoProgress)?;
//! let restored = opts.target.join(src.strip_prefix("/").unwrap()).join("conf/app.toml");
//! assert_eq!(std::fs::read(restored).unwrap(), b"port = 8080\n");
//! # Ok(()) }
//! ```
//!
//! Data flows one way: snapshot/restore → index and packs → [`Backend`]. The library never
//! prints; long operations report through [`Progress`].

mod backend;
mod capture;
mod catalog;
mod chunker;
mod codec;
mod config;
mod copy;
mod crypto;
mod diff;
mod error;
mod exclude;
mod failpoint;
mod frame;
mod fsmeta;
mod gc;
mod id;
mod index;
mod inspect;
mod keyring;
mod lock;
mod pack;
mod progress;
mod record;
mod repair;
mod repo;
mod report;
mod reserve;
mod restore;
mod retention;
mod runs;
mod salvage;
mod scrub;
mod select;
mod snapshot;
mod state;
mod tally;
mod tree;
mod treecache;
mod upload;
mod walk;
mod workers;

pub use backend::{
    parse_storage_class, Backend, FaultPlan, FaultyBackend, FileKind, LocalBackend, Location, MemoryBackend, Modes,
    ObjectInfo, RequestCounter, RequestCounts, RequestKind, RetryBackend, Storage, RETRY_BUDGET, STORAGE_CLASSES,
    TEMPORARY_GRACE,
};
pub use capture::{Capture, CaptureSource, OnFailure, CAPTURES_DIR};
pub use catalog::{GroupBy, Retag, Retagged};
pub use chunker::{boundaries, Chunker};
pub use config::{ChunkerParams, RepoConfig};
pub use copy::{CopiedSnapshot, CopyOptions, CopyReport, CopyStatus};
pub use crypto::keyfile::{KdfParams, KeyInfo};
pub use crypto::Passphrase;
pub use diff::{Change, DiffReport};
pub use error::{BackendError, BackendErrorKind, Error, Result};
pub use exclude::read_exclude_file;
pub use failpoint::POINTS as FAILPOINTS;
pub use frame::{open_blob, seal_frame, Domain, FrameCodec, ZstdFrames};
pub use gc::{emptied_groups, ForgetReport, GcOptions, GcReport};
pub use id::{BlobId, ChunkId, FileHash, PackId, SnapshotId, TreeId};
pub use inspect::{kind_name, listing, Listing, ShowReport, Stats, Version, Visit};
pub use keyring::PassphraseSource;
pub use lock::{FlockLocks, Hold, LeaseTiming, Locks, ObjectLocks, SessionInfo};
pub use pack::{check_pack, check_pack_with, BlobKind, PackEntry, PackWriter, SealedFrame};
pub use progress::{NoProgress, Progress, SharedProgress, Unit};
pub use record::{CaptureExit, CaptureRecord, SnapshotKind, SnapshotRecord, SnapshotTotals, SAFETY_TAG};
pub use repair::{ConfigRepair, ConfigRepairReport, RepairReport};
pub use repo::{InitOptions, OpenOptions, RebuildReport, Repo, Snapshot};
pub use report::SnapshotReport;
pub use restore::{
    hash_file, remove_created, Overwrite, RemoveReport, RestoreAction, RestoreChange, RestoreOptions, RestoreReport,
};
pub use retention::{apply as apply_policy, Decision, KeepPolicy, SAFETY_KEEP_LAST, SAFETY_KEEP_WITHIN};
pub use runs::{PackCoverage, RunLog, RunOutcome, ScrubOutcome, RUNS_VERSION};
pub use scrub::{Affected, Damage, Leftovers, ScrubOptions, ScrubReport, SnapshotStatus};
pub use select::{check_label, check_tags, SnapshotFilter};
pub use snapshot::SnapshotOptions;
pub use state::StateDir;
pub use tally::Warning;
pub use tree::{snapshot_path, ChunkRef, Entry, EntryKind, Timestamp, Tree};

/// Decoders of on-disk bytes, exposed for the fuzz targets.
pub mod decode {
    pub use crate::config::RepoConfig;
    pub use crate::pack::{check_pack, parse_footer, parse_trailer, Footer, FOOTER_LEN};

    pub use crate::salvage::{blobs_of, scan, trailer_entries, Blob, Wanted};

    /// Decodes a repository config file.
    pub fn config(bytes: &[u8]) -> crate::Result<RepoConfig> {
        RepoConfig::decode(bytes)
    }

    /// Decodes a key file (its name unchecked).
    pub fn key_file(bytes: &[u8]) -> crate::Result<()> {
        crate::crypto::keyfile::KeyFile::decode_unnamed("key file", bytes).map(|_| ())
    }

    /// The frame codec of an encrypted repository whose keys are fixed and public: for fuzz
    /// targets of sealed frames, trailers and records, never for a repository.
    pub fn sealed_codec_for_fuzzing() -> crate::Result<Box<dyn crate::FrameCodec>> {
        Ok(Box::new(crate::crypto::SealedFrames::new(crate::crypto::MasterKeys::fixed_for_fuzzing(), 3)?))
    }
}
