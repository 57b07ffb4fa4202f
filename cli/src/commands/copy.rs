//! `cairn copy`

use anyhow::{Context, Result};
use cairn_store::{CopyOptions, CopyReport, CopyStatus, Repo, Snapshot};

use crate::args::{Cli, CopyArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, local_time, outln, size, Quiet};
use crate::progress::Bar;

pub fn run(cli: &Cli, args: &CopyArgs) -> Result<u8> {
    let filter = lower::filter(&args.select, super::profile(cli)?)?;
    let from = super::location_arg(&args.from)?;
    let source = Repo::open(&from, &lower::open_options())
        .with_context(|| format!("cannot open the source repository {from}"))?;
    super::print_notices(&source);
    let dest = match &args.to {
        Some(to) => {
            let to = super::location_arg(to)?;
            let repo = Repo::open(&to, &lower::open_options())
                .with_context(|| format!("cannot open the destination repository {to}"))?;
            super::print_notices(&repo);
            repo
        }
        None => super::open(cli)?,
    };
    let snaps: Vec<Snapshot> = if args.snapshots.is_empty() {
        source.snapshots()?.into_iter().filter(|s| filter.matches(s)).collect()
    } else {
        args.snapshots
            .iter()
            .map(|s| source.resolve_in(s, &filter).with_context(|| format!("in the source repository {from}")))
            .collect::<Result<_>>()?
    };
    let bar = Bar::for_cli(cli);
    let report = dest.copy_from(&source, &snaps, &CopyOptions::default(), &bar)?;
    for s in report.snapshots.iter().filter(|s| s.status == CopyStatus::Failed) {
        log::error!("snapshot {} not copied: {}", &s.source_id[..8], s.reason.as_deref().unwrap_or_default());
    }
    let quiet = if report.failed > 0 { Quiet::Ignored } else { Quiet::Silences };
    output::report(cli, &report, quiet, print_report)?;
    Ok(if report.snapshots.iter().any(|s| s.damaged) {
        exit::DAMAGE
    } else if report.failed > 0 {
        exit::ERROR
    } else {
        exit::OK
    })
}

fn print_report(r: &CopyReport) -> std::io::Result<()> {
    for note in &r.notes {
        outln!("note: {note}")?;
    }
    if r.snapshots.is_empty() {
        return outln!("nothing to copy: no snapshot of {} is selected", r.source);
    }
    for s in &r.snapshots {
        let what = format!("{}  {}  {}  {}", &s.source_id[..8], local_time_of(&s.time), s.host, s.paths.join(" "));
        match s.status {
            CopyStatus::Copied => {
                outln!("copied   {what}  ({} chunks, {} trees, {})", s.chunks_sent, s.trees_sent, size(s.bytes_sent))?
            }
            CopyStatus::Skipped => outln!("skipped  {what}  ({})", s.reason.as_deref().unwrap_or_default())?,
            CopyStatus::Failed => outln!("FAILED   {what}  ({})", s.reason.as_deref().unwrap_or_default())?,
        }
    }
    outln!(
        "copied {} of {} snapshots to {} ({} already there, {} failed): {} chunks and {} trees, {} sent in {:.1} s",
        r.copied,
        r.snapshots.len(),
        r.destination,
        r.skipped,
        r.failed,
        r.chunks_sent,
        r.trees_sent,
        size(r.bytes_sent),
        r.duration_secs
    )
}

/// An RFC 3339 time of the report, in the local time zone as `list` shows times.
fn local_time_of(rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| i64::try_from(t.as_nanosecond()).ok())
        .map_or_else(|| rfc3339.to_owned(), local_time)
}
