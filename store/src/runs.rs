//! The run log: how each run of snapshot, forget, gc and scrub ended, so that `cairn status`
//! can report failures, not only the snapshots that succeeded (issue 19).
//!
//! It is a JSON-lines file, `runs.jsonl`, in the repository's state folder ([`StateDir`]:
//! `REPO/index/` for a local repository) beside the index, but not in it: the index is a cache
//! that `repair index` rebuilds from the packs, and a failure leaves nothing in the packs to
//! rebuild it from. The log is local state too (losing it costs the history, never data).
//!
//! Each line is one [`RunOutcome`] with its format version `v`. Writers append whole lines
//! under an exclusive `flock` of `runs.lock` and fsync; when the file has grown past
//! [`COMPACT_AT`] bytes, the writer rewrites it (temp file, fsync, rename) keeping the newest
//! [`KEEP_PER_KIND`] runs of each command and profile. A reader skips a line that is not JSON
//! (the torn tail of a run killed mid-write), ignores fields it does not know, and skips a
//! line of a newer version with a warning (a newer cairn ran on this repository): the log is
//! history for `status`, and one line it cannot read must not hide the others. Compaction
//! keeps such lines as they are.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::Modes;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::state::StateDir;

/// The newest run-log line version this build reads and writes.
pub const RUNS_VERSION: u32 = 1;

/// Past this size the log is compacted on the next write.
pub const COMPACT_AT: u64 = 256 * 1024;

/// Runs kept per command and profile when the log is compacted.
pub const KEEP_PER_KIND: usize = 50;

/// What a scrub run found, as the run log keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScrubOutcome {
    /// Whether stored data was read back.
    pub read_data: bool,
    /// Packs in scope.
    pub packs_in_scope: u64,
    /// Packs read back by this run.
    pub packs_verified: u64,
    /// Packs in scope never read back (after the run).
    pub packs_never_verified: u64,
    /// Damaged or missing objects found.
    pub damage: u64,
    /// Objects this build could not read (not damage).
    pub unreadable: u64,
}

/// How one run of a command ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunOutcome {
    /// The line's format version ([`RUNS_VERSION`]).
    pub v: u32,
    /// `snapshot`, `forget`, `gc` or `scrub`.
    pub command: String,
    /// The profile it ran with, if any.
    pub profile: Option<String>,
    /// When it started, Unix nanoseconds.
    pub start_ns: i64,
    /// How long it ran, seconds.
    pub duration_secs: f64,
    /// The exit code the command ended with (the CLI's documented codes).
    pub exit_code: u8,
    /// The error it ended with, if any.
    pub error: Option<String>,
    /// The snapshot a snapshot run saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// A snapshot's logical size (what restoring it writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// New data a snapshot added, before compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_added: Option<u64>,
    /// What that new data took stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_stored: Option<u64>,
    /// A snapshot's files: new, changed, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<[u64; 3]>,
    /// Files a snapshot could not read (left out or stored as read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<u64>,
    /// Snapshots a forget removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// Bytes a gc freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<i64>,
    /// What a scrub found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<ScrubOutcome>,
}

impl RunOutcome {
    /// A run of `command` that started at `start_ns`; the rest is filled in by the caller.
    #[must_use]
    pub fn new(command: &str, profile: Option<&str>, start_ns: i64) -> Self {
        Self {
            v: RUNS_VERSION,
            command: command.to_owned(),
            profile: profile.map(str::to_owned),
            start_ns,
            ..Self::default()
        }
    }

    /// True when the run did its job: exit 0, 3 (done with warnings: a snapshot was saved) or
    /// 5 (forget removed the snapshots, gc was deferred).
    #[must_use]
    pub fn succeeded(&self) -> bool {
        matches!(self.exit_code, 0 | 3 | 5)
    }
}

/// A repository's run log (see the module documentation). Holds only paths, so it outlives
/// the `Repo` it came from: a command records its outcome after it has let the repository go.
#[derive(Clone, Debug)]
pub struct RunLog {
    path: PathBuf,
    lock: PathBuf,
    modes: Modes,
}

