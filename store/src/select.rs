//! Choosing snapshots: the filters every command that names a snapshot takes (`--tag`,
//! `--host`, `--path`), and the rules names follow so that a name picks one snapshot: labels are
//! unique, never look like an ID, and never say `latest`; the `safety` tag is the restore's.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::SAFETY_TAG;
use crate::repo::Snapshot;

/// Which snapshots a name may pick, and a policy may judge. Empty: all of them (but `latest`
/// and `--at` leave out restores' safety snapshots unless the `safety` tag is asked for).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotFilter {
    /// Snapshots with any of these tags (all when empty).
    pub tags: Vec<String>,
    /// Snapshots with every one of these tags (a profile's: they scope what it names).
    pub all_tags: Vec<String>,
    /// Snapshots of this host.
    pub host: Option<String>,
    /// Snapshots that cover any of these absolute paths: a source path is the path, above it,
    /// or below it.
    pub paths: Vec<PathBuf>,
}

impl SnapshotFilter {
    /// True when it lets every snapshot through.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.all_tags.is_empty() && self.host.is_none() && self.paths.is_empty()
    }

    /// True when `s` passes.
    #[must_use]
    pub fn matches(&self, s: &Snapshot) -> bool {
        let r = &s.record;
        (self.tags.is_empty() || r.tags.iter().any(|t| self.tags.contains(t)))
            && self.all_tags.iter().all(|t| r.tags.contains(t))
            && self.host.as_ref().is_none_or(|h| &r.host == h)
            && (self.paths.is_empty()
                || r.paths.iter().any(|source| {
                    let source = Path::new(std::ffi::OsStr::from_bytes(source));
                    self.paths.iter().any(|p| source.starts_with(p) || p.starts_with(source))
                }))
    }

    /// True when the filter asks for safety snapshots by their tag: then `latest` and `--at`
    /// consider them too.
    #[must_use]
    pub fn wants_safety(&self) -> bool {
        self.tags.iter().any(|t| t == SAFETY_TAG)
    }

    /// The filter in words, for "no snapshot matches" (empty when it lets all through).
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.tags.is_empty() {
            parts.push(format!("tagged {}", self.tags.join(" or ")));
        }
        if !self.all_tags.is_empty() {
            parts.push(format!("tagged {}", self.all_tags.join(" and ")));
        }
        if let Some(h) = &self.host {
            parts.push(format!("of host {h}"));
        }
        if !self.paths.is_empty() {
            let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
            parts.push(format!("covering {}", paths.join(" or ")));
        }
        parts.join(", ")
    }
}

/// The longest label accepted.
const MAX_LABEL: usize = 128;

/// Refuses a label that could not name one snapshot: empty or too long, `latest`, only hex
/// digits (it would read as an ID prefix: `forget c3ed` must not pick a label over an ID), or
/// with spaces, slashes or control characters (labels go in file-less places like shell
/// arguments and tables).
pub fn check_label(label: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidInput(format!("label {label:?} {why}")));
    if label.is_empty() || label.len() > MAX_LABEL {
        return bad(&format!("must be 1 to {MAX_LABEL} bytes long"));
    }
    if label == "latest" {
        return bad("is reserved: `latest` names the newest snapshot");
    }
    if label.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad(
            "is made of hex digits only and would read as the start of a snapshot ID; add a letter past f or a dash",
        );
    }
    if label.starts_with('-') {
        return bad("starts with '-' and would read as an option");
    }
    if label.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return bad("has a space, a slash or a control character");
    }
    Ok(())
}

/// Refuses tags a user may not give: the `safety` tag marks restores' safety snapshots, which
/// `latest` skips and their own policy expires; empty tags and tags with commas or control
/// characters (a comma separates tags in `list`).
pub fn check_tags(tags: &[String]) -> Result<()> {
    for t in tags {
        if t == SAFETY_TAG {
            return Err(Error::InvalidInput(format!(
                "the tag {SAFETY_TAG:?} is reserved for restores' safety snapshots; pick another"
            )));
        }
        if t.is_empty() || t.contains(',') || t.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!("tag {t:?} is empty or has a comma or control character")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_that_could_name_something_else_are_refused() {
        for bad in ["", "latest", "c3ed", "C3ED2FB5", "0", "-x", "a b", "a/b", "x\n"] {
            assert!(check_label(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["before-upgrade", "v1.2.3", "c3ed-x", "release_7", "ok:42", "g00d"] {
            check_label(good).unwrap();
        }
        assert!(check_label(&"x".repeat(MAX_LABEL + 1)).is_err());
    }

    #[test]
    fn the_safety_tag_and_odd_tags_are_refused() {
        assert!(check_tags(&["safety".into()]).is_err());
        assert!(check_tags(&["a,b".into()]).is_err());
        assert!(check_tags(&[String::new()]).is_err());
        check_tags(&["hourly".into(), "pre-deploy".into()]).unwrap();
    }
}
