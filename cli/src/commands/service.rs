//! `cairn systemd install PROFILE`: puts the units of `dist/systemd/` in place for a profile,
//! with the path of this binary in their `ExecStart`, an env file for its settings and secrets,
//! and per-profile drop-ins for what the units cannot know (where the profile file and a
//! repository outside `/var/lib/cairn` are); then reloads systemd and enables the timers.
//! The units are embedded from `dist/systemd/`, so there is one copy of them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::args::{Cli, SystemdInstallArgs};
use crate::exit;
use crate::output::{errln, outln};
use crate::profile::Profile;

/// The unit files, by name, as `dist/systemd/` has them.
pub const UNITS: [(&str, &str); 7] = [
    ("cairn-snapshot@.service", include_str!("../../../dist/systemd/cairn-snapshot@.service")),
    ("cairn-snapshot@.timer", include_str!("../../../dist/systemd/cairn-snapshot@.timer")),
    ("cairn-maintain@.service", include_str!("../../../dist/systemd/cairn-maintain@.service")),
    ("cairn-maintain@.timer", include_str!("../../../dist/systemd/cairn-maintain@.timer")),
    ("cairn-boot@.service", include_str!("../../../dist/systemd/cairn-boot@.service")),
    ("cairn-offsite@.service", include_str!("../../../dist/systemd/cairn-offsite@.service")),
    ("cairn-offsite@.timer", include_str!("../../../dist/systemd/cairn-offsite@.timer")),
];

/// The services, which each get the profile's drop-in.
const SERVICES: [&str; 4] = ["cairn-snapshot", "cairn-maintain", "cairn-boot", "cairn-offsite"];

/// The binary path and env-file directory the files in `dist/systemd/` name.
const DIST_BIN: &str = "/usr/local/bin/cairn";
const DIST_ENV_DIR: &str = "/etc/cairn";
/// Where the units keep the default repository (their `StateDirectory=`), writable already.
const STATE_DIR: &str = "/var/lib/cairn";

/// One file to write.
struct File {
    path: PathBuf,
    text: String,
    /// The env file: 0600, and never overwritten (it holds secrets the user put there).
    secret: bool,
}

/// Installs (or, with `--dry-run`, shows) the units for a profile.
pub fn install(cli: &Cli, args: &SystemdInstallArgs) -> Result<u8> {
    // A unit for a profile that does not load would fail every hour: refuse it now.
    let profile = crate::profile::load(&args.profile)?;
    let name = &profile.name;
    if name.is_empty() || name.contains(['@', '/', '\\']) || name.chars().any(char::is_whitespace) {
        bail!("profile name {name:?} cannot be a systemd instance name");
    }
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot tell where this cairn binary is; give --bin")?,
    };
    if !bin.is_absolute() {
        bail!("--bin {} must be an absolute path (systemd runs it from /)", bin.display());
    }
    let files = files(&profile, args, &bin)?;
    let commands = commands(&profile);
    if args.dry_run {
        for f in &files {
            let how = if f.secret { " (unless it exists; mode 0600)" } else { "" };
            outln!("# would write {}{how}", f.path.display())?;
            outln!("{}", f.text.trim_end())?;
            outln!("")?;
        }
        for c in &commands {
            outln!("# would run: {}", c.join(" "))?;
        }
        return Ok(exit::OK);
    }
    for f in &files {
        write(f, cli.quiet)?;
    }
    for c in &commands {
        let status =
            Command::new(&c[0]).args(&c[1..]).status().with_context(|| format!("cannot run {}", c.join(" ")))?;
        if !status.success() {
            bail!("{} failed ({status})", c.join(" "));
        }
    }
    Ok(exit::OK)
}

/// The unit files with this binary and env dir in them, the env file, and the profile's
/// drop-ins.
fn files(profile: &Profile, args: &SystemdInstallArgs, bin: &Path) -> Result<Vec<File>> {
    let bin = bin.to_str().context("the binary's path is not UTF-8")?;
    let env_dir = args.env_dir.to_str().context("--env-dir is not UTF-8")?;
    if bin.contains(char::is_whitespace) || env_dir.contains(char::is_whitespace) {
        // systemd would split ExecStart= at the space.
        bail!("paths with spaces cannot go in a unit file: {bin} / {env_dir}");
    }
    let mut out = Vec::new();
    for (unit, text) in UNITS {
        out.push(File { path: args.unit_dir.join(unit), text: render(text, bin, env_dir), secret: false });
    }
    out.push(File { path: args.env_dir.join(format!("{}.env", profile.name)), text: env_file(profile), secret: true });
    if let Some(dropin) = dropin(profile)? {
        for s in SERVICES {
            let path = args.unit_dir.join(format!("{s}@{}.service.d", profile.name)).join("cairn-profile.conf");
            out.push(File { path, text: dropin.clone(), secret: false });
        }
    }
    Ok(out)
}