impl StateDir {
    /// The run log kept in this state folder.
    #[must_use]
    pub fn run_log(&self) -> RunLog {
        RunLog { path: self.dir().join("runs.jsonl"), lock: self.dir().join("runs.lock"), modes: self.modes() }
    }
}

impl Repo {
    /// This repository's run log.
    #[must_use]
    pub fn run_log(&self) -> RunLog {
        self.state.run_log()
    }

    /// Appends a run's outcome to the log (refused when the repository is read-only).
    pub fn record_run(&self, outcome: &RunOutcome) -> Result<()> {
        self.writable("recording a run")?;
        self.run_log().record(outcome)
    }

    /// The recorded runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunOutcome>> {
        self.run_log().read()
    }
}

/// How much of the repository a scrub has read back, and how big it is: what `status`
/// reports beside the runs.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct PackCoverage {
    /// Packs in the index.
    pub packs: u64,
    /// Their total size.
    pub packs_size: u64,
    /// The index files' size.
    pub index_size: u64,
    /// Packs read back and verified within the window asked for.
    pub verified_within: u64,
    /// Packs never read back.
    pub never_verified: u64,
    /// The oldest verification (Unix seconds), when every pack has one.
    pub oldest_verified_at: Option<i64>,
    /// The newest verification (Unix seconds), if any.
    pub newest_verified_at: Option<i64>,
}

impl Repo {
    /// The packs' verification times (scrub's coverage memory), counted against a window of
    /// `window_secs` before now.
    pub fn pack_coverage(&self, window_secs: u64) -> Result<PackCoverage> {
        let packs = self.index.packs()?;
        let since = crate::repo::now_secs().saturating_sub(i64::try_from(window_secs).unwrap_or(i64::MAX));
        let stamps: Vec<Option<i64>> = packs.iter().map(|p| p.verified_at).collect();
        let never = stamps.iter().filter(|v| v.is_none()).count() as u64;
        Ok(PackCoverage {
            packs: packs.len() as u64,
            packs_size: packs.iter().map(|p| p.size).sum(),
            index_size: self.state.index_size(),
            verified_within: stamps.iter().flatten().filter(|&&t| t >= since).count() as u64,
            never_verified: never,
            oldest_verified_at: if never == 0 { stamps.iter().flatten().min().copied() } else { None },
            newest_verified_at: stamps.iter().flatten().max().copied(),
        })
    }
}

impl RunLog {
    /// The log file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `outcome` as one line, fsynced; compacts the log when it has grown too big.
    pub fn record(&self, outcome: &RunOutcome) -> Result<()> {
        let mut line = serde_json::to_vec(outcome).map_err(|e| Error::InvalidInput(e.to_string()))?;
        line.push(b'\n');
        if let Some(dir) = self.path.parent() {
            crate::backend::create_dir_with(dir, self.modes)?;
        }
        let lock = crate::lock::lock_file(&self.lock, self.modes)?;
        lock.lock().map_err(|e| Error::io(&self.lock, e))?;
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(self.modes.file)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        // A torn line from a run killed mid-write would swallow this one: start on a new line.
        let len = file.metadata().map_err(|e| Error::io(&self.path, e))?.len();
        if len > 0 && !ends_with_newline(&self.path, len) {
            line.insert(0, b'\n');
        }
        file.write_all(&line).and_then(|()| file.sync_data()).map_err(|e| Error::io(&self.path, e))?;
        if len + line.len() as u64 > COMPACT_AT {
            self.compact()?;
        }
        Ok(())
    }

