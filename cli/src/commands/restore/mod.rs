//! `cairn restore`

mod validated;

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use cairn_store::{Repo, RestoreAction, RestoreOptions, RestoreReport, Snapshot};

use crate::args::{Cli, RestoreArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, errln, outln, size, Quiet};
use crate::profile::Profile;
use crate::progress::Bar;

/// Parses `--at`: RFC 3339 (with offset), or a civil date/time in the local time zone.
pub fn parse_time(text: &str) -> Result<i64> {
    // Beyond year 2262 nanoseconds leave i64: saturate, every snapshot is before that.
    let ns = |t: jiff::Timestamp| -> Result<i64> { Ok(i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)) };
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return ns(t);
    }
    let tz = jiff::tz::TimeZone::system();
    let normal = text.replacen(' ', "T", 1);
    if let Ok(dt) = normal.parse::<jiff::civil::DateTime>() {
        return ns(dt.to_zoned(tz)?.timestamp());
    }
    if let Ok(d) = normal.parse::<jiff::civil::Date>() {
        return ns(d.to_zoned(tz)?.timestamp());
    }
    bail!(
        "cannot read {text:?} as a time: use RFC 3339 (2026-11-20T14:00:00Z) or YYYY-MM-DD[THH:MM[:SS]] in local time"
    )
}

pub fn run(cli: &Cli, args: &RestoreArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let profile = super::profile(cli)?;
    let filter = lower::filter(&args.select, profile)?;
    let snapshot = match (&args.snapshot, &args.at) {
        (_, Some(at)) => repo.resolve_at_in(parse_time(at)?, &filter)?,
        (Some(spec), None) => repo.resolve_in(spec, &filter)?,
        (None, None) => bail!("name a snapshot or give --at TIME"),
    };
    let opts = lower::restore_options(args, cli.verbose > 0, profile)?;
    let in_place = std::fs::canonicalize(&args.target).is_ok_and(|t| t == Path::new("/"));
    // Hooks serve the service that lives at `/`: a restore elsewhere (a look at an old
    // state in a scratch directory) stops nothing and validates nothing.
    let hooked = profile.filter(|_| in_place && !args.dry_run);
    if let Some(p) = hooked {
        validated::check(args, &opts, p)?;
    }
    if in_place && !args.dry_run && !args.yes && on_a_terminal() {
        confirm(&repo, &snapshot, &opts, hooked)?;
    }
    if let Some(p) = hooked {
        return validated::run(cli, args, &repo, &snapshot, opts, p);
    }
    let bar = Bar::for_cli(cli);
    let report = repo
        .restore(&snapshot, &opts, &bar)
        .with_context(|| format!("restore of {} into {} failed", snapshot.id.short(8), args.target.display()))?;
    let safety_asked = !args.no_safety_snapshot && opts.overwrite != cairn_store::Overwrite::Never;
    output::report(cli, &report, Quiet::Silences, |r| print_summary(r, safety_asked))?;
    Ok(exit_code(cli, &report, &snapshot))
}

/// Prints the report's per-file problems and returns the exit code they make.
pub fn exit_code(cli: &Cli, report: &RestoreReport, snapshot: &Snapshot) -> u8 {
    super::print_warnings(cli, "warning", log::Level::Warn, &report.warnings);
    super::print_warnings(cli, "damaged", log::Level::Error, &report.damaged);
    super::print_warnings(cli, "not restored", log::Level::Error, &report.failed);
    if report.is_incomplete() {
        if !cli.quiet {
            let mut parts = Vec::new();
            if !report.damaged.is_empty() {
                parts.push(format!("{} because stored data is damaged (run `cairn scrub`)", report.damaged.len()));
            }
            if !report.failed.is_empty() {
                parts.push(format!("{} for other reasons (listed above)", report.failed.len()));
            }
            let text = format!("cairn: not everything was restored: {}; every other file was", parts.join(", "));
            errln!("{}", crate::logging::stderr_line(log::Level::Error, &text));
        }
        return exit::DAMAGE;
    }
    super::say_not_found(&report.not_found, &snapshot.id.short(8))
}

