//! Issue 18: profiles. A service's kit as a TOML file that `--profile` reads: where the
//! repository is, what to snapshot, the tags that scope the profile's snapshots, components
//! restored alone, and retention per profile; errors that point at their line.

// A test's unwrap is its assertion: a panic with the line that failed.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;

use crate::args;
use crate::util::*;

/// A temp dir with a service tree (`etc/hx`, a unit file), a config dir for profiles, and the
/// repository path profiles name.
struct Kit {
    dir: tempfile::TempDir,
    conf: PathBuf,
    repo: PathBuf,
    etc: PathBuf,
    unit: PathBuf,
}

fn kit() -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/hx");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("gateway.yaml"), b"port: 8080\n").unwrap();
    fs::write(etc.join("scratch.tmp"), b"noise\n").unwrap();
    let units = dir.path().join("units");
    fs::create_dir_all(&units).unwrap();
    let unit = units.join("hx-gateway.service");
    fs::write(&unit, b"[Service]\nExecStart=/opt/hx/run\n").unwrap();
    let conf = dir.path().join("conf");
    fs::create_dir_all(&conf).unwrap();
    let repo = dir.path().join("repo");
    Kit { dir, conf, repo, etc, unit }
}

impl Kit {
    fn profile(&self, name: &str, body: &str) {
        fs::write(self.conf.join(format!("{name}.toml")), body).unwrap();
    }

    /// The gateway profile of the issue, on this kit's paths.
    fn gateway(&self, extra: &str) {
        self.profile(
            "gateway",
            &format!(
                "repo = {repo:?}\ntags = [\"gateway\"]\nlabel = \"{{profile}}-{{utc}}\"\n\
                 sources = [{etc:?}, {unit:?}]\noptional_sources = [{opt:?}]\nexclude = [\"*.tmp\"]\n\
                 [components]\nconfig = [{etc:?}]\nsystemd = [{unit:?}]\n{extra}",
                repo = self.repo,
                etc = self.etc,
                unit = self.unit,
                opt = self.dir.path().join("etc/hx.d"),
            ),
        );
    }

    /// `cairn` with this kit's config dir and no repository named otherwise.
    fn cairn(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(cairn_bin());
        c.env("CAIRN_CONFIG_DIR", &self.conf).env_remove("CAIRN_REPO").env_remove("CAIRN_PROFILE");
        c
    }

