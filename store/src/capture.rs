//! Captures (issue 18): a command's standard output, or this process's standard input, stored
//! as a file of the snapshot, under the reserved top-level directory [`CAPTURES_DIR`] of its
//! tree.
//!
//! The output is chunked straight from the pipe by the same path a file's content takes
//! (`Upload::chunk_stream`), so a dump of any size needs one read buffer and no temporary file,
//! and a dump that barely changed stores only its changed chunks. The command runs without a
//! shell, in a process group of its own, with its standard input closed; its stderr is read on
//! a thread that keeps the last 4 KiB. At its timeout the whole group is killed (a shell and
//! everything it started). Its exit status is decided only once it has exited; then whatever is
//! left of its group (background children holding the pipes) is killed too, so a capture never
//! outlives its snapshot. The pipes are polled, not read to their end: a process outside the
//! group (`setsid`) holding stdout open past the timeout, or a child holding it open for a
//! second after the command exited (then killed with the group), ends the capture as failed
//! instead of holding the snapshot until that process ends.
//!
//! A capture that fails (a status other than 0, a signal, the timeout, not started) leaves its
//! output out of the snapshot: a truncated dump that looks whole is worse than none. With
//! [`OnFailure::Fail`] the snapshot fails and no record is written (chunks already stored are
//! unreferenced data that gc removes); with [`OnFailure::Warn`] the snapshot is kept with a
//! warning. Either way the record keeps how it ended and the tail of its stderr.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::error::{Error, Result};
use crate::fsmeta::Names;
use crate::id::FileHash;
use crate::progress::Progress;
use crate::record::{CaptureExit, CaptureRecord};
use crate::report::Counters;
use crate::tally::Warning;
use crate::tree::{ChunkRef, Entry, EntryKind, Timestamp, Tree};
use crate::upload::{ReadError, Upload};

/// The top-level directory of a snapshot's tree that holds its captures: a name no source path
/// may take, and that a restore leaves out unless asked (`RestoreOptions::captures` or an
/// include below it).
pub const CAPTURES_DIR: &str = ".cairn-captures";

/// How much of a capture's stderr the record keeps: its end, where the reason usually is.
const STDERR_TAIL: usize = 4096;

/// What a failing capture does to the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// The snapshot fails; no record is written.
    #[default]
    Fail,
    /// The snapshot is kept, with a warning and the failure in its record.
    Warn,
}

/// Where a capture's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaptureSource {
    /// A command's standard output. No shell: `argv[0]` is looked up in `PATH`.
    Command {
        /// The command and its arguments.
        argv: Vec<String>,
        /// Killed, with its whole process group, after this long; `None`: no limit.
        timeout: Option<Duration>,
        /// What a failure does.
        on_failure: OnFailure,
    },
    /// This process's standard input, read to its end (`cairn snapshot --stdin-name`); a read
    /// error fails the snapshot.
    Stdin,
}

/// A stream stored as a file of the snapshot, at `CAPTURES_DIR/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capture {
    /// Where it appears below the captures directory: relative, plain names only.
    pub path: PathBuf,
    /// Where its bytes come from.
    pub source: CaptureSource,
}

impl Capture {
    /// A command's output at `path`.
    #[must_use]
    pub fn command(path: PathBuf, argv: Vec<String>, timeout: Option<Duration>, on_failure: OnFailure) -> Self {
        Self { path, source: CaptureSource::Command { argv, timeout, on_failure } }
    }

    /// The standard input at `path`.
    #[must_use]
    pub fn stdin(path: PathBuf) -> Self {
        Self { path, source: CaptureSource::Stdin }
    }
}

