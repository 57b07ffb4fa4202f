//! `cairn restore`

use anyhow::{bail, Context, Result};
use cairn_store::{RestoreAction, RestoreReport};

use crate::args::{Cli, RestoreArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, errln, outln, size, Quiet};
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
    let filter = lower::filter(&args.select, super::profile(cli)?)?;
    let snapshot = match (&args.snapshot, &args.at) {
        (_, Some(at)) => repo.resolve_at_in(parse_time(at)?, &filter)?,
        (Some(spec), None) => repo.resolve_in(spec, &filter)?,
        (None, None) => bail!("name a snapshot or give --at TIME"),
    };
    let opts = lower::restore_options(args, cli.verbose > 0, super::profile(cli)?)?;
    let bar = Bar::for_cli(cli);
    let report = repo
        .restore(&snapshot, &opts, &bar)
        .with_context(|| format!("restore of {} into {} failed", snapshot.id.short(8), args.target.display()))?;
    let safety_asked = !args.no_safety_snapshot && opts.overwrite != cairn_store::Overwrite::Never;
    output::report(cli, &report, Quiet::Silences, |r| print_summary(r, safety_asked))?;
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
        return Ok(exit::DAMAGE);
    }
    Ok(super::say_not_found(&report.not_found, &snapshot.id.short(8)))
}

/// The word `-v` prints before each changed path: as wide as the widest, so paths line up.
fn action_word(a: RestoreAction) -> &'static str {
    match a {
        RestoreAction::Create => "create   ",
        RestoreAction::Overwrite => "overwrite",
        RestoreAction::Metadata => "metadata ",
        RestoreAction::Delete => "delete   ",
    }
}

fn print_summary(r: &RestoreReport, safety_asked: bool) -> std::io::Result<()> {
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
