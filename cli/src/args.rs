//! Command-line arguments.

use std::path::PathBuf;

use cairn_store::{Overwrite, SnapshotKind};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::choices;

/// The heading of the flags every command takes, apart from each command's own (issue 15
/// item 17: they were interleaved with them).
const GLOBAL: &str = "Global options";

/// cairn: deduplicated snapshots of service trees, restored by ID, scrubbed for rot.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    /// Repository path [default: $CAIRN_REPO, else the user's data directory, e.g.
    /// ~/.local/share/cairn/repo]
    #[arg(long, global = true, env = "CAIRN_REPO", value_name = "PATH", help_heading = GLOBAL)]
    pub repo: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Print nothing but errors
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
    /// Print more detail (each warning; each path a restore creates, overwrites or deletes)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// A service's kit: NAME.toml in $CAIRN_CONFIG_DIR, ~/.config/cairn or /etc/cairn (or a
    /// path): its repository, sources, tags, captures, hooks, components and retention
    #[arg(long, global = true, env = "CAIRN_PROFILE", value_name = "NAME|PATH", help_heading = GLOBAL)]
    pub profile: Option<String>,
    /// Write Prometheus metrics (node_exporter's textfile format) to this file after snapshot,
    /// copy, forget, gc, scrub or status: the repository's state, rewritten whole each time
    /// [default: the profile's monitoring.metrics_file]
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub metrics_file: Option<PathBuf>,
    /// The passphrase of an encrypted repository: the first line of this file
    /// (docs/ENCRYPTION.md); never given as an argument itself
    #[arg(long, global = true, env = "CAIRN_PASSWORD_FILE", value_name = "PATH", help_heading = GLOBAL)]
    pub password_file: Option<PathBuf>,
    /// The passphrase of an encrypted repository: the first line this command prints (run
    /// without a shell; for a secret manager)
    #[arg(long, global = true, env = "CAIRN_PASSWORD_COMMAND", value_name = "COMMAND", help_heading = GLOBAL)]
    pub password_command: Option<String>,
    /// For a repository in S3: the storage class new data packs go to (standard_ia,
    /// glacier_ir, glacier, deep_archive, ...; tree packs and every other object stay
    /// standard). Archive classes (glacier, deep_archive) must be restored before restore,
    /// scrub --read-data or gc can read them: see docs/S3.md
    #[arg(long, global = true, env = "CAIRN_S3_STORAGE_CLASS", value_name = "CLASS", help_heading = GLOBAL,
          value_parser = storage_class)]
    pub s3_storage_class: Option<String>,
    /// True when `repo` came from $CAIRN_REPO rather than --repo: a profile's `repo` then wins.
    #[arg(skip)]
    pub repo_from_env: bool,
    /// The command
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `Cli::parse` with what clap cannot say by itself: which cairn command does what another
    /// tool's name asks for, and that `cat --json` has nothing to print as JSON. Exits 2 (or 0
    /// for `--help` and `--version`) as clap does.
    pub fn parse_or_exit() -> Self {
        use clap::FromArgMatches;
        let matches = Self::command().try_get_matches().unwrap_or_else(|e| with_hint(e).exit());
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.repo_from_env = matches.value_source("repo") == Some(clap::parser::ValueSource::EnvVariable);
        if cli.json && matches!(cli.command, Command::Cat(_)) {
            // Accepted and ignored, --json would let a script parse a file's bytes as JSON.
            Self::command()
                .error(ErrorKind::ArgumentConflict, "`cat` prints file contents; --json does not apply")
                .exit();
        }
        cli
    }
}

/// The heading of the flags that narrow which snapshots a name picks.
const SELECT: &str = "Snapshot selection";

/// `--tag`, `--host`, `--path`: which snapshots `latest`, `--at`, a label or an ID prefix pick
/// among (and which a policy judges), the same on every command that names snapshots.
#[derive(Debug, Args, Default, Clone)]
pub struct SelectArgs {
    /// Only snapshots with this tag (repeatable: any of them); `--tag safety` lets `latest`
    /// and `--at` pick restores' safety snapshots, which they skip otherwise
    #[arg(long = "tag", id = "select_tag", value_name = "TAG", help_heading = SELECT)]
    pub tags: Vec<String>,
    /// Only snapshots of this host
    #[arg(long = "host", id = "select_host", value_name = "HOST", help_heading = SELECT)]
    pub host: Option<String>,
    /// Only snapshots that cover PATH: a source path at, above or below it (repeatable: any)
    #[arg(long = "path", id = "select_path", value_name = "PATH", help_heading = SELECT)]
    pub paths: Vec<PathBuf>,
}

