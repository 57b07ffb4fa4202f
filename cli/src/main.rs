//! The `cairn` command-line tool. Parses arguments, draws progress, prints; all the work is
//! done by `cairn_store`.
//!
//! Exit codes: 0 success; 1 error (nothing or not everything was done); 2 usage error;
//! 3 completed with warnings (a snapshot could not read some files; a path given to `restore
//! --include` or `diff` is not in the snapshot); 4 damaged or missing data found;
//! 5 `forget --gc` removed the snapshots, but its gc was deferred (another gc was running);
//! 6 `diff --exit-code` found differences; 7 a validated restore failed its validation and was
//! rolled back; 8 it failed its validation and was kept (`--no-rollback`); 9 `status` raised
//! an alert; 75 the run's lease on a repository in a bucket was lost, and it stopped.

mod args;
mod choices;
mod commands;
mod hooks;
mod logging;
mod lower;
mod output;
mod password;
mod profile;
mod progress;
mod units;

use std::io::Write;
use std::process::ExitCode;

/// Documented exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The command could not run (or could not finish).
    pub const ERROR: u8 = 1;
    /// The command completed, but some of what it was given could not be used: a snapshot
    /// could not read some files, or paths given to `restore --include` or `diff` are not in
    /// the snapshot (the others were acted on), or `diff --live` could not read some files.
    pub const WARNINGS: u8 = 3;
    /// Damaged or missing data was found.
    pub const DAMAGE: u8 = 4;
    /// `forget --gc`: the snapshots were forgotten (and reported), but gc did not run because
    /// another gc (or a `repair index`) holds the gc lock; a later `cairn gc` frees the space.
    /// Not 0: a script learns that the space is not freed yet; not 1: forget did its job.
    pub const GC_DEFERRED: u8 = 5;
    /// `diff --exit-code`: differences were found. diff(1) and `git diff --exit-code` say 1,
    /// but 1 is cairn's "could not run", and a script must be able to tell "changed" from
    /// "could not look"; so it is opt-in (a plain `diff` that shows changes succeeded) and has
    /// its own code.
    pub const DIFFERENCES: u8 = 6;
    /// `restore --profile` in place: restored, the profile's validation failed, and the
    /// restore was rolled back (the safety snapshot restored, what the restore created
    /// removed, the hooks run again). What is there is what was there before.
    pub const ROLLED_BACK: u8 = 7;
    /// `restore --profile --no-rollback` in place: restored, the validation failed, and the
    /// restored state was kept for inspection (the safety snapshot holds what was there).
    pub const VALIDATION_FAILED: u8 = 8;
    /// `status`: the repository could be looked at, and something calls for attention: the
    /// newest snapshot is too old or too small, grew too much, the last run of a command
    /// failed, the last scrub found damage or is too old (the profile's `[monitoring]`).
    /// Not 1, which says status itself could not look; not 4, which says this run found damage.
    pub const ALERT: u8 = 9;
    /// The run's lease on a repository in a bucket went unrenewed so long (the store was
    /// unreachable, or the machine was suspended) that other machines may count the run as
    /// ended: it stopped between two steps and wrote nothing after (no snapshot record, no
    /// deletion). `EX_TEMPFAIL`: running it again is the remedy.
    pub const LEASE_LOST: u8 = 75;
    /// An encrypted repository's passphrase opens none of its key files. Tried before any
    /// work: nothing was read but the config and the key files, nothing written.
    pub const WRONG_PASSPHRASE: u8 = 10;
}

fn main() -> ExitCode {
    let cli = args::Cli::parse_or_exit();
    logging::init(cli.verbose, cli.quiet);
    raise_open_file_limit();
    let code = run(&cli);
    if std::env::var_os("CAIRN_IO_STATS").is_some() {
        // The kernel's count of bytes this process read: lets tests prove, independently of
        // cairn's own counters, that a no-change snapshot reads no file contents.
        if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
            let _ = std::io::stderr().write_all(io.as_bytes());
        }
    }
    code
}

fn run(cli: &args::Cli) -> ExitCode {
    let result = commands::run(cli);
    commands::log_requests();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // Reports never get here with EPIPE (output::Stdout ends the output, not the command,
            // so the command's own exit code stands); `cat`, which streams, does, and a reader
            // that went away mid-file is not an error.
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            log::error!("{}", error_text(&err));
            ExitCode::from(exit_code_of(&err))
        }
    }
}

/// The exit code a command that failed with `err` ends with: 4 when it found damage, 75 when
/// its lease was lost, 0 when its reader went away, else 1.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    if is_broken_pipe(err) {
        return exit::OK;
    }
    let store_errors = || err.chain().filter_map(|c| c.downcast_ref::<cairn_store::Error>());
    if store_errors().any(|e| matches!(e, cairn_store::Error::LeaseLost { .. })) {
        return exit::LEASE_LOST;
    }
    if store_errors().any(|e| matches!(e, cairn_store::Error::WrongPassphrase { .. })) {
        return exit::WRONG_PASSPHRASE;
    }
    let damage = store_errors().any(cairn_store::Error::is_damage);
    if damage {
        exit::DAMAGE
    } else {
        exit::ERROR
    }
}

/// The error and its causes, joined as `{:#}` joins them, but each reason said once: the
/// store's errors put their source's text in their own message (`path: reason`) and keep the
/// source too, so the plain chain would end `reason: reason`.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Lifts the soft limit of open files to the hard one, as Go programs (restic) do at start:
/// snapshot and restore hold a descriptor per directory level and per directory that receives
/// hard links, and 1024, a common soft default, is too few for deep or link-heavy trees.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
}
