//! Lowering: the command line's argument structs become the store's option structs here, and
//! only here. Every default the command line shows is taken from the store's own `Default`,
//! and the store's enums are parsed straight from their one table of command-line names, so
//! nothing here is a second copy that must agree with the store.

use std::sync::LazyLock;

use anyhow::{bail, Context, Result};
use cairn_store::{
    read_exclude_file, ChunkerParams, ConfigRepair, GcOptions, GroupBy, InitOptions, KeepPolicy, OpenOptions,
    Overwrite, RestoreOptions, ScrubOptions, SnapshotId, SnapshotKind, SnapshotOptions,
};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::args::{ForgetArgs, GcArgs, InitArgs, RepairConfigArgs, RestoreArgs, ScrubArgs, SnapshotArgs};
use crate::units;

/// One value of a store enum as the command line spells and explains it.
pub struct Choice<T: 'static> {
    value: T,
    name: &'static str,
    help: &'static str,
}

/// `snapshot --kind`.
pub static KINDS: &[Choice<SnapshotKind>] = &[
    Choice {
        value: SnapshotKind::Incremental,
        name: "incremental",
        help: "Trust the newest snapshot of the same host and paths (unchanged files are not read)",
    },
    Choice {
        value: SnapshotKind::Differential,
        name: "differential",
        help: "Trust the newest full snapshot of the same host and paths",
    },
    Choice { value: SnapshotKind::Full, name: "full", help: "Read every byte again" },
];

/// `restore --overwrite`.
pub static OVERWRITES: &[Choice<Overwrite>] = &[
    Choice { value: Overwrite::Never, name: "never", help: "Leave existing files alone" },
    Choice { value: Overwrite::IfChanged, name: "if-changed", help: "Replace existing files whose content differs" },
    Choice { value: Overwrite::Always, name: "always", help: "Replace every existing file" },
];

/// A clap parser that accepts the names of `table` (listing them, with their help, in
/// `--help`) and yields the store's value.
pub fn choice<T: Copy + Send + Sync + 'static>(table: &'static [Choice<T>]) -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(table.iter().map(|c| PossibleValue::new(c.name).help(c.help))).try_map(
        move |name: String| {
            // The possible values were checked by clap before this runs.
            table.iter().find(|c| c.name == name).map(|c| c.value).ok_or_else(|| format!("unknown value {name:?}"))
        },
    )
}

/// The command-line name of `value` (for a default shown in `--help`).
pub fn name<T: PartialEq>(table: &'static [Choice<T>], value: &T) -> &'static str {
    table.iter().find(|c| c.value == *value).map_or("", |c| c.name)
}

/// `snapshot --kind`'s default: the store's.
pub fn default_kind() -> &'static str {
    name(KINDS, &SnapshotKind::default())
}

/// `restore --overwrite`'s default: the store's.
pub fn default_overwrite() -> &'static str {
    name(OVERWRITES, &Overwrite::default())
}

/// `init --compression`'s default: the store's.
pub fn default_compression() -> i32 {
    InitOptions::default().compression_level
}

/// `init --chunk-size`'s default: the store's average chunk size.
pub fn default_chunk_size() -> u32 {
    ChunkerParams::default().avg_size
}

/// `init --pack-size`'s default, written as the flag reads it (16M).
pub fn default_pack_size() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| units::format_size(u64::from(InitOptions::default().pack_size)));
    TEXT.as_str()
}

/// `repair config --pack-size`'s help: the flag is optional (the store decides when it is not
/// given), so its default can only be told, not set.
pub fn repair_pack_size_help() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        format!("Target pack size for new data, when both copies are lost [default: {}]", default_pack_size())
    });
    TEXT.as_str()
}

/// `repair config --compression`'s help (see [`repair_pack_size_help`]).
pub fn repair_compression_help() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        format!("zstd level for new data, when both copies are lost [default: {}]", default_compression())
    });
    TEXT.as_str()
}

/// `gc --max-unused`'s default: the store's share, as a percentage.
pub fn default_max_unused() -> f64 {
    GcOptions::default().max_unused * 100.0
}

/// `gc --max-wait`'s default: the store's, written as the flag reads it (10m).
pub fn default_max_wait() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| units::format_duration(GcOptions::default().max_wait));
    TEXT.as_str()
}

/// `forget --group-by`'s default: the store's usual grouping, written as the flag reads it.
pub fn default_group_by() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| group_by_text(GroupBy::host_and_paths()));
    TEXT.as_str()
}

