//! Lowering: the command line's argument structs become the store's option structs here, and
//! only here. Every default the command line shows is taken from the store's own `Default`,
//! and the store's enums are parsed straight from their one table of command-line names, so
//! nothing here is a second copy that must agree with the store.

use anyhow::{bail, Context, Result};
use cairn_store::{
    read_exclude_file, Capture, ChunkerParams, ConfigRepair, GcOptions, GroupBy, InitOptions, KeepPolicy, OnFailure,
    OpenOptions, RestoreOptions, Retag, ScrubOptions, SnapshotFilter, SnapshotId, SnapshotOptions,
};

use crate::args::{
    ForgetArgs, GcArgs, InitArgs, RepairConfigArgs, RestoreArgs, ScrubArgs, SelectArgs, SnapshotArgs, TagArgs,
};
use crate::profile::{Profile, Retention};

/// For a command that only reads or adds.
pub fn open_options() -> OpenOptions {
    OpenOptions::default()
}

/// For a command that frees space (`forget`, `gc`): on a nearly full disk it may use the space
/// the repository keeps in reserve for that.
pub fn open_options_to_free_space() -> OpenOptions {
    let mut opts = OpenOptions::default();
    opts.use_reserve = true;
    opts
}

/// What the chunker accepts as an average chunk size.
fn chunk_size_ok(bytes: u32) -> bool {
    bytes.is_power_of_two() && (1024..=4 << 20).contains(&bytes)
}

/// `cairn init`.
pub fn init_options(args: &InitArgs) -> Result<InitOptions> {
    if !chunk_size_ok(args.chunk_size) {
        bail!("--chunk-size must be a power of two from 1024 to 4194304, not {}", args.chunk_size);
    }
    if !(64 << 10..=1 << 30).contains(&args.pack_size) {
        bail!("--pack-size must be between 64K and 1G");
    }
    let mut opts = InitOptions::default();
    opts.compression_level = args.compression;
    opts.pack_size = args.pack_size as u32;
    opts.group_readable = args.group_readable;
    opts.kdf = cairn_store::KdfParams::new(args.kdf_memory, args.kdf_time);
    opts.chunker =
        ChunkerParams { min_size: args.chunk_size / 4, avg_size: args.chunk_size, max_size: args.chunk_size * 8 };
    Ok(opts)
}

/// `cairn repair config`.
pub fn config_repair(args: &RepairConfigArgs) -> Result<ConfigRepair> {
    if args.chunk_size.is_some_and(|c| !chunk_size_ok(c)) {
        bail!("--chunk-size must be a power of two from 1024 to 4194304");
    }
    let mut opts = ConfigRepair::default();
    opts.chunk_size = args.chunk_size;
    opts.pack_size = args.pack_size.map(|p| u32::try_from(p).unwrap_or(u32::MAX));
    opts.compression_level = args.compression;
    Ok(opts)
}

/// `cairn snapshot`; reads the exclude files.
pub fn snapshot_options(args: &SnapshotArgs, profile: Option<&Profile>) -> Result<SnapshotOptions> {
    let mut opts = SnapshotOptions::new(args.paths.clone());
    opts.kind = args.kind;
    opts.label.clone_from(&args.label);
    opts.tags.clone_from(&args.tags);
    opts.excludes.clone_from(&args.excludes);
    let mut exclude_files = args.exclude_file.clone();
    if let Some(p) = profile {
        // The profile's sources first; paths given on the command line are added to them.
        opts.paths = p.sources.iter().chain(&args.paths).cloned().collect();
        opts.optional_paths.clone_from(&p.optional_sources);
        for t in &p.tags {
            if !opts.tags.contains(t) {
                opts.tags.push(t.clone());
            }
        }
        opts.excludes.extend(p.exclude.iter().cloned());
        exclude_files.extend(p.exclude_files.iter().cloned());
        opts.one_file_system = p.one_file_system;
        opts.host.clone_from(&p.host);
        if opts.label.is_none() {
            let host =
                p.host.clone().unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().into_owned());
            opts.label = p.label_now(&host);
        }
    }
    opts.captures = captures(args, profile)?;
    if opts.paths.is_empty() && opts.optional_paths.is_empty() && opts.captures.is_empty() {
        bail!("nothing to snapshot: give the paths, a --capture, --stdin-name, or a --profile with sources");
    }
    for f in &exclude_files {
        opts.excludes
            .extend(read_exclude_file(f).with_context(|| format!("cannot read exclude file {}", f.display()))?);
    }
    opts.one_file_system |= args.one_file_system;
    opts.dry_run = args.dry_run;
    if args.host.is_some() {
        opts.host.clone_from(&args.host);
    }
    opts.pin = args.pin;
    opts.parent.clone_from(&args.parent);
    opts.group_by = group_by(&args.group_by)?;
    opts.ignore_missing = args.ignore_missing;
    Ok(opts)
}

