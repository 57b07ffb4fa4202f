//! Sessions and the gc lock, as lock files under `REPO/locks/`.
//!
//! Every snapshot, restore and scrub holds a *session*: a file `locks/session-<token>` holding
//! its kind, pid, host and start time, with an exclusive `flock` on it for as long as the
//! process runs. Garbage collection reads the sessions to know what may still be using objects
//! it is about to delete (docs/GC.md). A session whose file can be locked by someone else has
//! lost its process (the kernel drops a dead process's locks), so a crashed run never leaves a
//! lock that needs clearing by hand. `locks/gc` is held exclusively by the one running gc.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A live session; dropping it ends the session.
pub struct Session {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file.take()); // releases the lock after the file is gone
    }
}

/// A session found in `locks/`.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// snapshot, restore, scrub, ...
    pub kind: String,
    /// Process ID.
    pub pid: u32,
    /// Start time, ns since the epoch.
    pub started_ns: i64,
}

fn locks_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join("locks");
    crate::backend::create_repo_dir(root, &dir)?;
    Ok(dir)
}

pub(crate) fn now_ns() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

/// Starts a session of `kind`. The file is written and locked under a temporary name and
/// only then renamed to `session-*`: gc treats a `session-*` file it can lock as a dead
/// process's, so a session must never be visible unlocked, not even for an instant.
pub(crate) fn start_session(root: &Path, kind: &str) -> Result<Session> {
    let dir = locks_dir(root)?;
    let started = now_ns();
    let name = format!("{}-{started}", std::process::id());
    let staging = dir.join(format!("starting-{name}"));
    let path = dir.join(format!("session-{name}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::backend::Modes::of(root).file)
        .open(&staging)
        .at(&staging)?;
    file.lock().at(&staging)?;
    writeln!(file, "{kind} {} {started}", std::process::id()).at(&staging)?;
    fs::rename(&staging, &path).at(&path)?;
    Ok(Session { path, file: Some(file) })
}

/// The live sessions; the files of dead ones are removed on the way.
pub(crate) fn live_sessions(root: &Path) -> Result<Vec<SessionInfo>> {
    let dir = locks_dir(root)?;
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).at(&dir)? {
        let path = entry.at(&dir)?.path();
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

/// A hold on `locks/index`: shared by every open repository, exclusive for `repair index`,
/// which replaces the index file (and removes its WAL) under every connection; a process that
/// had it open across the swap would read or write a WAL that no longer belongs to the file.
/// Released when dropped or when the process dies.
pub struct IndexUse {
    _file: File,
}

/// Opens (creating it when missing) the lock file `locks/<name>`, readable and writable.
fn lock_file(root: &Path, name: &str) -> Result<File> {
    let path = locks_dir(root)?.join(name);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::backend::Modes::of(root).file)
        .open(&path)
        .at(&path)
}

fn index_lock_file(root: &Path) -> Option<File> {
    let created = lock_file(root, "index").ok();
    // A repository this user cannot write (read-only media) cannot be repaired either: its
    // readers need no hold when the file cannot be made.
    created.or_else(|| File::open(root.join("locks").join("index")).ok())
}

/// Takes the shared hold of an open repository; refuses while `repair index` runs.
pub(crate) fn share_index(root: &Path) -> Result<Option<IndexUse>> {
    let Some(file) = index_lock_file(root) else { return Ok(None) };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(IndexUse { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy {
            reason: "`cairn repair index` is rebuilding this repository's index; try again when it has finished".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(root.join("locks/index"), e)),
    }
}

/// Takes the hold alone, for `repair index`; refuses while any other command has the
/// repository open, naming the sessions it can see.
pub(crate) fn own_index(root: &Path) -> Result<IndexUse> {
    let file = index_lock_file(root).ok_or_else(|| {
        Error::io(root.join("locks/index"), std::io::Error::from(std::io::ErrorKind::PermissionDenied))
    })?;
    match file.try_lock() {
        Ok(()) => Ok(IndexUse { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => {
            let who: Vec<String> = live_sessions(root)?.iter().map(|s| format!("{} (pid {})", s.kind, s.pid)).collect();
            let who = if who.is_empty() { "another cairn command".to_owned() } else { who.join(", ") };
            Err(Error::Busy {
                reason: format!(
                    "{who} has this repository open; `repair index` replaces the index and needs it alone: \
                     try again when it has finished"
                ),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(root.join("locks/index"), e)),
    }
}

/// The exclusive gc lock; released when dropped (or when the process dies).
pub struct GcLock {
    _file: File,
}

/// Takes the gc lock for `what` (`gc`, `repair index`), or says who holds it. The lock file
/// holds the holder's process ID and what it is doing, for that message.
pub(crate) fn gc_lock(root: &Path, what: &str) -> Result<GcLock> {
    let path = root.join("locks").join("gc");
    let mut file = lock_file(root, "gc")?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).at(&path)?;
            writeln!(file, "{} {what}", std::process::id()).at(&path)?;
            Ok(GcLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let (pid, holder) = text.trim().split_once(' ').unwrap_or((text.trim(), "gc"));
            Err(Error::GcRunning { pid: pid.to_owned(), holder: holder.to_owned() })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_seen_while_alive_and_gc_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let s = start_session(dir.path(), "snapshot").unwrap();
        // flock is per open file description: a second open in this process conflicts too.
        let live = live_sessions(dir.path()).unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].kind, "snapshot");
        drop(s);
        assert!(live_sessions(dir.path()).unwrap().is_empty());
        // A session file nobody holds (a dead process's) is cleared.
        fs::write(dir.path().join("locks/session-1-2"), "snapshot 1 2\n").unwrap();
        assert!(live_sessions(dir.path()).unwrap().is_empty());
        assert!(!dir.path().join("locks/session-1-2").exists());
        let g = gc_lock(dir.path(), "repair index").unwrap();
        assert!(matches!(gc_lock(dir.path(), "gc"),
            Err(Error::GcRunning { pid, holder }) if pid == std::process::id().to_string() && holder == "repair index"));
        drop(g);
        assert!(gc_lock(dir.path(), "gc").is_ok());
    }
}
