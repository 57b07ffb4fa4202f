//! `cairn status`: how the backups are doing, for a person, a cron line or a health check
//! (issue 19). Per profile (or per host and tags without one): the newest snapshot, its age,
//! size and new data; the last success and the last failure of each command from the run log;
//! the last scrub, its coverage and damage; the repository's size and the free space on its
//! disk. The profile's `[monitoring]` thresholds turn into alerts, and the exit code says OK
//! (0), alert (9) or that status could not look (1). The metrics file is rendered from the
//! same data (metrics.rs), so the two never disagree.

mod metrics;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use cairn_store::{Repo, RunOutcome, Snapshot, SnapshotFilter};
use serde::Serialize;

use crate::args::{Cli, SelectArgs, StatusArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, local_time, outln, size, Quiet};
use crate::profile::{Growth, Monitoring, Profile};
use crate::units::format_age;

/// The coverage window when the profile sets no `max_scrub_age`.
const DEFAULT_SCRUB_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// The commands whose runs are recorded, in the order status shows them.
pub const RECORDED: [&str; 5] = ["snapshot", "copy", "forget", "gc", "scrub"];

/// What `status` found (its `--json`, docs/JSON.md).
#[derive(Serialize)]
pub struct Status {
    pub repository: String,
    /// When this status was taken (Unix seconds).
    pub time_secs: i64,
    /// No alert.
    pub ok: bool,
    /// Every alert, loudest first.
    pub alerts: Vec<Alert>,
    /// Snapshots in the repository (restores' safety snapshots included).
    pub snapshots: u64,
    /// Pack files and index.
    pub repository_size: u64,
    /// Free space on the repository's disk for this user (null when not a local folder).
    pub free_space: Option<u64>,
    /// The disk's size.
    pub disk_size: Option<u64>,
    pub scrub: ScrubStatus,
    /// The last run, success and failure of each recorded command and profile.
    pub runs: Vec<Runs>,
    pub groups: Vec<Group>,
}

/// Something that calls for attention.
#[derive(Clone, Serialize)]
pub struct Alert {
    /// The group (profile name) it is about, or null for the whole repository.
    pub group: Option<String>,
    /// `no_snapshot`, `snapshot_too_old`, `snapshot_too_small`, `growth`, `run_failed`,
    /// `scrub_damage`, `scrub_too_old`, `run_log_unreadable`.
    pub kind: &'static str,
    pub message: String,
}

