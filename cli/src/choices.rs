//! What the command line accepts for the store's enums and what it shows as defaults, all
//! taken from the store (its `Default`s and one table of names per enum), so that nothing here
//! is a second copy that must agree with the store. args.rs declares the flags with these;
//! lower.rs turns the parsed flags into store options.

use std::sync::LazyLock;

use cairn_store::{ChunkerParams, GcOptions, GroupBy, InitOptions, Overwrite, SnapshotKind};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

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
        help: "Trust the newest snapshot of its group (--group-by: host and paths) (unchanged files are not read)",
    },
    Choice {
        value: SnapshotKind::Differential,
        name: "differential",
        help: "Trust the newest full snapshot of its group (--group-by: host and paths)",
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

/// `--kdf-memory`'s default (MiB): the store's.
pub fn default_kdf_memory() -> u32 {
    cairn_store::KdfParams::default().memory_kib / 1024
}

/// `--kdf-time`'s default: the store's.
pub fn default_kdf_time() -> u32 {
    cairn_store::KdfParams::default().iterations
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

/// `--group-by`'s default (`forget` and `snapshot`): the store's usual grouping, written as the
/// flag reads it.
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
        assert_eq!(GroupBy::parse(default_group_by()).unwrap(), cairn_store::SnapshotOptions::default().group_by);
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
}
