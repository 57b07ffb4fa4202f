//! One module per command; `run` dispatches.

mod copy;
mod docs;
mod forget;
mod gc;
mod init;
mod inspect;
mod key;
mod list;
mod repair;
mod restore;
mod scrub;
mod service;
mod snapshot;
pub mod status;
mod tag;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use cairn_store::{Location, OpenOptions, Repo, RequestCounter, RequestCounts, RunLog, RunOutcome, Warning};

use crate::args::{Cli, Command};
use crate::logging;
use crate::lower;
use crate::output::errln;
use crate::profile::Profile;

/// The run of a command that records its outcome (snapshot, copy, forget, gc, scrub): what the
/// command learned for the record, and the run log of the repository it opened.
struct Recording {
    outcome: RunOutcome,
    log: Option<RunLog>,
}

/// The recording of the command running now, if it records one (one command per process).
static RECORDING: Mutex<Option<Recording>> = Mutex::new(None);

/// Adds what the running command learned to its run record (nothing when it keeps none).
pub fn note(f: impl FnOnce(&mut RunOutcome)) {
    if let Some(r) = RECORDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
        f(&mut r.outcome);
    }
}

/// Remembers the run log of the repository the running command opened. A repository opened
/// read-only gets nothing written, not even its run log.
fn note_repo(repo: &Repo) {
    if repo.is_read_only() {
        return;
    }
    if let Some(r) = RECORDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
        r.log.get_or_insert_with(|| repo.run_log());
    }
}

/// The request counters of the repositories in buckets that the running command opened.
static REQUESTS: Mutex<Vec<Arc<RequestCounter>>> = Mutex::new(Vec::new());

/// Counts the requests `repo` sends to its bucket into the command's (nothing for a local
/// repository).
pub fn note_requests(repo: &Repo) {
    if let Some(counter) = repo.request_counter() {
        let mut all = REQUESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !all.iter().any(|c| Arc::ptr_eq(c, &counter)) {
            all.push(counter);
        }
    }
}

/// The requests the running command has sent to buckets so far; `None` when it opened no
/// repository in one.
pub fn s3_requests() -> Option<RequestCounts> {
    let all = REQUESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    all.iter().map(|c| c.counts()).reduce(|mut sum, c| {
        sum += c;
        sum
    })
}

/// With `-v`: one line on stderr with what the command cost in requests, for a command that
/// worked on a bucket (`s3: 412 requests (GET 3, ranged GET 300, PUT 80, ...), 120 MiB up,
/// 3 MiB down`). Called once the command is over, so it counts the requests of closing the
/// repository too (a lease's removal).
pub fn log_requests() {
    let Some(c) = s3_requests() else { return };
    let kinds = [
        ("GET", c.get),
        ("ranged GET", c.ranged_get),
        ("PUT", c.put),
        ("HEAD", c.head),
        ("LIST", c.list),
        ("DELETE", c.delete),
    ];
    let by_kind: Vec<String> = kinds.iter().filter(|k| k.1 > 0).map(|(k, n)| format!("{k} {n}")).collect();
    log::info!(
        "s3: {} requests ({}), {} up, {} down",
        c.requests,
        by_kind.join(", "),
        crate::output::size(c.bytes_up),
        crate::output::size(c.bytes_down)
    );
}

/// The name a command's run is recorded under, for those that record one. Dry runs change
/// nothing and are not recorded.
fn recorded_as(command: &Command) -> Option<&'static str> {
    match command {
        Command::Snapshot(a) if !a.dry_run => Some("snapshot"),
        Command::Forget(a) if !a.dry_run => Some("forget"),
        Command::Gc(a) if !a.dry_run => Some("gc"),
        Command::Scrub(_) => Some("scrub"),
        Command::Copy(_) => Some("copy"),
        _ => None,
    }
}

