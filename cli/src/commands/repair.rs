//! `cairn repair index`

use anyhow::{Context, Result};
use cairn_store::{RepairReport, Repo};

use crate::args::{Cli, RepairConfigArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, outln, Quiet};
use crate::progress::Bar;

pub fn run_index(cli: &Cli) -> Result<u8> {
    let (location, _) = super::repo_location(cli)?;
    let bar = Bar::for_cli(cli);
    let (repo, report) = Repo::repair_index(&location, &super::with_passphrase(cli, &lower::open_options()), &bar)
        .with_context(|| format!("cannot repair {location}"))?;
    super::note_requests(&repo);
    // -q keeps a repair quiet only when nothing was lost.
    let quiet = if report.complete() { Quiet::Silences } else { Quiet::Ignored };
    output::report(cli, &report, quiet, print_index_report)?;
    Ok(if report.complete() { exit::OK } else { exit::DAMAGE })
}

fn print_index_report(report: &RepairReport) -> std::io::Result<()> {
    outln!(
        "index rebuilt: {} packs, {} blobs, {} snapshots",
        report.packs_indexed,
        report.blobs_indexed,
        report.snapshots
    )?;
    for p in &report.packs_quarantined {
        outln!("damaged pack {p} moved to quarantine/")?;
    }
    if report.blobs_salvaged > 0 || report.blobs_lost > 0 {
        outln!("from damaged packs: {} blobs salvaged, {} lost", report.blobs_salvaged, report.blobs_lost)?;
    }
    for s in &report.snapshots_rewritten {
        outln!("snapshot record {} written again from the index's verified copy", &s[..8])?;
    }
    for s in &report.snapshots_quarantined {
        outln!("damaged snapshot record {s} moved to quarantine/")?;
    }
    if report.complete() {
        outln!("nothing any snapshot needs is lost")?;
    }
    // Each heading only over something to list: an empty LOST section reads as a loss.
    for s in &report.snapshots_quarantined {
        outln!("LOST: snapshot {} (its record is damaged and no verified copy was left)", &s[..8])?;
    }
    if !report.lost.is_empty() {
        outln!("LOST: data that snapshots need (a new snapshot of the same sources stores it again):")?;
        for d in &report.lost {
            super::scrub::print_damage(d)?;
        }
    }
    Ok(())
}

pub fn run_config(cli: &Cli, args: &RepairConfigArgs) -> Result<u8> {
    let (location, _) = super::repo_location(cli)?;
    let opts = lower::config_repair(args)?;
    let report = Repo::repair_config(&location, &opts).with_context(|| format!("cannot repair {location}"))?;
    output::report(cli, &report, Quiet::Silences, |report| {
        match report.action {
            "none" => outln!("both copies of the config are good; nothing to do")?,
            "copied" => outln!("the damaged copy of the config was written again from the good one")?,
            _ => {
                outln!(
                    "both copies of the config were lost: a new config was written (chunks {} / {} / {} bytes{}; new repository ID {})",
                    report.chunker.min_size,
                    report.chunker.avg_size,
                    report.chunker.max_size,
                    if report.chunk_size_inferred { ", inferred from the packs" } else { "" },
                    &report.repo_id[..8]
                )?;
                outln!(
                    "every snapshot still restores; a wrong chunk size would only cost deduplication with older data"
                )?;
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(exit::OK)
}
