//! Issue 13, the snapshot side: what a snapshot reads of its sources. A source given as a
//! symlink, the repository met again under another path, trees deeper than PATH_MAX, totals
//! that add up when a file cannot be read, and the repository root's own mode.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::*;

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn issue13_init_creates_the_repository_root_private_or_group_readable() {
    let dir = tempfile::tempdir().unwrap();
    // What this process's umask gives a new directory: the parents init creates get no more.
    let probe = dir.path().join("probe");
    fs::create_dir(&probe).unwrap();
    let umask_mode = mode_of(&probe);
    for (group, want) in [(false, 0o700), (true, 0o750)] {
        let parent = dir.path().join(format!("new-parent-{group}"));
        let repo = parent.join("below").join("repo");
        let mut init = cairn(&repo);
        init.arg("init");
        if group {
            init.arg("--group-readable");
        }
        init.assert().success();
        assert_eq!(mode_of(&repo), want, "root with group_readable={group}");
        assert_eq!(mode_of(&parent), umask_mode, "a parent init made");
        assert_eq!(mode_of(&parent.join("below")), umask_mode, "a parent init made");
    }
}