/// Other tools' names (restic's, borg's) for what cairn calls otherwise.
const OTHER_NAMES: [(&str, &str); 4] =
    [("check", "scrub"), ("backup", "snapshot"), ("prune", "forget --gc` or `gc"), ("version", "--version")];

/// Adds to clap's "unrecognized subcommand" a tip naming cairn's command for it, when the name
/// is one another backup tool uses.
fn with_hint(mut err: clap::Error) -> clap::Error {
    if err.kind() != ErrorKind::InvalidSubcommand {
        return err;
    }
    let Some(ContextValue::String(name)) = err.get(ContextKind::InvalidSubcommand) else {
        return err;
    };
    if let Some((_, ours)) = OTHER_NAMES.iter().find(|(theirs, _)| theirs == name) {
        let tip = format!("cairn's command for this is `{ours}`");
        err.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![tip.into()]));
    }
    err
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository
    Init(InitArgs),
    /// Take a snapshot of one or more paths
    Snapshot(SnapshotArgs),
    /// List snapshots (with -q, only their full IDs, one per line)
    List(ListArgs),
    /// Restore a snapshot (or chosen paths of it)
    Restore(RestoreArgs),
    /// Show a snapshot's record, with the space only it uses
    Show(ShowArgs),
    /// Sizes, deduplication and compression of the repository or of snapshots
    Stats(StatsArgs),
    /// What changed between two snapshots, or since a snapshot (--live)
    Diff(DiffArgs),
    /// List the entries of a snapshot
    Ls(LsArgs),
    /// Find which snapshots hold a path or glob
    Find(FindArgs),
    /// The history of one file or directory across all snapshots
    Log(LogArgs),
    /// Write a file of a snapshot to stdout
    Cat(CatArgs),
    /// b3sum-style checksums of a snapshot's files (for `b3sum --check` in a restored tree)
    Manifest(ManifestArgs),
    /// Remove snapshots by ID, or by a keep-policy (space comes back with gc)
    Forget(ForgetArgs),
    /// Add or remove tags, set or remove the label, pin or unpin snapshots
    Tag(TagArgs),
    /// Delete data no snapshot needs any more, repacking partly used packs
    Gc(GcArgs),
    /// Check the repository: structure always, stored data with --read-data
    Scrub(ScrubArgs),
    /// Copy snapshots from another repository (a folder or an s3: bucket) into this one,
    /// sending only the data it lacks; they keep their IDs
    Copy(CopyArgs),
    /// How the backups are doing: newest snapshot, last runs and failures, scrub coverage,
    /// space; the profile's [monitoring] thresholds as alerts (exit code 9)
    Status(StatusArgs),
    /// Repair the repository
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Manage the key files of an encrypted repository (each one passphrase)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Run a profile as a service: install its systemd units and enable its timers
    #[command(subcommand)]
    Systemd(SystemdCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Write man pages (cairn.1, cairn-snapshot.1, ...) into a directory, for packaging
    #[command(hide = true)]
    Man(ManArgs),
}

/// `cairn key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key files: which is in use, which are put-only, their KDF parameters
    List,
    /// Add a key file: a new passphrase for the same repository, or a put-only key
    Add(KeyAddArgs),
    /// Remove a key file (never the last one, nor the last full one)
    Remove(KeyRemoveArgs),
    /// Change the passphrase of the key in use
    Passwd(KeyPasswdArgs),
}

/// How a new passphrase is stretched, and where it comes from.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// The new key's passphrase: the first line of this file [default: a prompt on the terminal]
    #[arg(long, env = "CAIRN_NEW_PASSWORD_FILE", value_name = "PATH")]
    pub new_password_file: Option<PathBuf>,
    /// Argon2id memory for the new key, MiB
    #[arg(long, default_value_t = choices::default_kdf_memory(), value_name = "MIB")]
    pub kdf_memory: u32,
    /// Argon2id passes for the new key
    #[arg(long, default_value_t = choices::default_kdf_time(), value_name = "N")]
    pub kdf_time: u32,
}

/// `cairn key add`
#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// A key that can add snapshots and cannot read, forget or collect anything stored (for
    /// an unattended job; docs/ENCRYPTION.md says what a stolen one gives)
    #[arg(long)]
    pub put_only: bool,
    #[command(flatten)]
    pub new: NewKeyArgs,
}

/// `cairn key remove`
#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// The key file's name, or a unique prefix of it (`cairn key list`)
    #[arg(value_name = "KEY")]
    pub key: String,
}