/// Checks captures before anything runs: plain relative paths, none the same as or below
/// another, commands not empty, the standard input read once.
pub(crate) fn check(captures: &[Capture]) -> Result<()> {
    let bad = |msg: String| Err(Error::InvalidInput(msg));
    let mut stdin = 0;
    for c in captures {
        let shown = c.path.display();
        if c.path.as_os_str().is_empty() || !c.path.components().all(|p| matches!(p, Component::Normal(_))) {
            return bad(format!("capture path {shown:?} must be relative, of plain names (no `..`, `.` or leading /)"));
        }
        match &c.source {
            CaptureSource::Command { argv, .. } if argv.is_empty() || argv[0].is_empty() => {
                return bad(format!("capture {shown} has an empty command"));
            }
            CaptureSource::Stdin => stdin += 1,
            CaptureSource::Command { .. } => {}
        }
    }
    if stdin > 1 {
        return bad("the standard input can be captured once only".into());
    }
    for (i, a) in captures.iter().enumerate() {
        for b in &captures[i + 1..] {
            if a.path.starts_with(&b.path) || b.path.starts_with(&a.path) {
                return bad(format!(
                    "captures {} and {} would be the same file, or one inside the other",
                    a.path.display(),
                    b.path.display()
                ));
            }
        }
    }
    Ok(())
}

/// True when `path` (absolute, as snapshotted) is the captures directory or below it.
pub(crate) fn is_reserved(path: &Path) -> bool {
    path.strip_prefix("/").is_ok_and(|rel| rel.starts_with(CAPTURES_DIR))
}

/// What the captures left for the snapshot.
#[derive(Default)]
pub(crate) struct Captured {
    /// The captures directory, for the root tree; none when no capture stored anything.
    pub(crate) entry: Option<Entry>,
    /// One per capture, in the order given.
    pub(crate) records: Vec<CaptureRecord>,
    /// A failed capture with `OnFailure::Warn`.
    pub(crate) warnings: Vec<Warning>,
}

/// How one capture ended, and what it stored.
struct Outcome {
    exit: CaptureExit,
    duration: Duration,
    stderr_tail: String,
    /// The stored output; none when it could not be read.
    content: Option<(Vec<ChunkRef>, FileHash, u64)>,
    /// Why the output could not be read, when it could not.
    read_error: Option<String>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        matches!(self.exit, CaptureExit::Code(0) | CaptureExit::Stdin) && self.content.is_some()
    }

    /// How it ended, for a message: "exited with status 2".
    fn how(&self, timeout: Option<Duration>) -> String {
        let ended = match &self.exit {
            CaptureExit::Code(0) => "exited with status 0".to_owned(),
            CaptureExit::Code(n) => format!("failed: exited with status {n}"),
            CaptureExit::Signal(s) => format!("failed: ended by signal {s}"),
            CaptureExit::TimedOut => format!(
                "was killed with its process group at its timeout of {}",
                timeout.map_or_else(String::new, |t| format!("{}s", t.as_secs_f64()))
            ),
            CaptureExit::NotStarted => "could not be started".to_owned(),
            CaptureExit::Stdin => "(standard input)".to_owned(),
        };
        match &self.read_error {
            Some(e) => format!("{ended}, and its output could not be read: {e}"),
            None => ended,
        }
    }
}

