//! Issue 19: running a profile as a service. The systemd units of `dist/systemd/` pass
//! `systemd-analyze verify` and score at most 3.0 in `systemd-analyze security`;
//! `cairn systemd install` puts them in place (checked with a fake `systemctl`); completions
//! and man pages are generated; the Kubernetes example holds together.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// The worst `systemd-analyze security` exposure a unit may have (0 best, 10 worst).
const MAX_EXPOSURE: f64 = 3.0;

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

/// The unit files of dist/systemd, by name.
fn dist_units() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(dist().join("systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "service" || x == "timer"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), fs::read_to_string(&p).unwrap()))
        .collect();
    v.sort();
    assert_eq!(v.len(), 7, "the seven units: {:?}", v.iter().map(|u| &u.0).collect::<Vec<_>>());
    v
}

/// dist/systemd's units in a temp dir, running this build's binary (`verify` checks that
/// ExecStart's binary exists), as `cairn systemd install --bin` writes them.
fn rendered_units() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = cairn_bin();
    for (name, text) in dist_units() {
        fs::write(dir.path().join(name), text.replace("/usr/local/bin/cairn", bin.to_str().unwrap())).unwrap();
    }
    dir
}

/// `systemd-analyze` on unit files, without a running systemd, finding templates and
/// drop-ins in `dir`.
fn analyze(dir: &Path) -> Command {
    let mut c = Command::new("systemd-analyze");
    // The trailing `:` keeps the built-in search path (for timers.target and the like).
    c.env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display())).env("SYSTEMD_LOG_COLOR", "0");
    c
}

/// Each unit as an instance for profile `gw`.
fn instances(dir: &Path) -> Vec<PathBuf> {
    dist_units().iter().map(|(name, _)| dir.join(name.replace("@.", "@gw."))).collect()
}

fn verify_all(dir: &Path) {
    for unit in instances(dir) {
        let out = analyze(dir).args(["verify", "--man=no"]).arg(&unit).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // Unknown keys and bad values are only warnings to systemd: any word from verify fails.
        assert!(out.status.success() && said.trim().is_empty(), "{}: {said}", unit.display());
    }
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let dir = rendered_units();
    verify_all(dir.path());
}

#[test]
fn every_service_is_hardened_to_an_exposure_of_at_most_3() {
    let dir = rendered_units();
    for unit in instances(dir.path()).into_iter().filter(|u| u.extension().unwrap() == "service") {
        let out = analyze(dir.path())
            .args([
                "security",
                "--offline=true",
                "--no-pager",
                &format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32),
            ])
            .arg(&unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for ").map(|(_, rest)| rest))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!("no exposure level for {}: {text}{}", unit.display(), String::from_utf8_lossy(&out.stderr))
            });
        assert!(level <= MAX_EXPOSURE, "{}: exposure {level} > {MAX_EXPOSURE}:\n{text}", unit.display());
        assert!(out.status.success(), "{}: above the threshold:\n{text}", unit.display());
    }
}

/// The sandbox block of a service: from its marker to the next section.
fn sandbox(text: &str) -> &str {
    let start = text.find("# --- sandbox").expect("a sandbox block");
    let rest = &text[start..];
    &rest[..rest.find("\n[").unwrap_or(rest.len())]
}

#[test]
fn the_services_share_one_sandbox_that_writes_only_the_state_cache_and_metrics_dirs() {
    let units = dist_units();
    let services: Vec<_> = units.iter().filter(|(n, _)| n.ends_with(".service")).collect();
    let first = sandbox(&services[0].1);
    for (name, text) in &services {
        assert_eq!(sandbox(text), first, "{name}'s sandbox differs from {}'s", services[0].0);
        for line in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
            "EnvironmentFile=-/etc/cairn/%i.env",
            "Environment=CAIRN_PROFILE=%i",
            "StateDirectory=cairn",
            "CacheDirectory=cairn",
        ] {
            assert!(text.lines().any(|l| l == line), "{name} lacks {line}");
        }
        let writable: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("ReadWritePaths=")).collect();
        assert_eq!(writable, ["-/var/lib/prometheus/node-exporter"], "{name}");
    }
}

