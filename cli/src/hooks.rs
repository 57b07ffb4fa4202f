//! The hooks runner (issue 18): a profile's commands around a snapshot or a restore.
//!
//! Each hook is an argv (no shell) started in a process group of its own, so that its timeout
//! (the profile's `hooks.timeout`, 5 minutes by default) ends everything it started, not only
//! the command itself; and so that a Ctrl-C meant for cairn does not stop a half-run
//! `systemctl start`. Its stdout and stderr go to the log line by line (stdout at info, stderr
//! at warning; under systemd, journal lines), and its environment says where it runs:
//! `CAIRN_PROFILE`, `CAIRN_PROFILE_FILE`, `CAIRN_PHASE`, `CAIRN_SNAPSHOT_ID` (when known),
//! `CAIRN_TARGET` (restores) and, for the hooks that run after something failed or could have,
//! `CAIRN_EXIT_CODE` and `CAIRN_ERROR`.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::profile::Profile;

/// Each hook's time limit when the profile gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a hook that was sent SIGTERM at its timeout has before its group gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long the output of a hook that has exited is still read: a daemon it started in the
/// background may hold the pipes open for good, and is not waited for.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// The profile's phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    BeforeSnapshot,
    AfterSnapshot,
    BeforeRestore,
    AfterRestore,
    Validate,
    OnError,
}

impl Phase {
    /// The name in the profile file, in `CAIRN_PHASE` and in `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::BeforeSnapshot => "before_snapshot",
            Phase::AfterSnapshot => "after_snapshot",
            Phase::BeforeRestore => "before_restore",
            Phase::AfterRestore => "after_restore",
            Phase::Validate => "validate",
            Phase::OnError => "on_error",
        }
    }

    /// True for the phases whose first failure stops the list (and so the operation): what
    /// comes after a failed `systemctl stop` or a failed check must not run on its word.
    /// The others run every hook, so that each stopped service is started again.
    fn stops_at_failure(self) -> bool {
        matches!(self, Phase::BeforeSnapshot | Phase::BeforeRestore | Phase::Validate)
    }
}

/// One hook run, as `--json` shows it under `hooks`.
#[derive(Clone, Debug, Serialize)]
pub struct HookRun {
    /// The phase it ran in.
    pub phase: Phase,
    /// What ran.
    pub argv: Vec<String>,
    /// Its exit code; `None` when it was ended by a signal or did not start.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// True when it ran past the timeout and its process group was killed.
    pub timed_out: bool,
    /// Why it could not be started (not found, not executable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// True when it exited 0 in time.
    pub ok: bool,
}

impl HookRun {
    /// One line that says how it went, for messages.
    pub fn outcome(&self) -> String {
        if let Some(e) = &self.error {
            return format!("could not be started: {e}");
        }
        if self.timed_out {
            return format!("timed out after {:.0} s; its process group was killed", self.duration_secs);
        }
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exited {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "ended".into(),
        }
    }
}

/// What the hooks of one command are told beyond their phase.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// `CAIRN_SNAPSHOT_ID`.
    pub snapshot_id: Option<String>,
    /// `CAIRN_TARGET`.
    pub target: Option<String>,
    /// `CAIRN_EXIT_CODE`: the exit code the command has so far (after phases, on_error).
    pub exit_code: Option<u8>,
    /// `CAIRN_ERROR`: what failed.
    pub error: Option<String>,
}

/// Runs a profile's hooks and keeps the record of every run.
pub struct Runner<'a> {
    profile: &'a Profile,
    timeout: Duration,
    /// Every hook run so far, in order.
    pub runs: Vec<HookRun>,
}

impl<'a> Runner<'a> {
    pub fn new(profile: &'a Profile) -> Self {
        Self { profile, timeout: profile.hooks.timeout.unwrap_or(DEFAULT_TIMEOUT), runs: Vec::new() }
    }