/// One run as status shows it: the recorded outcome and its start as RFC 3339.
#[derive(Clone, Serialize)]
pub struct RunView {
    pub time: String,
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

/// A command's runs, per profile.
#[derive(Serialize)]
pub struct Runs {
    pub command: String,
    pub profile: Option<String>,
    pub last: RunView,
    pub last_success: Option<RunView>,
    pub last_failure: Option<RunView>,
}

/// The last scrub and what the packs' verification times say.
#[derive(Default, Serialize)]
pub struct ScrubStatus {
    /// The last scrub run that finished its check (found damage or not).
    pub last: Option<RunView>,
    pub age_secs: Option<u64>,
    /// Damaged or missing objects the last scrub found.
    pub damage: u64,
    pub packs: u64,
    /// The window coverage is counted over: the profile's max_scrub_age, else 30 days.
    pub window_secs: u64,
    /// Packs read back and verified within the window.
    pub packs_verified_within: u64,
    /// Their share of the packs (1 when there are none).
    pub coverage: f64,
    pub packs_never_verified: u64,
    pub oldest_verification_age_secs: Option<u64>,
}

/// The newest snapshot of a group.
#[derive(Serialize)]
pub struct Newest {
    pub id: String,
    pub time: String,
    pub time_ns: i64,
    pub age_secs: u64,
    /// Its logical size (what restoring it writes).
    pub size: u64,
    /// New data it added, before and after compression.
    pub data_added: u64,
    pub data_stored: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub warnings: u64,
}

/// The profile's thresholds, as numbers.
#[derive(Default, Serialize)]
pub struct Thresholds {
    pub max_age_secs: Option<u64>,
    pub min_size: Option<u64>,
    pub max_growth: Option<String>,
    pub max_scrub_age_secs: Option<u64>,
    pub max_copy_age_secs: Option<u64>,
}

/// A profile's snapshots, or one host-and-tags group of them.
#[derive(Serialize)]
pub struct Group {
    pub name: String,
    pub profile: Option<String>,
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub snapshots: u64,
    pub newest: Option<Newest>,
    pub thresholds: Thresholds,
    pub alerts: Vec<Alert>,
}

pub fn run(cli: &Cli, args: &StatusArgs) -> Result<u8> {
    let status = gather(cli, &args.select)?;
    if let Some(path) = metrics_path(cli)? {
        metrics::write(&path, &status)?;
    }
    output::report(cli, &status, Quiet::Ignored, print)?;
    Ok(if status.ok { exit::OK } else { exit::ALERT })
}

/// Where metrics go: `--metrics-file`, else the profile's `monitoring.metrics_file`.
fn metrics_path(cli: &Cli) -> Result<Option<std::path::PathBuf>> {
    Ok(match &cli.metrics_file {
        Some(p) => Some(p.clone()),
        None => super::profile(cli)?.and_then(|p| p.monitoring.metrics_file.clone()),
    })
}

/// After a snapshot, forget, gc or scrub: rewrites the metrics file from the repository's
/// state, when one is asked for.
pub fn write_metrics_after(cli: &Cli) -> Result<()> {
    let Some(path) = metrics_path(cli)? else { return Ok(()) };
    let status = gather(cli, &SelectArgs::default())?;
    metrics::write(&path, &status)
}

/// Looks at the repository: everything status reports.
pub fn gather(cli: &Cli, select: &SelectArgs) -> Result<Status> {
    let profile = super::profile(cli)?;
    let (location, _) = super::repo_location(cli)?;
    let repo = Repo::open(&location, &crate::commands::with_passphrase(cli, &lower::open_options()))
        .map_err(|e| anyhow::anyhow!(e).context(format!("cannot open repository {location}")))?;
    super::note_requests(&repo);
    let monitoring = profile.map(|p| p.monitoring.clone()).unwrap_or_default();
    let now = jiff::Timestamp::now();
    let now_secs = now.as_second();
    let now_ns = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
    let all = repo.snapshots()?;
    // The run log is history, not data: one that cannot be read is an alert (failures may
    // be hidden), never a status that cannot say anything.
    let (runs, log_error) = match repo.runs() {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(format!("the run log cannot be read ({e}): failed runs may not be shown"))),
    };
    let window = monitoring.max_scrub_age.unwrap_or(DEFAULT_SCRUB_WINDOW);
    let coverage = repo.pack_coverage(window.as_secs())?;
    let (free_space, disk_size) = location
        .as_local()
        .and_then(|p| rustix::fs::statvfs(p).ok())
        .map_or((None, None), |v| (Some(v.f_bavail * v.f_frsize), Some(v.f_blocks * v.f_frsize)));

    let mut status = Status {
        repository: location.to_string(),
        time_secs: now_secs,
        ok: true,
        alerts: Vec::new(),
        snapshots: all.len() as u64,
        repository_size: coverage.packs_size + coverage.index_size,
        free_space,
        disk_size,
        scrub: scrub_status(&runs, &coverage, window, now_ns),
        runs: summarize_runs(&runs, profile.map(|p| p.name.as_str())),
        groups: groups(&all, select, profile, now_ns)?,
    };
    judge(&mut status, &monitoring, profile.map(|p| p.name.clone()), now_ns);
    if let Some(message) = log_error {
        status.alerts.insert(0, Alert { group: None, kind: "run_log_unreadable", message });
        status.ok = false;
    }
    Ok(status)
}

fn view(r: &RunOutcome) -> RunView {
    RunView { time: output::utc_time(r.start_ns), outcome: r.clone() }
}

fn age_secs(then_ns: i64, now_ns: i64) -> u64 {
    u64::try_from(now_ns.saturating_sub(then_ns) / 1_000_000_000).unwrap_or(0)
}