/// Runs the captures one after another, storing each output through `upload`.
pub(crate) fn run_all(
    captures: &[Capture],
    upload: &Upload<'_>,
    counters: &Counters,
    progress: &dyn Progress,
) -> Result<Captured> {
    let mut out = Captured::default();
    if captures.is_empty() {
        return Ok(out);
    }
    let names = Names::default();
    let owner = Owner::current(&names);
    let mut files: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    for c in captures {
        let shown = format!("{CAPTURES_DIR}/{}", c.path.display());
        progress.item(&format!("capture {}", c.path.display()));
        let (mut outcome, argv, timeout, on_failure) = match &c.source {
            CaptureSource::Command { argv, timeout, on_failure } => {
                (run_command(argv, *timeout, upload)?, argv.clone(), *timeout, *on_failure)
            }
            CaptureSource::Stdin => (read_stdin(upload)?, Vec::new(), None, OnFailure::Fail),
        };
        let ok = outcome.succeeded();
        log::debug!("capture {}: {} in {:?}", c.path.display(), outcome.how(timeout), outcome.duration);
        let command = if argv.is_empty() { "standard input".to_owned() } else { shown_command(&argv) };
        if !ok && on_failure == OnFailure::Fail {
            return Err(Error::CaptureFailed {
                path: c.path.display().to_string(),
                command,
                how: outcome.how(timeout),
                stderr_tail: outcome.stderr_tail,
            });
        }
        let mut size = 0;
        if let Some((content, hash, len)) = outcome.content.take().filter(|_| ok) {
            size = len;
            let mut entry = owner.entry(EntryKind::File, 0o600, now());
            entry.size = len;
            entry.content = content;
            entry.file_hash = Some(hash);
            insert(&mut files, &c.path, entry)?;
            counters.files.add(1);
            counters.files_new.add(1);
            counters.bytes_total.add(len);
        } else {
            let tail = outcome.stderr_tail.trim_end();
            let tail = tail.rsplit('\n').next().unwrap_or_default();
            out.warnings.push(Warning {
                path: format!("/{shown}"),
                message: format!(
                    "capture ({command}) {}; not stored (on_failure = warn){}",
                    outcome.how(timeout),
                    if tail.is_empty() { String::new() } else { format!("; stderr ends: {tail}") }
                ),
            });
        }
        out.records.push(CaptureRecord {
            path: c.path.to_string_lossy().into_owned(),
            argv,
            exit: outcome.exit,
            failed: !ok,
            duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
            size,
            stderr_tail: outcome.stderr_tail,
        });
    }
    if !files.is_empty() {
        let mut dir = owner.entry(EntryKind::Dir, 0o700, now());
        dir.name = CAPTURES_DIR.as_bytes().to_vec();
        dir.subtree = Some(store_dir(files, upload, &owner)?);
        out.entry = Some(dir);
    }
    Ok(out)
}