    fn list(&self, phase: Phase) -> &'a [Vec<String>] {
        let h = &self.profile.hooks;
        match phase {
            Phase::BeforeSnapshot => &h.before_snapshot,
            Phase::AfterSnapshot => &h.after_snapshot,
            Phase::BeforeRestore => &h.before_restore,
            Phase::AfterRestore => &h.after_restore,
            Phase::Validate => &h.validate,
            Phase::OnError => &h.on_error,
        }
    }

    /// Runs the hooks of `phase` in order. `Err` names the first that failed (for the phases
    /// that stop there, the last that ran).
    pub fn run(&mut self, phase: Phase, ctx: &Context) -> Result<(), String> {
        let mut first_failure = None;
        for argv in self.list(phase) {
            let run = self.run_one(phase, argv, ctx);
            let ok = run.ok;
            if !ok {
                let text = format!("hook {} `{}` {}", phase.name(), argv.join(" "), run.outcome());
                log::warn!("{text}");
                first_failure.get_or_insert(text);
            }
            self.runs.push(run);
            if !ok && phase.stops_at_failure() {
                break;
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    fn run_one(&self, phase: Phase, argv: &[String], ctx: &Context) -> HookRun {
        let started = Instant::now();
        let mut record = HookRun {
            phase,
            argv: argv.to_vec(),
            exit_code: None,
            signal: None,
            timed_out: false,
            error: None,
            duration_secs: 0.0,
            ok: false,
        };
        log::info!("hook {}: {}", phase.name(), argv.join(" "));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("CAIRN_PROFILE", &self.profile.name)
            .env("CAIRN_PROFILE_FILE", &self.profile.file)
            .env("CAIRN_PHASE", phase.name());
        for (key, value) in [
            ("CAIRN_SNAPSHOT_ID", ctx.snapshot_id.clone()),
            ("CAIRN_TARGET", ctx.target.clone()),
            ("CAIRN_EXIT_CODE", ctx.exit_code.map(|c| c.to_string())),
            ("CAIRN_ERROR", ctx.error.clone()),
        ] {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                record.error = Some(format!("{}: {e}", argv[0]));
                record.duration_secs = started.elapsed().as_secs_f64();
                return record;
            }
        };
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        for (is_err, stream) in [
            (false, child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>)),
            (true, child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)),
        ] {
            let Some(stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n') {
                    let Ok(line) = line else { break };
                    if tx.send((is_err, String::from_utf8_lossy(&line).trim_end().to_owned())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let name = format!("{} {}", phase.name(), short_name(&argv[0]));
        let say = |(is_err, line): (bool, String)| {
            if is_err {
                log::warn!("hook {name}: {line}");
            } else {
                log::info!("hook {name}: {line}");
            }
        };
        let deadline = started + self.timeout;
        let status = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => say(line),
                Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
            }
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    record.timed_out = true;
                    break kill_group(&mut child);
                }
                Ok(None) => {}
                Err(e) => {
                    record.error = Some(format!("cannot wait for {}: {e}", argv[0]));
                    break kill_group(&mut child);
                }
            }
        };
        let stop_reading = Instant::now() + OUTPUT_GRACE;
        while let Some(left) = stop_reading.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => say(line),
                Err(_) => break, // both streams ended, or the grace is over
            }
        }
        if let Some(status) = status {
            record.exit_code = status.code();
            record.signal = status.signal();
            record.ok = status.success() && !record.timed_out && record.error.is_none();
        }
        record.duration_secs = started.elapsed().as_secs_f64();
        record
    }
}

/// The last component of a command, for log lines.
fn short_name(cmd: &str) -> &str {
    cmd.rsplit('/').next().unwrap_or(cmd)
}

/// Ends the hook's whole process group: SIGTERM, then SIGKILL after a grace. The group is
/// killed again after the leader is gone, for what it started that ignored SIGTERM.
fn kill_group(child: &mut Child) -> Option<std::process::ExitStatus> {
    let Some(pid) = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw) else {
        return child.wait().ok();
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
    let grace = Instant::now() + TERM_GRACE;
    let mut status = None;
    while Instant::now() < grace {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    status.or_else(|| child.wait().ok())
}