/// Runs the parsed command; returns the exit code. Snapshot, copy, forget, gc and scrub record how
/// they ended in the repository's run log, failures too (a failed snapshot is what `status`
/// must be able to tell), and then rewrite the metrics file when one is asked for.
pub fn run(cli: &Cli) -> Result<u8> {
    if let Ok(Some(p)) = profile(cli) {
        logging::set_profile(&p.name);
        p.s3.apply(&p.file)?;
    }
    let Some(command) = recorded_as(&cli.command) else {
        return dispatch(cli);
    };
    let started = std::time::Instant::now();
    let start_ns = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(0);
    let profile_name = profile(cli).ok().flatten().map(|p| p.name.clone());
    *RECORDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(Recording { outcome: RunOutcome::new(command, profile_name.as_deref(), start_ns), log: None });
    let result = dispatch(cli);
    let Some(Recording { mut outcome, log }) =
        RECORDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    else {
        return result;
    };
    outcome.duration_secs = started.elapsed().as_secs_f64();
    match &result {
        Ok(code) => outcome.exit_code = *code,
        Err(e) => {
            outcome.exit_code = crate::exit_code_of(e);
            outcome.error = Some(crate::error_text(e));
        }
    }
    // A command that failed before it opened the repository: open it now to record that, when
    // there is one (a repository that cannot be opened cannot record anything).
    // A command refused for its key would be refused again (and a prompt would ask again).
    let keyless = result.as_ref().err().is_some_and(|e| {
        e.chain()
            .filter_map(|c| c.downcast_ref::<cairn_store::Error>())
            .any(|e| matches!(e, cairn_store::Error::WrongPassphrase { .. } | cairn_store::Error::KeyNeeded { .. }))
    });
    let log = log.or_else(|| {
        if keyless {
            return None;
        }
        let (location, _) = repo_location(cli).ok()?;
        location.holds_repository().ok()?.then_some(())?;
        Repo::open(&location, &with_passphrase(cli, &lower::open_options()))
            .ok()
            .filter(|r| !r.is_read_only())
            .map(|r| r.run_log())
    });
    match log {
        Some(log) => {
            if let Err(e) = log.record(&outcome) {
                log::warn!("could not record this run in {}: {e}", log.path().display());
            }
        }
        None => log::debug!("no repository to record this run in"),
    }
    if let Err(e) = status::write_metrics_after(cli) {
        log::warn!("could not write the metrics file: {}", crate::error_text(&e));
    }
    result
}

fn dispatch(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Init(a) => init::run(cli, a),
        Command::Snapshot(a) => snapshot::run(cli, a),
        Command::List(a) => list::run(cli, a),
        Command::Restore(a) => restore::run(cli, a),
        Command::Scrub(a) => scrub::run(cli, a),
        Command::Copy(a) => copy::run(cli, a),
        Command::Forget(a) => forget::run(cli, a),
        Command::Tag(a) => tag::run(cli, a),
        Command::Show(a) => inspect::show(cli, a),
        Command::Stats(a) => inspect::stats(cli, a),
        Command::Diff(a) => inspect::diff(cli, a),
        Command::Ls(a) => inspect::ls(cli, a),
        Command::Find(a) => inspect::find(cli, a),
        Command::Log(a) => inspect::log(cli, a),
        Command::Cat(a) => inspect::cat(cli, a),
        Command::Manifest(a) => inspect::manifest(cli, a),
        Command::Gc(a) => gc::run(cli, a),
        Command::Status(a) => status::run(cli, a),
        Command::Repair(crate::args::RepairCommand::Index) => repair::run_index(cli),
        Command::Repair(crate::args::RepairCommand::Config(a)) => repair::run_config(cli, a),
        Command::Key(k) => key::run(cli, k),
        Command::Systemd(crate::args::SystemdCommand::Install(a)) => service::install(cli, a),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    }
}

/// The profile `--profile` (or `$CAIRN_PROFILE`) names, read once; `None` without one.
pub fn profile(cli: &Cli) -> Result<Option<&'static Profile>> {
    static LOADED: std::sync::OnceLock<Option<Profile>> = std::sync::OnceLock::new();
    if let Some(p) = LOADED.get() {
        return Ok(p.as_ref());
    }
    let loaded = cli.profile.as_deref().map(crate::profile::load).transpose()?;
    Ok(LOADED.get_or_init(|| loaded).as_ref())
}

