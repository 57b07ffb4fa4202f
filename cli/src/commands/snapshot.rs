//! `cairn snapshot`

use anyhow::{Context, Result};
use cairn_store::{InitOptions, Repo, SnapshotReport};

use crate::args::{Cli, SnapshotArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, errln, outln, size, Quiet};
use crate::progress::Bar;

/// One rule wherever the repository is named (the default, `$CAIRN_REPO` or `--repo`): a
/// snapshot creates it, with `init`'s defaults and a line on stderr, when nothing is there or
/// an empty folder; every other command refuses a place without a repository. A folder that
/// holds anything else is never filled (`init` refuses it). The sources are checked first, so
/// a snapshot that would fail for want of them creates nothing.
pub fn run(cli: &Cli, args: &SnapshotArgs) -> Result<u8> {
    let opts = lower::snapshot_options(args, super::profile(cli)?)?;
    let (location, is_default) = super::repo_location(cli)?;
    // A place that cannot be looked at (no permission) is opened, for the error that says so.
    let repo = if !matches!(location.holds_repository(), Ok(false)) {
        super::open(cli)?
    } else {
        opts.check_sources().context("snapshot failed; no snapshot was recorded")?;
        let which = if is_default { "the default repository" } else { "a new repository" };
        let repo = Repo::init(&location, &InitOptions::default())
            .with_context(|| format!("cannot create {which} at {location} for this snapshot"))?;
        if !cli.quiet {
            let hint = if is_default { "use --repo or CAIRN_REPO for another" } else { "with init's defaults" };
            errln!("cairn: created {which} at {location} ({hint})");
        }
        repo
    };
    let bar = Bar::for_cli(cli);
    let report = repo.snapshot(&opts, &bar).context("snapshot failed; no snapshot was recorded")?;
    output::report(cli, &report, Quiet::Silences, print_summary)?;
    super::print_warnings(cli, "note", log::Level::Info, &report.notes);
    super::print_warnings(cli, "warning", log::Level::Warn, &report.warnings);
    Ok(if report.warnings.is_empty() { exit::OK } else { exit::WARNINGS })
}

fn print_summary(r: &SnapshotReport) -> std::io::Result<()> {
    let t = &r.totals;
    // An incremental or differential snapshot with no earlier one to compare with reads
    // everything, as a full one does: say so rather than let "(incremental)" mislead.
    let kind = if r.parent.is_none() && r.kind != cairn_store::SnapshotKind::Full {
        format!("{}, the first of these paths: every file read", r.kind.as_str())
    } else {
        r.kind.as_str().to_owned()
    };
    match &r.id {
        Some(id) => outln!("snapshot {} saved ({kind})", &id[..8])?,
        None => outln!("dry run: nothing stored ({kind})")?,
    }
    if let Some(p) = &r.parent {
        outln!("  parent:  {}", &p[..8])?;
    }
    outln!(
        "  files:   {} new, {} changed, {} unchanged ({} in all)",
        t.files_new,
        t.files_changed,
        t.files_unchanged,
        t.files
    )?;
    outln!("  others:  {} directories, {} symlinks, {} special", t.dirs, t.symlinks, t.specials)?;
    outln!("  read:    {} of {}", size(t.bytes_read), size(t.bytes_total))?;
    outln!(
        "  added:   {} new (file content and directory listings), {} stored after dedup and compression",
        size(t.data_added),
        size(t.data_stored)
    )?;
    outln!("  took:    {:.2} s", r.duration_secs)?;
    if !r.warnings.is_empty() {
        outln!("  warnings: {} (files left out or stored as read; see below)", r.warnings.len())?;
    }
    if let Some(id) = &r.id {
        outln!("  id:      {id}")?;
    }
    Ok(())
}
