//! Profiles: a service's checkpoint kit as a file (issue 18). `--profile NAME|PATH` reads
//! `NAME.toml` from `$CAIRN_CONFIG_DIR`, then `~/.config/cairn/`, then `/etc/cairn/`; a value
//! with a `/` or ending in `.toml` is a path. Unknown keys are errors that name their line and
//! column, so a typo never silently drops a source or a hook.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

/// The newest profile schema this build reads.
pub const PROFILE_VERSION: u32 = 1;

/// A profile file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The name it was found by (the file's stem).
    #[serde(skip_deserializing)]
    pub name: String,
    /// The file it was read from.
    #[serde(skip_deserializing)]
    pub file: PathBuf,
    /// Schema version (1 when left out); a newer one is refused.
    #[serde(default = "one")]
    pub version: u32,
    /// The repository (else `--repo`, `$CAIRN_REPO`, the default).
    pub repo: Option<String>,
    /// The off-site repository (a bucket, `s3:...`, or a path) that `cairn copy --profile`
    /// copies the profile's snapshots to.
    pub offsite: Option<String>,
    /// The passphrase of an encrypted repository: the first line of this file (as
    /// `--password-file`, which wins; docs/ENCRYPTION.md). For an unattended job, a put-only
    /// key's.
    pub password_file: Option<PathBuf>,
    /// The passphrase as the first line a command prints (as `--password-command`).
    pub password_command: Option<String>,
    /// Tags added to every snapshot of the profile; they also scope `forget`, `list` and
    /// `restore` to the profile's snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Label template: `{profile}`, `{utc}` (20261205T031500Z), `{host}`.
    pub label: Option<String>,
    /// Paths to snapshot.
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    /// Paths snapshotted when they exist, left out with a note when not.
    #[serde(default)]
    pub optional_sources: Vec<PathBuf>,
    /// Exclude patterns (as `--exclude`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Files of exclude patterns (as `--exclude-file`).
    #[serde(default)]
    pub exclude_files: Vec<PathBuf>,
    /// As `--one-file-system`.
    #[serde(default)]
    pub one_file_system: bool,
    /// Host name to record.
    pub host: Option<String>,
    /// Commands whose output is stored as files in the snapshot.
    #[serde(default)]
    pub capture: Vec<Capture>,
    /// Commands run around snapshot and restore.
    #[serde(default)]
    pub hooks: Hooks,
    /// Named parts, restored alone with `restore --component NAME`.
    #[serde(default)]
    pub components: BTreeMap<String, Vec<PathBuf>>,
    /// What `forget --profile` keeps.
    pub retention: Option<Retention>,
    /// Thresholds `status` turns into alerts, and where metrics go.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Credentials and region for a repository in a bucket (`repo = "s3:..."`).
    #[serde(default)]
    pub s3: S3Settings,
}

/// The `[s3]` table: what `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `CAIRN_S3_REGION`
/// say otherwise. A profile's value wins over the environment's, as its `repo` wins over
/// `$CAIRN_REPO`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The access key's ID.
    pub access_key_id: Option<String>,
    /// The secret, written in the profile (which should then be readable by its owner only).
    pub secret_access_key: Option<String>,
    /// A file holding the secret (its first line), so the profile itself can be shared.
    pub secret_access_key_file: Option<PathBuf>,
    /// The region the server expects (`garage` for Garage's default configuration).
    pub region: Option<String>,
}

impl S3Settings {
    /// Puts the profile's settings where the S3 backend reads them (the process environment).
    /// Called once, at the start of a run, before any thread exists.
    pub fn apply(&self, profile: &Path) -> Result<()> {
        if let Some(id) = &self.access_key_id {
            std::env::set_var("AWS_ACCESS_KEY_ID", id);
        }
        if let Some(secret) = &self.secret_access_key {
            warn_if_others_can_read(profile, "the profile holds s3.secret_access_key");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", secret);
        }
        if let Some(file) = &self.secret_access_key_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read s3.secret_access_key_file {}", file.display()))?;
            let secret = text.lines().next().unwrap_or("").trim();
            if secret.is_empty() {
                bail!("s3.secret_access_key_file {} is empty", file.display());
            }
            warn_if_others_can_read(file, "it holds the S3 secret key");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", secret);
        }
        if let Some(region) = &self.region {
            std::env::set_var("CAIRN_S3_REGION", region);
        }
        Ok(())
    }
}

fn warn_if_others_can_read(file: &Path, why: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        if meta.permissions().mode() & 0o044 != 0 {
            log::warn!("{} can be read by other users, and {why}: chmod 600 it", file.display());
        }
    }
}

fn one() -> u32 {
    1
}

