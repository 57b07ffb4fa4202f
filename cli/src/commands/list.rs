//! `cairn list`

use std::io::Write;

use anyhow::Result;
use cairn_store::Snapshot;
use serde::Serialize;

use crate::args::{Cli, ListArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, local_time, outln, size, Quiet};
use crate::profile::Profile;

/// One snapshot as `list --json` prints it.
#[derive(Serialize)]
struct Listed<'a> {
    id: String,
    short_id: String,
    time: String,
    time_ns: i64,
    kind: &'static str,
    label: Option<&'a str>,
    tags: &'a [String],
    pinned: bool,
    safety: bool,
    original: Option<String>,
    host: &'a str,
    user: &'a str,
    paths: Vec<String>,
    parent: Option<String>,
    #[serde(flatten)]
    totals: &'a cairn_store::SnapshotTotals,
    warnings: u64,
    duration_ms: u64,
    cairn_version: &'a str,
    /// With --profile: the profile's components this snapshot holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    components: Option<Vec<String>>,
}

fn listed<'a>(s: &'a Snapshot, profile: Option<&Profile>) -> Listed<'a> {
    let r = &s.record;
    Listed {
        id: s.id.to_hex(),
        short_id: s.id.short(8),
        time: output::utc_time(r.time_ns),
        time_ns: r.time_ns,
        kind: r.kind.as_str(),
        label: r.label.as_deref(),
        tags: &r.tags,
        pinned: r.pinned,
        safety: s.is_safety(),
        original: r.original.map(|o| o.to_hex()),
        host: &r.host,
        user: &r.user,
        paths: r.paths_lossy(),
        parent: r.parent.map(|p| p.to_hex()),
        totals: &r.totals,
        warnings: r.warnings,
        duration_ms: r.duration_ms,
        cairn_version: &r.cairn_version,
        components: profile.map(|p| p.components_of(s)),
    }
}

pub fn run(cli: &Cli, args: &ListArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let filter = lower::filter(&args.select, super::profile(cli)?)?;
    let mut snaps: Vec<Snapshot> = repo.snapshots()?.into_iter().filter(|s| filter.matches(s)).collect();
    if let Some(n) = args.latest {
        let skip = snaps.len().saturating_sub(n);
        snaps.drain(..skip);
    }
    if cli.quiet && !cli.json {
        // -q asks for the IDs alone (`for id in $(cairn list -q)`): full ones, which stay
        // unique as the repository grows, where a short prefix may one day match two.
        let mut out = output::stdout();
        for s in &snaps {
            writeln!(out, "{}", s.id.to_hex())?;
        }
        return Ok(exit::OK);
    }
    let profile = super::profile(cli)?;
    let rows: Vec<Listed> = snaps.iter().map(|s| listed(s, profile)).collect();
    output::report(cli, &rows, Quiet::Silences, |rows| table(&snaps, rows))?;
    Ok(exit::OK)
}

const HEADER: [&str; 10] = ["ID", "TIME", "KIND", "LABEL", "TAGS", "HOST", "SIZE", "NEW", "FILES", "PATHS"];

fn table(snaps: &[Snapshot], listed: &[Listed]) -> Result<()> {
    let with_components = listed.iter().any(|l| l.components.is_some());
    let mut header: Vec<&str> = HEADER.to_vec();
    if with_components {
        header.insert(HEADER.len() - 1, "COMPONENTS");
    }
    let mut rows: Vec<Vec<String>> = snaps
        .iter()
        .zip(listed)
        .map(|(s, l)| {
            let r = &s.record;
            let mut row = vec![
                s.id.short(8),
                local_time(r.time_ns),
                r.kind.as_str().to_owned(),
                r.label.clone().unwrap_or_default(),
                r.tags.join(","),
                r.host.clone(),
                size(r.totals.bytes_total),
                size(r.totals.data_stored),
                r.totals.files.to_string(),
                r.paths_lossy().join(" "),
            ];
            if let Some(c) = &l.components {
                row.insert(row.len() - 1, c.join(","));
            }
            row
        })
        .collect();
    // On a terminal a long list of paths would wrap every row and break the columns; a pipe
    // gets them whole, so a script sees every path.
    if let Some(width) = output::terminal_width() {
        output::fit_last_column(&header, &mut rows, width);
    }
    output::table(&header, &rows)?;
    outln!("{} snapshots", snaps.len())?;
    Ok(())
}