/// A unit as shipped, with the installed binary and env dir in place of the dist paths.
pub fn render(unit: &str, bin: &str, env_dir: &str) -> String {
    unit.replace(DIST_BIN, bin).replace(&format!("{DIST_ENV_DIR}/%i.env"), &format!("{env_dir}/%i.env"))
}

/// What the profile needs that the template units cannot know: its directory when it is not
/// one the units' cairn looks in by itself, and a local repository outside the state
/// directory, which `ProtectSystem=strict` would leave read-only.
fn dropin(profile: &Profile) -> Result<Option<String>> {
    let mut text = String::new();
    let dir = profile.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or(dir);
    if dir != Path::new(DIST_ENV_DIR) {
        let dir = dir.to_str().context("the profile's directory is not UTF-8")?;
        writeln!(text, "Environment=CAIRN_CONFIG_DIR={dir}")?;
    }
    if let Some(repo) = profile.repo.as_deref().filter(|r| !r.contains("://") && !r.starts_with("s3:")) {
        if !Path::new(repo).is_absolute() {
            bail!("the profile's repo {repo:?} is relative: a service needs an absolute path");
        }
        if !Path::new(repo).starts_with(STATE_DIR) {
            // A repository not made yet is made by the first snapshot, which needs its parent
            // writable; once made, only the repository is. `-`: a missing path does not stop
            // the unit.
            let repo = Path::new(repo);
            let writable = if repo.exists() { repo } else { repo.parent().unwrap_or(repo) };
            writeln!(text, "ReadWritePaths=-{}", writable.display())?;
        }
    }
    Ok((!text.is_empty()).then(|| {
        format!(
            "# Written by `cairn systemd install {}` for {}.\n[Service]\n{text}",
            profile.name,
            profile.file.display()
        )
    }))
}

/// The env file's first contents: every setting commented out.
fn env_file(profile: &Profile) -> String {
    format!(
        "# Settings and secrets for the cairn units of profile {name} (mode 0600: only root reads it).\n\
         # Lines are NAME=value; they override the units' Environment= lines. A `repo` in the\n\
         # profile wins over CAIRN_REPO.\n\
         #CAIRN_REPO={STATE_DIR}/repo\n",
        name = profile.name
    )
}

/// What makes systemd see the units and start the timers.
/// The off-site copy's timer only for a profile that names an `offsite` repository.
fn commands(profile: &Profile) -> Vec<Vec<String>> {
    let name = &profile.name;
    let v = |s: &[&str]| s.iter().map(|&x| x.to_owned()).collect::<Vec<_>>();
    let mut timers = vec![format!("cairn-snapshot@{name}.timer"), format!("cairn-maintain@{name}.timer")];
    if profile.offsite.is_some() {
        timers.push(format!("cairn-offsite@{name}.timer"));
    }
    vec![
        v(&["systemctl", "daemon-reload"]),
        ["systemctl", "enable", "--now"].iter().map(|&x| x.to_owned()).chain(timers).collect(),
        // Enabled, not started: it is the checkpoint of the next boot.
        v(&["systemctl", "enable", &format!("cairn-boot@{name}.service")]),
    ]
}

fn write(f: &File, quiet: bool) -> Result<()> {
    let say = |text: String| {
        if !quiet {
            errln!("cairn: {text}");
        }
    };
    if let Some(dir) = f.path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if f.secret {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true).mode(0o600);
        match opts.open(&f.path) {
            Ok(mut file) => {
                file.write_all(f.text.as_bytes()).with_context(|| format!("cannot write {}", f.path.display()))?;
                say(format!("wrote {} (mode 0600): put the profile's settings and secrets there", f.path.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                say(format!("kept {} as it is", f.path.display()));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", f.path.display())),
        }
        return Ok(());
    }
    std::fs::write(&f.path, &f.text).with_context(|| format!("cannot write {}", f.path.display()))?;
    say(format!("wrote {}", f.path.display()));
    Ok(())
}
