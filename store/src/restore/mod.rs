//! Restore: recreate a snapshot's source paths under a target directory.
//!
//! Safety (invariant 6): every entry name is checked to be one plain path component; every
//! destination directory is opened from its parent's descriptor without following symlinks
//! (`at.rs`), so neither a hostile repository nor another user racing the restore can send a
//! write elsewhere; files are written to a fresh temporary file in their directory and renamed
//! over the destination, so a symlink at the destination is replaced, not followed; in a
//! directory this restore made, where nothing is to be replaced, a file is created under its
//! own name with `O_EXCL | O_NOFOLLOW` (two system calls fewer a file, and no rename), and
//! anything put there meanwhile makes that fail and the file goes the temporary way; hard links
//! only point at files this run wrote or checked. Nothing is written outside the target.
//!
//! A file that cannot be restored (damaged data, no space, a name the target cannot hold) is
//! listed and every other file is still restored. Temporary files of an interrupted restore are
//! removed when a later one passes through their directory.

mod at;
mod fetch;
mod file;
mod job;
mod meta;
mod undo;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::capture::{self, CAPTURES_DIR};
use crate::error::{Error, IoContext, Result};
use crate::exclude::Excludes;
use crate::id::FileHash;
use crate::progress::{NoProgress, Progress, Unit};
use crate::repo::{Repo, Snapshot};
use crate::tally::Warning;
use crate::tree::snapshot_path;

pub use undo::{remove_created, RemoveReport};

/// When an existing file at the destination is replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Never: existing files are left as they are.
    Never,
    /// When its content differs (size, then mtime, then BLAKE3 of the content).
    #[default]
    IfChanged,
    /// Always.
    Always,
}

/// What a restore does to one path of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreAction {
    /// Nothing was there.
    Create,
    /// Something else was there and is replaced (a file of other content, a symlink to
    /// elsewhere, a file where the snapshot has a directory).
    Overwrite,
    /// The content is kept; owner, mode or modification time are set to the snapshot's.
    Metadata,
    /// Not in the snapshot: removed (`delete`).
    Delete,
}

/// One entry of [`RestoreReport::changes`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RestoreChange {
    /// The path in the target.
    pub path: String,
    /// What the restore does there.
    pub action: RestoreAction,
}

/// What to restore and where.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Source paths are recreated under this directory (`/` restores in place).
    pub target: PathBuf,
    /// Restore only these snapshot paths (and what is below them); all when empty.
    pub includes: Vec<PathBuf>,
    /// Glob patterns to leave out (as for snapshot excludes).
    pub excludes: Vec<String>,
    /// Re-read every written file and check it against its stored BLAKE3.
    pub verify: bool,
    /// Report what would be written, write nothing.
    pub dry_run: bool,
    /// Policy for existing files.
    pub overwrite: Overwrite,
    /// Take a snapshot of the existing entries this restore overwrites or deletes, first.
    pub safety_snapshot: bool,
    /// Tags the safety snapshot carries besides `safety` (a profile's, so that the profile's
    /// listing and retention see it).
    pub safety_tags: Vec<String>,
    /// Remove what the snapshot does not have below the restored paths, so that they become
    /// equal to the snapshot. Excluded names are kept; nothing on another file system is
    /// removed. Refused with `Overwrite::Never`, which keeps every existing entry.
    pub delete: bool,
    /// List every entry the restore creates, overwrites, deletes or resets the metadata of
    /// in [`RestoreReport::changes`].
    pub list_changes: bool,
    /// Directories above the source paths (or above an include) at or below one of these
    /// snapshot paths get the snapshot's metadata too, as restored directories do; elsewhere
    /// such a directory keeps its own. A rollback restores a safety snapshot with the rolled
    /// back restore's source paths here, so that the directories it touched get their times
    /// back as well.
    pub dir_meta_below: Vec<PathBuf>,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Write the snapshot's captures too (`TARGET/.cairn-captures/...`): a restore leaves them
    /// out unless this is set or an include is at or below `/.cairn-captures`, so a restore in
    /// place never writes a dump onto the live system by surprise.
    pub captures: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: String,
    /// The target directory.
    pub target: String,
    /// Regular files written.
    pub files_written: u64,
    /// Existing files left alone (unchanged, or `--overwrite never`).
    pub files_skipped: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symbolic links restored.
    pub symlinks: u64,
    /// FIFOs and device nodes restored.
    pub specials: u64,
    /// Hard links recreated.
    pub hardlinks: u64,
    /// File content bytes written.
    pub bytes_written: u64,
    /// Files verified against their stored BLAKE3 (with `verify`).
    pub files_verified: u64,
    /// Entries removed because the snapshot does not have them (with `delete`; in a dry run,
    /// that would be), a directory's contents counted one by one.
    pub deleted: u64,
    /// The snapshot of the existing entries this restore overwrites, deletes or resets the
    /// metadata of, taken first; `None` when there are none (or it was not asked for).
    pub safety_snapshot: Option<String>,
    /// Every entry created, overwritten, deleted or given the snapshot's metadata, sorted by
    /// path (with `list_changes`; left out otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<RestoreChange>>,
    /// Files that could not be restored because stored data is damaged or missing.
    pub damaged: Vec<Warning>,
    /// Files and directories that could not be restored for another reason (no space left, a
    /// name too long for the target, a directory replaced by another user while restoring);
    /// everything else was still restored.
    pub failed: Vec<Warning>,
    /// `--include` paths the snapshot does not hold: nothing was restored for them (left out
    /// when none; when none of the includes is there, the restore is refused instead).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
    /// Temporary files of an interrupted earlier restore that this one removed.
    pub leftovers_removed: u64,
    /// Other problems (entries skipped, metadata not settable).
    pub warnings: Vec<Warning>,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// True when nothing was written.
    pub dry_run: bool,
}