/// The captures of a snapshot: the profile's `[[capture]]` entries, then `--capture`, then
/// `--stdin-name`. A profile capture without a `timeout` gets `--capture-timeout`'s.
fn captures(args: &SnapshotArgs, profile: Option<&Profile>) -> Result<Vec<Capture>> {
    let mut out = Vec::new();
    for c in profile.map(|p| p.capture.as_slice()).unwrap_or_default() {
        let on_failure = match c.on_failure {
            crate::profile::OnFailure::Fail => OnFailure::Fail,
            crate::profile::OnFailure::Warn => OnFailure::Warn,
        };
        out.push(Capture::command(
            c.path.clone(),
            c.command.clone(),
            Some(c.timeout.unwrap_or(args.capture_timeout)),
            on_failure,
        ));
    }
    for spec in &args.captures {
        let Some((path, command)) = spec.split_once('=') else {
            bail!("--capture {spec:?}: give PATH=COMMAND, e.g. --capture env/pip-freeze.txt='pip freeze'");
        };
        let Some(argv) = shlex::split(command).filter(|a| !a.is_empty()) else {
            bail!("--capture {spec:?}: the command is empty or its quotes do not close");
        };
        out.push(Capture::command(path.into(), argv, Some(args.capture_timeout), OnFailure::Fail));
    }
    if let Some(p) = &args.stdin_name {
        out.push(Capture::stdin(p.clone()));
    }
    Ok(out)
}

/// `--tag`, `--host`, `--path` of any command that names snapshots. Paths are made absolute
/// (relative to the working directory), as snapshot sources are.
pub fn filter(args: &SelectArgs, profile: Option<&Profile>) -> Result<SnapshotFilter> {
    let mut f = SnapshotFilter::default();
    if let Some(p) = profile {
        // A profile's tags scope every name it is used with to its own snapshots.
        f.all_tags.clone_from(&p.tags);
    }
    f.tags.clone_from(&args.tags);
    f.host.clone_from(&args.host);
    // As snapshot sources are: relative to the working directory, `..` taken lexically.
    f.paths = args
        .paths
        .iter()
        .map(|p| std::path::absolute(p).map(|a| cairn_store::snapshot_path(&a)))
        .collect::<std::io::Result<_>>()?;
    Ok(f)
}

/// `cairn tag`.
pub fn retag(args: &TagArgs) -> Retag {
    let mut change = Retag::default();
    if !args.set.is_empty() {
        // `--set ''` clears the tags.
        change.set = Some(args.set.iter().filter(|t| !t.is_empty()).cloned().collect());
    }
    change.add.clone_from(&args.add);
    change.remove.clone_from(&args.remove);
    if let Some(l) = &args.label {
        change.label = Some(Some(l.clone()));
    } else if args.unlabel {
        change.label = Some(None);
    }
    if args.pin {
        change.pin = Some(true);
    } else if args.unpin {
        change.pin = Some(false);
    }
    change.dry_run = args.dry_run;
    change
}