fn scrub_status(runs: &[RunOutcome], c: &cairn_store::PackCoverage, window: Duration, now_ns: i64) -> ScrubStatus {
    let last = runs.iter().rev().find(|r| r.command == "scrub" && r.scrub.is_some());
    let now_secs = now_ns / 1_000_000_000;
    ScrubStatus {
        last: last.map(view),
        age_secs: last.map(|r| age_secs(r.start_ns, now_ns)),
        damage: last.and_then(|r| r.scrub.as_ref()).map_or(0, |s| s.damage),
        packs: c.packs,
        window_secs: window.as_secs(),
        packs_verified_within: c.verified_within,
        coverage: if c.packs == 0 { 1.0 } else { c.verified_within as f64 / c.packs as f64 },
        packs_never_verified: c.never_verified,
        oldest_verification_age_secs: c.oldest_verified_at.map(|t| u64::try_from(now_secs - t).unwrap_or(0)),
    }
}

/// The last run, success and failure of each command and profile (only the profile's, with
/// one), in [`RECORDED`] order.
fn summarize_runs(runs: &[RunOutcome], profile: Option<&str>) -> Vec<Runs> {
    let mut by: BTreeMap<(usize, Option<String>), Runs> = BTreeMap::new();
    for r in runs.iter().filter(|r| profile.is_none() || r.profile.as_deref() == profile) {
        let order = RECORDED.iter().position(|c| *c == r.command).unwrap_or(RECORDED.len());
        let entry = by.entry((order, r.profile.clone())).or_insert_with(|| Runs {
            command: r.command.clone(),
            profile: r.profile.clone(),
            last: view(r),
            last_success: None,
            last_failure: None,
        });
        entry.last = view(r);
        if r.succeeded() {
            entry.last_success = Some(view(r));
        } else {
            entry.last_failure = Some(view(r));
        }
    }
    by.into_values().collect()
}

/// The groups: the profile's snapshots; or the selection's; or, with neither, one group per
/// host and tags (restores' safety snapshots left out).
fn groups(all: &[Snapshot], select: &SelectArgs, profile: Option<&Profile>, now_ns: i64) -> Result<Vec<Group>> {
    let filter = lower::filter(select, profile)?;
    let mut out = Vec::new();
    if profile.is_some() || !filter.is_empty() {
        let picked: Vec<&Snapshot> = all.iter().filter(|s| filter.matches(s) && !s.is_safety()).collect();
        let name = profile.map_or_else(|| filter.describe(), |p| p.name.clone());
        out.push(group(name, profile, &filter, &picked, now_ns));
        return Ok(out);
    }
    let mut by: BTreeMap<(String, Vec<String>), Vec<&Snapshot>> = BTreeMap::new();
    for s in all.iter().filter(|s| !s.is_safety()) {
        let mut tags = s.record.tags.clone();
        tags.sort();
        by.entry((s.record.host.clone(), tags)).or_default().push(s);
    }
    for ((host, tags), snaps) in by {
        let name = if tags.is_empty() { host.clone() } else { format!("{host} [{}]", tags.join(",")) };
        let mut f = SnapshotFilter::default();
        f.host = Some(host);
        f.all_tags = tags;
        out.push(group(name, None, &f, &snaps, now_ns));
    }
    Ok(out)
}

fn group(name: String, profile: Option<&Profile>, f: &SnapshotFilter, snaps: &[&Snapshot], now_ns: i64) -> Group {
    let newest = snaps.iter().max_by_key(|s| s.record.time_ns).map(|s| {
        let r = &s.record;
        Newest {
            id: s.id.to_hex(),
            time: output::utc_time(r.time_ns),
            time_ns: r.time_ns,
            age_secs: age_secs(r.time_ns, now_ns),
            size: r.totals.bytes_total,
            data_added: r.totals.data_added,
            data_stored: r.totals.data_stored,
            files_new: r.totals.files_new,
            files_changed: r.totals.files_changed,
            files_unchanged: r.totals.files_unchanged,
            warnings: r.warnings,
        }
    });
    let m = profile.map(|p| &p.monitoring);
    Group {
        name,
        profile: profile.map(|p| p.name.clone()),
        host: f.host.clone(),
        tags: if f.all_tags.is_empty() { f.tags.clone() } else { f.all_tags.clone() },
        snapshots: snaps.len() as u64,
        newest,
        thresholds: Thresholds {
            max_age_secs: m.and_then(|m| m.max_age).map(|d| d.as_secs()),
            min_size: m.and_then(|m| m.min_size),
            max_growth: m.and_then(|m| m.max_growth).map(|g| g.to_string()),
            max_scrub_age_secs: m.and_then(|m| m.max_scrub_age).map(|d| d.as_secs()),
            max_copy_age_secs: m.and_then(|m| m.max_copy_age).map(|d| d.as_secs()),
        },
        alerts: Vec::new(),
    }
}