/// Someone is there to answer: stdin and stderr (where the question goes) are terminals. From
/// a unit, a timer or a script the restore proceeds, as it always did.
fn on_a_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The most changes the question lists; `--dry-run -v` lists them all.
const CONFIRM_SHOWN: usize = 50;

/// Shows what an in-place restore will overwrite, create and delete (a dry run of the same
/// restore) and asks; anything but `y` or `yes` is an error that changed nothing.
fn confirm(repo: &Repo, snapshot: &Snapshot, opts: &RestoreOptions, profile: Option<&Profile>) -> Result<()> {
    let mut plan_opts = opts.clone();
    plan_opts.dry_run = true;
    plan_opts.list_changes = true;
    let plan = repo
        .restore(snapshot, &plan_opts, &cairn_store::NoProgress)
        .with_context(|| format!("cannot plan the restore of {}", snapshot.id.short(8)))?;
    let changes = plan.changes.unwrap_or_default();
    errln!("restore of snapshot {} into {} will change:", snapshot.id.short(8), opts.target.display());
    for c in changes.iter().take(CONFIRM_SHOWN) {
        errln!("  {} {}", action_word(c.action), c.path);
    }
    if changes.len() > CONFIRM_SHOWN {
        errln!("  ... and {} more (`--dry-run -v` lists them all)", changes.len() - CONFIRM_SHOWN);
    }
    let count = |a: RestoreAction| changes.iter().filter(|c| c.action == a).count();
    errln!(
        "  {} to create, {} to overwrite, {} to delete, {} to get the snapshot's owner, mode or time",
        count(RestoreAction::Create),
        count(RestoreAction::Overwrite),
        count(RestoreAction::Delete),
        count(RestoreAction::Metadata)
    );
    if let Some(p) = profile {
        let h = &p.hooks;
        if !(h.before_restore.is_empty() && h.after_restore.is_empty() && h.validate.is_empty()) {
            errln!(
                "  profile {}: {} before_restore, {} after_restore and {} validate hooks run",
                p.name,
                h.before_restore.len(),
                h.after_restore.len(),
                h.validate.len()
            );
        }
    }
    eprint_flush("proceed? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("cannot read the answer")?;
    if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        return Ok(());
    }
    bail!("restore cancelled: nothing was changed (`--yes` restores without asking)")
}

fn eprint_flush(text: &str) {
    let mut err = std::io::stderr();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The word `-v` prints before each changed path: as wide as the widest, so paths line up.
pub fn action_word(a: RestoreAction) -> &'static str {
    match a {
        RestoreAction::Create => "create   ",
        RestoreAction::Overwrite => "overwrite",
        RestoreAction::Metadata => "metadata ",
        RestoreAction::Delete => "delete   ",
    }
}

pub fn print_summary(r: &RestoreReport, safety_asked: bool) -> std::io::Result<()> {
    for c in r.changes.iter().flatten() {
        outln!("{} {}", action_word(c.action), c.path)?;
    }
    if let Some(id) = &r.safety_snapshot {
        outln!("safety snapshot {} taken of what the restore overwrites or deletes", &id[..8])?;
    } else if safety_asked && !r.dry_run {
        outln!("no safety snapshot: nothing that exists is overwritten or deleted")?;
    }
    let verb = if r.dry_run { "would restore" } else { "restored" };
    outln!("{verb} snapshot {} into {}", &r.snapshot[..8], r.target)?;
    outln!(
        "  files:   {} written, {} left as they were, {} hard links",
        r.files_written,
        r.files_skipped,
        r.hardlinks
    )?;
    outln!("  others:  {} directories, {} symlinks, {} special", r.dirs, r.symlinks, r.specials)?;
    outln!("  written: {}", size(r.bytes_written))?;
    if r.files_verified > 0 {
        outln!("  verified: {} files match their stored BLAKE3", r.files_verified)?;
    }
    if r.deleted > 0 {
        let verb = if r.dry_run { "would delete" } else { "deleted" };
        outln!("  {verb}: {} entries the snapshot does not have", r.deleted)?;
    }
    if r.leftovers_removed > 0 {
        outln!("  removed: {} temporary files of an interrupted restore", r.leftovers_removed)?;
    }
    outln!("  took:    {:.2} s", r.duration_secs)?;
    Ok(())
}
