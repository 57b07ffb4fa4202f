//! One module per command; `run` dispatches.

mod docs;
mod forget;
mod gc;
mod init;
mod inspect;
mod list;
mod repair;
mod restore;
mod scrub;
mod service;
mod snapshot;
mod tag;
mod validated;

use anyhow::{Context, Result};
use cairn_store::{Location, OpenOptions, Repo, Warning};

use crate::args::{Cli, Command};
use crate::logging;
use crate::lower;
use crate::output::errln;
use crate::profile::Profile;

/// Runs the parsed command; returns the exit code.
pub fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Init(a) => init::run(cli, a),
        Command::Snapshot(a) => snapshot::run(cli, a),
        Command::List(a) => list::run(cli, a),
        Command::Restore(a) => restore::run(cli, a),
        Command::Scrub(a) => scrub::run(cli, a),
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
        Command::Repair(crate::args::RepairCommand::Index) => repair::run_index(cli),
        Command::Repair(crate::args::RepairCommand::Config(a)) => repair::run_config(cli, a),
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
        let location = match p.to_str() {
            Some(text) => Location::parse(text)?,
            None => Location::local(p), // not UTF-8: a path, whatever it looks like
        };
        return Ok((location, false));
    }
    let base = dirs::data_dir()
        .context("no --repo given and no data directory known for this user (set $HOME or CAIRN_REPO)")?;
    Ok((Location::local(base.join("cairn").join("repo")), true))
}

/// Opens the repository named by the global options. Every command that opens one comes
/// here, so that how a repository is located and opened is decided in one place.
pub fn open_repo(cli: &Cli, opts: &OpenOptions) -> Result<Repo> {
    let (location, _) = repo_location(cli)?;
    let repo = Repo::open(&location, opts).with_context(|| format!("cannot open repository {location}"))?;
    print_notices(&repo);
    Ok(repo)
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
