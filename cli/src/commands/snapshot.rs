//! `cairn snapshot`

use anyhow::{anyhow, bail, Context, Result};
use cairn_store::{InitOptions, Repo, SnapshotOptions, SnapshotReport};
use serde::Serialize;

use crate::args::{Cli, SnapshotArgs};
use crate::exit;
use crate::hooks::{self, HookRun, Phase, Runner};
use crate::lower;
use crate::output::{self, errln, outln, size, Quiet};
use crate::profile::Profile;
use crate::progress::Bar;

/// One rule wherever the repository is named (the default, `$CAIRN_REPO` or `--repo`): a
/// snapshot creates it, with `init`'s defaults and a line on stderr, when nothing is there or
/// an empty folder; every other command refuses a place without a repository. A folder that
/// holds anything else is never filled (`init` refuses it). The sources are checked first, so
/// a snapshot that would fail for want of them creates nothing.
pub fn run(cli: &Cli, args: &SnapshotArgs) -> Result<u8> {
    let profile = super::profile(cli)?;
    let mut opts = lower::snapshot_options(args, profile)?;
    if let Some(label) = &opts.label {
        // Before any hook runs (and before a repository is created): a template that makes a bad label would otherwise stop the
        // service on every run for a snapshot that can never be taken.
        cairn_store::check_label(label).context("snapshot failed; no snapshot was recorded")?;
    }
    let repo = open_or_create(cli, &opts)?;
    if args.label.is_none() {
        if let Some(label) = &opts.label {
            // A label made from the profile's template names one snapshot like any other; two
            // runs in the same second get `-2`, `-3` rather than the second one failing.
            opts.label = Some(free_label(&repo, label)?);
        }
    }
    // A dry run stops no service: its hooks do not run.
    match profile.filter(|_| !opts.dry_run) {
        Some(p) => with_hooks(cli, &repo, &opts, p),
        None => {
            let report = take(cli, &repo, &opts)?;
            output::report(cli, &report, Quiet::Silences, print_summary)?;
            Ok(print_warnings(cli, &report))
        }
    }
}

/// `label`, or the first of `label-2`, `label-3` ... that no snapshot has.
fn free_label(repo: &Repo, label: &str) -> Result<String> {
    let taken: std::collections::HashSet<String> =
        repo.snapshots()?.into_iter().filter_map(|s| s.record.label).collect();
    Ok(std::iter::once(label.to_owned())
        .chain((2..).map(|n| format!("{label}-{n}")))
        .find(|l| !taken.contains(l))
        .unwrap_or_else(|| label.to_owned()))
}

/// The repository, opened, or created when nothing is there yet.
fn open_or_create(cli: &Cli, opts: &SnapshotOptions) -> Result<Repo> {
    let (location, is_default) = super::repo_location(cli)?;
    // A place that cannot be looked at (no permission) is opened, for the error that says so.
    if !matches!(location.holds_repository(), Ok(false)) {
        return super::open(cli);
    }
    opts.check_sources().context("snapshot failed; no snapshot was recorded")?;
    let which = if is_default { "the default repository" } else { "a new repository" };
    let repo = Repo::init(&location, &InitOptions::default())
        .with_context(|| format!("cannot create {which} at {location} for this snapshot"))?;
    if !cli.quiet {
        let hint = if is_default { "use --repo or CAIRN_REPO for another" } else { "with init's defaults" };
        errln!("cairn: created {which} at {location} ({hint})");
    }
    super::note_requests(&repo);
    super::note_repo(&repo);
    Ok(repo)
}

fn take(cli: &Cli, repo: &Repo, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let bar = Bar::for_cli(cli);
    let report = repo.snapshot(opts, &bar).context("snapshot failed; no snapshot was recorded")?;
    super::note(|o| {
        let t = &report.totals;
        o.snapshot.clone_from(&report.id);
        o.bytes_total = Some(t.bytes_total);
        o.bytes_added = Some(t.data_added);
        o.bytes_stored = Some(t.data_stored);
        o.files = Some([t.files_new, t.files_changed, t.files_unchanged]);
        o.warnings = Some(report.warnings.len() as u64);
    });
    Ok(report)
}

