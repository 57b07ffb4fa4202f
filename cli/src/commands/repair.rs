//! `cairn repair index`

use anyhow::{Context, Result};
use cairn_store::Repo;

use crate::args::Cli;
use crate::exit;
use crate::output;
use crate::progress::Bar;

pub fn run_index(cli: &Cli) -> Result<u8> {
    let (path, _) = super::repo_path(cli)?;
    let bar = Bar::new(!cli.quiet && !cli.json);
    let (_repo, report) =
        Repo::repair_index(&path, &bar).with_context(|| format!("cannot repair {}", path.display()))?;
    if cli.json {
        output::json(&report)?;
    } else if !cli.quiet || !report.complete() {
        println!(
            "index rebuilt: {} packs, {} blobs, {} snapshots",
            report.packs_indexed, report.blobs_indexed, report.snapshots
        );
        for p in &report.packs_quarantined {
            println!("damaged pack {p} moved to quarantine/");
        }
        if report.blobs_salvaged > 0 || report.blobs_lost > 0 {
            println!("from damaged packs: {} blobs salvaged, {} lost", report.blobs_salvaged, report.blobs_lost);
        }
        for s in &report.snapshots_rewritten {
            println!("snapshot record {} written again from the index's verified copy", &s[..8]);
        }
        for s in &report.snapshots_quarantined {
            println!("damaged snapshot record {s} moved to quarantine/");
        }
        if report.complete() {
            println!("nothing any snapshot needs is lost");
        } else {
            println!("LOST: data that snapshots need (a new snapshot of the same sources stores it again):");
            for d in &report.lost {
                super::scrub::print_damage(d);
            }
        }
    }
    Ok(if report.complete() { exit::OK } else { exit::DAMAGE })
}