/// A command line as a user would type it back, for messages.
fn shown_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| if a.is_empty() || a.contains(char::is_whitespace) { format!("{a:?}") } else { a.clone() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The capture files and the directories on their way, before they are stored.
enum Node {
    File(Box<Entry>),
    Dir(BTreeMap<Vec<u8>, Node>),
}

fn insert(dir: &mut BTreeMap<Vec<u8>, Node>, path: &Path, entry: Entry) -> Result<()> {
    let names: Vec<Vec<u8>> = path.components().map(|c| c.as_os_str().as_bytes().to_vec()).collect();
    let (last, above) = names.split_last().ok_or_else(|| Error::InvalidInput("empty capture path".into()))?;
    let mut here = dir;
    for name in above {
        let node = here.entry(name.clone()).or_insert_with(|| Node::Dir(BTreeMap::new()));
        let Node::Dir(next) = node else {
            return Err(Error::InvalidInput(format!("capture path {} runs through another capture", path.display())));
        };
        here = next;
    }
    here.insert(last.clone(), Node::File(Box::new(Entry { name: last.clone(), ..entry })));
    Ok(())
}

/// Stores a directory of captures and those below it; returns its tree ID.
fn store_dir(dir: BTreeMap<Vec<u8>, Node>, upload: &Upload<'_>, owner: &Owner) -> Result<crate::id::TreeId> {
    let mut entries = Vec::with_capacity(dir.len());
    for (name, node) in dir {
        entries.push(match node {
            Node::File(e) => *e,
            Node::Dir(sub) => {
                let mut e = owner.entry(EntryKind::Dir, 0o700, now());
                e.name = name;
                e.subtree = Some(store_dir(sub, upload, owner)?);
                e
            }
        });
    }
    upload.store_tree(Tree { entries })
}

/// Captures belong to the user that ran the snapshot.
struct Owner {
    uid: u32,
    gid: u32,
    user: Option<String>,
    group: Option<String>,
}

impl Owner {
    fn current(names: &Names) -> Self {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        Self { uid, gid, user: names.user(uid), group: names.group(gid) }
    }

    fn entry(&self, kind: EntryKind, mode: u32, time: Timestamp) -> Entry {
        let mut e = Entry::new(Vec::new(), kind);
        e.mode = mode;
        e.uid = self.uid;
        e.gid = self.gid;
        e.user.clone_from(&self.user);
        e.group.clone_from(&self.group);
        e.mtime = time;
        e.ctime = time;
        e.nlink = 1;
        e
    }
}

fn now() -> Timestamp {
    let t = jiff::Timestamp::now();
    Timestamp { sec: t.as_second(), nsec: u32::try_from(t.subsec_nanosecond()).unwrap_or(0) }
}

/// Reads the standard input to its end into the repository.
fn read_stdin(upload: &Upload<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let stdin = io::stdin();
    let mut lock = stdin.lock();
    let (content, read_error) = stream(upload, &mut lock)?;
    Ok(Outcome {
        exit: CaptureExit::Stdin,
        duration: started.elapsed(),
        stderr_tail: String::new(),
        content,
        read_error,
    })
}

/// Chunks `reader` to its end: the stored output, or why it could not be read. A repository
/// error is the snapshot's error.
type Streamed = (Option<(Vec<ChunkRef>, FileHash, u64)>, Option<String>);

fn stream(upload: &Upload<'_>, reader: &mut impl Read) -> Result<Streamed> {
    match upload.chunk_stream(reader) {
        Ok(c) => Ok((Some(c), None)),
        Err(ReadError::Warn(msg)) => Ok((None, Some(msg))),
        Err(ReadError::Fatal(e)) => Err(e),
    }
}

/// Runs a command in a process group of its own and stores its standard output.
fn run_command(argv: &[String], timeout: Option<Duration>, upload: &Upload<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ok(Outcome {
                exit: CaptureExit::NotStarted,
                duration: started.elapsed(),
                stderr_tail: format!("cannot run {}: {e}", argv[0]),
                content: None,
                read_error: None,
            })
        }
    };
    let pid = Pid::from_child(&child);
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::InvalidInput("a capture's pipes were not set up".into()));
    };
    let timed_out = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let (done, finished) = mpsc::channel::<()>();
    let (streamed, tail) = std::thread::scope(|s| {
        let stop = &stop;
        let tail = s.spawn(move || read_tail(&mut Pipe::new(&mut stderr, None, Some(stop))));
        let timed_out = &timed_out;
        let watchdog = s.spawn(move || match timeout {
            Some(t) => {
                if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(t) {
                    timed_out.store(true, Ordering::SeqCst);
                    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
                }
            }
            None => {
                let _ = finished.recv();
            }
        });
        let streamed = stream(upload, &mut Pipe::new(&mut stdout, Some((pid, timed_out)), None));
        drop(stdout);
        if streamed.is_err() {
            // The repository failed: the command's output has nowhere to go.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
        // Wait for the command to exit without reaping it: while it is a zombie its ID cannot
        // be taken by another process, so the group kill below reaches only what it left.
        let _ = rustix::process::waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT);
        drop(done);
        let _ = watchdog.join();
        // What the command left running in its group (a background child holding a pipe).
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        // A process outside the group (`setsid`) may hold stderr open for good: its tail is
        // read while it comes, not to its end.
        stop.store(true, Ordering::SeqCst);
        let tail = tail.join().unwrap_or_default();
        (streamed, tail)
    });
    let status = child.wait();
    let duration = started.elapsed();
    let (content, read_error) = streamed?;
    let exit = if timed_out.load(Ordering::SeqCst) {
        CaptureExit::TimedOut
    } else {
        match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => CaptureExit::Code(c),
                (None, Some(sig)) => CaptureExit::Signal(sig),
                (None, None) => CaptureExit::Code(-1),
            },
            Err(_) => CaptureExit::Code(-1),
        }
    };
    Ok(Outcome { exit, duration, stderr_tail: tail, content, read_error })
}

/// How often a capture's pipe is looked at while nothing comes through it.
const POLL: Duration = Duration::from_millis(100);

/// How long the output of a command that has exited may stay open with nothing coming
/// before what is left of its group is killed and the capture ended.
const EXITED_GRACE: Duration = Duration::from_secs(1);

