//! Sessions and the gc lock as `flock`ed files in a folder (`REPO/locks/` of a local
//! repository).
//!
//! Every snapshot, restore and scrub holds a *session*: a file `session-<pid>-<start ns>`
//! holding its kind, pid and start time, with an exclusive `flock` on it for as long as the
//! process runs. Garbage collection reads the sessions to know what may still be using objects
//! it is about to delete (docs/GC.md). A session whose file can be locked by someone else has
//! lost its process (the kernel drops a dead process's locks), so a crashed run never leaves a
//! lock that needs clearing by hand. `gc` is held exclusively by the one running gc.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{now_ns, Hold, Locks, SessionInfo};
use crate::backend::Modes;
use crate::error::{Error, IoContext, Result};

/// A live session; dropping it ends the session.
struct Session {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file.take()); // releases the lock after the file is gone
    }
}

/// Locks as `flock`ed files in one folder, for repositories on a filesystem.
pub struct FlockLocks {
    dir: PathBuf,
    modes: Modes,
}

impl FlockLocks {
    /// Locks kept in `dir` (created when first needed), files made with `modes`.
    #[must_use]
    pub fn new(dir: &Path, modes: Modes) -> Self {
        Self { dir: dir.to_path_buf(), modes }
    }

    fn dir(&self) -> Result<&Path> {
        crate::backend::create_dir_with(&self.dir, self.modes)?;
        Ok(&self.dir)
    }
}

impl Locks for FlockLocks {
    /// The file is written and locked under a temporary name and only then renamed to
    /// `session-*`: gc treats a `session-*` file it can lock as a dead process's, so a session
    /// must never be visible unlocked, not even for an instant.
    fn start_session(&self, kind: &str) -> Result<Hold> {
        let dir = self.dir()?;
        let started = now_ns();
        let name = format!("{}-{started}", std::process::id());
        let staging = dir.join(format!("starting-{name}"));
        let path = dir.join(format!("session-{name}"));
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(self.modes.file).open(&staging).at(&staging)?;
        file.lock().at(&staging)?;
        writeln!(file, "{kind} {} {started}", std::process::id()).at(&staging)?;
        fs::rename(&staging, &path).at(&path)?;
        Ok(Hold::new(Session { path, file: Some(file) }))
    }

    fn live_sessions(&self) -> Result<Vec<SessionInfo>> {
        let dir = self.dir()?;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).at(dir)? {
            let path = entry.at(dir)?.path();
            let is_session = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("session-"));
            if !is_session {
                continue;
            }
            let Ok(file) = File::open(&path) else { continue }; // ended meanwhile
            match file.try_lock_shared() {
                Ok(()) => {
                    // Nobody holds it: its process is gone.
                    let _ = fs::remove_file(&path);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    let mut parts = text.split_whitespace();
                    let kind = parts.next().unwrap_or("?").to_owned();
                    let pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                    let started_ns = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0); // unknown: oldest
                    out.push(SessionInfo { kind, pid, started_ns });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
        Ok(out)
    }

    /// The lock file holds the holder's process ID and what it is doing, for the refusal.
    fn gc_lock(&self, what: &str) -> Result<Hold> {
        let path = self.dir()?.join("gc");
        let mut file = lock_file(&path, self.modes)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).at(&path)?;
                writeln!(file, "{} {what}", std::process::id()).at(&path)?;
                Ok(Hold::new(file))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let (pid, holder) = text.trim().split_once(' ').unwrap_or((text.trim(), "gc"));
                Err(Error::GcRunning { pid: pid.to_owned(), holder: holder.to_owned() })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

/// Opens (creating it when missing) a lock file, readable and writable.
pub(crate) fn lock_file(path: &Path, modes: Modes) -> Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(modes.file).open(path).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_seen_while_alive_and_gc_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let locks = FlockLocks::new(&dir.path().join("locks"), Modes::private());
        let s = locks.start_session("snapshot").unwrap();
        // flock is per open file description: a second open in this process conflicts too.
        let live = locks.live_sessions().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].kind, "snapshot");
        drop(s);
        assert!(locks.live_sessions().unwrap().is_empty());
        // A session file nobody holds (a dead process's) is cleared.
        fs::write(dir.path().join("locks/session-1-2"), "snapshot 1 2\n").unwrap();
        assert!(locks.live_sessions().unwrap().is_empty());
        assert!(!dir.path().join("locks/session-1-2").exists());
        let g = locks.gc_lock("repair index").unwrap();
        assert!(matches!(locks.gc_lock("gc"),
            Err(Error::GcRunning { pid, holder }) if pid == std::process::id().to_string() && holder == "repair index"));
        drop(g);
        assert!(locks.gc_lock("gc").is_ok());
    }
}
