//! Keep-policies for `forget`, with restic's documented semantics.
//!
//! Snapshots are grouped (by host and source paths unless told otherwise) and each group is
//! walked newest first. A snapshot is kept when any rule keeps it:
//! - `last N`: it is one of the N newest;
//! - `hourly/daily/weekly/monthly/yearly N`: it is the newest snapshot of its hour / day /
//!   ISO week / month / year (in the given time zone), for the N newest such periods that
//!   *have* snapshots (periods without snapshots do not count);
//! - `within D`: it is no older than D before the newest snapshot of its group;
//! - `tag T`: it carries one of the tags;
//! - a pinned snapshot is kept unless `include_pinned` is set (a label alone keeps nothing).
//!
//! Restores' safety snapshots are never judged by these rules: they form a group of their own
//! (per host) and are kept by `safety_last` and `safety_within`, so that they expire instead
//! of piling up, and a policy for hourly snapshots never removes the copy a restore just made.
//!
//! Periods are civil (wall-clock) periods of the time zone: in the hour repeated when daylight
//! saving time ends, the two real hours share one civil hour and so one hourly bucket, as in
//! restic; a day is a calendar day whether it has 23, 24 or 25 hours.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use serde::Serialize;

use crate::catalog::GroupBy;
use crate::repo::Snapshot;

/// How many periods to keep: `None` for none, `Some(u32::MAX)` for all.
pub type Count = Option<u32>;

/// A keep-policy.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct KeepPolicy {
    /// Keep the N newest.
    pub last: Count,
    /// Keep the newest of each of the N newest hours with snapshots.
    pub hourly: Count,
    /// ... days.
    pub daily: Count,
    /// ... ISO weeks.
    pub weekly: Count,
    /// ... months.
    pub monthly: Count,
    /// ... years.
    pub yearly: Count,
    /// Keep everything no older than this before the newest snapshot of the group.
    pub within: Option<std::time::Duration>,
    /// Keep snapshots with any of these tags.
    pub tags: Vec<String>,
    /// Let the rules above decide for pinned snapshots too (else they are always kept).
    pub include_pinned: bool,
    /// Keep the N newest safety snapshots of each host.
    pub safety_last: Count,
    /// Keep safety snapshots no older than this before the newest of them.
    pub safety_within: Option<std::time::Duration>,
}

/// How many safety snapshots a policy keeps when not told: the newest three...
pub const SAFETY_KEEP_LAST: u32 = 3;
/// ... and every one of the week before the newest.
pub const SAFETY_KEEP_WITHIN: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

impl KeepPolicy {
    /// True when no rule is set for ordinary snapshots (such a policy would keep only pinned
    /// ones).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        [self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly].iter().all(Option::is_none)
            && self.within.is_none()
            && self.tags.is_empty()
    }

    /// True when a rule for safety snapshots is set.
    #[must_use]
    pub fn has_safety_rule(&self) -> bool {
        self.safety_last.is_some() || self.safety_within.is_some()
    }

    /// The policy safety snapshots are judged by: `safety_last` and `safety_within`, or when
    /// neither is given the defaults (`SAFETY_KEEP_LAST`, `SAFETY_KEEP_WITHIN`).
    fn for_safety(&self) -> KeepPolicy {
        let (last, within) = if self.has_safety_rule() {
            (self.safety_last, self.safety_within)
        } else {
            (Some(SAFETY_KEEP_LAST), Some(SAFETY_KEEP_WITHIN))
        };
        KeepPolicy { last, within, include_pinned: self.include_pinned, ..KeepPolicy::default() }
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: String,
    /// Its time, RFC 3339.
    pub time: String,
    /// The group it was judged in.
    pub group: String,
    /// Kept or to be removed.
    pub keep: bool,
    /// Why it is kept (empty when removed).
    pub reasons: Vec<String>,
}

/// A period bucket of a time: values that differ between periods.
fn bucket(t: &jiff::Zoned, unit: usize) -> i64 {
    let (y, m, d, h) = (i64::from(t.year()), i64::from(t.month()), i64::from(t.day()), i64::from(t.hour()));
    match unit {
        0 => ((y * 100 + m) * 100 + d) * 100 + h,
        1 => (y * 100 + m) * 100 + d,
        2 => {
            let w = t.date().iso_week_date();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }
        3 => y * 100 + m,
        _ => y,
    }
}

