//! What the store logs reaches stderr, at the levels -v and -q choose, one line per event with
//! its priority under systemd, and never twice beside the report that lists it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Output;

use crate::args;
use crate::util::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A repository whose config copy cannot be written again: opening it logs a warning.
fn repo_with_an_unwritable_config_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, repo) = new_repo();
    fs::remove_file(repo.join("config.copy")).unwrap();
    fs::create_dir_all(repo.join("config.copy").join("in-the-way")).unwrap();
    (dir, repo)
}

#[test]
fn a_warning_the_store_logs_is_printed_and_quiet_silences_it() {
    let (_dir, repo) = repo_with_an_unwritable_config_copy();
    let out = cairn(&repo).arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).lines().any(|l| l.starts_with("cairn: warning: cannot write config.copy")),
        "{}",
        stderr(&out)
    );
    let out = cairn(&repo).args(["-q", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "", "-q prints nothing but errors");
}

/// `cairn ARGS` on `repo` with `JOURNAL_STREAM` set and stderr appended to `log`.
fn run_into(repo: &std::path::Path, stream: &str, log: &std::path::Path, args: &[&std::ffi::OsStr]) -> Output {
    let err = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    std::process::Command::new(cairn_bin())
        .env("CAIRN_REPO", repo)
        .env("TZ", "UTC")
        .env("JOURNAL_STREAM", stream)
        .args(args)
        .stderr(err)
        .output()
        .unwrap()
}

/// The `JOURNAL_STREAM` that names `log` (systemd names the stream stderr is connected to; a
/// file stands in for its socket).
fn stream_of(log: &std::path::Path) -> String {
    let meta = fs::File::create(log).unwrap().metadata().unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

#[test]
fn under_the_journal_every_event_is_one_line_with_its_priority() {
    let (dir, repo) = repo_with_an_unwritable_config_copy();
    let log = dir.path().join("journal");
    let stream = stream_of(&log);
    let out = run_into(&repo, &stream, &log, args!["list"]);
    assert_eq!(out.status.code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.lines().any(|l| l.starts_with("<4>cairn: warning: cannot write config.copy")), "{text}");
    assert!(text.lines().all(|l| l.starts_with("<4>cairn: warning: ")), "{text}");

    let out = run_into(&dir.path().join("nothing here"), &stream, &log, args!["list"]);
    assert_eq!(out.status.code(), Some(1));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.lines().last().unwrap().starts_with("<3>cairn: error: cannot open repository"), "{text}");

    // The variable alone, inherited by a process whose stderr went elsewhere, is no journal.
    let out = cairn(&repo).env("JOURNAL_STREAM", &stream).arg("list").output().unwrap();
    assert!(stderr(&out).lines().all(|l| l.starts_with("cairn: warning: ")), "{}", stderr(&out));
}

#[test]
fn a_snapshot_note_is_said_once_even_with_verbose() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    let out = cairn(&repo).args(args!["-v", "snapshot", &link]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stderr(&out).lines().filter(|l| l.contains("a symlink to")).count();
    assert_eq!(said, 1, "{}", stderr(&out));
}

#[test]
fn a_snapshot_warning_is_said_once() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("locked.txt"), b"secret\n").unwrap();
    fs::set_permissions(src.join("locked.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = cairn_unprivileged(dir.path());
    let out = cmd.env("CAIRN_REPO", &repo).env("HOME", dir.path()).args(args!["snapshot", &src]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let said = stderr(&out).lines().filter(|l| l.contains("locked.txt")).count();
    assert_eq!(said, 1, "{}", stderr(&out));
}

#[test]
fn under_the_journal_a_report_warning_is_one_line_with_its_priority() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    // A source that is a symlink gets a note naming it; a newline in its name must not split
    // the journal's event in two.
    let link = dir.path().join("two\nlines");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    let log = dir.path().join("journal");
    let out = run_into(&repo, &stream_of(&log), &log, args!["snapshot", &link]);
    assert_eq!(out.status.code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    let notes: Vec<&str> = text.lines().filter(|l| l.contains("a symlink to")).collect();
    assert_eq!(notes.len(), 1, "{text}");
    assert!(notes[0].starts_with("<6>note: ") && notes[0].contains("two lines"), "{text}");
    assert!(text.lines().all(|l| l.starts_with('<')), "every line carries a priority: {text}");
}

#[test]
fn issue19_under_the_journal_a_run_is_one_event_naming_the_profile_and_the_snapshot() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let conf = dir.path().join("conf");
    fs::create_dir_all(&conf).unwrap();
    fs::write(conf.join("gw.toml"), format!("sources = [{src:?}]\ntags = [\"gw\"]\n")).unwrap();
    let log = dir.path().join("journal");
    let stream = stream_of(&log);
    // As a unit runs it: stdout and stderr both the journal's stream.
    let run = |args: &[&str]| {
        let out = fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::process::Command::new(cairn_bin())
            .env("CAIRN_REPO", &repo)
            .env("CAIRN_CONFIG_DIR", &conf)
            .env("JOURNAL_STREAM", &stream)
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap()
    };
    assert!(run(&["snapshot", "--profile", "gw"]).success());
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "one event: {text}");
    let line = text.lines().next().unwrap();
    let id = cairn_json(&repo, args!["list"], 0)[0]["id"].as_str().unwrap().to_owned();
    assert!(line.starts_with("<6>cairn: [profile gw] snapshot "), "{line}");
    assert!(line.contains(&id) && line.contains("files: 1 new"), "the ID and the counts in one line: {line}");

    // A failure is one error line, naming the profile too.
    fs::write(&log, b"").unwrap();
    fs::write(conf.join("gw.toml"), format!("sources = [{:?}]\n", dir.path().join("gone"))).unwrap();
    assert!(!run(&["snapshot", "--profile", "gw"]).success());
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("<3>cairn: [profile gw] error: "), "{text}");
}