/// `cairn key passwd`
#[derive(Debug, Args)]
pub struct KeyPasswdArgs {
    #[command(flatten)]
    pub new: NewKeyArgs,
}

/// `cairn systemd ...`
#[derive(Debug, Subcommand)]
pub enum SystemdCommand {
    /// Write the units of dist/systemd (hourly snapshots, a daily forget + gc + budgeted scrub,
    /// a checkpoint at boot) for PROFILE, an env file for its settings and secrets, and enable
    /// them
    Install(SystemdInstallArgs),
}

/// `cairn systemd install`
#[derive(Debug, Args)]
pub struct SystemdInstallArgs {
    /// The profile (NAME.toml, looked for as --profile looks); it must exist
    #[arg(value_name = "PROFILE")]
    pub profile: String,
    /// Print every file it would write and every command it would run; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Where to write the unit files
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// Where the env file PROFILE.env goes (the units read it from there)
    #[arg(long, value_name = "DIR", default_value = "/etc/cairn")]
    pub env_dir: PathBuf,
    /// The cairn binary the units run [default: this one]
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
}

/// `cairn completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::aot::Shell,
}

/// `cairn man`
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `cairn scrub`
#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// Also read every stored chunk back and check it against its hash
    #[arg(long)]
    pub read_data: bool,
    /// Stop reading data after this long (e.g. 10m, 1h30m, 2d); packs verified longest ago go
    /// first, so successive runs cover the whole repository
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub max_duration: Option<std::time::Duration>,
    /// Stop reading data after this many bytes (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub max_bytes: Option<u64>,
    /// Limit the scrub to what this snapshot needs (ID, prefix, `latest` or label; repeatable)
    #[arg(long = "snapshot", value_name = "ID")]
    pub snapshots: Vec<String>,
}

/// `cairn copy`
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy (ID, prefix, `latest` or label, as the source names them); every
    /// snapshot of the source that the selection flags let through when none is given
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// The repository to copy from: a path, or s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]
    /// [default with a profile that names `offsite`: the profile's repository]
    #[arg(long, value_name = "REPO")]
    pub from: Option<PathBuf>,
    /// The repository to copy into [default: the profile's `offsite` when --from is not
    /// given, else the one every other command would use]
    #[arg(long, value_name = "REPO")]
    pub to: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn repair ...`
#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs and snapshot records (after it was lost or damaged)
    Index,
    /// Write a damaged config again from its copy, or make a new one when both are lost
    Config(RepairConfigArgs),
}

/// `cairn repair config`
#[derive(Debug, Args)]
pub struct RepairConfigArgs {
    /// The average chunk size the repository was made with (`init --chunk-size`); only used
    /// when both copies of the config are lost, and inferred from the packs when not given
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u32>,
    /// Target pack size for new data, when both copies are lost (help shows the store's default)
    #[arg(long, help = choices::repair_pack_size_help(), value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub pack_size: Option<u64>,
    /// zstd level for new data, when both copies are lost (help shows the store's default)
    #[arg(long, help = choices::repair_compression_help(), value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression: Option<i32>,
}

/// `cairn init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// zstd compression level for new data (1-19)
    #[arg(long, default_value_t = choices::default_compression(), value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression: i32,
    /// Average chunk size in bytes, a power of two from 1 KiB to 4 MiB (minimum is a quarter of
    /// it, maximum eight times it); fixed for the life of the repository
    #[arg(long, default_value_t = choices::default_chunk_size(), value_name = "BYTES")]
    pub chunk_size: u32,
    /// Target size of a pack file (e.g. 16M); smaller packs suit slow links and tests
    #[arg(long, default_value = choices::default_pack_size(), value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub pack_size: u64,
    /// Let the owner's group read the repository (files 0640, folders 0750); private otherwise
    #[arg(long)]
    pub group_readable: bool,
    /// Encrypt the repository (docs/ENCRYPTION.md); its first key's passphrase comes from
    /// --password-file, CAIRN_PASSWORD_FILE, --password-command or the terminal
    #[arg(long)]
    pub encrypt: bool,
    /// Argon2id memory for the first key, MiB (with --encrypt)
    #[arg(long, default_value_t = choices::default_kdf_memory(), value_name = "MIB", requires = "encrypt")]
    pub kdf_memory: u32,
    /// Argon2id passes for the first key (with --encrypt)
    #[arg(long, default_value_t = choices::default_kdf_time(), value_name = "N", requires = "encrypt")]
    pub kdf_time: u32,
}