    fn json(&self, args: &[&std::ffi::OsStr], code: i32) -> serde_json::Value {
        let out = self.cairn().arg("--json").args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "cairn {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn issue18_a_profile_snapshot_takes_its_sources_tags_label_and_excludes() {
    let k = kit();
    k.gateway("");
    let s = k.json(args!["snapshot", "--profile", "gateway"], 0);
    assert!(k.repo.join("config").exists(), "the profile's repository was created and used");
    let shown = k.json(args!["--repo", &k.repo, "show", s["id"].as_str().unwrap()], 0);
    assert_eq!(shown["tags"], serde_json::json!(["gateway"]));
    let label = shown["label"].as_str().unwrap();
    assert!(label.starts_with("gateway-2") && label.ends_with('Z'), "{label}");
    let mut paths: Vec<&str> = shown["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    paths.sort_unstable();
    let mut want = vec![k.etc.to_str().unwrap(), k.unit.to_str().unwrap()];
    want.sort_unstable();
    assert_eq!(paths, want, "the optional source that is not there is left out");
    let ls = k.json(args!["--repo", &k.repo, "ls", "latest", &k.etc], 0);
    assert!(ls.to_string().contains("gateway.yaml") && !ls.to_string().contains("scratch.tmp"), "{ls}");

    // The optional source, once there, is taken; a second label from the template differs.
    fs::create_dir_all(k.dir.path().join("etc/hx.d")).unwrap();
    fs::write(k.dir.path().join("etc/hx.d/override.conf"), b"x\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // {utc} has seconds
    let s2 = k.json(args!["snapshot", "--profile", "gateway"], 0);
    let shown2 = k.json(args!["--repo", &k.repo, "show", s2["id"].as_str().unwrap()], 0);
    assert_eq!(shown2["paths"].as_array().unwrap().len(), 3, "{shown2}");
    assert_ne!(shown2["label"], shown["label"]);
}

#[test]
fn issue18_a_profile_scopes_names_lists_and_retention_to_its_own_snapshots() {
    let k = kit();
    k.gateway("[retention]\nkeep_last = 2\n");
    let other = k.dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("data"), b"d\n").unwrap();
    k.profile("db", &format!("repo = {:?}\ntags = [\"db\"]\nsources = [{other:?}]\n", k.repo));
    let mut gw = Vec::new();
    for i in 0..3 {
        fs::write(k.etc.join("gateway.yaml"), format!("port: {i}\n")).unwrap();
        gw.push(k.json(args!["snapshot", "--profile", "gateway"], 0)["id"].as_str().unwrap().to_owned());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let db = k.json(args!["snapshot", "--profile", "db"], 0)["id"].as_str().unwrap().to_owned();

    // `latest` with the profile is the profile's newest, not the db snapshot taken after it.
    assert_eq!(k.json(args!["show", "latest", "--profile", "gateway"], 0)["id"], gw[2].as_str());
    assert_eq!(ids(&k.json(args!["list", "--profile", "gateway"], 0)), gw);
    assert_eq!(ids(&k.json(args!["list", "--profile", "db"], 0)), vec![db.clone()]);

    // The profile's retention, for its snapshots only.
    let f = k.json(args!["forget", "--profile", "gateway"], 0);
    assert_eq!(f["removed"], serde_json::json!([gw[0]]), "{f}");
    let left = ids(&k.json(args!["--repo", &k.repo, "list"], 0));
    assert_eq!(left, vec![gw[1].clone(), gw[2].clone(), db], "the db snapshot is not the gateway policy's");
}

#[test]
fn issue18_restore_component_restores_only_that_components_paths() {
    let k = kit();
    k.gateway("");
    k.json(args!["snapshot", "--profile", "gateway"], 0);
    let list = k.json(args!["list", "--profile", "gateway"], 0);
    assert_eq!(list[0]["components"], serde_json::json!(["config", "systemd"]), "{list}");
    let target = k.dir.path().join("out");
    k.json(args!["restore", "latest", "--profile", "gateway", "--component", "systemd", "--target", &target], 0);
    assert_eq!(fs::read(restored(&target, &k.unit)).unwrap(), fs::read(&k.unit).unwrap());
    assert!(!restored(&target, &k.etc).exists(), "the config component was not restored");
    let out = k
        .cairn()
        .args(args!["restore", "latest", "--profile", "gateway", "--component", "models", "--target", &target])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("models") && err.contains("config, systemd"), "{err}");
}

#[test]
fn issue18_a_profile_error_points_at_its_line_and_column() {
    let k = kit();
    k.gateway("[hooks]\nbefore_snapshto = [[\"true\"]]\n");
    let out = k.cairn().args(["snapshot", "--profile", "gateway"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = fs::read_to_string(k.conf.join("gateway.toml"))
        .unwrap()
        .lines()
        .position(|l| l.starts_with("before_snapshto"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("line {line}, column 1")) && err.contains("before_snapshto"), "{err}");
    assert!(err.contains("gateway.toml"), "names the file: {err}");
    assert!(!k.repo.exists(), "nothing was done");

    let out = k.cairn().args(["list", "--profile", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch.toml"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn issue18_repository_precedence_is_flag_then_profile_then_environment() {
    let k = kit();
    k.gateway("");
    let elsewhere = k.dir.path().join("elsewhere");
    let from_env = k.dir.path().join("from-env");
    // $CAIRN_REPO loses to the profile's repo ...
    k.cairn().env("CAIRN_REPO", &from_env).args(["snapshot", "--profile", "gateway", "-q"]).assert().success();
    assert!(k.repo.join("config").exists() && !from_env.exists());
    // ... and --repo wins over both; $CAIRN_PROFILE names the profile too.
    k.cairn().env("CAIRN_PROFILE", "gateway").args(args!["--repo", &elsewhere, "snapshot", "-q"]).assert().success();
    assert!(elsewhere.join("config").exists());
    assert_eq!(k.json(args!["--repo", &elsewhere, "list"], 0).as_array().unwrap().len(), 1);
}

#[test]
fn issue18_two_runs_in_one_second_get_distinct_labels_from_the_template() {
    let k = kit();
    k.gateway("");
    let mut labels = Vec::new();
    for _ in 0..3 {
        let id = k.json(args!["snapshot", "--profile", "gateway"], 0)["id"].as_str().unwrap().to_owned();
        labels.push(k.json(args!["show", &id, "--profile", "gateway"], 0)["label"].as_str().unwrap().to_owned());
    }
    let mut unique = labels.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{labels:?}");
    // An explicit --label that is taken is still refused: only the template's are numbered.
    let out = k.cairn().args(["snapshot", "--profile", "gateway", "--label", &labels[0]]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}