/// Applies a policy. Returns one decision per snapshot, newest first within each group.
#[must_use]
pub fn apply(policy: &KeepPolicy, group_by: GroupBy, snapshots: &[Snapshot], tz: &TimeZone) -> Vec<Decision> {
    let mut groups: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        let key = if s.is_safety() { format!("safety snapshots of host={}", s.record.host) } else { group_by.key(s) };
        groups.entry(key).or_default().push(s);
    }
    let safety_policy = policy.for_safety();
    let mut out = Vec::new();
    const NAMES: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "yearly"];
    for (group, mut list) in groups {
        let policy = if list.first().is_some_and(|s| s.is_safety()) { &safety_policy } else { policy };
        list.sort_by(|a, b| b.record.time_ns.cmp(&a.record.time_ns).then(b.id.cmp(&a.id)));
        let newest = list.first().map_or(0, |s| s.record.time_ns);
        let counts = [policy.hourly, policy.daily, policy.weekly, policy.monthly, policy.yearly];
        let mut left: [u32; 5] = counts.map(|c| c.unwrap_or(0));
        let mut last_bucket: [Option<i64>; 5] = [None; 5];
        for (nr, s) in list.iter().enumerate() {
            let mut reasons = Vec::new();
            let ts = jiff::Timestamp::from_nanosecond(i128::from(s.record.time_ns)).unwrap_or_default();
            let local = ts.to_zoned(tz.clone());
            if policy.last.is_some_and(|n| (nr as u64) < u64::from(n)) {
                reasons.push("last snapshot".to_owned());
            }
            for (i, name) in NAMES.iter().enumerate() {
                if left[i] == 0 {
                    continue;
                }
                let b = bucket(&local, i);
                if last_bucket[i] != Some(b) {
                    last_bucket[i] = Some(b);
                    left[i] = left[i].saturating_sub(u32::from(counts[i] != Some(u32::MAX)));
                    reasons.push(format!("{name} snapshot"));
                }
            }
            if let Some(within) = policy.within {
                let age = u128::try_from(newest - s.record.time_ns).unwrap_or(0);
                if age <= within.as_nanos() {
                    reasons.push("within".to_owned());
                }
            }
            if s.record.tags.iter().any(|t| policy.tags.contains(t)) {
                reasons.push("tag".to_owned());
            }
            if s.record.pinned && !policy.include_pinned {
                reasons.push("pinned".to_owned());
            }
            out.push(Decision {
                id: s.id.to_hex(),
                time: local.timestamp().to_string(),
                group: group.clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{SnapshotId, TreeId};
    use crate::record::{SnapshotKind, SnapshotRecord, SnapshotTotals};

    fn snap(time: &str, tags: &[&str], label: Option<&str>, host: &str) -> Snapshot {
        let ts: jiff::Timestamp = time.parse().unwrap();
        let record = SnapshotRecord {
            time_ns: i64::try_from(ts.as_nanosecond()).unwrap(),
            host: host.into(),
            user: "u".into(),
            paths: vec![b"/etc".to_vec()],
            kind: SnapshotKind::Incremental,
            parent: None,
            label: label.map(str::to_owned),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            excludes: vec![],
            root: TreeId::of(b"root"),
            totals: SnapshotTotals::default(),
            warnings: 0,
            duration_ms: 0,
            cairn_version: "test".into(),
            pinned: label.is_some(), // the labelled ones stand for pinned ones

            original: None,
            captures: Vec::new(),
        };
        let id = SnapshotId::of(format!("{time}{host}{tags:?}").as_bytes());
        Snapshot { id, record }
    }

    /// Runs a policy over snapshots at `times` (UTC, RFC 3339) and returns the kept times.
    fn kept(policy: &KeepPolicy, times: &[&str], tz: &str) -> Vec<String> {
        let snaps: Vec<Snapshot> = times.iter().map(|t| snap(t, &[], None, "h")).collect();
        let tz = TimeZone::get(tz).unwrap();
        let mut out: Vec<String> = apply(policy, GroupBy::host_and_paths(), &snaps, &tz)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.time.parse::<jiff::Timestamp>().unwrap().strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .collect();
        out.sort();
        out
    }

    fn policy(f: impl FnOnce(&mut KeepPolicy)) -> KeepPolicy {
        let mut p = KeepPolicy::default();
        f(&mut p);
        p
    }

    #[test]
    fn policy_table() {
        // Every 20 minutes from 2026-01-30 21:00 to 2026-02-02 02:40 UTC, plus older ones.
        let mut series: Vec<String> = Vec::new();
        let start: jiff::Timestamp = "2026-01-30T21:00:00Z".parse().unwrap();
        for i in 0..162 {
            series.push((start + jiff::SignedDuration::from_mins(20 * i)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        series.extend(["2025-12-31T23:00:00Z", "2025-11-15T10:00:00Z", "2024-06-01T00:00:00Z"].map(String::from));
        let times: Vec<&str> = series.iter().map(String::as_str).collect();

        struct Case {
            name: &'static str,
            policy: KeepPolicy,
            want: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "last 3",
                policy: policy(|p| p.last = Some(3)),
                want: vec!["2026-02-02T02:00:00Z", "2026-02-02T02:20:00Z", "2026-02-02T02:40:00Z"],
            },
            Case {
                name: "hourly 3: newest of each of the 3 newest hours",
                policy: policy(|p| p.hourly = Some(3)),
                want: vec!["2026-02-02T00:40:00Z", "2026-02-02T01:40:00Z", "2026-02-02T02:40:00Z"],
            },
            Case {
                name: "daily 2 (UTC days)",
                policy: policy(|p| p.daily = Some(2)),
                want: vec!["2026-02-01T23:40:00Z", "2026-02-02T02:40:00Z"],
            },
            Case {
                name: "weekly 2: ISO weeks (2026-02-01 is a Sunday)",
                policy: policy(|p| p.weekly = Some(2)),
                want: vec!["2026-02-01T23:40:00Z", "2026-02-02T02:40:00Z"],
            },
            Case {
                name: "monthly 3: months without snapshots do not count",
                policy: policy(|p| p.monthly = Some(3)),
                want: vec!["2025-12-31T23:00:00Z", "2026-01-31T23:40:00Z", "2026-02-02T02:40:00Z"],
            },
            Case {
                name: "yearly 5: only three years have snapshots",
                policy: policy(|p| p.yearly = Some(5)),
                want: vec!["2024-06-01T00:00:00Z", "2025-12-31T23:00:00Z", "2026-02-02T02:40:00Z"],
            },
            Case {
                name: "within 1h of the newest",
                policy: policy(|p| p.within = Some(std::time::Duration::from_secs(3600))),
                want: vec![
                    "2026-02-02T01:40:00Z",
                    "2026-02-02T02:00:00Z",
                    "2026-02-02T02:20:00Z",
                    "2026-02-02T02:40:00Z",
                ],
            },
            Case {
                name: "last 1 + monthly 2 combine",
                policy: policy(|p| {
                    p.last = Some(1);
                    p.monthly = Some(2);
                }),
                want: vec!["2026-01-31T23:40:00Z", "2026-02-02T02:40:00Z"],
            },
            Case {
                name: "unlimited yearly",
                policy: policy(|p| p.yearly = Some(u32::MAX)),
                want: vec!["2024-06-01T00:00:00Z", "2025-12-31T23:00:00Z", "2026-02-02T02:40:00Z"],
            },
        ];
        for c in cases {
            assert_eq!(kept(&c.policy, &times, "UTC"), c.want, "{}", c.name);
        }
        // The same daily policy in Tokyo (UTC+9): days end at 15:00 UTC.
        assert_eq!(
            kept(&policy(|p| p.daily = Some(2)), &times, "Asia/Tokyo"),
            vec!["2026-02-01T14:40:00Z", "2026-02-02T02:40:00Z"],
            "daily in another time zone"
        );
    }

    #[test]
    fn daylight_saving_time_and_gaps() {
        // Berlin leaves summer time on 2026-10-25: 02:00-03:00 local happens twice
        // (00:00-01:00 UTC as CEST, 01:00-02:00 UTC as CET): one civil hour, one bucket.
        let fall = ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"];
        assert_eq!(
            kept(&policy(|p| p.hourly = Some(10)), &fall, "Europe/Berlin"),
            vec!["2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"],
            "the repeated hour is one bucket"
        );
        // Spring forward on 2026-03-29: 02:00-03:00 local does not exist; the 23-hour day is
        // one day, and the hours around the gap are distinct.
        let spring = ["2026-03-28T23:30:00Z", "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z", "2026-03-29T21:30:00Z"];
        assert_eq!(
            kept(&policy(|p| p.hourly = Some(10)), &spring, "Europe/Berlin"),
            spring.to_vec(),
            "every real hour is its own bucket"
        );
        assert_eq!(
            kept(&policy(|p| p.daily = Some(10)), &spring, "Europe/Berlin"),
            vec!["2026-03-29T21:30:00Z"],
            "00:30 CET, 01:30 CET, 03:30 CEST and 23:30 CEST are all on the 23-hour 29 March"
        );
        // Gaps: only hours with snapshots count.
        let gappy = ["2026-05-01T01:00:00Z", "2026-05-01T09:00:00Z", "2026-05-01T09:30:00Z", "2026-05-01T17:00:00Z"];
        assert_eq!(
            kept(&policy(|p| p.hourly = Some(3)), &gappy, "UTC"),
            vec!["2026-05-01T01:00:00Z", "2026-05-01T09:30:00Z", "2026-05-01T17:00:00Z"]
        );
    }

    #[test]
    fn tags_labels_and_groups() {
        let snaps = vec![
            snap("2026-01-01T00:00:00Z", &["keep"], None, "a"),
            snap("2026-01-02T00:00:00Z", &[], Some("before-upgrade"), "a"),
            snap("2026-01-03T00:00:00Z", &[], None, "a"),
            snap("2026-01-04T00:00:00Z", &[], None, "a"),
            snap("2026-01-01T00:00:00Z", &[], None, "b"),
        ];
        let tz = TimeZone::UTC;
        let mut p = policy(|p| {
            p.last = Some(1);
            p.tags = vec!["keep".into()];
        });
        let d = apply(&p, GroupBy::host_and_paths(), &snaps, &tz);
        let verdict = |d: &[Decision], i: usize| d.iter().find(|x| x.id == snaps[i].id.to_hex()).unwrap().clone();
        assert_eq!(verdict(&d, 0).reasons, vec!["tag"]);
        assert_eq!(verdict(&d, 1).reasons, vec!["pinned"]);
        assert!(!verdict(&d, 2).keep);
        assert_eq!(verdict(&d, 3).reasons, vec!["last snapshot"]);
        assert_eq!(verdict(&d, 4).reasons, vec!["last snapshot"], "host b is its own group");
        p.include_pinned = true;
        let d = apply(&p, GroupBy::host_and_paths(), &snaps, &tz);
        assert!(!verdict(&d, 1).keep, "pins decide nothing with include_pinned");
        p.include_pinned = false;
        let mut labelled_only = snaps.clone();
        labelled_only[1].record.pinned = false;
        let d = apply(&p, GroupBy::host_and_paths(), &labelled_only, &tz);
        assert!(!verdict(&d, 1).keep, "a label alone keeps nothing: {:?}", verdict(&d, 1));
        // One group for everything: host b's snapshot competes with host a's.
        let d = apply(&p, GroupBy::parse("").unwrap(), &snaps, &tz);
        assert!(!verdict(&d, 4).keep);
        assert!(GroupBy::parse("host,colour").is_err());
        // A policy that keeps nothing of a group is detected.
        let none = policy(|p| p.tags = vec!["absent".into()]);
        let mut d = apply(&none, GroupBy::host_and_paths(), &snaps, &tz);
        d.retain(|x| x.id != snaps[1].id.to_hex());
        assert_eq!(crate::gc::emptied_groups(&d).len(), 2);
    }

    #[test]
    fn safety_snapshots_expire_by_their_own_rules() {
        let mut snaps: Vec<Snapshot> = (1..=6)
            .map(|day| {
                let mut s = snap(&format!("2026-02-{:02}T00:00:00Z", day * 3), &["safety"], None, "a");
                s.record.paths = vec![format!("/etc/{day}").into_bytes()]; // each restore its own paths
                s
            })
            .collect();
        snaps.push(snap("2026-02-01T00:00:00Z", &["hourly"], None, "a"));
        let tz = TimeZone::UTC;
        let kept_safety = |p: &KeepPolicy| {
            let d = apply(p, GroupBy::host_and_paths(), &snaps, &tz);
            let mut kept: Vec<usize> =
                (0..6).filter(|&i| d.iter().find(|x| x.id == snaps[i].id.to_hex()).unwrap().keep).collect();
            kept.sort_unstable();
            kept
        };
        // A policy for ordinary snapshots judges safety ones by the defaults: the newest three
        // (days 18, 15, 12) and those within a week of the newest (days 12..18).
        assert_eq!(kept_safety(&policy(|p| p.last = Some(1))), vec![3, 4, 5]);
        assert_eq!(kept_safety(&policy(|p| p.safety_last = Some(1))), vec![5]);
        assert_eq!(
            kept_safety(&policy(|p| p.safety_within = Some(std::time::Duration::from_secs(7 * 86400)))),
            vec![3, 4, 5]
        );
        assert_eq!(
            kept_safety(&policy(|p| p.safety_within = Some(std::time::Duration::from_secs(10 * 86400)))),
            vec![2, 3, 4, 5]
        );
        // `last 1` for ordinary snapshots never takes the safety ones into its count.
        let d = apply(&policy(|p| p.last = Some(1)), GroupBy::host_and_paths(), &snaps, &tz);
        assert!(d.iter().find(|x| x.id == snaps[6].id.to_hex()).unwrap().keep);
    }
}