#[test]
fn the_timers_are_hourly_and_daily_persistent_and_spread() {
    let units = dist_units();
    let unit = |n: &str| &units.iter().find(|(name, _)| name == n).unwrap().1;
    for (timer, when) in
        [("cairn-snapshot@.timer", "hourly"), ("cairn-maintain@.timer", "daily"), ("cairn-offsite@.timer", "daily")]
    {
        let t = unit(timer);
        for line in [format!("OnCalendar={when}"), "Persistent=true".into(), "WantedBy=timers.target".into()] {
            assert!(t.lines().any(|l| l == line), "{timer} lacks {line}");
        }
        assert!(t.lines().any(|l| l.starts_with("RandomizedDelaySec=")), "{timer}");
    }
    let maintain = unit("cairn-maintain@.service");
    let starts: Vec<&str> = maintain.lines().filter_map(|l| l.strip_prefix("ExecStart=")).collect();
    assert!(starts[0].contains("forget --profile %i --gc"), "{starts:?}");
    assert!(starts[1].contains("scrub --profile %i --read-data --max-duration 10m"), "{starts:?}");
    let offsite = unit("cairn-offsite@.service");
    let starts: Vec<&str> = offsite.lines().filter_map(|l| l.strip_prefix("ExecStart=")).collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert!(starts[0].ends_with(" copy --profile %i"), "{starts:?}");
    let boot = unit("cairn-boot@.service");
    for line in ["DefaultDependencies=no", "Before=multi-user.target shutdown.target", "WantedBy=multi-user.target"] {
        assert!(boot.lines().any(|l| l == line), "cairn-boot@.service lacks {line}");
    }
    assert!(boot.lines().any(|l| l.starts_with("After=local-fs.target")), "cairn-boot@.service");
}

/// A temp dir with a profile `gw` in `conf/`, and a fake `systemctl` first on PATH that logs
/// its arguments to `systemctl.log`.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new(repo: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("conf")).unwrap();
        fs::write(dir.path().join("conf/gw.toml"), format!("repo = {repo:?}\nsources = [\"/etc/hostname\"]\n"))
            .unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        let fake = dir.path().join("bin/systemctl");
        let log = dir.path().join("systemctl.log");
        fs::write(&fake, format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display())).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        Host { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn install(&self, profile: &str, extra: &[&str]) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(cairn_bin());
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        c.env("CAIRN_CONFIG_DIR", self.path("conf"))
            .env("PATH", path)
            .env_remove("CAIRN_PROFILE")
            .env_remove("CAIRN_REPO")
            .args(["systemd", "install", profile, "--unit-dir"])
            .arg(self.path("units"))
            .arg("--env-dir")
            .arg(self.path("etc"))
            .arg("--bin")
            .arg(cairn_bin())
            .args(extra);
        c
    }

    fn systemctl_log(&self) -> String {
        fs::read_to_string(self.path("systemctl.log")).unwrap_or_default()
    }
}

#[test]
fn systemd_install_writes_the_units_an_env_file_and_drop_ins_then_enables_the_timers() {
    let host = Host::new("/srv/backups/cairn");
    host.install("gw", &[]).assert().success();
    // The units as shipped, this binary in ExecStart, the env file where --env-dir says.
    let bin = cairn_bin();
    for (name, text) in dist_units() {
        let want = text
            .replace("/usr/local/bin/cairn", bin.to_str().unwrap())
            .replace("/etc/cairn/%i.env", &format!("{}/%i.env", host.path("etc").display()));
        assert_eq!(fs::read_to_string(host.path("units").join(&name)).unwrap(), want, "{name}");
    }
    let env = host.path("etc/gw.env");
    assert_eq!(fs::metadata(&env).unwrap().permissions().mode() & 0o777, 0o600);
    for s in ["cairn-snapshot", "cairn-maintain", "cairn-boot", "cairn-offsite"] {
        let dropin = fs::read_to_string(host.path(&format!("units/{s}@gw.service.d/cairn-profile.conf"))).unwrap();
        assert!(dropin.contains(&format!("Environment=CAIRN_CONFIG_DIR={}", host.path("conf").display())), "{dropin}");
        assert!(dropin.contains("ReadWritePaths=-/srv/backups\n"), "{dropin}");
    }
    assert_eq!(
        host.systemctl_log(),
        "daemon-reload\nenable --now cairn-snapshot@gw.timer cairn-maintain@gw.timer\nenable cairn-boot@gw.service\n"
    );
    // The installed units (with the drop-ins) pass verify too.
    verify_all(&host.path("units"));

    // Again: the env file, which holds the user's secrets by now, is kept as it is.
    fs::write(&env, "CAIRN_REPO=/elsewhere\n").unwrap();
    host.install("gw", &[]).assert().success();
    assert_eq!(fs::read_to_string(&env).unwrap(), "CAIRN_REPO=/elsewhere\n");
}