impl RestoreReport {
    /// True when some file could not be restored because of damage.
    #[must_use]
    pub fn has_damage(&self) -> bool {
        !self.damaged.is_empty()
    }

    /// True when some file or directory was not restored, for any reason (exit code 4).
    #[must_use]
    pub fn is_incomplete(&self) -> bool {
        !self.damaged.is_empty() || !self.failed.is_empty()
    }
}

/// BLAKE3 of a file's content.
pub fn hash_file(path: &Path) -> Result<FileHash> {
    let f = File::open(path).at(path)?;
    at::hash_reader(f).at(path)
}

impl Repo {
    /// Restores a snapshot (or part of it) under `opts.target`.
    pub fn restore(
        &self,
        snapshot: &Snapshot,
        opts: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestoreReport> {
        let started = Instant::now();
        self.need_full_key("restore")?;
        if opts.delete && opts.overwrite == Overwrite::Never {
            return Err(Error::InvalidInput(
                "--delete makes the restored paths equal to the snapshot, --overwrite never keeps every existing \
                 file: give one or the other"
                    .into(),
            ));
        }
        let _session = self.session("restore")?;
        self.index.map_for_reads(crate::index::READ_MAP);
        let mut includes: Vec<PathBuf> = opts.includes.iter().map(|p| snapshot_path(p)).collect();
        // An include that names nothing restores nothing: a typo must not read as success.
        let mut not_found = Vec::new();
        for inc in &includes {
            if inc == Path::new("/") {
                continue;
            }
            match self.find_entry(snapshot.record.root, inc) {
                Ok(Some(_)) => {}
                Ok(None) => not_found.push(inc.clone()),
                // A tree on the way cannot be read: the walk below names the damage and
                // restores everything else, as it does without --include.
                Err(e) if e.is_damage() => {}
                Err(e) => return Err(e),
            }
        }
        if !includes.is_empty() && not_found.len() == includes.len() {
            return Err(Error::NotInSnapshot {
                paths: not_found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                snapshot: snapshot.id.short(8),
            });
        }
        includes.retain(|i| !not_found.contains(i));
        if opts.captures && !includes.is_empty() && !includes.iter().any(|i| capture::is_reserved(i)) {
            includes.push(Path::new("/").join(CAPTURES_DIR));
        }
        let target = if opts.dry_run {
            match at::Dir::open_target(&opts.target) {
                Ok(d) => Some(d),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(&opts.target, e)),
            }
        } else {
            fs::create_dir_all(&opts.target).at(&opts.target)?;
            Some(at::Dir::open_target(&opts.target).at(&opts.target)?)
        };
        let mut report = RestoreReport {
            snapshot: snapshot.id.to_hex(),
            target: opts.target.to_string_lossy().into_owned(),
            dry_run: opts.dry_run,
            not_found: not_found.iter().map(|p| p.display().to_string()).collect(),
            ..RestoreReport::default()
        };
        let pool = crate::workers::pool(opts.threads)?;
        if opts.safety_snapshot && !opts.dry_run && opts.overwrite != Overwrite::Never {
            if let Some(t) = &target {
                report.safety_snapshot = self.safety_snapshot(snapshot, opts, &includes, t, &pool)?;
            }
        }
        let job = self.restore_job(snapshot, opts, includes, progress)?;
        let total = job.includes.is_empty().then_some(snapshot.record.totals.bytes_total);
        progress.start("restore", total, Unit::Bytes);
        self.leased(pool.install(|| job.run(snapshot.record.root, target)))?;
        progress.finish();
        let mut warnings = job.warnings.into_vec();
        let c = &job.counts;
        if c.owner_failures.get() > 0 {
            warnings.push(Warning {
                path: report.target.clone(),
                message: format!(
                    "{} entries keep this user as owner: setting owners needs root",
                    c.owner_failures.get()
                ),
            });
        }
        report.files_written = c.files_written.get();
        report.files_skipped = c.files_skipped.get();
        report.dirs = c.dirs.get();
        report.symlinks = c.symlinks.get();
        report.specials = c.specials.get();
        report.hardlinks = c.hardlinks.get();
        report.bytes_written = c.bytes_written.get();
        report.files_verified = c.files_verified.get();
        report.leftovers_removed = c.leftovers_removed.get();
        report.deleted = c.deleted.get();
        if opts.list_changes {
            let mut changes = std::mem::take(&mut *crate::workers::lock(&job.changes));
            changes.sort();
            report.changes = Some(
                changes
                    .into_iter()
                    .map(|(path, action)| RestoreChange { path: path.to_string_lossy().into_owned(), action })
                    .collect(),
            );
        }
        report.damaged = job.damaged.into_vec();
        report.failed = job.failed.into_vec();
        report.warnings = warnings;
        report.duration_secs = started.elapsed().as_secs_f64();
        self.leased(Ok(report))
    }

