//! Bad input gets a clear error and loses nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::args;
use crate::util::*;

fn stderr_of(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

#[test]
fn init_refuses_a_non_empty_directory_and_an_existing_repository() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("precious"), b"x").unwrap();
    let out = cairn(dir.path()).arg("init").assert().code(1);
    assert!(stderr_of(&out).contains("not empty"), "{}", stderr_of(&out));
    assert_eq!(fs::read(dir.path().join("precious")).unwrap(), b"x");
    let (_d, repo) = new_repo();
    let out = cairn(&repo).arg("init").assert().code(1);
    assert!(stderr_of(&out).contains("already a cairn repository"));
}

#[test]
fn a_directory_that_is_not_a_repository_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(dir.path()).arg("list").assert().code(1);
    assert!(stderr_of(&out).contains("is not a cairn repository"), "{}", stderr_of(&out));
}

#[test]
fn a_missing_source_path_fails_and_records_nothing() {
    let (dir, repo) = new_repo();
    let out = cairn(&repo).args(args!["snapshot", dir.path().join("nope")]).assert().code(1);
    assert!(stderr_of(&out).contains("nope"), "the error names the path: {}", stderr_of(&out));
    assert_eq!(cairn_json(&repo, args!["list"], 0).as_array().unwrap().len(), 0);
}

#[test]
fn a_newer_format_is_refused_clearly() {
    let (_dir, repo) = new_repo();
    // What a newer cairn writes: version 9 in a frame whose BLAKE3 verifies, in both copies
    // (a version byte flipped without its checksum is damage, mended from the other copy).
    let mut bytes = fs::read(repo.join("config")).unwrap();
    bytes[8] = 9; // version field (u32 LE after the 8-byte magic)
    let n = bytes.len() - 32;
    let sum = *blake3::hash(&bytes[..n]).as_bytes();
    bytes[n..].copy_from_slice(&sum);
    for name in ["config", "config.copy"] {
        fs::write(repo.join(name), &bytes).unwrap();
    }
    let out = cairn(&repo).arg("list").assert().code(1);
    assert!(stderr_of(&out).contains("format version 9"), "{}", stderr_of(&out));
}

#[test]
fn an_unreadable_file_is_a_warning_with_exit_code_3_and_the_snapshot_completes() {
    let (dir, repo) = new_repo();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok.txt"), b"fine\n").unwrap();
    fs::write(src.join("locked.txt"), b"secret\n").unwrap();
    fs::set_permissions(src.join("locked.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = cairn_unprivileged(dir.path());
    let out =
        cmd.env("CAIRN_REPO", &repo).env("HOME", dir.path()).args(args!["--json", "snapshot", &src]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    assert!(warnings[0]["path"].as_str().unwrap().ends_with("locked.txt"));
    assert_eq!(r["files"], 1);
    assert!(r["id"].is_string(), "the snapshot completed");
}

#[test]
fn a_remote_location_this_build_cannot_reach_is_refused_not_made_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    for command in [&["init"][..], &["snapshot", "/etc/hostname"], &["list"]] {
        let out =
            cairn(std::path::Path::new("sftp:backups/cairn")).current_dir(dir.path()).args(command).assert().code(1);
        assert!(stderr_of(&out).contains("not supported by this build"), "{}", stderr_of(&out));
        // `s3:` without an endpoint is not a folder either: the form is shown.
        let out =
            cairn(std::path::Path::new("s3:backups/cairn")).current_dir(dir.path()).args(command).assert().code(1);
        assert!(stderr_of(&out).contains("s3:http://HOST[:PORT]/BUCKET"), "{}", stderr_of(&out));
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written in the working directory");
    // `local:` says a folder is meant, whatever its name looks like.
    cairn(std::path::Path::new("local:s3:backups")).current_dir(dir.path()).arg("init").assert().code(0);
    assert!(dir.path().join("s3:backups/config").exists());
}

#[test]
fn opening_where_no_repository_is_writes_nothing_there() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let out = cairn(&missing).arg("list").assert().code(1);
    assert!(stderr_of(&out).contains("is not a cairn repository"), "{}", stderr_of(&out));
    assert!(!missing.exists(), "no folder, lock or index was made where no repository is");
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    cairn(&empty).arg("scrub").assert().code(1);
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn issue15_an_error_says_its_reason_once() {
    let (dir, repo) = new_repo();
    let out = cairn(&repo).args(args!["snapshot", dir.path().join("missing")]).assert().code(1);
    let text = stderr_of(&out);
    assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
    let file = dir.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let out = cairn(&file.join("repo")).arg("list").assert().code(1);
    assert_eq!(stderr_of(&out).matches("Not a directory").count(), 1, "{}", stderr_of(&out));
}