#[test]
fn systemd_install_enables_the_offsite_timer_for_a_profile_that_names_an_offsite_repository() {
    let host = Host::new("/var/lib/cairn/repo");
    let conf = host.path("conf/gw.toml");
    let text = fs::read_to_string(&conf).unwrap();
    fs::write(&conf, format!("offsite = \"s3:https://s3.example.net/backups/gw\"\n{text}")).unwrap();
    host.install("gw", &[]).assert().success();
    assert_eq!(
        host.systemctl_log(),
        "daemon-reload\nenable --now cairn-snapshot@gw.timer cairn-maintain@gw.timer cairn-offsite@gw.timer\nenable cairn-boot@gw.service\n"
    );
    verify_all(&host.path("units"));
}

#[test]
fn systemd_install_dry_run_prints_every_file_and_command_and_changes_nothing() {
    let host = Host::new("/var/lib/cairn/repo");
    let out = host.install("gw", &["--dry-run"]).assert().success().get_output().stdout.clone();
    let out = String::from_utf8(out).unwrap();
    for (name, _) in dist_units() {
        assert!(
            out.contains(&format!("# would write {}\n", host.path("units").join(&name).display())),
            "{name}: {out}"
        );
    }
    assert!(out.contains(&format!("# would write {} (unless it exists; mode 0600)", host.path("etc/gw.env").display())));
    assert!(out.contains(&format!("ExecStart={} snapshot --profile %i", cairn_bin().display())), "{out}");
    // A repository in the state directory needs no ReadWritePaths; the profile's dir does.
    assert!(!out.contains("ReadWritePaths=-/var/lib/cairn"), "{out}");
    for cmd in [
        "systemctl daemon-reload",
        "systemctl enable --now cairn-snapshot@gw.timer cairn-maintain@gw.timer",
        "systemctl enable cairn-boot@gw.service",
    ] {
        assert!(out.contains(&format!("# would run: {cmd}\n")), "{cmd}: {out}");
    }
    assert!(!host.path("units").exists() && !host.path("etc").exists());
    assert_eq!(host.systemctl_log(), "");
}

#[test]
fn systemd_install_refuses_a_profile_that_does_not_exist() {
    let host = Host::new("/var/lib/cairn/repo");
    let out = host.install("nope", &[]).assert().code(1).get_output().stderr.clone();
    assert!(String::from_utf8_lossy(&out).contains("no profile \"nope\""));
    assert!(!host.path("units").exists() && !host.path("etc").exists());
    assert_eq!(host.systemctl_log(), "");
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = assert_cmd::Command::new(cairn_bin()).args(["completions", shell]).assert().success();
        let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        assert!(text.len() > 1000, "{shell}: {text}");
        // fish names long flags as `-l profile`.
        let flag = if shell == "fish" { "-l profile" } else { "--profile" };
        assert!(text.contains("snapshot") && text.contains(flag), "{shell}");
    }
}

/// The names of the subcommands `cairn help` lists (and those of `repair` and `systemd`).
fn subcommands() -> Vec<String> {
    let help = |args: &[&str]| {
        let out = assert_cmd::Command::new(cairn_bin()).args(args).arg("--help").assert().success();
        let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        let list = text.split("Commands:\n").nth(1).unwrap().split("\n\n").next().unwrap().to_owned();
        list.lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .filter(|n| n != "help")
            .collect::<Vec<_>>()
    };
    let mut all = help(&[]);
    for parent in ["repair", "systemd"] {
        all.extend(help(&[parent]).into_iter().map(|n| format!("{parent}-{n}")));
    }
    all
}

#[test]
fn a_man_page_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    assert_cmd::Command::new(cairn_bin()).arg("man").arg("--out").arg(&out).assert().success();
    let names = subcommands();
    assert!(
        names.len() > 15 && names.iter().any(|n| n == "snapshot") && names.iter().any(|n| n == "repair-index"),
        "{names:?}"
    );
    for page in std::iter::once("cairn".to_owned()).chain(names.iter().map(|n| format!("cairn-{n}"))) {
        let text = fs::read_to_string(out.join(format!("{page}.1"))).unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}.1: {text}");
        assert!(text.len() > 200, "{page}.1 is nearly empty");
    }
}
