//! `cairn gc`

use anyhow::Result;
use cairn_store::{GcOptions, GcReport, Repo};

use crate::args::{Cli, GcArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, outln, size, Quiet};
use crate::progress::Bar;

pub fn run(cli: &Cli, args: &GcArgs) -> Result<u8> {
    let repo = super::open_to_free_space(cli)?;
    let report = collect(cli, &repo, &lower::gc_options(args)?)?;
    output::report(cli, &report, Quiet::Silences, print_report)?;
    Ok(exit::OK)
}

/// Runs gc with a progress bar (also used by `forget --gc`).
pub fn collect(cli: &Cli, repo: &Repo, opts: &GcOptions) -> Result<GcReport> {
    let bar = Bar::for_cli(cli);
    let report = repo.gc(opts, &bar)?;
    super::note(|o| o.bytes_freed = Some(report.bytes_freed));
    Ok(report)
}

pub fn print_report(r: &GcReport) -> std::io::Result<()> {
    outln!(
        "{} snapshots need {} blobs; {} packs ({}) before",
        r.snapshots,
        r.reachable_blobs,
        r.packs_before,
        size(r.bytes_before)
    )?;
    if r.dry_run {
        outln!(
            "dry run: {} packs unused, {} to repack; about {} would be freed",
            r.packs_unused,
            r.packs_repacked,
            size(r.bytes_freeable)
        )?;
        return Ok(());
    }
    outln!(
        "deleted {} packs, repacked {} into {}, removed {} leftovers: {} freed",
        r.packs_deleted,
        r.packs_repacked,
        r.packs_written,
        r.leftovers_removed,
        size(u64::try_from(r.bytes_freed).unwrap_or(0))
    )?;
    if r.packs_rescued > 0 {
        outln!("{} condemned packs kept: snapshots taken meanwhile need them", r.packs_rescued)?;
    }
    if r.packs_pending > 0 {
        outln!(
            "{} packs left for the next gc: still in use by {} (waited {:.0} s)",
            r.packs_pending,
            r.waited_for.join(", "),
            r.waited_secs
        )?;
    }
    outln!("took {:.2} s", r.duration_secs)?;
    Ok(())
}