/// The keys of `g` as `--group-by` reads them (`GroupBy::parse`).
fn group_by_text(g: GroupBy) -> String {
    [(g.host, "host"), (g.paths, "paths"), (g.tags, "tags")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, key)| *key)
        .collect::<Vec<_>>()
        .join(",")
}

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
pub fn snapshot_options(args: &SnapshotArgs) -> Result<SnapshotOptions> {
    let mut opts = SnapshotOptions::new(args.paths.clone());
    opts.kind = args.kind;
    opts.label.clone_from(&args.label);
    opts.tags.clone_from(&args.tags);
    opts.excludes.clone_from(&args.excludes);
    for f in &args.exclude_file {
        opts.excludes
            .extend(read_exclude_file(f).with_context(|| format!("cannot read exclude file {}", f.display()))?);
    }
    opts.one_file_system = args.one_file_system;
    opts.dry_run = args.dry_run;
    opts.host.clone_from(&args.host);
    Ok(opts)
}

/// `cairn restore`.
pub fn restore_options(args: &RestoreArgs) -> RestoreOptions {
    let mut opts = RestoreOptions::default();
    opts.target.clone_from(&args.target);
    opts.includes.clone_from(&args.includes);
    opts.excludes.clone_from(&args.excludes);
    opts.verify = args.verify;
    opts.dry_run = args.dry_run;
    opts.overwrite = args.overwrite;
    opts.safety_snapshot = !args.no_safety_snapshot;
    opts
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
pub fn forget_gc_options(args: &ForgetArgs) -> GcOptions {
    let mut opts = GcOptions::default();
    opts.dry_run = args.dry_run;
    opts
}

/// `cairn forget`'s keep-policy.
pub fn keep_policy(args: &ForgetArgs) -> KeepPolicy {
    let mut policy = KeepPolicy::default();
    policy.last = args.keep_last;
    policy.hourly = args.keep_hourly;
    policy.daily = args.keep_daily;
    policy.weekly = args.keep_weekly;
    policy.monthly = args.keep_monthly;
    policy.yearly = args.keep_yearly;
    policy.within = args.keep_within;
    policy.tags.clone_from(&args.keep_tags);
    policy.include_labeled = args.include_labeled;
    policy
}

/// `forget --group-by`. Read only when a policy is applied, so a bad value given beside
/// snapshot IDs stays harmless, as it always was.
pub fn group_by(args: &ForgetArgs) -> Result<GroupBy> {
    GroupBy::parse(&args.group_by).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line accepts the names `--json` prints, for every value of the enum.
    fn check_table<T: Copy + PartialEq + serde::Serialize>(table: &'static [Choice<T>], all: &[T]) {
        assert_eq!(table.len(), all.len());
        for v in all {
            let n = name(table, v);
            assert_eq!(serde_json::to_value(v).unwrap(), n, "the table's name is the store's serialised one");
        }
    }

    #[test]
    fn every_snapshot_kind_has_its_store_name() {
        let all = [SnapshotKind::Incremental, SnapshotKind::Differential, SnapshotKind::Full];
        // Fails to compile when the store adds a kind: the table must learn it too.
        for k in all {
            match k {
                SnapshotKind::Incremental | SnapshotKind::Differential | SnapshotKind::Full => {}
            }
        }
        check_table(KINDS, &all);
    }

    #[test]
    fn every_overwrite_policy_has_its_store_name() {
        let all = [Overwrite::Never, Overwrite::IfChanged, Overwrite::Always];
        for o in all {
            match o {
                Overwrite::Never | Overwrite::IfChanged | Overwrite::Always => {}
            }
        }
        check_table(OVERWRITES, &all);
    }

    #[test]
    fn shown_defaults_read_back_as_the_store_defaults() {
        assert_eq!(
            u32::try_from(units::parse_size(default_pack_size()).unwrap()).unwrap(),
            InitOptions::default().pack_size
        );
        assert_eq!(units::parse_duration(default_max_wait()).unwrap(), GcOptions::default().max_wait);
        assert_eq!(GroupBy::parse(default_group_by()).unwrap(), GroupBy::host_and_paths());
        assert_eq!(default_max_unused() / 100.0, GcOptions::default().max_unused);
        assert_eq!(default_kind(), "incremental");
        assert_eq!(default_overwrite(), "if-changed");
    }

    #[test]
    fn group_by_text_names_each_key() {
        let mut g = GroupBy::default();
        assert_eq!(group_by_text(g), "");
        g.tags = true;
        assert_eq!(group_by_text(g), "tags");
        g.host = true;
        assert_eq!(GroupBy::parse(&group_by_text(g)).unwrap(), g);
    }

    #[test]
    fn chunk_sizes() {
        assert!(chunk_size_ok(1024) && chunk_size_ok(4 << 20) && chunk_size_ok(4096));
        assert!(!chunk_size_ok(512) && !chunk_size_ok(8 << 20) && !chunk_size_ok(5000));
    }
}