    fn restore_job<'a>(
        &'a self,
        snapshot: &Snapshot,
        opts: &'a RestoreOptions,
        includes: Vec<PathBuf>,
        progress: &'a dyn Progress,
    ) -> Result<job::Job<'a>> {
        // The captures are left out unless asked for, by the option or an include below them.
        let mut excludes = opts.excludes.clone();
        if !opts.captures && !includes.iter().any(|i| capture::is_reserved(i)) {
            excludes.push(format!("/{CAPTURES_DIR}"));
        }
        Ok(job::Job::new(
            self,
            opts,
            includes,
            snapshot.record.paths.iter().map(|p| PathBuf::from(OsStr::from_bytes(p))).collect(),
            Excludes::new(&excludes, None)?,
            // Only --delete needs them: a record's odd pattern must not stop a plain restore.
            Excludes::new(if opts.delete { &snapshot.record.excludes } else { &[] }, None)?,
            progress,
        ))
    }

    /// Snapshots what the restore is about to change of what exists: the entries it overwrites,
    /// deletes or gives the snapshot's metadata, found by a dry run of the same restore first
    /// (nothing else is read: a restore of one changed file saves that file, not the whole
    /// source). `None` when there is nothing of the kind. The dry run reaches entries as the
    /// restore does, through real directories only, so the safety snapshot never reads
    /// through a symlink the restore will replace either.
    fn safety_snapshot(
        &self,
        snapshot: &Snapshot,
        opts: &RestoreOptions,
        includes: &[PathBuf],
        target: &at::Dir,
        pool: &rayon::ThreadPool,
    ) -> Result<Option<String>> {
        let roots: Vec<PathBuf> = if includes.is_empty() {
            snapshot.record.paths.iter().map(|p| snapshot_path(Path::new(OsStr::from_bytes(p)))).collect()
        } else {
            includes.to_vec()
        };
        // A restore into a new place (nothing of it exists yet) needs no dry run.
        let rel = |root: &Path| root.strip_prefix("/").unwrap_or(root).to_path_buf();
        if !roots.iter().any(|r| at::exists_without_symlinks(target, &rel(r)).unwrap_or(true)) {
            return Ok(None);
        }
        let mut plan_opts = opts.clone();
        plan_opts.dry_run = true;
        plan_opts.list_changes = true;
        let plan = self.restore_job(snapshot, &plan_opts, includes.to_vec(), &NoProgress)?;
        let dir = target.try_clone().at(&opts.target)?;
        pool.install(|| plan.run(snapshot.record.root, Some(dir)))?;
        let changed: Vec<PathBuf> = std::mem::take(&mut *crate::workers::lock(&plan.changes))
            .into_iter()
            .filter(|(_, action)| *action != RestoreAction::Create)
            .map(|(path, _)| path)
            .collect();
        let tops: Vec<PathBuf> = roots.iter().map(|r| opts.target.join(rel(r))).collect();
        let paths = bounded(changed, &tops, MAX_SAFETY_PATHS);
        if paths.is_empty() {
            return Ok(None);
        }
        self.writable(
            "the safety snapshot of what this restore overwrites (--no-safety-snapshot restores without one)",
        )?;
        self.safety_snapshot_of(paths, &opts.safety_tags)
    }
}

