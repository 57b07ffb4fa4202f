//! Passphrases of encrypted repositories (docs/ENCRYPTION.md): from `--password-file` or
//! `CAIRN_PASSWORD_FILE`, from `--password-command` (its first line; for a secret manager), or
//! from a prompt on the terminal, in that order. Never from an argument, never logged; the
//! bytes live in `Passphrase`, which wipes them when dropped.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use cairn_store::{Passphrase, PassphraseSource};

use crate::args::Cli;

/// The first line of `bytes`, without its line ending; the rest is wiped.
fn first_line(mut bytes: Vec<u8>) -> Passphrase {
    let end = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
    let mut line = bytes[..end].to_vec();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    bytes.iter_mut().for_each(|b| *b = 0);
    Passphrase::new(line)
}

fn from_file(path: &Path) -> Result<Passphrase> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
    Ok(first_line(bytes))
}

fn from_command(command: &str) -> Result<Passphrase> {
    let argv = shlex::split(command).filter(|a| !a.is_empty()).context("--password-command: not a command line")?;
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("--password-command: cannot run {}", argv[0]))?;
    if !out.status.success() {
        bail!("--password-command {} failed ({})", argv[0], out.status);
    }
    Ok(first_line(out.stdout))
}

/// Reads a line from the terminal with echo off.
fn prompt(question: &str) -> Result<Passphrase> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").context(
        "no passphrase: give --password-file, CAIRN_PASSWORD_FILE or --password-command (no terminal to ask on)",
    )?;
    let saved = tcgetattr(&tty).context("no passphrase: the terminal cannot be asked")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&tty, OptionalActions::Flush, &quiet).context("cannot turn the terminal's echo off")?;
    let mut out = &tty;
    let _ = write!(out, "{question}");
    let _ = out.flush();
    let mut line = Vec::new();
    let read = std::io::BufReader::new(&tty).read_until(b'\n', &mut line);
    let _ = tcsetattr(&tty, OptionalActions::Flush, &saved);
    let _ = writeln!(out);
    read.context("cannot read the passphrase from the terminal")?;
    Ok(first_line(line))
}

/// True when a passphrase was given on purpose (a file or a command): a repository that is
/// not encrypted is then refused rather than written in clear.
pub fn given(cli: &Cli) -> bool {
    let args = PasswordArgs::of(cli);
    args.file.is_some() || args.command.is_some()
}

/// The store's source of the passphrase, asked only when a repository is encrypted.
pub fn source(cli: &Cli) -> PassphraseSource {
    let args = PasswordArgs::of(cli);
    PassphraseSource::new(move || args.read().map_err(|e| crate::error_text(&e)))
}

/// The password options alone (the source outlives the borrow of `Cli`).
struct PasswordArgs {
    file: Option<std::path::PathBuf>,
    command: Option<String>,
}

impl PasswordArgs {
    /// The command line's options, else the profile's.
    fn of(cli: &Cli) -> Self {
        if cli.password_file.is_some() || cli.password_command.is_some() {
            return Self { file: cli.password_file.clone(), command: cli.password_command.clone() };
        }
        let profile = crate::commands::profile(cli).ok().flatten();
        Self {
            file: profile.and_then(|p| p.password_file.clone()),
            command: profile.and_then(|p| p.password_command.clone()),
        }
    }

    /// The passphrase, read once per process (a prompt asks once).
    fn read(&self) -> Result<Passphrase> {
        static READ: Mutex<Option<Passphrase>> = Mutex::new(None);
        let mut slot = READ.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let pass = match (&self.file, &self.command) {
            (Some(path), _) => from_file(path)?,
            (None, Some(command)) => from_command(command)?,
            (None, None) => prompt("passphrase: ")?,
        };
        *slot = Some(pass.clone());
        Ok(pass)
    }
}

/// The passphrase of a repository being created: the global options', or asked twice.
pub fn for_init(cli: &Cli) -> Result<Passphrase> {
    if given(cli) {
        return PasswordArgs::of(cli).read();
    }
    new_from(None)
}

/// A new key's passphrase: `--new-password-file` (or `CAIRN_NEW_PASSWORD_FILE`), else asked
/// twice on the terminal.
pub fn new_from(file: Option<&Path>) -> Result<Passphrase> {
    if let Some(path) = file {
        let pass = from_file(path)?;
        if pass.is_empty() {
            bail!("the new passphrase in {} is empty", path.display());
        }
        return Ok(pass);
    }
    let first = prompt("new passphrase: ")?;
    let again = prompt("new passphrase again: ")?;
    if first != again {
        bail!("the two passphrases differ");
    }
    if first.is_empty() {
        bail!("an empty passphrase protects nothing");
    }
    Ok(first)
}
