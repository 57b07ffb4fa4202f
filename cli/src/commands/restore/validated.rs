//! `cairn restore --profile` in place: the validated restore with rollback (issue 18).
//!
//! The safety snapshot (of what the restore overwrites, deletes or resets), `before_restore`,
//! the restore, `after_restore`, `validate`. When validation fails (a validate hook, or an
//! after_restore hook, fails: the restored state did not come up), the restore is rolled back:
//! `before_restore` again, what the restore created is removed, the safety snapshot is
//! restored over the same target with every file overwritten, `after_restore` again; exit 7.
//! `--no-rollback` keeps the failed state for inspection: exit 8. Every step is logged and is
//! in `--json`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use cairn_store::{remove_created, RemoveReport, Repo, RestoreAction, RestoreOptions, RestoreReport, Snapshot};
use serde::Serialize;

use super::{exit_code, print_summary};
use crate::args::{Cli, RestoreArgs};
use crate::exit;
use crate::hooks::{Context, HookRun, Phase, Runner};
use crate::output::{self, outln, Quiet};
use crate::profile::Profile;
use crate::progress::Bar;

/// `--json` of a restore with a profile.
#[derive(Serialize)]
struct Outcome<'a> {
    #[serde(flatten)]
    report: Option<&'a RestoreReport>,
    /// Set when the restore did not happen (a before_restore hook or the restore failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    hooks: &'a [HookRun],
    /// `None` when the profile has no validate hooks.
    validation: Option<&'a Validation>,
    rolled_back: bool,
    rollback: Option<&'a Rollback>,
}

#[derive(Serialize)]
struct Validation {
    passed: bool,
    /// The hook that failed, and how.
    failure: Option<String>,
}

#[derive(Serialize)]
struct Rollback {
    /// The safety snapshot restored back (null when the restore overwrote nothing).
    safety_snapshot: Option<String>,
    /// What the failed restore created, removed again (or kept, and why).
    removed: RemoveReport,
    /// The restore of the safety snapshot.
    restore: Option<RestoreReport>,
    /// Why the restore of the safety snapshot failed.
    error: Option<String>,
    /// True when everything was put back as it was.
    complete: bool,
}

/// Refuses what cannot be rolled back before anything runs.
pub fn check(args: &RestoreArgs, opts: &RestoreOptions, profile: &Profile) -> Result<()> {
    if !profile.hooks.validate.is_empty() && !args.no_rollback && !opts.safety_snapshot {
        bail!(
            "profile {} validates the restore and rolls it back from its safety snapshot when validation fails: \
             --no-safety-snapshot needs --no-rollback",
            profile.name
        );
    }
    Ok(())
}

pub fn run(
    cli: &Cli,
    args: &RestoreArgs,
    repo: &Repo,
    snapshot: &Snapshot,
    mut opts: RestoreOptions,
    profile: &Profile,
) -> Result<u8> {
    let verbose = opts.list_changes;
    // The created entries are what a rollback removes.
    opts.list_changes = true;
    let mut hooks = Runner::new(profile);
    let mut ctx = Context {
        snapshot_id: Some(snapshot.id.to_hex()),
        target: Some(opts.target.to_string_lossy().into_owned()),
        ..Context::default()
    };
    let short = snapshot.id.short(8);
    let restored = match hooks.run(Phase::BeforeRestore, &ctx) {
        Err(e) => Err(format!("{e}; nothing was restored")),
        Ok(()) => repo
            .restore(snapshot, &opts, &Bar::for_cli(cli))
            .map_err(|e| format!("restore of {short} into {} failed: {e:#}", opts.target.display())),
    };
    let mut report = match restored {
        Ok(r) => r,
        Err(failure) => {
            // A stopped service is started again.
            ctx.exit_code = Some(exit::ERROR);
            ctx.error = Some(failure.clone());
            let _ = hooks.run(Phase::AfterRestore, &ctx);
            let _ = hooks.run(Phase::OnError, &ctx);
            if cli.json {
                let outcome = Outcome {
                    report: None,
                    error: Some(&failure),
                    hooks: &hooks.runs,
                    validation: None,
                    rolled_back: false,
                    rollback: None,
                };
                output::report(cli, &outcome, Quiet::Silences, |_| Ok::<(), std::io::Error>(()))?;
            }
            bail!("{failure}");
        }
    };
    let created: Vec<PathBuf> = report
        .changes
        .iter()
        .flatten()
        .filter(|c| c.action == RestoreAction::Create)
        .map(|c| PathBuf::from(&c.path))
        .collect();
    if !verbose {
        report.changes = None;
    }
    let code = exit_code(cli, &report, snapshot);
    ctx.exit_code = Some(code);
    let after = hooks.run(Phase::AfterRestore, &ctx);
    let validation = if profile.hooks.validate.is_empty() {
        None
    } else {
        let checked = after.clone().and_then(|()| hooks.run(Phase::Validate, &ctx));
        Some(Validation { passed: checked.is_ok(), failure: checked.err() })
    };
    let mut rollback = None;
    let mut failure = None;
    let mut code = code;
    match &validation {
        Some(Validation { passed: false, failure: why }) => {
            let why = why.clone().unwrap_or_default();
            if args.no_rollback {
                let kept = match &report.safety_snapshot {
                    Some(id) => format!("snapshot {} holds what was there", &id[..8]),
                    None => "there was no safety snapshot".into(),
                };
                log::error!(
                    "restored {short}, but validation failed ({why}); kept for inspection (--no-rollback): {kept}"
                );
                code = exit::VALIDATION_FAILED;
                failure = Some(format!("validation failed: {why}"));
            } else {
                log::error!("restored {short}, but validation failed ({why}); rolling back");
                ctx.error = Some(format!("validation failed: {why}"));
                let r = roll_back(cli, repo, snapshot, &report, &created, &mut hooks, &ctx);
                code = if r.complete { exit::ROLLED_BACK } else { exit::ERROR };
                failure = Some(if r.complete {
                    format!("validation failed: {why}; rolled back")
                } else {
                    format!("validation failed: {why}; the rollback did not complete")
                });
                rollback = Some(r);
            }
        }
        Some(Validation { passed: true, .. }) => log::info!("restored {short}; validation passed"),
        None => {
            if let Err(e) = &after {
                failure = Some(format!("restored {short}, but {e}"));
                code = exit::ERROR;
            }
        }
    }
    if let Some(f) = &failure {
        ctx.exit_code = Some(code);
        ctx.error = Some(f.clone());
        let _ = hooks.run(Phase::OnError, &ctx);
    }
    let outcome = Outcome {
        report: Some(&report),
        error: None,
        hooks: &hooks.runs,
        validation: validation.as_ref(),
        rolled_back: rollback.as_ref().is_some_and(|r| r.complete),
        rollback: rollback.as_ref(),
    };
    let safety_asked = opts.safety_snapshot && opts.overwrite != cairn_store::Overwrite::Never;
    output::report(cli, &outcome, Quiet::Silences, |o| print_outcome(o, safety_asked))?;
    if let Some(r) = rollback.as_ref().filter(|r| !r.complete) {
        say_what_is_left(r);
    }
    Ok(code)
}