/// Turns what was found and the thresholds into alerts.
fn judge(status: &mut Status, m: &Monitoring, profile: Option<String>, now_ns: i64) {
    let mut repo_alerts = Vec::new();
    for g in &mut status.groups {
        let mut alert = |kind, message| g.alerts.push(Alert { group: Some(g.name.clone()), kind, message });
        match &g.newest {
            None if m.max_age.is_some() || m.min_size.is_some() => {
                alert("no_snapshot", "no snapshot at all".to_owned());
            }
            None => {}
            Some(n) => {
                if let Some(max) = m.max_age.filter(|max| n.age_secs > max.as_secs()) {
                    alert(
                        "snapshot_too_old",
                        format!(
                            "the newest snapshot is {} old (max_age {})",
                            format_age(Duration::from_secs(n.age_secs)),
                            format_age(max)
                        ),
                    );
                }
                if let Some(min) = m.min_size.filter(|min| n.size < *min) {
                    alert(
                        "snapshot_too_small",
                        format!("the newest snapshot holds {} (min_size {})", size(n.size), size(min)),
                    );
                }
                if let Some(g) = m.max_growth.filter(|g| n.data_added > g.limit(n.size)) {
                    let limit = match g {
                        Growth::Percent(p) => format!("{p}% of its size, {}", size(g.limit(n.size))),
                        Growth::Bytes(b) => size(b),
                    };
                    alert(
                        "growth",
                        format!("the newest snapshot added {} new (max_growth {limit})", size(n.data_added)),
                    );
                }
            }
        }
    }
    for r in &status.runs {
        let last = &r.last.outcome;
        let damage = last.scrub.as_ref().is_some_and(|s| s.damage > 0);
        if !last.succeeded() && !damage {
            let what = match &r.profile {
                Some(p) => format!("the last {} of profile {p}", r.command),
                None => format!("the last {}", r.command),
            };
            let when = format_age(Duration::from_secs(age_secs(last.start_ns, now_ns)));
            let error = last.error.as_deref().unwrap_or("no error text");
            repo_alerts.push(Alert {
                group: r.profile.clone(),
                kind: "run_failed",
                message: format!("{what} failed {when} ago (exit code {}): {error}", last.exit_code),
            });
        }
    }
    let s = &status.scrub;
    if s.damage > 0 {
        let when = s.age_secs.map_or(String::new(), |a| format!(" {} ago", format_age(Duration::from_secs(a))));
        repo_alerts.push(Alert {
            group: None,
            kind: "scrub_damage",
            message: format!("the last scrub{when} found {} damaged or missing objects (see `cairn scrub`)", s.damage),
        });
    }
    if let Some(max) = m.max_scrub_age {
        match s.age_secs {
            Some(a) if a <= max.as_secs() => {}
            Some(a) => repo_alerts.push(Alert {
                group: profile.clone(),
                kind: "scrub_too_old",
                message: format!(
                    "the last scrub was {} ago (max_scrub_age {})",
                    format_age(Duration::from_secs(a)),
                    format_age(max)
                ),
            }),
            None => repo_alerts.push(Alert {
                group: profile.clone(),
                kind: "scrub_too_old",
                message: format!("no scrub has run (max_scrub_age {})", format_age(max)),
            }),
        }
    }
    if let Some(max) = m.max_copy_age {
        let last = status
            .runs
            .iter()
            .filter(|r| r.command == "copy")
            .filter_map(|r| r.last_success.as_ref())
            .map(|v| v.outcome.start_ns)
            .max();
        let message = match last.map(|ns| age_secs(ns, now_ns)) {
            Some(a) if a <= max.as_secs() => None,
            Some(a) => Some(format!(
                "the last successful copy was {} ago (max_copy_age {})",
                format_age(Duration::from_secs(a)),
                format_age(max)
            )),
            None => Some(format!("no copy has succeeded (max_copy_age {})", format_age(max))),
        };
        if let Some(message) = message {
            repo_alerts.push(Alert { group: profile.clone(), kind: "copy_too_old", message });
        }
    }
    let mut alerts = repo_alerts;
    alerts.extend(status.groups.iter().flat_map(|g| g.alerts.iter().cloned()));
    status.ok = alerts.is_empty();
    status.alerts = alerts;
}

