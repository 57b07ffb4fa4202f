//! Files that change while a snapshot reads them, made deterministic with the `pause`
//! fail-point: cairn stops right after opening the file, the test changes it, and cairn goes
//! on. Each change is detected, the file is read once more, and what is stored always matches
//! its hash (a verified restore proves it) and is the file as it was on the consistent read.

use std::fs;
use std::time::Duration;

use crate::args;
use crate::util::*;

#[test]
fn rewritten_truncated_grown_and_replaced_files_are_read_again_and_stored_consistently() {
    type Change = fn(&std::path::Path, &[u8]) -> Vec<u8>;
    let cases: [(&str, Change); 4] = [
        ("rewritten", |p, old| {
            let new: Vec<u8> = old.iter().map(|b| b.wrapping_add(1)).collect();
            fs::write(p, &new).unwrap();
            new
        }),
        ("truncated", |p, old| {
            fs::OpenOptions::new().write(true).open(p).unwrap().set_len(old.len() as u64 / 3).unwrap();
            old[..old.len() / 3].to_vec()
        }),
        ("grown", |p, old| {
            let mut new = old.to_vec();
            new.extend_from_slice(&Rng::new(2).bytes(300_000));
            fs::write(p, &new).unwrap();
            new
        }),
        ("replaced", |p, _| {
            let new = Rng::new(3).bytes(500_000);
            let tmp = p.with_extension("new");
            fs::write(&tmp, &new).unwrap();
            fs::rename(&tmp, p).unwrap();
            new
        }),
    ];
    for (name, change) in cases {
        let (dir, repo) = new_repo();
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let file = src.join("data.bin");
        let old = Rng::new(1).bytes(1 << 20);
        fs::write(&file, &old).unwrap();
        // Each read of a file pauses 700 ms right after it is opened and stat-ed.
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"))
            .env("CAIRN_REPO", &repo)
            .env("CAIRN_FAILPOINTS", "snapshot.file_read=pause@700")
            .args(args!["--json", "snapshot", &src])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let new = change(&file, &old);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(r["warnings"].as_array().unwrap().is_empty(), "{name}: the second read was consistent: {r}");
        // The first read sees the change (up to the size stat-ed at open) or, for a rename,
        // still the old file through its descriptor; the second read is the new content whole.
        let first = match name {
            "replaced" => old.len(),
            "grown" => old.len(),
            _ => new.len(),
        };
        assert_eq!(r["bytes_read"].as_u64().unwrap(), (first + new.len()) as u64, "{name}: read twice: {r}");
        let target = dir.path().join("out");
        let v = cairn_json(&repo, args!["restore", "latest", "--target", &target, "--verify"], 0);
        assert_eq!(v["files_verified"], 1, "{name}: {v}");
        assert_eq!(fs::read(restored(&target, &src).join("data.bin")).unwrap(), new, "{name}: the file as it is now");
    }
}
