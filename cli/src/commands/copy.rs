//! `cairn copy`

use anyhow::{Context, Result};
use cairn_store::{CopyOptions, CopyReport, CopyStatus, Repo, Snapshot};

use crate::args::{Cli, CopyArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, local_time, outln, size, Quiet};
use crate::progress::Bar;

pub fn run(cli: &Cli, args: &CopyArgs) -> Result<u8> {
    let profile = super::profile(cli)?;
    let filter = lower::filter(&args.select, profile)?;
    let open_other = |path: &std::path::Path, role: &str| -> Result<Repo> {
        let at = super::location_arg(path)?;
        let repo = Repo::open(&at, &super::with_passphrase(cli, &lower::open_options()))
            .with_context(|| format!("cannot open the {role} repository {at}"))?;
        super::note_requests(&repo);
        super::print_notices(&repo);
        Ok(repo)
    };
    // With --from, the copy comes into the repository every command uses (or --to); without
    // it, a profile's snapshots go from its repository to its `offsite` (or --to). Either
    // way the run is recorded in the repository every command uses, where `status` looks.
    let (source, dest) = match (&args.from, &args.to) {
        (Some(from), to) => {
            let source = open_other(from, "source")?;
            let dest = match to {
                Some(to) => open_other(to, "destination")?,
                None => super::open(cli)?,
            };
            (source, dest)
        }
        (None, to) => {
            let offsite = profile.and_then(|p| p.offsite.as_deref()).map(std::path::PathBuf::from);
            let Some(to) = to.clone().or(offsite) else {
                anyhow::bail!("say which repository to copy from (--from REPO), or give a profile that names an `offsite` repository");
            };
            (super::open(cli)?, open_other(&to, "destination")?)
        }
    };
    let from = source.location().clone();
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