fn ago(secs: u64) -> String {
    format!("{} ago", format_age(Duration::from_secs(secs)))
}

fn print_run(label: &str, r: &RunView, now_secs: i64) -> std::io::Result<()> {
    let o = &r.outcome;
    let age = ago(u64::try_from(now_secs - o.start_ns / 1_000_000_000).unwrap_or(0));
    let mut line =
        format!("    {label:<13}{} ({age}), {:.1} s, exit {}", local_time(o.start_ns), o.duration_secs, o.exit_code);
    if let Some(id) = &o.snapshot {
        line.push_str(&format!(", snapshot {}", &id[..id.len().min(8)]));
    }
    if let Some(e) = &o.error {
        line.push_str(&format!(": {e}"));
    }
    outln!("{line}")
}

fn print(s: &Status) -> std::io::Result<()> {
    // Alerts first and loud: a person skimming a mail from cron sees them before anything else.
    for a in &s.alerts {
        let group = a.group.as_deref().map_or(String::new(), |g| format!("{g}: "));
        outln!("ALERT {group}{}", a.message)?;
    }
    if !s.alerts.is_empty() {
        outln!("")?;
    }
    let disk = match (s.free_space, s.disk_size) {
        (Some(f), Some(d)) => format!(", {} free of {} on its disk", size(f), size(d)),
        _ => String::new(),
    };
    outln!("repository {}: {} snapshots, {}{disk}", s.repository, s.snapshots, size(s.repository_size))?;
    let sc = &s.scrub;
    let last = match &sc.last {
        Some(r) => format!("last {} ({})", local_time(r.outcome.start_ns), ago(sc.age_secs.unwrap_or(0))),
        None => "never run".to_owned(),
    };
    let damage = if sc.damage > 0 { format!("{} DAMAGED objects", sc.damage) } else { "no damage".to_owned() };
    outln!(
        "scrub: {last}, {damage}; {} of {} packs verified within {} ({:.0}%)",
        sc.packs_verified_within,
        sc.packs,
        format_age(Duration::from_secs(sc.window_secs)),
        sc.coverage * 100.0
    )?;
    for g in &s.groups {
        outln!("")?;
        let what = if g.profile.is_some() { "profile" } else { "group" };
        let state = if g.alerts.is_empty() { "OK" } else { "ALERT" };
        outln!("{what} {}: {state}, {} snapshots", g.name, g.snapshots)?;
        match &g.newest {
            Some(n) => outln!(
                "  newest: {} {} ({}), {}, {} new ({} stored)",
                &n.id[..8],
                local_time(n.time_ns),
                ago(n.age_secs),
                size(n.size),
                size(n.data_added),
                size(n.data_stored)
            )?,
            None => outln!("  newest: none")?,
        }
    }
    if !s.runs.is_empty() {
        outln!("")?;
        outln!("runs:")?;
    }
    for r in &s.runs {
        let profile = r.profile.as_deref().map_or(String::new(), |p| format!(" (profile {p})"));
        outln!("  {}{profile}:", r.command)?;
        match &r.last_success {
            Some(v) => print_run("last success", v, s.time_secs)?,
            None => outln!("    last success never")?,
        }
        if let Some(v) = &r.last_failure {
            print_run("last failure", v, s.time_secs)?;
        }
    }
    outln!("")?;
    if s.ok {
        outln!("status: OK")
    } else {
        outln!("status: {} ALERT{}", s.alerts.len(), if s.alerts.len() == 1 { "" } else { "S" })
    }
}
