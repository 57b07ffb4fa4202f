//! Issue 19: the Kubernetes example (`dist/kubernetes/`) checked against what a CronJob must
//! be (batch/v1, a valid schedule, a container with an image and a command, a restart policy
//! a Job accepts), every Secret, ConfigMap and volume it names defined, and the profile it runs
//! a profile that cairn loads.

use std::fs;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::util::*;

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/kubernetes")
}

fn docs() -> Vec<Yaml> {
    let text = fs::read_to_string(dist().join("cronjob.yaml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap()
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str().unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

fn list_of<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec().unwrap_or_else(|| panic!("{what} is not a list: {y:?}"))
}

/// The names of the objects of a kind in the file.
fn defined(docs: &[Yaml], kind: &str) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .map(|d| str_of(&d["metadata"]["name"], "metadata.name").to_owned())
        .collect()
}

/// Whether one field of a cron schedule is valid: `*`, numbers, ranges, lists, steps, in range.
fn cron_field_ok(field: &str, min: u32, max: u32) -> bool {
    field.split(',').all(|part| {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let step_ok = step.is_none_or(|s| s.parse::<u32>().is_ok_and(|s| s >= 1 && s <= max));
        let in_range = |v: &str| v.parse::<u32>().is_ok_and(|v| (min..=max).contains(&v));
        let range_ok = range == "*"
            || match range.split_once('-') {
                Some((a, b)) => in_range(a) && in_range(b) && a.parse::<u32>().ok() <= b.parse::<u32>().ok(),
                None => in_range(range),
            };
        range_ok && step_ok
    })
}

/// A five-field cron schedule (minute hour day-of-month month day-of-week), or a macro.
fn cron_ok(schedule: &str) -> bool {
    if ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"].contains(&schedule) {
        return true;
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    fields.len() == 5 && fields.iter().zip(bounds).all(|(f, (lo, hi))| cron_field_ok(f, lo, hi))
}

#[test]
fn the_cron_checker_itself() {
    for good in ["17 * * * *", "*/15 2-4 1,15 * 1-5", "@daily", "0 0 * * 7"] {
        assert!(cron_ok(good), "{good}");
    }
    for bad in ["17 * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "*/0 * * * *", "5-1 * * * *", "hourly"] {
        assert!(!cron_ok(bad), "{bad}");
    }
}

#[test]
fn the_cronjob_example_is_a_valid_cronjob_whose_references_are_defined() {
    let docs = docs();
    let jobs: Vec<&Yaml> = docs.iter().filter(|d| d["kind"].as_str() == Some("CronJob")).collect();
    assert_eq!(jobs.len(), 1, "one CronJob");
    let job = jobs[0];
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert!(!str_of(&job["metadata"]["name"], "metadata.name").is_empty());
    let schedule = str_of(&job["spec"]["schedule"], "spec.schedule");
    assert!(cron_ok(schedule), "spec.schedule {schedule:?} is not a cron schedule");
    if let Some(policy) = job["spec"]["concurrencyPolicy"].as_str() {
        assert!(["Allow", "Forbid", "Replace"].contains(&policy), "concurrencyPolicy {policy}");
    }
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let restart = str_of(&pod["restartPolicy"], "restartPolicy");
    assert!(["OnFailure", "Never"].contains(&restart), "a Job's pods restart OnFailure or Never, not {restart}");

    let containers = list_of(&pod["containers"], "containers");
    assert!(!containers.is_empty());
    let c = &containers[0];
    assert!(!str_of(&c["name"], "containers[0].name").is_empty());
    assert!(!str_of(&c["image"], "containers[0].image").is_empty());
    let command: Vec<&str> =
        list_of(&c["command"], "containers[0].command").iter().map(|a| str_of(a, "command")).collect();
    assert!(command[0].ends_with("/cairn"), "{command:?}");

    // Every Secret and ConfigMap the pod names is in the file; every mount names a volume.
    let (secrets, configmaps) = (defined(&docs, "Secret"), defined(&docs, "ConfigMap"));
    let volumes = list_of(&pod["volumes"], "volumes");
    let volume_names: Vec<&str> = volumes.iter().map(|v| str_of(&v["name"], "volume name")).collect();
    let mut secret_refs = Vec::new();
    for v in volumes {
        if let Some(name) = v["configMap"]["name"].as_str() {
            assert!(configmaps.iter().any(|c| c == name), "volume {:?}: no ConfigMap {name}", v["name"]);
        }
        if let Some(name) = v["secret"]["secretName"].as_str() {
            secret_refs.push(name);
        }
    }
    for e in c["envFrom"].as_vec().into_iter().flatten() {
        if let Some(name) = e["secretRef"]["name"].as_str() {
            secret_refs.push(name);
        }
    }
    assert!(!secret_refs.is_empty(), "the repository comes from a Secret");
    for name in secret_refs {
        assert!(secrets.iter().any(|s| s == name), "no Secret {name}");
    }
    for m in list_of(&c["volumeMounts"], "volumeMounts") {
        let name = str_of(&m["name"], "volumeMounts name");
        assert!(volume_names.contains(&name), "volumeMount {name} names no volume");
        assert!(str_of(&m["mountPath"], "mountPath").starts_with('/'));
    }
    let secret = docs.iter().find(|d| d["kind"].as_str() == Some("Secret")).unwrap();
    assert!(secret["stringData"]["CAIRN_REPO"].as_str().is_some(), "the Secret sets CAIRN_REPO");

    // The profile the command names is a key of the ConfigMap, and cairn loads it.
    let profile = command.iter().position(|a| *a == "--profile").map(|i| command[i + 1]).expect("--profile NAME");
    let cm = docs.iter().find(|d| d["kind"].as_str() == Some("ConfigMap")).unwrap();
    let toml = str_of(&cm["data"][format!("{profile}.toml").as_str()], "the profile in the ConfigMap");
    let conf = tempfile::tempdir().unwrap();
    fs::write(conf.path().join(format!("{profile}.toml")), toml).unwrap();
    assert_cmd::Command::new(cairn_bin())
        .env("CAIRN_CONFIG_DIR", conf.path())
        .args(["systemd", "install", profile, "--dry-run"])
        .assert()
        .success();
}

#[test]
fn the_containerfile_copies_the_release_binary_where_the_cronjob_runs_it() {
    let file = fs::read_to_string(dist().join("Containerfile")).unwrap();
    assert!(file.lines().any(|l| l == "COPY target/release/cairn /usr/local/bin/cairn"), "{file}");
    let docs = docs();
    let job = docs.iter().find(|d| d["kind"].as_str() == Some("CronJob")).unwrap();
    let c = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"][0].as_str(), Some("/usr/local/bin/cairn"));
}
