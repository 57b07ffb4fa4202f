//! The space reserve: a file of allocated blocks beside the index, given back when the disk is
//! full so that the commands that free space (`forget`, `gc`, `repair index`) can still run.
//!
//! A full disk is the day an operator most needs `forget --gc`, and gc needs room before it can
//! free any: SQLite's shared-memory file and write-ahead log, and the mark set of every
//! reachable blob (about 64 bytes a blob). The reserve holds that much, 4 MiB plus 64 bytes per
//! indexed blob, at most 256 MiB. Commands that only write (a snapshot) never touch it, so a
//! snapshot that fills the disk leaves it for the forget and gc that follow. It is created at
//! `init` and topped up after a snapshot or gc while free space is at least four times its
//! size; a missing or short reserve is never an error.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::state::StateDir;

/// Size of the reserve of an empty repository.
const BASE: u64 = 4 << 20;
/// The most it ever holds.
const CAP: u64 = 256 << 20;

/// The reserve a repository of `blobs` indexed blobs keeps.
pub(crate) fn size_for(blobs: u64) -> u64 {
    BASE.saturating_add(blobs.saturating_mul(64)).min(CAP)
}

/// Bytes this user may still write on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Gives the reserve back when the disk is nearly full (less free than the reserve holds, or
/// than a base reserve when there is none); true when it did.
pub(crate) fn release_if_short(state: &StateDir) -> bool {
    let file = state.reserve_path();
    let held = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let short = free_bytes(state.dir()).is_some_and(|free| free < held.max(BASE));
    short && held > 0 && fs::remove_file(&file).is_ok()
}

/// Grows the reserve to `want` bytes when there is room to spare (four times `want` free).
/// Best effort: any failure leaves what there was.
pub(crate) fn top_up(state: &StateDir, want: u64) {
    let file = state.reserve_path();
    let mode = state.modes().file;
    let held = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    // Grow in steps of a MiB or more, so that a snapshot does not touch it every time.
    if held >= want || (held > 0 && want - held < 1 << 20) {
        return;
    }
    if free_bytes(state.dir()).is_none_or(|free| free < want.saturating_mul(4)) {
        return;
    }
    let grow = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new().write(true).create(true).truncate(false).mode(mode).open(&file)?;
        // Allocated blocks, not a hole: a sparse file would give nothing back when removed.
        if rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, want).is_err() {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(held))?;
            let zeros = vec![0u8; 1 << 20];
            let mut at = held;
            while at < want {
                let n = (want - at).min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                at += n as u64;
            }
        }
        f.sync_all()
    };
    if let Err(e) = grow() {
        log::debug!("space reserve {}: {e}", file.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_grows_with_the_index_and_stays_capped() {
        assert_eq!(size_for(0), BASE);
        assert_eq!(size_for(1_000_000), BASE + 64_000_000);
        assert_eq!(size_for(u64::MAX), CAP);
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path(), &dir.path().join("hold"), crate::backend::Modes::private());
        top_up(&state, BASE);
        let meta = fs::metadata(state.reserve_path()).unwrap();
        assert_eq!(meta.len(), BASE);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= BASE, "allocated, not sparse");
        // Plenty of space here: nothing is released.
        assert!(!release_if_short(&state));
        assert!(state.reserve_path().exists());
    }
}