/// Where the repository is: `--repo`, else the profile's `repo`, else `$CAIRN_REPO`, else the
/// default under the user's data directory (true when it is the default). Read as the store
/// reads locations, so a remote scheme this build does not support is refused rather than
/// made a local folder.
pub fn repo_location(cli: &Cli) -> Result<(Location, bool)> {
    let from_profile = profile(cli)?.and_then(|p| p.repo.as_deref());
    let named = match (&cli.repo, from_profile) {
        (Some(_), Some(p)) if cli.repo_from_env => Some(std::path::PathBuf::from(p)),
        (Some(r), _) => Some(r.clone()),
        (None, p) => p.map(std::path::PathBuf::from),
    };
    if let Some(p) = &named {
        return Ok((location_arg(p)?, false));
    }
    let base = dirs::data_dir()
        .context("no --repo given and no data directory known for this user (set $HOME or CAIRN_REPO)")?;
    Ok((Location::local(base.join("cairn").join("repo")), true))
}

/// A location given on the command line (`--from`, `--to`), read as `--repo` is.
pub fn location_arg(p: &std::path::Path) -> Result<Location> {
    Ok(match p.to_str() {
        Some(text) => Location::parse(text)?,
        None => Location::local(p), // not UTF-8: a path, whatever it looks like
    })
}

/// Opens the repository named by the global options. Every command that opens one comes
/// here, so that how a repository is located and opened is decided in one place.
pub fn open_repo(cli: &Cli, opts: &OpenOptions) -> Result<Repo> {
    let (location, _) = repo_location(cli)?;
    let mut opts = with_passphrase(cli, opts);
    opts.progress = Some(cairn_store::SharedProgress(std::sync::Arc::new(crate::progress::Bar::for_cli(cli))));
    if let Some(class) = &cli.s3_storage_class {
        if location.as_local().is_some() {
            anyhow::bail!("--s3-storage-class {class}: {location} is a local repository, which has no storage classes");
        }
        opts.s3_storage_class = Some(class.clone());
    }
    let repo = Repo::open(&location, &opts).with_context(|| format!("cannot open repository {location}"))?;
    note_requests(&repo);
    print_notices(&repo);
    note_repo(&repo);
    Ok(repo)
}

/// `opts` with the passphrase the global options give (asked only of an encrypted repository).
pub fn with_passphrase(cli: &Cli, opts: &OpenOptions) -> OpenOptions {
    let mut opts = opts.clone();
    opts.passphrase = Some(crate::password::source(cli));
    opts.expect_encrypted = crate::password::given(cli);
    opts
}

/// Opens the repository for a command that only reads or adds.
pub fn open(cli: &Cli) -> Result<Repo> {
    open_repo(cli, &lower::open_options())
}

/// Opens the repository for a command that frees space (`forget`, `gc`).
pub fn open_to_free_space(cli: &Cli) -> Result<Repo> {
    open_repo(cli, &lower::open_options_to_free_space())
}

/// What opening the repository found that the user should hear about: warnings, so that -q
/// silences them and the journal files them as such.
fn print_notices(repo: &Repo) {
    for n in repo.notices() {
        log::warn!("{n}");
    }
}

/// Warns of each path given that the snapshot does not hold (the others were acted on), and
/// returns the exit code: 3 when there was any, as for a snapshot that could not read a file.
pub fn say_not_found(paths: &[String], snapshot: &str) -> u8 {
    for p in paths {
        log::warn!("{p} is not in snapshot {snapshot}; nothing was done for it");
    }
    if paths.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::WARNINGS
    }
}

/// Prints warnings on stderr (all of them with -v, else the first few and a count), each one
/// line at `level`'s priority when stderr is the journal.
pub fn print_warnings(cli: &Cli, label: &str, level: log::Level, warnings: &[Warning]) {
    if cli.quiet || warnings.is_empty() {
        return;
    }
    let shown = if cli.verbose > 0 { warnings.len() } else { warnings.len().min(20) };
    for w in &warnings[..shown] {
        errln!("{}", logging::stderr_line(level, &format!("{label}: {}: {}", w.path, w.message)));
    }
    if shown < warnings.len() {
        let more = format!("{label}: ... and {} more (use -v to see all, or --json)", warnings.len() - shown);
        errln!("{}", logging::stderr_line(level, &more));
    }
}
