//! `cairn snapshot`

use anyhow::{Context, Result};
use cairn_store::{InitOptions, Repo, SnapshotReport};

use crate::args::{Cli, SnapshotArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, errln, outln, size, Quiet};
use crate::progress::Bar;

pub fn run(cli: &Cli, args: &SnapshotArgs) -> Result<u8> {
    let (location, is_default) = super::repo_location(cli)?;
    let repo = if is_default && !location.holds_repository().unwrap_or(false) {
        let repo = Repo::init(&location, &InitOptions::default())
            .with_context(|| format!("cannot create the default repository {location}"))?;
        if !cli.quiet {
            errln!("cairn: created the default repository at {location} (use --repo or CAIRN_REPO for another)");
        }
        repo
    } else {
        super::open(cli)?
    };
    let opts = lower::snapshot_options(args)?;
    let bar = Bar::for_cli(cli);
    let report = repo.snapshot(&opts, &bar).context("snapshot failed; no snapshot was recorded")?;
    output::report(cli, &report, Quiet::Silences, print_summary)?;
    super::print_warnings(cli, "note", log::Level::Info, &report.notes);
    super::print_warnings(cli, "warning", log::Level::Warn, &report.warnings);
    Ok(if report.warnings.is_empty() { exit::OK } else { exit::WARNINGS })
}

fn print_summary(r: &SnapshotReport) -> std::io::Result<()> {
    let t = &r.totals;
    match &r.id {
        Some(id) => outln!("snapshot {} saved ({})", &id[..8], r.kind.as_str())?,
        None => outln!("dry run: nothing stored ({})", r.kind.as_str())?,
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
        "  added:   {} of new data, {} stored after dedup and compression",
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
