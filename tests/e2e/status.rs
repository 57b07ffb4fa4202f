//! Issue 19: `cairn status`, the run log behind it, and the Prometheus textfile metrics. What a
//! cron line or a health check relies on: the exit code (0 OK, 9 alert, 1 error), failures
//! recorded as well as successes, thresholds from the profile's `[monitoring]`, scrub damage,
//! and a metrics file that Prometheus's own checker accepts.

// A test's unwrap is its assertion: a panic with the line that failed.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::args;
use crate::util::*;

/// A temp dir with a source tree, a config dir for profiles and a repository.
struct Kit {
    dir: tempfile::TempDir,
    conf: PathBuf,
    repo: PathBuf,
    src: PathBuf,
}

fn kit() -> Kit {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("app.conf"), vec![b'x'; 20_000]).unwrap();
    let conf = dir.path().join("conf");
    fs::create_dir_all(&conf).unwrap();
    Kit { dir, conf, repo, src }
}

impl Kit {
    /// Profile `svc` on this kit's repository and source, with `monitoring` as its
    /// `[monitoring]` table.
    fn profile(&self, monitoring: &str) {
        let body = format!(
            "repo = {:?}\ntags = [\"svc\"]\nsources = [{:?}]\n[monitoring]\n{monitoring}\n",
            self.repo, self.src
        );
        fs::write(self.conf.join("svc.toml"), body).unwrap();
    }

    fn cairn(&self) -> assert_cmd::Command {
        let mut c = cairn(&self.repo);
        c.env("CAIRN_CONFIG_DIR", &self.conf).env_remove("CAIRN_PROFILE");
        c
    }

    fn run(&self, args: &[&std::ffi::OsStr], code: i32) -> String {
        let out = self.cairn().args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "cairn {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&std::ffi::OsStr], code: i32) -> serde_json::Value {
        let mut all = vec![std::ffi::OsStr::new("--json")];
        all.extend_from_slice(args);
        serde_json::from_str(&self.run(&all, code)).unwrap()
    }
}

fn alert_kinds(status: &serde_json::Value) -> Vec<String> {
    status["alerts"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap().to_owned()).collect()
}

/// The run summary of `command` in a status document.
fn runs_of<'a>(status: &'a serde_json::Value, command: &str) -> &'a serde_json::Value {
    status["runs"].as_array().unwrap().iter().find(|r| r["command"] == command).unwrap_or_else(|| {
        panic!("no {command} runs in {status:#}");
    })
}

#[test]
fn status_after_a_good_snapshot_is_ok_with_its_age_and_size() {
    let k = kit();
    k.run(args!["snapshot", &k.src], 0);
    let s = k.json(args!["status"], 0);
    assert_eq!(s["ok"], true, "{s:#}");
    assert_eq!(s["snapshots"], 1);
    let g = &s["groups"][0];
    let newest = &g["newest"];
    assert_eq!(newest["size"], 20_000, "{s:#}");
    assert!(newest["age_secs"].as_u64().unwrap() < 60, "{s:#}");
    assert!(newest["data_added"].as_u64().unwrap() > 0);
    assert!(s["repository_size"].as_u64().unwrap() > 0);
    assert!(s["free_space"].as_u64().unwrap() > 0);
    let snap = runs_of(&s, "snapshot");
    assert_eq!(snap["last_success"]["snapshot"], newest["id"]);
    assert!(snap["last_failure"].is_null());
    let text = k.run(args!["status"], 0);
    assert!(text.contains("status: OK") && !text.contains("ALERT"), "{text}");
}

#[test]
fn a_failed_snapshot_is_recorded_and_shown_as_the_last_failure_with_its_error() {
    let k = kit();
    k.run(args!["snapshot", &k.src], 0);
    let missing = k.dir.path().join("no-such-dir");
    k.run(args!["snapshot", &missing], 1);
    let s = k.json(args!["status"], 9);
    let snap = runs_of(&s, "snapshot");
    let failure = &snap["last_failure"];
    assert_eq!(failure["exit_code"], 1, "{s:#}");
    assert!(failure["error"].as_str().unwrap().contains("no-such-dir"), "{s:#}");
    assert!(snap["last_success"]["snapshot"].is_string());
    assert_eq!(alert_kinds(&s), ["run_failed"]);
    // Loud and first in the text.
    let text = k.run(args!["status"], 9);
    assert!(text.starts_with("ALERT the last snapshot failed"), "{text}");
    assert!(text.contains("no-such-dir"), "{text}");
    // The next good run clears it.
    k.run(args!["snapshot", &k.src], 0);
    let s = k.json(args!["status"], 0);
    assert!(!runs_of(&s, "snapshot")["last_failure"].is_null());
}