/// `cairn snapshot`
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Files or directories to snapshot (with --profile: added to its sources)
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Which earlier snapshot to trust for change detection
    #[arg(long, value_parser = choices::choice(choices::KINDS), default_value = choices::default_kind())]
    pub kind: SnapshotKind,
    /// A label to restore by (e.g. before-upgrade)
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// A tag (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Leave out what matches GLOB: a pattern without '/' matches names anywhere, one with '/'
    /// matches absolute paths (repeatable)
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line ('#' starts a comment)
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Do not descend into other filesystems below the given paths
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Read and hash everything, store nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Record this host name instead of the machine's
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Pin the snapshot: no keep-policy removes it (`cairn tag --unpin` lets them)
    #[arg(long)]
    pub pin: bool,
    /// Trust this snapshot for change detection (ID, prefix, `latest` or label), whatever its
    /// paths
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Which earlier snapshots the parent is chosen among, the newest of them: those with the
    /// same host, paths, tags (any of them, comma-separated); `host` keeps change detection
    /// when the path list changes
    #[arg(long, default_value = choices::default_group_by(), value_name = "KEYS")]
    pub group_by: String,
    /// Leave out a path that does not exist, with a warning (exit code 3), instead of failing;
    /// the snapshot still fails when none exists
    #[arg(long)]
    pub ignore_missing: bool,
    /// Store COMMAND's output as the file /.cairn-captures/PATH of the snapshot
    /// (PATH=COMMAND, repeatable): COMMAND is split into words as a shell would, and run
    /// without one; a failure fails the snapshot
    #[arg(long = "capture", value_name = "PATH=COMMAND")]
    pub captures: Vec<String>,
    /// Kill a --capture command (with its whole process group) after this long
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::units::parse_duration)]
    pub capture_timeout: std::time::Duration,
    /// Store the standard input as the file /.cairn-captures/PATH of the snapshot (a pipe:
    /// `pg_dump db | cairn snapshot --stdin-name db.sql`)
    #[arg(long, value_name = "PATH")]
    pub stdin_name: Option<PathBuf>,
}

/// `cairn list`
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Only the newest N snapshots
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
}

/// `cairn restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot ID, unique ID prefix, `latest`, or label
    #[arg(value_name = "SNAPSHOT", required_unless_present = "at", conflicts_with = "at")]
    pub snapshot: Option<String>,
    /// Restore the newest snapshot taken at or before TIME (RFC 3339, or YYYY-MM-DD[THH:MM[:SS]]
    /// in local time)
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Directory to recreate the source paths under; `/` restores in place
    #[arg(long, short, value_name = "DIR")]
    pub target: PathBuf,
    /// Restore only the paths of this component of the profile (repeatable)
    #[arg(long = "component", value_name = "NAME")]
    pub components: Vec<String>,
    /// Restore only this path of the snapshot (absolute, as snapshotted; repeatable)
    #[arg(long = "include", short = 'i', value_name = "PATH")]
    pub includes: Vec<PathBuf>,
    /// Leave out what matches GLOB (repeatable)
    #[arg(long = "exclude", short = 'e', value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Re-read every written file and check it against its stored BLAKE3
    #[arg(long)]
    pub verify: bool,
    /// Report what would be written (with -v, each path created, overwritten or deleted),
    /// write nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// What to do with existing files
    #[arg(long, value_parser = choices::choice(choices::OVERWRITES), default_value = choices::default_overwrite())]
    pub overwrite: Overwrite,
    /// Do not snapshot the existing entries the restore overwrites or deletes, first
    #[arg(long)]
    pub no_safety_snapshot: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Delete what the snapshot does not have below the restored paths (not excluded names,
    /// nothing on another file system), so they become equal to the snapshot; with -v, each
    /// deleted path is listed
    #[arg(long)]
    pub delete: bool,
    /// Do not ask before an in-place restore on a terminal (off a terminal it never asks)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// When the profile's validate hooks fail, keep the restored state for inspection instead
    /// of rolling back to the safety snapshot (exit code 8)
    #[arg(long)]
    pub no_rollback: bool,
    /// Write the snapshot's captures too, as TARGET/.cairn-captures/... (left out otherwise,
    /// unless an --include names them)
    #[arg(long)]
    pub captures: bool,
}

