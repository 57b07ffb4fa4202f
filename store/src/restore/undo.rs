//! Undoing what a restore created: a validated restore whose validation failed rolls back by
//! restoring its safety snapshot (which holds what the restore overwrote or deleted) and
//! removing what the restore made where nothing was. The removal goes through directory
//! descriptors as the restore itself does (`at.rs`, invariant 6): a directory on the way that
//! was swapped for a symlink since is never followed, and a directory is removed only when it
//! is empty, so what a service wrote into a new directory after the restore is kept, and said.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use serde::Serialize;

use super::at::Dir;
use crate::tally::Warning;

/// What [`remove_created`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RemoveReport {
    /// Paths removed.
    pub removed: Vec<String>,
    /// Paths that were not there any more (nothing to do).
    pub gone: Vec<String>,
    /// Paths left in place, with the reason (a directory that is not empty, a directory on
    /// the way that is no longer one, an error).
    pub kept: Vec<Warning>,
}

/// Removes `paths` (entries a restore into `target` created, as its
/// [`RestoreReport::changes`](super::RestoreReport::changes) name them): files, symlinks and
/// special files are unlinked, directories removed only when empty, deepest first, nothing
/// followed. A path not below `target` is kept with a reason, never touched.
pub fn remove_created(target: &Path, paths: &[PathBuf]) -> RemoveReport {
    let mut report = RemoveReport::default();
    let mut paths: Vec<&PathBuf> = paths.iter().collect();
    // Component order puts what is below a path right after it: reversed, children come
    // before their directory.
    paths.sort();
    paths.dedup();
    paths.reverse();
    let root = match Dir::open_target(target) {
        Ok(d) => d,
        Err(e) => {
            let message = format!("cannot open the target {}: {e}", target.display());
            report.kept = paths.iter().map(|p| Warning::new(p, message.clone())).collect();
            return report;
        }
    };
    for path in paths {
        let shown = path.to_string_lossy().into_owned();
        match remove_one(&root, target, path) {
            Ok(true) => report.removed.push(shown),
            Ok(false) => report.gone.push(shown),
            Err(e) => report.kept.push(Warning { path: shown, message: e.to_string() }),
        }
    }
    report
}

/// `Ok(false)` when nothing was there.
fn remove_one(root: &Dir, target: &Path, path: &Path) -> io::Result<bool> {
    let rel = path.strip_prefix(target).map_err(|_| io::Error::other("not below the restore's target; left alone"))?;
    let names: Vec<&OsStr> = rel.iter().collect();
    let Some((last, parents)) = names.split_last() else {
        return Err(io::Error::other("the target itself is never removed"));
    };
    if names.iter().any(|n| *n == OsStr::new("..") || *n == OsStr::new(".")) {
        return Err(io::Error::other("not a plain path; left alone"));
    }
    let mut here: Option<Dir> = None;
    for name in parents {
        let cur = here.as_ref().unwrap_or(root);
        match cur.stat(name)? {
            None => return Ok(false),
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Some(_) => {
                return Err(io::Error::other(format!("{} is no longer a directory", cur.child_path(name).display())))
            }
        }
        here = Some(cur.open_dir(name)?);
    }
    let dir = here.as_ref().unwrap_or(root);
    match dir.stat(last)? {
        None => Ok(false),
        Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => match dir.remove_dir(last) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error()) => {
                Err(io::Error::other("a directory the restore created, not empty: something was put in it since"))
            }
            Err(e) => Err(e),
        },
        Some(_) => dir.remove_file(last).map(|()| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_files_and_empty_directories_deepest_first_and_follows_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("new/sub")).unwrap();
        std::fs::write(root.join("new/sub/f"), b"x").unwrap();
        std::fs::create_dir(root.join("kept")).unwrap();
        std::fs::write(root.join("kept/later"), b"y").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"z").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        let paths: Vec<PathBuf> =
            ["new", "new/sub", "new/sub/f", "kept", "link/victim", "missing"].iter().map(|p| root.join(p)).collect();
        let r = remove_created(root, &paths);
        assert!(!root.join("new").exists());
        assert!(root.join("kept/later").exists(), "a directory with other content stays");
        assert!(outside.path().join("victim").exists(), "a symlink on the way is not followed");
        assert_eq!(r.removed.len(), 3, "{r:?}");
        assert_eq!(r.kept.len(), 2, "{r:?}");
        assert_eq!(r.gone.len(), 1, "{r:?}");
    }
}