/// `cairn restore`; `verbose` (`-v`) lists every path the restore changes.
pub fn restore_options(args: &RestoreArgs, verbose: bool, profile: Option<&Profile>) -> Result<RestoreOptions> {
    let mut opts = RestoreOptions::default();
    opts.target.clone_from(&args.target);
    opts.includes.clone_from(&args.includes);
    if !args.components.is_empty() {
        let Some(p) = profile else { bail!("--component needs a --profile that names components") };
        for name in &args.components {
            let Some(paths) = p.components.get(name) else {
                bail!(
                    "profile {} has no component {name:?} (it has: {})",
                    p.name,
                    p.components.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            };
            opts.includes.extend(paths.iter().cloned());
        }
    }
    if let Some(p) = profile {
        opts.safety_tags.clone_from(&p.tags);
    }
    opts.excludes.clone_from(&args.excludes);
    opts.verify = args.verify;
    opts.dry_run = args.dry_run;
    opts.overwrite = args.overwrite;
    opts.safety_snapshot = !args.no_safety_snapshot;
    opts.delete = args.delete;
    opts.list_changes = verbose;
    opts.captures = args.captures;
    Ok(opts)
}

/// `cairn scrub`, limited to `snapshots` (resolved from `--snapshot` by the caller, which has
/// the repository).
pub fn scrub_options(args: &ScrubArgs, snapshots: Vec<SnapshotId>) -> ScrubOptions {
    let mut opts = ScrubOptions::default();
    opts.read_data = args.read_data;
    opts.max_duration = args.max_duration;
    opts.max_bytes = args.max_bytes;
    opts.snapshots = snapshots;
    opts
}

/// `cairn gc`.
pub fn gc_options(args: &GcArgs) -> Result<GcOptions> {
    if !(0.0..=100.0).contains(&args.max_unused) {
        bail!("--max-unused is a percentage from 0 to 100");
    }
    let mut opts = GcOptions::default();
    opts.dry_run = args.dry_run;
    opts.max_unused = args.max_unused / 100.0;
    opts.max_wait = args.max_wait;
    Ok(opts)
}

/// The gc that `forget --gc` runs: `gc`'s defaults, dry when the forget is.
/// A dry run's gc counts the snapshots the forget would remove as gone, so that it estimates
/// what the real run frees rather than what gc frees today.
pub fn forget_gc_options(args: &ForgetArgs, removed: &[SnapshotId]) -> GcOptions {
    let mut opts = GcOptions::default();
    opts.dry_run = args.dry_run;
    if args.dry_run {
        opts.assume_forgotten = removed.to_vec();
    }
    opts
}

/// `cairn forget`'s keep-policy: the rules on the command line, or, when there are none and
/// no IDs, the profile's `[retention]` (with `--keep-safety-*` still taking precedence).
pub fn keep_policy(args: &ForgetArgs, profile: Option<&Profile>) -> KeepPolicy {
    let given = Retention {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within: args.keep_within,
        keep_tags: args.keep_tags.clone(),
        keep_safety_last: args.keep_safety_last,
        keep_safety_within: args.keep_safety_within,
    };
    let none_given = [
        given.keep_last,
        given.keep_hourly,
        given.keep_daily,
        given.keep_weekly,
        given.keep_monthly,
        given.keep_yearly,
    ]
    .iter()
    .all(Option::is_none)
        && given.keep_within.is_none()
        && given.keep_tags.is_empty();
    let r = match profile.and_then(|p| p.retention.as_ref()) {
        Some(r) if none_given && args.ids.is_empty() => Retention {
            keep_safety_last: given.keep_safety_last.or(r.keep_safety_last),
            keep_safety_within: given.keep_safety_within.or(r.keep_safety_within),
            ..r.clone()
        },
        _ => given,
    };
    let mut policy = KeepPolicy::default();
    policy.last = r.keep_last;
    policy.hourly = r.keep_hourly;
    policy.daily = r.keep_daily;
    policy.weekly = r.keep_weekly;
    policy.monthly = r.keep_monthly;
    policy.yearly = r.keep_yearly;
    policy.within = r.keep_within;
    policy.tags = r.keep_tags;
    policy.include_pinned = args.include_pinned;
    policy.safety_last = r.keep_safety_last;
    policy.safety_within = r.keep_safety_within;
    policy
}

/// `--group-by` of `snapshot` and `forget`. `forget` reads it only when a policy is applied,
/// so a bad value given beside snapshot IDs stays harmless, as it always was.
pub fn group_by(keys: &str) -> Result<GroupBy> {
    GroupBy::parse(keys).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert!(chunk_size_ok(1024) && chunk_size_ok(4 << 20) && chunk_size_ok(4096));
        assert!(!chunk_size_ok(512) && !chunk_size_ok(8 << 20) && !chunk_size_ok(5000));
    }
}
