//! `cairn tag`

use anyhow::{bail, Context, Result};
use cairn_store::{Retagged, Snapshot};

use crate::args::{Cli, TagArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, outln, Quiet};

pub fn run(cli: &Cli, args: &TagArgs) -> Result<u8> {
    let change = lower::retag(args);
    if change.set.is_none()
        && change.add.is_empty()
        && change.remove.is_empty()
        && change.label.is_none()
        && change.pin.is_none()
    {
        bail!("nothing to change: give --add, --remove, --set, --label, --unlabel, --pin or --unpin");
    }
    let filter = lower::filter(&args.select, super::profile(cli)?)?;
    let repo = super::open(cli)?;
    let snaps: Vec<Snapshot> = if args.snapshots.is_empty() {
        if filter.is_empty() {
            bail!("name the snapshots to change, or select them with --tag, --host or --path");
        }
        repo.snapshots()?.into_iter().filter(|s| filter.matches(s)).collect()
    } else {
        let mut named: Vec<Snapshot> =
            args.snapshots.iter().map(|s| repo.resolve_in(s, &filter)).collect::<Result<_, _>>()?;
        // Named twice (an ID and a label of it): one snapshot, changed and counted once.
        let mut seen = std::collections::HashSet::new();
        named.retain(|s| seen.insert(s.id));
        named
    };
    if change.label.as_ref().is_some_and(Option::is_some) && snaps.len() > 1 {
        bail!("a label names one snapshot, and {} are selected", snaps.len());
    }
    let mut done: Vec<Retagged> = Vec::new();
    for s in &snaps {
        let r = repo.retag(s, &change).with_context(|| {
            let so_far = if done.is_empty() { String::new() } else { format!(" ({} changed before it)", done.len()) };
            format!("cannot change snapshot {}{so_far}", s.id.short(8))
        })?;
        done.push(r);
    }
    output::report(cli, &done, Quiet::Silences, |done| {
        for r in done {
            let state = format!(
                "tags [{}]{}{}",
                r.tags.join(","),
                r.label.as_ref().map(|l| format!(", label {l}")).unwrap_or_default(),
                if r.pinned { ", pinned" } else { "" }
            );
            match (&r.new_id, r.changed) {
                (Some(new), _) => outln!("{} -> {}  {state}", &r.old_id[..8], &new[..8])?,
                (None, true) => outln!("{} would change: {state}", &r.old_id[..8])?,
                (None, false) => outln!("{} unchanged: {state}", &r.old_id[..8])?,
            }
        }
        let changed = done.iter().filter(|r| r.changed).count();
        let verb = if args.dry_run { "would change" } else { "changed" };
        outln!("{verb} {changed} of {} snapshots (a changed snapshot gets a new ID)", done.len())?;
        Ok::<_, std::io::Error>(())
    })?;
    Ok(exit::OK)
}