    /// The recorded runs, oldest first (none when there is no log yet).
    pub fn read(&self) -> Result<Vec<RunOutcome>> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        Ok(parse(&text, &self.path).0)
    }

    /// Keeps the newest [`KEEP_PER_KIND`] runs of each command and profile: written beside
    /// the log, fsynced, renamed over it (the caller holds the lock).
    fn compact(&self) -> Result<()> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let (runs, newer) = parse(&text, &self.path);
        let mut seen: HashMap<(&str, Option<&str>), usize> = HashMap::new();
        let mut keep = vec![false; runs.len()];
        for (i, r) in runs.iter().enumerate().rev() {
            let n = seen.entry((r.command.as_str(), r.profile.as_deref())).or_default();
            *n += 1;
            keep[i] = *n <= KEEP_PER_KIND;
        }
        let mut out = Vec::new();
        for line in newer {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        for (r, _) in runs.iter().zip(&keep).filter(|(_, k)| **k) {
            out.extend(serde_json::to_vec(r).map_err(|e| Error::InvalidInput(e.to_string()))?);
            out.push(b'\n');
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(self.modes.file)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&out).and_then(|()| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        match self.path.parent() {
            Some(dir) => crate::backend::sync_dir(dir),
            None => Ok(()),
        }
    }
}

fn ends_with_newline(path: &Path, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut last = [0u8];
    File::open(path).and_then(|f| f.read_exact_at(&mut last, len - 1)).is_ok_and(|()| last[0] == b'\n')
}

/// The lines of a log, and those of a newer version (skipped, with a warning); a line that
/// is not JSON is skipped (a torn write).
fn parse<'a>(text: &'a [u8], path: &Path) -> (Vec<RunOutcome>, Vec<&'a [u8]>) {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let mut runs = Vec::new();
    let mut newer = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        let Ok(Version { v }) = serde_json::from_slice::<Version>(line) else {
            log::debug!("{}: skipped a line that is not a run record", path.display());
            continue;
        };
        if v > RUNS_VERSION {
            newer.push(line);
            continue;
        }
        match serde_json::from_slice::<RunOutcome>(line) {
            Ok(r) => runs.push(r),
            Err(e) => log::debug!("{}: skipped a run record: {e}", path.display()),
        }
    }
    if !newer.is_empty() {
        log::warn!(
            "{}: skipped {} runs recorded by a newer cairn (format version above {RUNS_VERSION}); upgrade cairn to see them",
            path.display(),
            newer.len()
        );
    }
    (runs, newer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_in(dir: &Path) -> RunLog {
        StateDir::new(dir, &dir.join("hold"), Modes::private()).run_log()
    }

    #[test]
    fn runs_are_appended_and_read_back_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        assert!(log.read().unwrap().is_empty());
        let mut a = RunOutcome::new("snapshot", Some("hx"), 1);
        a.snapshot = Some("ab".into());
        log.record(&a).unwrap();
        // A run killed mid-write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(b"{\"v\":1,\"comm").unwrap();
        let b = RunOutcome::new("gc", None, 2);
        log.record(&b).unwrap();
        assert_eq!(log.read().unwrap(), vec![a, b]);
    }

    #[test]
    fn unknown_fields_are_ignored_and_a_newer_version_is_skipped() {
        let p = Path::new("runs.jsonl");
        let old = br#"{"v":1,"command":"gc","profile":null,"start_ns":5,"duration_secs":1.0,"exit_code":0,"error":null,"future":7}"#;
        assert_eq!(parse(old, p).0[0].start_ns, 5);
        let both = [&old[..], b"\n", br#"{"v":2,"command":"gc"}"#].concat();
        let (runs, newer) = parse(&both, p);
        assert_eq!((runs.len(), newer.len()), (1, 1));
    }

    #[test]
    fn compaction_keeps_the_newest_runs_of_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        let mut err = RunOutcome::new("snapshot", Some("p"), 0);
        err.error = Some("x".repeat(2000));
        for i in 0..200 {
            err.start_ns = i;
            log.record(&err).unwrap();
        }
        log.record(&RunOutcome::new("gc", None, 1000)).unwrap();
        let runs = log.read().unwrap();
        let snaps: Vec<i64> = runs.iter().filter(|r| r.command == "snapshot").map(|r| r.start_ns).collect();
        assert!(snaps.len() <= KEEP_PER_KIND + COMPACT_AT as usize / 2000, "{}", snaps.len());
        assert_eq!(snaps.last(), Some(&199));
        assert!(runs.iter().any(|r| r.command == "gc"));
        assert!(fs::metadata(log.path()).unwrap().len() < COMPACT_AT + 4096);
    }
}