/// Puts back what was there: `before_restore` again (the service is running what failed),
/// what the restore created removed, the safety snapshot restored over the same target with
/// every file overwritten, `after_restore` again.
fn roll_back(
    cli: &Cli,
    repo: &Repo,
    snapshot: &Snapshot,
    report: &RestoreReport,
    created: &[PathBuf],
    hooks: &mut Runner<'_>,
    ctx: &Context,
) -> Rollback {
    // A failing stop does not stop the rollback: the restored state failed either way.
    let _ = hooks.run(Phase::BeforeRestore, ctx);
    // In place (the only restore that is validated): every path is the target's own.
    let removed = remove_created(Path::new("/"), created);
    for k in &removed.kept {
        log::error!("rollback: {} left: {}", k.path, k.message);
    }
    let mut back = Rollback {
        safety_snapshot: report.safety_snapshot.clone(),
        removed,
        restore: None,
        error: None,
        complete: false,
    };
    if let Some(id) = &report.safety_snapshot {
        let put_back = repo.resolve_in(id, &cairn_store::SnapshotFilter::default()).and_then(|safety| {
            let mut o = RestoreOptions::default();
            o.target = PathBuf::from("/");
            o.dir_meta_below = snapshot.record.paths.iter().map(|p| PathBuf::from(OsStr::from_bytes(p))).collect();
            o.overwrite = cairn_store::Overwrite::Always;
            o.safety_snapshot = false;
            o.list_changes = cli.verbose > 0;
            repo.restore(&safety, &o, &Bar::for_cli(cli))
        });
        match put_back {
            Ok(r) => back.restore = Some(r),
            Err(e) => {
                log::error!("rollback: the safety snapshot {} could not be restored: {e:#}", &id[..8]);
                back.error = Some(format!("{e:#}"));
            }
        }
    }
    back.complete = back.error.is_none()
        && back.removed.kept.is_empty()
        && back.restore.as_ref().is_none_or(|r| !r.is_incomplete());
    let mut after_ctx = ctx.clone();
    after_ctx.exit_code = Some(if back.complete { exit::ROLLED_BACK } else { exit::ERROR });
    let _ = hooks.run(Phase::AfterRestore, &after_ctx);
    back
}

/// A rollback that did not complete is loud: what is left, where.
fn say_what_is_left(r: &Rollback) {
    if let Some(rr) = &r.restore {
        for w in rr.damaged.iter().chain(&rr.failed) {
            log::error!("rollback: {} not put back: {}", w.path, w.message);
        }
    }
    let safety = r.safety_snapshot.as_deref().map_or("none".into(), |id| id[..8].to_owned());
    log::error!(
        "the rollback did not complete: {} created entries left, safety snapshot {safety}{}; the target holds part \
         of each state",
        r.removed.kept.len(),
        r.error.as_deref().map(|e| format!(" not restored ({e})")).unwrap_or_default()
    );
}

fn print_outcome(o: &Outcome<'_>, safety_asked: bool) -> std::io::Result<()> {
    if let Some(r) = o.report {
        print_summary(r, safety_asked)?;
    }
    let ran = o.hooks.len();
    let failed = o.hooks.iter().filter(|h| !h.ok).count();
    outln!("  hooks:   {ran} run, {failed} failed")?;
    match o.validation {
        Some(Validation { passed: true, .. }) => outln!("  validation: passed")?,
        Some(Validation { passed: false, failure }) => {
            outln!("  validation: FAILED: {}", failure.as_deref().unwrap_or("?"))?;
        }
        None => {}
    }
    if let Some(rb) = o.rollback {
        let how = if rb.complete { "rolled back" } else { "rollback INCOMPLETE" };
        let safety = rb
            .safety_snapshot
            .as_deref()
            .map_or("no safety snapshot".into(), |id| format!("safety snapshot {}", &id[..8]));
        outln!("  {how}: {safety} restored, {} created entries removed", rb.removed.removed.len())?;
    }
    Ok(())
}