#[test]
fn a_profile_whose_newest_snapshot_is_older_than_max_age_alerts() {
    let k = kit();
    k.profile("max_age = \"1s\"");
    k.run(args!["--profile", "svc", "snapshot"], 0);
    let s = k.json(args!["--profile", "svc", "status"], 0);
    assert_eq!(s["groups"][0]["name"], "svc");
    assert_eq!(s["groups"][0]["thresholds"]["max_age_secs"], 1);
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let s = k.json(args!["--profile", "svc", "status"], 9);
    assert_eq!(alert_kinds(&s), ["snapshot_too_old"], "{s:#}");
    assert_eq!(s["alerts"][0]["group"], "svc");
    // A snapshot outside the profile (not tagged svc) is not the profile's newest.
    k.run(args!["snapshot", &k.src], 0);
    k.json(args!["--profile", "svc", "status"], 9);
}

#[test]
fn a_newest_snapshot_below_min_size_or_above_max_growth_alerts() {
    let k = kit();
    k.profile("min_size = \"1M\"");
    k.run(args!["--profile", "svc", "snapshot"], 0);
    let s = k.json(args!["--profile", "svc", "status"], 9);
    assert_eq!(alert_kinds(&s), ["snapshot_too_small"], "{s:#}");
    k.profile("min_size = \"10K\"");
    k.json(args!["--profile", "svc", "status"], 0);
    // The first snapshot's new data is all of it: more than half its size.
    k.profile("max_growth = \"50%\"");
    let s = k.json(args!["--profile", "svc", "status"], 9);
    assert_eq!(alert_kinds(&s), ["growth"], "{s:#}");
    k.profile("max_growth = \"1M\"");
    k.json(args!["--profile", "svc", "status"], 0);
}

#[test]
fn damage_found_by_scrub_shows_in_status_as_an_alert() {
    let k = kit();
    k.run(args!["snapshot", &k.src], 0);
    k.run(args!["scrub", "--read-data"], 0);
    let s = k.json(args!["status"], 0);
    assert_eq!(s["scrub"]["coverage"], 1.0, "{s:#}");
    assert!(s["scrub"]["last"]["scrub"]["read_data"].as_bool().unwrap());
    // One byte of the biggest pack (the file's content) flips.
    let pack = pack_files(&k.repo).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    fs::write(&pack, bytes).unwrap();
    k.run(args!["scrub", "--read-data"], 4);
    let s = k.json(args!["status"], 9);
    assert!(s["scrub"]["damage"].as_u64().unwrap() > 0, "{s:#}");
    assert_eq!(alert_kinds(&s), ["scrub_damage"], "{s:#}");
    let text = k.run(args!["status"], 9);
    assert!(text.starts_with("ALERT the last scrub") && text.contains("DAMAGED"), "{text}");
}

#[test]
fn max_scrub_age_alerts_until_a_scrub_has_run() {
    let k = kit();
    k.profile("max_scrub_age = \"7d\"");
    k.run(args!["--profile", "svc", "snapshot"], 0);
    let s = k.json(args!["--profile", "svc", "status"], 9);
    assert_eq!(alert_kinds(&s), ["scrub_too_old"], "{s:#}");
    k.run(args!["--profile", "svc", "scrub"], 0);
    k.json(args!["--profile", "svc", "status"], 0);
}

/// The off-site copy of a profile: `copy --profile` sends the profile's snapshots (and only
/// them) to its `offsite` repository, the run is recorded where status looks, and
/// `max_copy_age` alerts until a copy has succeeded, and again when the last one fails.
#[test]
fn copy_to_the_profiles_offsite_repository_is_recorded_and_max_copy_age_alerts_until_it_ran() {
    let k = kit();
    let offsite = k.dir.path().join("offsite");
    let body = format!(
        "repo = {:?}\noffsite = {offsite:?}\ntags = [\"svc\"]\nsources = [{:?}]\n[monitoring]\nmax_copy_age = \"1d\"\n",
        k.repo, k.src
    );
    fs::write(k.conf.join("svc.toml"), body).unwrap();
    k.run(args!["--profile", "svc", "snapshot"], 0);
    k.run(args!["snapshot", &k.src, "--tag", "other"], 0); // not the profile's: stays home
    let s = k.json(args!["--profile", "svc", "status"], 9);
    assert_eq!(alert_kinds(&s), ["copy_too_old"], "{s:#}");

    // Without --from or --to and without a profile there is nothing to go by.
    let out = k.cairn().args(["copy"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offsite"), "{out:?}");

    init_repo(&offsite, None);
    let r = k.json(args!["--profile", "svc", "copy"], 0);
    assert_eq!(r["copied"], 1, "{r:#}");
    let there =
        serde_json::from_slice::<serde_json::Value>(&cairn(&offsite).args(["--json", "list"]).output().unwrap().stdout)
            .unwrap();
    let tags: Vec<&serde_json::Value> = there.as_array().unwrap().iter().map(|s| &s["tags"]).collect();
    assert_eq!(tags, [&serde_json::json!(["svc"])], "only the profile's snapshot: {there:#}");
    let s = k.json(args!["--profile", "svc", "status"], 0);
    assert_eq!(runs_of(&s, "copy")["last_success"]["exit_code"], 0, "{s:#}");

    // The off-site repository gone: the copy fails, status names the failed run.
    fs::rename(&offsite, k.dir.path().join("offsite-moved")).unwrap();
    k.run(args!["--profile", "svc", "copy"], 1);
    let s = k.json(args!["--profile", "svc", "status"], 9);
    assert_eq!(alert_kinds(&s), ["run_failed"], "{s:#}");
}

#[test]
fn status_of_a_place_without_a_repository_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(&dir.path().join("none")).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// promtool, or `None` with a note when it is missing outside CI; under CI a missing promtool
/// fails the test (scripts/install-test-tools.sh installs it).
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("promtool")).find(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is missing; scripts/install-test-tools.sh installs it (Debian package prometheus)"
        );
        eprintln!("promtool is missing (Debian package prometheus): the metrics were not checked with it");
    }
    found
}

