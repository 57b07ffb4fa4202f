//! Exclude patterns: what a snapshot leaves out of its sources and a restore out of what it
//! writes, matched the same way by both.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, IoContext, Result};

/// Compiled patterns: one without `/` matches a name anywhere, one with `/` the whole absolute
/// path. The repository's own folder is always left out, by whatever patterns.
pub(crate) struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    repo_root: Option<PathBuf>,
}

impl Excludes {
    pub(crate) fn new(patterns: &[String], repo_root: Option<PathBuf>) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let trimmed = p.trim_end_matches('/');
            let glob =
                Glob::new(trimmed).map_err(|e| Error::InvalidInput(format!("bad exclude pattern {p:?}: {e}")))?;
            if trimmed.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::InvalidInput(format!("bad exclude pattern: {e}")));
        Ok(Self { names: build(names)?, paths: build(paths)?, repo_root })
    }

    pub(crate) fn excluded(&self, path: &Path, name: &[u8]) -> bool {
        if self.repo_root.as_deref() == Some(path) {
            return true; // never snapshot the repository into itself
        }
        (!self.names.is_empty() && self.names.is_match(std::ffi::OsStr::from_bytes(name)))
            || (!self.paths.is_empty() && self.paths.is_match(path))
    }
}

/// Reads an exclude file: one pattern a line, `#` comments and blank lines ignored.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).at(path)?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_names_and_paths() {
        let ex = Excludes::new(&["*.log".into(), "/srv/cache/".into()], Some(PathBuf::from("/repo")))
            .expect("valid patterns");
        assert!(ex.excluded(Path::new("/var/app.log"), b"app.log"));
        assert!(ex.excluded(Path::new("/srv/cache"), b"cache"));
        assert!(ex.excluded(Path::new("/repo"), b"repo"));
        assert!(!ex.excluded(Path::new("/srv/data"), b"data"));
        assert!(Excludes::new(&["a[".into()], None).is_err());
    }
}