/// A pipe from a capture's command, read without blocking for good: the end of the pipe
/// is not the end of the command. A process outside the command's group (`setsid`) can hold
/// it open after the group was killed at the timeout, and a background child can hold it
/// open after the command exited; either way the read stops with an error (the output is
/// not known to be whole) rather than wait for that process.
struct Pipe<'a, R> {
    inner: &'a mut R,
    /// The command (stdout): its exit, and the watchdog's word that its time is up.
    command: Option<(Pid, &'a AtomicBool)>,
    /// Set when the reader should give up once the pipe is idle (stderr).
    stop: Option<&'a AtomicBool>,
    /// When the command was first seen to have exited.
    exited: Option<Instant>,
}

impl<'a, R: Read + std::os::fd::AsFd> Pipe<'a, R> {
    fn new(inner: &'a mut R, command: Option<(Pid, &'a AtomicBool)>, stop: Option<&'a AtomicBool>) -> Self {
        Self { inner, command, stop, exited: None }
    }

    /// True when something can be read (data or the end of the pipe).
    fn ready(&self) -> io::Result<bool> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&*self.inner, PollFlags::IN)];
        let wait = Timespec { tv_sec: 0, tv_nsec: i64::from(u32::try_from(POLL.as_nanos()).unwrap_or(0)) };
        match poll(&mut fds, Some(&wait)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl<R: Read + std::os::fd::AsFd> Read for Pipe<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((_, timed_out)) = self.command {
                if timed_out.load(Ordering::SeqCst) {
                    return Err(io::Error::other("the command was killed at its timeout"));
                }
            }
            if self.ready()? {
                return self.inner.read(buf);
            }
            if self.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                return Ok(0);
            }
            let Some((pid, _)) = self.command else { continue };
            match self.exited {
                None => {
                    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
                    if matches!(rustix::process::waitid(WaitId::Pid(pid), opts), Ok(Some(_))) {
                        self.exited = Some(Instant::now());
                    }
                }
                Some(at) if at.elapsed() >= EXITED_GRACE => {
                    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
                    return Err(io::Error::other(
                        "the command exited, but a process it left running held its output open \
                         (killed with the command's process group; the output may be incomplete)",
                    ));
                }
                Some(_) => {}
            }
        }
    }
}

/// Reads a stream to its end, keeping its last `STDERR_TAIL` bytes.
fn read_tail(r: &mut impl Read) -> String {
    let mut kept: Vec<u8> = Vec::with_capacity(2 * STDERR_TAIL);
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_TAIL {
                    kept.drain(..kept.len() - STDERR_TAIL);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let start = kept.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(path: &str) -> Capture {
        Capture::command(PathBuf::from(path), vec!["true".into()], None, OnFailure::Fail)
    }

    #[test]
    fn paths_are_plain_relative_and_apart() {
        assert!(check(&[cmd("env/pip.txt"), cmd("db.sql")]).is_ok());
        // (`a/./b` is `a/b`: Path drops an inner `.`.)
        for bad in ["../x", "/etc/x", "./x", "", "a/../b"] {
            assert!(check(&[cmd(bad)]).is_err(), "{bad}");
        }
        assert!(check(&[cmd("a"), cmd("a/b")]).is_err());
        assert!(check(&[cmd("a"), cmd("a")]).is_err());
        assert!(check(&[Capture::stdin("x".into()), Capture::stdin("y".into())]).is_err());
        assert!(check(&[Capture::command("x".into(), vec![], None, OnFailure::Warn)]).is_err());
    }

    #[test]
    fn reserved_paths() {
        assert!(is_reserved(Path::new("/.cairn-captures")));
        assert!(is_reserved(Path::new("/.cairn-captures/env")));
        assert!(!is_reserved(Path::new("/.cairn-captures-not")));
        assert!(!is_reserved(Path::new("/etc/.cairn-captures")));
    }

    #[test]
    fn the_tail_keeps_the_end() {
        let data: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let tail = read_tail(&mut &data[..]);
        assert_eq!(tail.as_bytes(), &data[data.len() - STDERR_TAIL..]);
    }
}