fn print_warnings(cli: &Cli, report: &SnapshotReport) -> u8 {
    super::print_warnings(cli, "note", log::Level::Info, &report.notes);
    super::print_warnings(cli, "warning", log::Level::Warn, &report.warnings);
    if report.warnings.is_empty() {
        exit::OK
    } else {
        exit::WARNINGS
    }
}

/// `--json` of a snapshot taken with a profile: the report and the hooks that ran.
#[derive(Serialize)]
struct WithHooks<'a> {
    #[serde(flatten)]
    report: &'a SnapshotReport,
    hooks: &'a [HookRun],
}

/// `--json` of a snapshot with a profile that did not happen: what failed and the hooks
/// that ran, so that a script sees whether its service was started again.
#[derive(Serialize)]
struct Failed<'a> {
    id: Option<String>,
    error: &'a str,
    hooks: &'a [HookRun],
}

/// before_snapshot (the first failure stops the list and the snapshot), the snapshot,
/// after_snapshot always (a stopped service is started again), on_error when anything failed.
fn with_hooks(cli: &Cli, repo: &Repo, opts: &SnapshotOptions, profile: &Profile) -> Result<u8> {
    let mut hooks = Runner::new(profile);
    let mut ctx = hooks::Context::default();
    let taken = match hooks.run(Phase::BeforeSnapshot, &ctx) {
        Ok(()) => take(cli, repo, opts),
        Err(e) => Err(anyhow!("{e}; no snapshot was taken")),
    };
    let (report, mut failure) = match taken {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    ctx.snapshot_id = report.as_ref().and_then(|r| r.id.clone());
    ctx.exit_code = Some(if failure.is_some() { exit::ERROR } else { exit::OK });
    ctx.error.clone_from(&failure);
    if let Err(e) = hooks.run(Phase::AfterSnapshot, &ctx) {
        failure.get_or_insert(match &ctx.snapshot_id {
            Some(id) => format!("snapshot {} saved, but {e}", &id[..8]),
            None => e,
        });
    }
    if let Some(f) = &failure {
        ctx.exit_code = Some(exit::ERROR);
        ctx.error = Some(f.clone());
        let _ = hooks.run(Phase::OnError, &ctx);
    }
    match (&report, &failure) {
        (Some(r), _) => {
            output::report(cli, &WithHooks { report: r, hooks: &hooks.runs }, Quiet::Silences, |w| {
                print_summary(w.report)
            })?;
        }
        (None, Some(f)) if cli.json => {
            output::report(cli, &Failed { id: None, error: f, hooks: &hooks.runs }, Quiet::Silences, |_| {
                Ok::<(), std::io::Error>(())
            })?
        }
        _ => {}
    }
    let code = report.as_ref().map_or(exit::ERROR, |r| print_warnings(cli, r));
    match failure {
        Some(f) => bail!("{f}"),
        None => Ok(code),
    }
}

fn print_summary(r: &SnapshotReport) -> std::io::Result<()> {
    let t = &r.totals;
    // An incremental or differential snapshot with no earlier one to compare with reads
    // everything, as a full one does: say so rather than let "(incremental)" mislead.
    let kind = if r.parent.is_none() && r.kind != cairn_store::SnapshotKind::Full {
        format!("{}, the first of these paths: every file read", r.kind.as_str())
    } else {
        r.kind.as_str().to_owned()
    };
    match &r.id {
        Some(id) => outln!("snapshot {} saved ({kind})", &id[..8])?,
        None => outln!("dry run: nothing stored ({kind})")?,
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
        "  added:   {} new (file content and directory listings), {} stored after dedup and compression",
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
