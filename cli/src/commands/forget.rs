//! `cairn forget`

use anyhow::{bail, Result};
use cairn_store::{apply_policy, emptied_groups, ForgetReport, Snapshot, SnapshotId};
use serde::Serialize;

use crate::args::{Cli, ForgetArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, local_time, outln, Quiet};

#[derive(Serialize)]
struct Output {
    #[serde(flatten)]
    forget: ForgetReport,
    gc: Option<cairn_store::GcReport>,
    /// `--gc` was asked for but not run: another gc holds the gc lock (exit code 5).
    gc_deferred: bool,
}

pub fn run(cli: &Cli, args: &ForgetArgs) -> Result<u8> {
    let repo = super::open_to_free_space(cli)?;
    let policy = lower::keep_policy(args, super::profile(cli)?);
    let mut report = ForgetReport { dry_run: args.dry_run, ..ForgetReport::default() };
    let filter = lower::filter(&args.select, super::profile(cli)?)?;
    let has_policy = !policy.is_empty() || policy.has_safety_rule();
    let to_remove: Vec<SnapshotId> = match (args.ids.is_empty(), has_policy) {
        (false, false) => {
            let mut named: Vec<Snapshot> =
                args.ids.iter().map(|s| repo.resolve_in(s, &filter)).collect::<Result<_, _>>()?;
            // Named twice (an ID and a label of it): one snapshot, removed and reported once.
            let mut seen = std::collections::HashSet::new();
            named.retain(|s| seen.insert(s.id));
            let pinned: Vec<String> = named.iter().filter(|s| s.record.pinned).map(|s| s.id.short(8)).collect();
            if !pinned.is_empty() && !args.include_pinned {
                bail!(
                    "snapshot {} is pinned; nothing was removed (unpin it with `cairn tag {} --unpin`, or add \
                     --include-pinned)",
                    pinned.join(", "),
                    pinned[0]
                );
            }
            named.iter().map(|s| s.id).collect()
        }
        (true, true) => {
            let group_by = lower::group_by(&args.group_by)?;
            // Only --keep-safety-* given: the policy is for safety snapshots alone, and the
            // others are not judged (an empty policy would remove them all).
            let snaps: Vec<Snapshot> = repo
                .snapshots()?
                .into_iter()
                .filter(|s| filter.matches(s) && (!policy.is_empty() || s.is_safety()))
                .collect();
            report.decisions = apply_policy(&policy, group_by, &snaps, &jiff::tz::TimeZone::system());
            let emptied = emptied_groups(&report.decisions);
            if !emptied.is_empty() && !args.allow_empty {
                bail!(
                    "this policy would remove every snapshot of {} group(s) ({}); nothing was removed \
                     (add --allow-empty if that is what you want)",
                    emptied.len(),
                    emptied.join("; ")
                );
            }
            report.decisions.iter().filter(|d| !d.keep).map(|d| d.id.parse()).collect::<Result<_, _>>()?
        }
        (false, true) => bail!("give snapshot IDs or a keep-policy, not both"),
        (true, false) => bail!("give snapshot IDs to remove, or a policy such as --keep-daily 7 --keep-weekly 4"),
    };
    if !args.dry_run {
        repo.forget(&to_remove)?;
        report.removed = to_remove.iter().map(|i| i.to_hex()).collect();
        super::note(|o| o.removed = Some(to_remove.len() as u64));
    }
    // The snapshots are gone by now: whatever gc does, the user must hear what was removed.
    // Another gc holding the lock is no failure of this command (that gc, or the next, frees
    // the space), so it is reported beside the forget report with its own exit code.
    let mut deferred_by = None;
    let gc = if args.gc {
        match super::gc::collect(cli, &repo, &lower::forget_gc_options(args, &to_remove)) {
            Ok(r) => Some(r),
            Err(e) => match e.downcast_ref::<cairn_store::Error>() {
                Some(cairn_store::Error::GcRunning { pid, holder }) => {
                    deferred_by = Some((pid.clone(), holder.clone()));
                    None
                }
                _ => {
                    return Err(e.context(format!(
                        "{} snapshots were {}, but the gc that was to follow failed",
                        to_remove.len(),
                        if args.dry_run { "judged (dry run)" } else { "removed" }
                    )))
                }
            },
        }
    } else {
        None
    };
    let code = if deferred_by.is_some() { exit::GC_DEFERRED } else { exit::OK };
    let out = Output { forget: report, gc, gc_deferred: deferred_by.is_some() };
    output::report(cli, &out, Quiet::Silences, |o| {
        let when = |rfc3339: &str| {
            rfc3339
                .parse::<jiff::Timestamp>()
                .map(|t| local_time(i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)))
                .unwrap_or_default()
        };
        let mut group = None;
        for d in &o.forget.decisions {
            if group.as_ref() != Some(&d.group) {
                outln!("group {}", d.group)?;
                group = Some(d.group.clone());
            }
            let time = when(&d.time);
            if d.keep {
                outln!("  keep   {}  {time}  ({})", &d.id[..8], d.reasons.join(", "))?;
            } else {
                outln!("  remove {}  {time}", &d.id[..8])?;
            }
        }
        let verb = if args.dry_run { "would remove" } else { "removed" };
        outln!("{verb} {} snapshots", to_remove.len())?;
        if let Some(g) = &o.gc {
            super::gc::print_report(g)?;
        } else if let Some((pid, holder)) = &deferred_by {
            outln!(
                "gc deferred: another {holder} is running on this repository (pid {pid}); \
                 run `cairn gc` when it has finished to free their space"
            )?;
        } else if !args.dry_run && !to_remove.is_empty() {
            outln!("run `cairn gc` to free their space")?;
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(code)
}