/// `cairn forget`
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to remove (ID, prefix or label); or give a policy instead
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have snapshots
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// ... of each of the N newest days
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// ... of each of the N newest ISO weeks
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// ... of each of the N newest months
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// ... of each of the N newest years
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot no older than DURATION before the newest of its group (e.g. 2d, 36h)
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Keep snapshots with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Let forget remove pinned snapshots too, by policy or by ID (they are kept otherwise)
    #[arg(long, alias = "include-labeled")]
    pub include_pinned: bool,
    /// Keep the N newest safety snapshots of each host (restores' own; default 3 when no
    /// --keep-safety-* is given)
    #[arg(long, value_name = "N")]
    pub keep_safety_last: Option<u32>,
    /// Keep safety snapshots no older than DURATION before the newest of them (default 7d when
    /// no --keep-safety-* is given)
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub keep_safety_within: Option<std::time::Duration>,
    /// Group snapshots by these keys before applying the policy: host, paths, tags
    #[arg(long, default_value = choices::default_group_by(), value_name = "KEYS")]
    pub group_by: String,
    /// Apply a policy even if it removes every snapshot of a group
    #[arg(long)]
    pub allow_empty: bool,
    /// Show what would be removed; remove nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run gc afterwards (deferred, exit code 5, when another gc is running)
    #[arg(long)]
    pub gc: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn tag`
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Snapshots to change (ID, prefix, `latest` or label); every snapshot the selection
    /// flags let through when none is given
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Add this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    pub add: Vec<String>,
    /// Take this tag off (repeatable)
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeatable; give it once with an empty value to clear)
    #[arg(long, value_name = "TAG")]
    pub set: Vec<String>,
    /// Set the label (labels are unique: it must not name another snapshot)
    #[arg(long, value_name = "NAME", conflicts_with = "unlabel")]
    pub label: Option<String>,
    /// Take the label off
    #[arg(long)]
    pub unlabel: bool,
    /// Pin: no keep-policy removes it
    #[arg(long, conflicts_with = "unpin")]
    pub pin: bool,
    /// Unpin
    #[arg(long)]
    pub unpin: bool,
    /// Show what would change; change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn gc`
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Show what would be freed; change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Repack a pack when more than this percentage of it is unused
    #[arg(long, default_value_t = choices::default_max_unused(), value_name = "PERCENT")]
    pub max_unused: f64,
    /// Wait at most this long for snapshots running since before gc condemned data
    #[arg(long, default_value = choices::default_max_wait(), value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub max_wait: std::time::Duration,
}

/// `cairn show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Snapshot ID, prefix, `latest` or label
    pub snapshot: String,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only these snapshots (all when none)
    pub snapshots: Vec<String>,
}

/// `cairn diff`
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot
    pub a: String,
    /// The newer snapshot (with --live: the first path)
    #[arg(required_unless_present = "live")]
    pub b: Option<String>,
    /// Only below these paths (absolute, as snapshotted)
    pub paths: Vec<std::path::PathBuf>,
    /// Compare the snapshot with the files on disk now (below its source paths, or the paths
    /// given); nothing on disk is written
    #[arg(long)]
    pub live: bool,
    /// Exit 6 when differences were found, 0 when none (as `diff` and `git diff --exit-code`,
    /// but not 1, which is cairn's error); -q then prints nothing
    #[arg(long)]
    pub exit_code: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot ID, prefix, `latest` or label
    pub snapshot: String,
    /// Directory or file in the snapshot (default `/`)
    pub path: Option<std::path::PathBuf>,
    /// Type, mode, owner, size and mtime too
    #[arg(long, short)]
    pub long: bool,
    /// Everything below, not just one level
    #[arg(long, short = 'R')]
    pub recursive: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn find`
#[derive(Debug, Args)]
pub struct FindArgs {
    /// A glob: without '/' it matches names, with '/' absolute paths
    pub pattern: String,
    /// Only these snapshots (repeatable)
    #[arg(long = "snapshot", value_name = "ID")]
    pub snapshots: Vec<String>,
    /// Only the newest N snapshots
    #[arg(long, value_name = "N")]
    pub newest: Option<usize>,
}

/// `cairn log`
#[derive(Debug, Args)]
pub struct LogArgs {
    /// An absolute path, as snapshotted
    pub path: std::path::PathBuf,
}

/// `cairn cat`
#[derive(Debug, Args)]
pub struct CatArgs {
    /// Snapshot ID, prefix, `latest` or label
    pub snapshot: String,
    /// The file, absolute as snapshotted
    pub path: std::path::PathBuf,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn manifest`
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Snapshot ID, prefix, `latest` or label
    pub snapshot: String,
    /// Only below this path
    pub path: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `--s3-storage-class`: checked (and upper-cased) by the store's one list of classes.
fn storage_class(text: &str) -> Result<String, String> {
    cairn_store::parse_storage_class(text).map_err(|e| e.to_string())
}