/// What a failing capture does to the snapshot.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// No snapshot; exit 1.
    #[default]
    Fail,
    /// The snapshot is kept with the failure recorded; exit 3.
    Warn,
}

/// A command's output stored as a file in the snapshot.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// Where it appears among the snapshot's captures (relative, no `..`).
    pub path: PathBuf,
    /// argv; no shell unless written as `["sh", "-c", "..."]`.
    pub command: Vec<String>,
    /// Killed (its whole process group) after this long.
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub timeout: Option<Duration>,
    /// What a failure does.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// Commands run around snapshot and restore, each an argv list, in order.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before the snapshot; a failure aborts it (after_snapshot and on_error still run).
    #[serde(default)]
    pub before_snapshot: Vec<Vec<String>>,
    /// After the snapshot, whether it succeeded or not.
    #[serde(default)]
    pub after_snapshot: Vec<Vec<String>>,
    /// Before an in-place restore.
    #[serde(default)]
    pub before_restore: Vec<Vec<String>>,
    /// After the restore (and again after a rollback).
    #[serde(default)]
    pub after_restore: Vec<Vec<String>>,
    /// After after_restore: a failure rolls the restore back.
    #[serde(default)]
    pub validate: Vec<Vec<String>>,
    /// When anything failed.
    #[serde(default)]
    pub on_error: Vec<Vec<String>>,
    /// Each hook is killed after this long (default 5 minutes).
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub timeout: Option<Duration>,
}

/// A keep-policy, with `forget`'s names.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub keep_within: Option<Duration>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    pub keep_safety_last: Option<u32>,
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub keep_safety_within: Option<Duration>,
}

/// `[monitoring]`: what `cairn status` calls an alert, and the Prometheus textfile.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// The newest snapshot older than this is an alert (no snapshot at all is one too).
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub max_age: Option<Duration>,
    /// The newest snapshot's logical size below this is an alert (a source that vanished).
    #[serde(default, deserialize_with = "size")]
    pub min_size: Option<u64>,
    /// The newest snapshot's new data above this is an alert (a mass change): a share of its
    /// size (`"50%"`) or a size (`"2G"`).
    #[serde(default, deserialize_with = "growth")]
    pub max_growth: Option<Growth>,
    /// The last scrub older than this (or none) is an alert.
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub max_scrub_age: Option<Duration>,
    /// The last successful `copy` (the off-site copy) older than this (or none) is an alert.
    #[serde(default, deserialize_with = "duration", serialize_with = "ser_duration")]
    pub max_copy_age: Option<Duration>,
    /// The node_exporter textfile every snapshot, copy, forget, gc, scrub and status of the profile
    /// rewrites (as `--metrics-file`).
    pub metrics_file: Option<PathBuf>,
}

/// `max_growth`: relative to the snapshot's size, or absolute.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Growth {
    /// Percent of the newest snapshot's logical size.
    Percent(f64),
    /// Bytes.
    Bytes(u64),
}

impl Growth {
    /// Reads `50%` or a size (`500M`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| p.is_finite() && *p >= 0.0)
                .map(Growth::Percent)
                .ok_or_else(|| format!("cannot read {text:?} as a percentage (like 50%)")),
            None => crate::units::parse_size(text).map(Growth::Bytes),
        }
    }

    /// The limit in bytes for a snapshot of `size` bytes.
    pub fn limit(self, size: u64) -> u64 {
        match self {
            Growth::Percent(p) => (size as f64 * p / 100.0) as u64,
            Growth::Bytes(b) => b,
        }
    }
}

impl std::fmt::Display for Growth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Growth::Percent(p) => write!(f, "{p}%"),
            Growth::Bytes(b) => write!(f, "{}", crate::output::size(*b)),
        }
    }
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    crate::units::parse_size(&text).map(Some).map_err(serde::de::Error::custom)
}

fn growth<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Growth>, D::Error> {
    let text = String::deserialize(d)?;
    Growth::parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    crate::units::parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

fn ser_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{}s", d.as_secs())),
        None => s.serialize_none(),
    }
}

/// Where a profile NAME is looked for, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("CAIRN_CONFIG_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = dirs::config_dir() {
        dirs.push(d.join("cairn"));
    }
    dirs.push(PathBuf::from("/etc/cairn"));
    dirs
}

