//! Prometheus metrics in node_exporter's textfile format (issue 19), rendered from what
//! `status` found, so the file and `cairn status` never disagree. Every command that writes it
//! (snapshot, copy, forget, gc, scrub, status) rewrites the whole file from the repository's state
//! and run log; nothing is accumulated in the file itself.
//!
//! All metrics are gauges (none counts up over the life of a process), named with their unit
//! (`_seconds`, `_bytes`, `_ratio`), times as Unix seconds (`_timestamp_seconds`), and carry a
//! `profile` label (empty without a profile), so the files of several profiles of one host can
//! sit side by side in the collector's directory without clashing.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::{Status, RECORDED};

/// A metric family being written: its samples follow its HELP and TYPE lines.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = writeln!(self.text, "{name}{{{}}} {}", labels.join(","), number(*value));
        }
    }
}

/// A label value as the exposition format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

/// The metrics text for `s`; `profile` labels the repository-wide families.
pub fn render(s: &Status, profile: &str) -> String {
    let mut out = Out { text: String::new() };
    let p = || vec![("profile", profile)];
    out.family("cairn_status_timestamp_seconds", "When cairn last wrote this file.", &[(p(), s.time_secs as f64)]);
    out.family(
        "cairn_status_alerts",
        "Alerts cairn status raised (the profile's [monitoring] thresholds, failed runs, scrub damage).",
        &[(p(), s.alerts.len() as f64)],
    );
    out.family("cairn_repository_size_bytes", "Pack files and index.", &[(p(), s.repository_size as f64)]);
    if let Some(free) = s.free_space {
        out.family("cairn_repository_free_bytes", "Free space on the repository's disk.", &[(p(), free as f64)]);
    }
    out.family("cairn_repository_snapshots", "Snapshots in the repository.", &[(p(), s.snapshots as f64)]);

    let groups: Vec<_> = s.groups.iter().map(|g| (vec![("profile", profile), ("group", g.name.as_str())], g)).collect();
    let per_group = |f: &dyn Fn(&super::Group) -> Option<f64>| -> Vec<(Vec<(&str, &str)>, f64)> {
        groups.iter().filter_map(|(l, g)| f(g).map(|v| (l.clone(), v))).collect()
    };
    out.family("cairn_group_snapshots", "Snapshots of the group.", &per_group(&|g| Some(g.snapshots as f64)));
    out.family(
        "cairn_snapshot_newest_timestamp_seconds",
        "When the group's newest snapshot was taken.",
        &per_group(&|g| g.newest.as_ref().map(|n| secs(n.time_ns))),
    );
    out.family(
        "cairn_snapshot_size_bytes",
        "Logical size of the group's newest snapshot (what restoring it writes).",
        &per_group(&|g| g.newest.as_ref().map(|n| n.size as f64)),
    );
    out.family(
        "cairn_snapshot_data_added_bytes",
        "New data the group's newest snapshot added, before compression.",
        &per_group(&|g| g.newest.as_ref().map(|n| n.data_added as f64)),
    );
    out.family(
        "cairn_snapshot_data_stored_bytes",
        "What the newest snapshot's new data took stored.",
        &per_group(&|g| g.newest.as_ref().map(|n| n.data_stored as f64)),
    );
    out.family(
        "cairn_snapshot_warnings",
        "Files the group's newest snapshot could not read.",
        &per_group(&|g| g.newest.as_ref().map(|n| n.warnings as f64)),
    );
    let mut files = Vec::new();
    for (l, g) in &groups {
        if let Some(n) = &g.newest {
            for (state, v) in [("new", n.files_new), ("changed", n.files_changed), ("unchanged", n.files_unchanged)] {
                let mut l = l.clone();
                l.push(("state", state));
                files.push((l, v as f64));
            }
        }
    }
    out.family("cairn_snapshot_files", "Files of the group's newest snapshot, by state.", &files);
    out.family(
        "cairn_snapshot_max_age_seconds",
        "The profile's monitoring.max_age.",
        &per_group(&|g| g.thresholds.max_age_secs.map(|v| v as f64)),
    );
    out.family(
        "cairn_snapshot_min_size_bytes",
        "The profile's monitoring.min_size.",
        &per_group(&|g| g.thresholds.min_size.map(|v| v as f64)),
    );

    for command in RECORDED {
        let runs: Vec<_> = s.runs.iter().filter(|r| r.command == command).collect();
        let fam = |f: &dyn Fn(&super::Runs) -> Option<f64>| -> Vec<(Vec<(&str, &str)>, f64)> {
            runs.iter()
                .filter_map(|r| f(r).map(|v| (vec![("profile", r.profile.as_deref().unwrap_or(""))], v)))
                .collect()
        };
        out.family(
            &format!("cairn_{command}_last_run_timestamp_seconds"),
            &format!("When the last {command} started."),
            &fam(&|r| Some(secs(r.last.outcome.start_ns))),
        );
        out.family(
            &format!("cairn_{command}_last_success_timestamp_seconds"),
            &format!("When the last successful {command} started."),
            &fam(&|r| r.last_success.as_ref().map(|v| secs(v.outcome.start_ns))),
        );
        out.family(
            &format!("cairn_{command}_last_exit_code"),
            &format!("The exit code of the last {command} (0 success, 3 warnings, 4 damage; README)."),
            &fam(&|r| Some(f64::from(r.last.outcome.exit_code))),
        );
        out.family(
            &format!("cairn_{command}_last_duration_seconds"),
            &format!("How long the last {command} ran."),
            &fam(&|r| Some(r.last.outcome.duration_secs)),
        );
    }

    let sc = &s.scrub;
    out.family(
        "cairn_scrub_damaged_objects",
        "Damaged or missing objects the last scrub found.",
        &[(p(), sc.damage as f64)],
    );
    out.family(
        "cairn_scrub_coverage_ratio",
        "Share of the packs read back and verified within the scrub window.",
        &[(p(), sc.coverage)],
    );
    out.family(
        "cairn_scrub_window_seconds",
        "The window scrub coverage is counted over.",
        &[(p(), sc.window_secs as f64)],
    );
    out.family(
        "cairn_scrub_packs_never_verified",
        "Packs never read back by a scrub.",
        &[(p(), sc.packs_never_verified as f64)],
    );
    if let Some(age) = sc.oldest_verification_age_secs {
        out.family(
            "cairn_scrub_oldest_verification_timestamp_seconds",
            "When the pack verified longest ago was verified.",
            &[(p(), (s.time_secs - i64::try_from(age).unwrap_or(0)) as f64)],
        );
    }
    out.text
}

/// Writes the metrics of `s` to `path` atomically: a temporary file in the same directory
/// whose name does not end in `.prom` (the collector never reads it half-written), fsynced,
/// then renamed over the file. Readable by all (0644): the collector usually runs as another
/// user, and the file holds no secret.
pub fn write(path: &Path, s: &Status) -> Result<()> {
    let profile = s.groups.iter().find_map(|g| g.profile.as_deref()).unwrap_or("");
    let text = render(s, profile);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().with_context(|| format!("metrics file {} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write metrics file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_plain() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.5), "0.5");
    }
}
