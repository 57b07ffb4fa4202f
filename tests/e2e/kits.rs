//! Issue 18: the example kits in `examples/kits/` run end to end as a user runs them. Each
//! profile is used as shipped, with its absolute paths moved under a temporary root (every
//! string starting with `/` gets the root in front) and stand-in services first on `PATH`:
//! `systemctl`, `pip`, `logger`, `pg_dump` and `dpkg-query` are scripts that log their calls,
//! and the live API is a small HTTP server on loopback.

// A test's unwrap is its assertion: a panic with the line that failed.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::args;
use crate::util::*;

/// A root folder standing for `/`, a folder of stand-in commands, and a profile folder.
struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
    conf: PathBuf,
}

fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let bin = dir.path().join("bin");
    let conf = dir.path().join("conf");
    for d in [&root, &bin, &conf] {
        fs::create_dir_all(d).unwrap();
    }
    let h = Host { _dir: dir, root, bin, conf };
    // Each stand-in appends its name and arguments to calls.log.
    let log = h.root.join("calls.log");
    for name in ["systemctl", "logger"] {
        h.script(name, &format!("echo \"{name} $*\" >> '{}'", log.display()));
    }
    h
}

impl Host {
    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn write(&self, path: &str, body: &[u8]) -> PathBuf {
        let p = self.at(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        p
    }

    fn script(&self, name: &str, body: &str) {
        let p = self.bin.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn executable(&self, path: &str, body: &str) {
        let p = self.write(path, format!("#!/bin/sh\n{body}\n").as_bytes());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Installs an example profile with its paths moved under the root.
    fn install(&self, example: &str, replace: &[(&str, String)]) -> String {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kits").join(example);
        let mut text = fs::read_to_string(&file).unwrap().replace("\"/", &format!("\"{}/", self.root.display()));
        for (from, to) in replace {
            text = text.replace(from, to);
        }
        let name = Path::new(example).file_stem().unwrap().to_string_lossy().into_owned();
        fs::write(self.conf.join(format!("{name}.toml")), text).unwrap();
        name
    }

    fn cairn(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(cairn_bin());
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        c.env("CAIRN_CONFIG_DIR", &self.conf)
            .env("PATH", path)
            .env_remove("CAIRN_REPO")
            .env_remove("CAIRN_PROFILE")
            .env("HOME", self.root.join("home-of-runner"));
        c
    }

    fn run(&self, args: &[&std::ffi::OsStr], code: i32) -> serde_json::Value {
        let out = self.cairn().arg("--json").args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "cairn {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn cat(&self, profile: &str, snapshot: &str, path: &Path) -> Vec<u8> {
        let out = self.cairn().args(args!["cat", snapshot, path, "--profile", profile]).output().unwrap();
        assert!(out.status.success(), "cat {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.root.join("calls.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn clear_calls(&self) {
        let _ = fs::remove_file(self.root.join("calls.log"));
    }
}

/// Serves `body` to every request on a loopback port, as the live API's /v1/models would.
fn serve(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

const MODELS: &str = r#"{"object":"list","data":[{"id":"hx-large"},{"id":"hx-small"}]}"#;

#[test]
fn issue18_the_api_gateway_kit_snapshots_restores_and_rolls_back_a_failed_validation() {
    let h = host();
    let port = serve(MODELS);
    h.script("pip", "echo 'requests==2.32.3'; echo 'uvicorn==0.30.1'");
    let good = b"port: 8080\nupstream: hx-large\n";
    let conf = h.write("/etc/hx/gateway.yaml", good);
    h.write("/etc/hx/routes.yaml", b"- /v1\n");
    let unit = h.write("/etc/systemd/system/hx-gateway.service", b"[Service]\nExecStart=/opt/hx/run\n");
    h.write("/var/log/hx/gateway.log", b"today\n");
    h.write("/var/log/hx/gateway.log.1", b"yesterday\n");
    // The validation suite: the config must not be a broken one.
    h.executable("/opt/hx/scripts/validate.sh", &format!("! grep -q broken '{}'", conf.display()));
    let kit = h.install("api-gateway.toml", &[(":8000/", format!(":{port}/"))]);

    // Hourly: the snapshot, with pip freeze and the live model list captured.
    let first = h.run(args!["snapshot", "--profile", &kit], 0)["id"].as_str().unwrap().to_owned();
    let pip = h.cat(&kit, &first, Path::new("/.cairn-captures/env/pip-freeze.txt"));
    assert_eq!(pip, b"requests==2.32.3\nuvicorn==0.30.1\n");
    assert_eq!(h.cat(&kit, &first, Path::new("/.cairn-captures/api/models.json")), MODELS.as_bytes());
    assert_eq!(h.cat(&kit, "latest", &h.at("/var/log/hx/gateway.log.1")), b"yesterday\n");
    let before = describe(&h.at("/etc/hx"));
    let unit_before = fs::read(&unit).unwrap();

    // A bad deploy, then `restore latest`: stop, restore, reload, start, validate (it passes).
    fs::write(&conf, b"port: 9999\n").unwrap();
    fs::write(&unit, b"[Service]\nExecStart=/opt/hx/run --debug\n").unwrap();
    h.clear_calls();
    let r = h.run(args!["restore", "latest", "--profile", &kit, "--target", "/"], 0);
    assert_same(&before, &describe(&h.at("/etc/hx")), "restored to the snapshot");
    assert_eq!(fs::read(&unit).unwrap(), unit_before);
    let calls = h.calls();
    assert_eq!(
        calls,
        vec!["systemctl stop hx-gateway", "systemctl daemon-reload", "systemctl start hx-gateway"],
        "{r}"
    );
    assert!(!h.at("/.cairn-captures").exists(), "captures are not written over the system");

    // One file back, the rest left as it is.
    fs::write(&conf, b"port: 7000\n").unwrap();
    fs::write(&unit, b"edited\n").unwrap();
    h.run(args!["restore", "latest", "--profile", &kit, "--target", "/", "--include", &conf], 0);
    assert_eq!(fs::read(&conf).unwrap(), good);
    assert_eq!(fs::read(&unit).unwrap(), b"edited\n", "only the included file was restored");
    fs::write(&unit, b"[Service]\nExecStart=/opt/hx/run\n").unwrap();

    // A checkpoint of a broken config, then the good one again: restoring the broken one
    // fails validation and is rolled back to what was there (exit 7).
    fs::write(&conf, b"broken: yes\n").unwrap();
    let broken = h.run(args!["snapshot", "--profile", &kit], 0)["id"].as_str().unwrap().to_owned();
    fs::write(&conf, good).unwrap();
    let live = describe(&h.at("/etc/hx"));
    h.clear_calls();
    let r = h.run(args!["restore", &broken, "--profile", &kit, "--target", "/"], 7);
    assert_eq!(r["rolled_back"], true, "{r}");
    assert_same(&live, &describe(&h.at("/etc/hx")), "rolled back to the state before the restore");
    let calls = h.calls();
    assert_eq!(calls.iter().filter(|c| c.as_str() == "systemctl start hx-gateway").count(), 2, "{calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("logger")), "on_error ran: {calls:?}");
}

#[test]
fn issue18_the_dev_vm_kit_captures_git_state_and_keeps_the_last_ten() {
    let h = host();
    let project = h.at("/home/dev/project");
    fs::create_dir_all(&project).unwrap();
    h.write("/home/dev/notes/todo.md", b"- ship kits\n");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&project)
            .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.invalid"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q"]);
    h.write("/home/dev/project/main.rs", b"fn main() {}\n");
    h.write("/home/dev/project/target/debug/big", &[7u8; 4096]);
    h.write("/home/dev/project/.gitignore", b"target/\n");
    git(&["add", "main.rs", ".gitignore"]);
    git(&["commit", "-q", "-m", "first commit"]);
    h.write("/home/dev/project/main.rs", b"fn main() { println!(\"wip\"); }\n");
    let kit = h.install("dev-vm.toml", &[]);

    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(h.run(args!["snapshot", "--profile", &kit], 0)["id"].as_str().unwrap().to_owned());
    }
    let status = h.cat(&kit, "latest", Path::new("/.cairn-captures/git/project-status.txt"));
    assert_eq!(String::from_utf8_lossy(&status), " M main.rs\n");
    let head = String::from_utf8(h.cat(&kit, "latest", Path::new("/.cairn-captures/git/project-head.txt"))).unwrap();
    assert!(head.ends_with(" Dev first commit\n"), "{head:?}");
    let ls = h.run(args!["ls", "latest", &project, "--profile", &kit], 0);
    let names: Vec<&str> = ls.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(names.iter().any(|p| p.ends_with("/main.rs")), "{ls}");
    assert!(!names.iter().any(|p| p.ends_with("/target")), "target/ is excluded: {ls}");

    let f = h.run(args!["forget", "--profile", &kit], 0);
    assert_eq!(f["removed"].as_array().unwrap().len(), 2, "{f}");
    let left: Vec<String> = h
        .run(args!["list", "--profile", &kit], 0)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ids[2..].to_vec(), "the last ten are kept");

    // One component back: the notes, not the project.
    fs::write(h.at("/home/dev/notes/todo.md"), b"lost\n").unwrap();
    h.run(args!["restore", "latest", "--profile", &kit, "--component", "notes", "--target", "/"], 0);
    assert_eq!(fs::read(h.at("/home/dev/notes/todo.md")).unwrap(), b"- ship kits\n");
}

#[test]
fn issue18_the_per_type_kit_keeps_four_parts_with_four_policies_in_one_repository() {
    let h = host();
    h.script("dpkg-query", "echo 'bash 5.2.15-2'; echo 'openssl 3.0.15-1'");
    h.script("pg_dump", "echo '-- PostgreSQL database dump'; echo \"INSERT INTO t VALUES ($(cat \"$DUMP_ROW\"));\"");
    let row = h.write("/run/row", b"1");
    for dir in ["/etc/systemd/system", "/etc/apt/sources.list.d", "/usr/local/bin", "/etc/node", "/opt/node/config"] {
        h.write(&format!("{dir}/file"), dir.as_bytes());
    }
    h.write("/srv/node/uploads/a.png", &[1u8; 1000]);
    h.write("/srv/node/models/hx.bin", &[9u8; 100_000]);
    let kits: Vec<String> = ["node-system", "node-config", "node-data", "node-models"]
        .iter()
        .map(|k| h.install(&format!("per-type/{k}.toml"), &[]))
        .collect();

    let snap = |kit: &str| {
        let out = h.cairn().env("DUMP_ROW", &row).args(args!["--json", "snapshot", "--profile", kit]).output().unwrap();
        assert!(out.status.success(), "{kit}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_owned()
    };
    for k in &kits {
        snap(k);
    }
    for i in 2..=4 {
        fs::write(&row, i.to_string()).unwrap();
        snap("node-config");
        snap("node-data");
    }
    // One summary per snapshot of every part, from one repository.
    let all = h.run(args!["list", "--tag", "node", "--profile", &kits[0], "--repo", h.at("/var/backups/cairn")], 0);
    let node = h.run(args!["--repo", h.at("/var/backups/cairn"), "list", "--tag", "node"], 0);
    assert_eq!(node.as_array().unwrap().len(), 10, "{node}");
    assert_eq!(all.as_array().unwrap().len(), 1, "a profile scopes to its own part: {all}");
    for s in node.as_array().unwrap() {
        assert!(s["files"].as_u64().is_some() && s["bytes_total"].as_u64().is_some(), "{s}");
    }
    let dump = h.cat("node-data", "latest", Path::new("/.cairn-captures/db/app.sql"));
    assert_eq!(String::from_utf8_lossy(&dump), "-- PostgreSQL database dump\nINSERT INTO t VALUES (4);\n");

    // The data policy (24 hourly, 14 daily) keeps the newest of this hour: three of its four
    // go; forgetting by one part's policy never touches another part.
    let f = h.run(args!["forget", "--profile", "node-data"], 0);
    assert_eq!(f["removed"].as_array().unwrap().len(), 3, "{f}");
    let config = h.run(args!["list", "--profile", "node-config"], 0);
    assert_eq!(config.as_array().unwrap().len(), 4, "the config part is untouched: {config}");
    fs::write(h.conf.join("node-config.toml"), {
        let t = fs::read_to_string(h.conf.join("node-config.toml")).unwrap();
        t.replace("keep_last = 48", "keep_last = 1").replace("keep_daily = 30", "")
    })
    .unwrap();
    let f = h.run(args!["forget", "--profile", "node-config"], 0);
    assert_eq!(f["removed"].as_array().unwrap().len(), 3, "{f}");
    let node = h.run(args!["--repo", h.at("/var/backups/cairn"), "list", "--tag", "node"], 0);
    assert_eq!(node.as_array().unwrap().len(), 4, "one snapshot of each part is left: {node}");

    // One part back in place.
    fs::write(h.at("/etc/node/file"), b"changed").unwrap();
    h.run(args!["restore", "latest", "--profile", "node-config", "--target", "/"], 0);
    assert_eq!(fs::read(h.at("/etc/node/file")).unwrap(), b"/etc/node");
}