/// Finds and reads a profile by name or path.
pub fn load(spec: &str) -> Result<Profile> {
    let file = if spec.contains('/') || spec.ends_with(".toml") {
        PathBuf::from(spec)
    } else {
        let dirs = search_dirs();
        match dirs.iter().map(|d| d.join(format!("{spec}.toml"))).find(|f| f.exists()) {
            Some(f) => f,
            None => bail!(
                "no profile {spec:?}: looked for {spec}.toml in {}",
                dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read profile {}", file.display()))?;
    let mut p = parse(&text).with_context(|| format!("profile {}", file.display()))?;
    p.name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    p.file = file;
    Ok(p)
}

/// Parses and checks a profile's text.
pub fn parse(text: &str) -> Result<Profile> {
    // toml's errors carry the line and column, and the offending line.
    let p: Profile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    if p.version > PROFILE_VERSION {
        bail!("profile version {} is newer than this cairn reads ({PROFILE_VERSION}); upgrade cairn", p.version);
    }
    for (i, c) in p.capture.iter().enumerate() {
        if c.command.is_empty() {
            bail!("capture {} ({}) has an empty command", i + 1, c.path.display());
        }
        check_capture_path(&c.path)?;
    }
    for (phase, list) in p.hooks.phases() {
        if list.iter().any(Vec::is_empty) {
            bail!("a hook in hooks.{phase} is an empty command");
        }
    }
    for (name, paths) in &p.components {
        if paths.is_empty() {
            bail!("component {name:?} has no paths");
        }
    }
    if p.s3.secret_access_key.is_some() && p.s3.secret_access_key_file.is_some() {
        bail!("s3: give secret_access_key or secret_access_key_file, not both");
    }
    Ok(p)
}

fn check_capture_path(p: &Path) -> Result<()> {
    use std::path::Component;
    if p.as_os_str().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("capture path {:?} must be relative, without `..` or `.`", p.display().to_string());
    }
    Ok(())
}

impl Hooks {
    /// Each phase's name and list, in the file's names.
    pub fn phases(&self) -> [(&'static str, &Vec<Vec<String>>); 6] {
        [
            ("before_snapshot", &self.before_snapshot),
            ("after_snapshot", &self.after_snapshot),
            ("before_restore", &self.before_restore),
            ("after_restore", &self.after_restore),
            ("validate", &self.validate),
            ("on_error", &self.on_error),
        ]
    }
}

impl Profile {
    /// The names of the components `s` holds: those each of whose paths is at or below one of
    /// its source paths.
    pub fn components_of(&self, s: &cairn_store::Snapshot) -> Vec<String> {
        use std::os::unix::ffi::OsStrExt;
        let sources: Vec<&Path> = s.record.paths.iter().map(|p| Path::new(std::ffi::OsStr::from_bytes(p))).collect();
        self.components
            .iter()
            .filter(|(_, paths)| paths.iter().all(|c| sources.iter().any(|src| c.starts_with(src))))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The label for a snapshot taken now, from the template.
    pub fn label_now(&self, host: &str) -> Option<String> {
        let utc = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        self.label.as_ref().map(|t| t.replace("{profile}", &self.name).replace("{utc}", &utc).replace("{host}", host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses() {
        let p = parse(
            r#"
repo = "/var/backups/cairn"
tags = ["gateway"]
label = "{profile}-{utc}"
sources = ["/etc/hx", "/opt/hx/scripts"]
exclude = ["*.tmp"]

[[capture]]
path = "env/pip-freeze.txt"
command = ["pip", "freeze"]
timeout = "60s"
on_failure = "warn"

[hooks]
before_snapshot = [["systemctl", "stop", "hx-gateway"]]
validate = [["/opt/hx/scripts/validate.sh"]]

[components]
config = ["/etc/hx"]

[retention]
keep_last = 10
keep_daily = 7

[monitoring]
max_age = "2h"
min_size = "1M"
max_growth = "50%"
max_scrub_age = "7d"
metrics_file = "/var/lib/prometheus/node-exporter/cairn-hx.prom"
"#,
        )
        .unwrap();
        assert_eq!(p.capture[0].timeout, Some(Duration::from_secs(60)));
        assert_eq!(p.capture[0].on_failure, OnFailure::Warn);
        assert_eq!(p.retention.unwrap().keep_last, Some(10));
        assert_eq!(p.components["config"], vec![PathBuf::from("/etc/hx")]);
        let m = &p.monitoring;
        assert_eq!(m.max_age, Some(Duration::from_secs(7200)));
        assert_eq!(m.min_size, Some(1 << 20));
        assert_eq!(m.max_growth, Some(Growth::Percent(50.0)));
        assert_eq!(m.max_scrub_age, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(Growth::parse("2G"), Ok(Growth::Bytes(2 << 30)));
        assert!(Growth::parse("-5%").is_err());
    }

    #[test]
    fn an_unknown_key_names_its_line_and_column() {
        let e = parse("tags = [\"a\"]\n\n[hooks]\nbefore_snapshto = [[\"x\"]]\n").unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("column 1") && e.contains("before_snapshto"), "{e}");
    }
}