fn promtool_ok(promtool: &Path, args: &[&std::ffi::OsStr], stdin: Option<&Path>) {
    let mut cmd = std::process::Command::new(promtool);
    cmd.args(args);
    if let Some(f) = stdin {
        cmd.stdin(fs::File::open(f).unwrap());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_are_written_atomically_and_promtool_accepts_them_and_the_alert_rules() {
    let k = kit();
    let dir = k.dir.path().join("textfile");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cairn-svc.prom");
    k.profile(&format!("max_age = \"2h\"\nmetrics_file = {file:?}"));
    k.run(args!["--profile", "svc", "snapshot"], 0);
    let text = fs::read_to_string(&file).unwrap();
    for metric in [
        "cairn_snapshot_last_success_timestamp_seconds{profile=\"svc\"}",
        "cairn_snapshot_last_exit_code{profile=\"svc\"} 0",
        "cairn_snapshot_files{profile=\"svc\",group=\"svc\",state=\"new\"} 1",
        "cairn_snapshot_size_bytes{profile=\"svc\",group=\"svc\"} 20000",
        "cairn_snapshot_max_age_seconds{profile=\"svc\",group=\"svc\"} 7200",
        "cairn_repository_snapshots{profile=\"svc\"} 1",
        "# TYPE cairn_scrub_coverage_ratio gauge",
    ] {
        assert!(text.contains(metric), "{metric} missing from\n{text}");
    }
    // Rewritten whole by the next command: a new file renamed over the old one (a writer that
    // truncated the file in place would keep its inode, and the collector could read half).
    let inode = fs::metadata(&file).unwrap().ino();
    k.run(args!["--profile", "svc", "snapshot", k.dir.path().join("missing")], 1);
    assert_ne!(fs::metadata(&file).unwrap().ino(), inode);
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("cairn_snapshot_last_exit_code{profile=\"svc\"} 1"), "{text}");
    // --metrics-file on status and scrub too; nothing else is left in the directory.
    let other = dir.join("cairn-all.prom");
    k.run(args!["--metrics-file", &other, "scrub", "--read-data"], 0);
    assert!(fs::read_to_string(&other).unwrap().contains("cairn_scrub_last_success_timestamp_seconds{profile=\"\"}"));
    k.run(args!["--metrics-file", &other, "status"], 9);
    let mut names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["cairn-all.prom", "cairn-svc.prom"]);
    let Some(promtool) = promtool() else { return };
    for f in [&file, &other] {
        promtool_ok(&promtool, args!["check", "metrics"], Some(f));
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/prometheus/cairn-alerts.yml");
    promtool_ok(&promtool, args!["check", "rules", rules], None);
}

/// The top-level fields and the group fields docs/JSON.md lists for `status` are the ones
/// printed.
#[test]
fn status_json_has_the_documented_fields() {
    let k = kit();
    k.profile("max_age = \"2h\"");
    k.run(args!["--profile", "svc", "snapshot"], 0);
    let s = k.json(args!["--profile", "svc", "status"], 0);
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/JSON.md")).unwrap();
    let section = doc.split("## `cairn status`").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut documented: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .filter(|f| *f != "field" && !f.starts_with("---"))
        .flat_map(|f| f.split(", ").map(str::to_owned).collect::<Vec<_>>())
        .collect();
    documented.sort();
    let mut printed: Vec<String> = s.as_object().unwrap().keys().cloned().collect();
    printed.sort();
    assert_eq!(documented, printed);
    // The nested objects' fields are named in the rows: every printed one must be.
    let named = |obj: &serde_json::Value| {
        for key in obj.as_object().unwrap().keys() {
            assert!(section.contains(&format!("\"{key}\"")), "{key} is not in JSON.md's status section");
        }
    };
    named(&s["scrub"]);
    named(&s["groups"][0]);
    named(&s["groups"][0]["newest"]);
    named(&s["groups"][0]["thresholds"]);
    named(&s["runs"][0]);
}
