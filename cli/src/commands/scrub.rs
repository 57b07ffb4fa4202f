//! `cairn scrub`

use anyhow::Result;
use cairn_store::{Damage, ScrubReport};

use crate::args::{Cli, ScrubArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, outln, size, Quiet};
use crate::progress::Bar;

pub fn run(cli: &Cli, args: &ScrubArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let only = args.snapshots.iter().map(|spec| repo.resolve(spec).map(|s| s.id)).collect::<Result<_, _>>()?;
    let opts = lower::scrub_options(args, only);
    let bar = Bar::for_cli(cli);
    let report = repo.scrub(&opts, &bar)?;
    super::note(|o| {
        let mut s = cairn_store::ScrubOutcome::default();
        s.read_data = report.read_data;
        s.packs_in_scope = report.packs_in_scope;
        s.packs_verified = report.packs_verified;
        s.packs_never_verified = report.packs_never_verified;
        s.damage = report.damage.len() as u64;
        s.unreadable = report.unreadable.len() as u64;
        o.scrub = Some(s);
    });
    let budgeted = args.max_duration.is_some() || args.max_bytes.is_some();
    // -q keeps a scrub quiet only while it finds nothing.
    let quiet = if report.clean { Quiet::Silences } else { Quiet::Ignored };
    output::report(cli, &report, quiet, |r| print_report(r, budgeted))?;
    Ok(if !report.damage.is_empty() {
        exit::DAMAGE
    } else if !report.unreadable.is_empty() {
        // Not damage, but not checked either: the run could not finish its job.
        exit::ERROR
    } else {
        exit::OK
    })
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

/// `budgeted`: the run was limited (`--max-duration`, `--max-bytes`), so it may have read only
/// a share of the packs; without a limit it read every one, and those it could not verify are
/// listed as damage or not checked.
fn print_report(r: &ScrubReport, budgeted: bool) -> std::io::Result<()> {
    outln!(
        "checked {} snapshots: {} trees, {} chunk references, {} packs",
        r.snapshots_checked,
        r.trees_checked,
        r.chunks_checked,
        r.packs_in_scope
    )?;
    if r.read_data {
        if r.all_packs_verified_this_run || budgeted {
            let scope = if r.all_packs_verified_this_run { "all" } else { "the budget's share of" };
            outln!(
                "read back {} packs ({}) this run, {scope} the packs in scope",
                r.packs_verified,
                size(r.bytes_verified)
            )?;
        } else {
            outln!(
                "read back all {} packs in scope ({}) this run: {} verified, the others did not (see below)",
                r.packs_in_scope,
                size(r.bytes_verified),
                r.packs_verified
            )?;
        }
    }
    match (r.oldest_verification_age_secs, r.packs_never_verified) {
        (Some(a), _) => outln!("coverage: every pack verified; the oldest verification is {} old", age(a))?,
        // This very run read every pack: advising another read-data scrub would be no help.
        (None, n) if r.read_data && !budgeted => outln!("coverage: {n} of {} packs never verified", r.packs_in_scope)?,
        (None, n) => {
            outln!("coverage: {n} of {} packs never read back (run `cairn scrub --read-data`)", r.packs_in_scope)?
        }
    }
    let l = &r.leftovers;
    if !l.temp_files.is_empty() || !l.unindexed_packs.is_empty() || l.unreferenced_packs > 0 {
        outln!(
            "leftovers (harmless; gc removes them): {} temporary files, {} unindexed packs, {} packs no snapshot needs",
            l.temp_files.len(),
            l.unindexed_packs.len(),
            l.unreferenced_packs
        )?;
    }
    for u in &r.unreadable {
        outln!("NOT CHECKED (written by a newer cairn; upgrade to check it): {u}")?;
    }
    let intact = r.snapshots.iter().filter(|s| s.status == "intact").count();
    outln!("intact: {intact} of {} snapshots", r.snapshots.len())?;
    if r.clean {
        outln!("no damage found")?;
        return Ok(());
    }
    for s in r.snapshots.iter().filter(|s| s.status != "intact") {
        outln!("DAMAGED snapshot {} ({}): {} paths need damaged data", &s.id[..8], s.time, s.damaged_paths)?;
    }
    for d in &r.damage {
        print_damage(d)?;
    }
    Ok(())
}

/// One damaged object and what needs it.
pub fn print_damage(d: &Damage) -> std::io::Result<()> {
    let what = match (&d.blob, &d.pack, &d.snapshot) {
        (Some(b), Some(p), _) => format!("blob {} in pack {}", &b[..16], &p[..16]),
        (Some(b), None, _) => format!("blob {}", &b[..16]),
        (None, Some(p), _) => format!("pack {}", &p[..16]),
        (None, None, Some(s)) => format!("snapshot {}", &s[..8]),
        (None, None, None) => String::new(),
    };
    outln!("  {}: {what}: {}", d.kind, d.detail)?;
    for a in &d.affected {
        outln!("    needed by {} {}", &a.snapshot[..8], a.path)?;
    }
    Ok(())
}