/// The most paths a safety snapshot's record names (each is listed by `list` and `show`).
const MAX_SAFETY_PATHS: usize = 256;

/// `paths` without those below another of them, and at most about `max`: past that, the
/// deepest are replaced by their directories (which then hold untouched entries too), never
/// climbing above the restored roots `tops`.
fn bounded(paths: Vec<PathBuf>, tops: &[PathBuf], max: usize) -> Vec<PathBuf> {
    fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
        paths.sort();
        paths.dedup();
        let mut out: Vec<PathBuf> = Vec::with_capacity(paths.len());
        for p in paths {
            // Paths sort component by component: what is below a path comes right after it.
            if !out.last().is_some_and(|o| p.starts_with(o)) {
                out.push(p);
            }
        }
        out
    }
    let mut paths = outermost(paths);
    while paths.len() > max {
        let deepest = paths.iter().map(|p| p.components().count()).max().unwrap_or(0);
        let mut moved = false;
        let next: Vec<PathBuf> = paths
            .into_iter()
            .map(|p| match p.parent() {
                Some(up) if p.components().count() == deepest && tops.iter().any(|t| up.starts_with(t)) => {
                    moved = true;
                    up.to_path_buf()
                }
                _ => p,
            })
            .collect();
        paths = outermost(next);
        if !moved {
            break;
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_matching() {
        let inc = vec![PathBuf::from("/etc/nginx")];
        assert_eq!(job::wanted(&inc, Path::new("/etc")), Some(false));
        assert_eq!(job::wanted(&inc, Path::new("/etc/nginx")), Some(true));
        assert_eq!(job::wanted(&inc, Path::new("/etc/nginx/a.conf")), Some(true));
        assert_eq!(job::wanted(&inc, Path::new("/etc/ssh")), None);
        assert_eq!(job::wanted(&[], Path::new("/x")), Some(true));
    }

    #[test]
    fn safety_paths_are_outermost_and_bounded_below_the_roots() {
        let p = |s: &str| PathBuf::from(s);
        let tops = [p("/t/etc")];
        let got = bounded(vec![p("/t/etc/a/x"), p("/t/etc/a"), p("/t/etc/b"), p("/t/etc/a-b")], &tops, 10);
        assert_eq!(got, [p("/t/etc/a"), p("/t/etc/a-b"), p("/t/etc/b")]);
        let many: Vec<PathBuf> = (0..20).map(|i| p(&format!("/t/etc/d{}/f{i}", i % 4))).collect();
        assert_eq!(bounded(many.clone(), &tops, 4).len(), 4, "collapsed to the four directories");
        assert_eq!(bounded(many, &tops, 2), [p("/t/etc")], "never above the root");
    }
}
