//! `diff`: what changed between two snapshots, or between a snapshot and the files on disk now
//! (live.rs).
//!
//! What counts as a change is decided here once for both: a file's content (`M`), or what
//! restore sets (`T`): mode, owner, mtime, extended attributes, symlink target, device number.
//! A directory's mtime is left out: it changes when an entry is added, removed or renamed in
//! it, and those entries are listed themselves; for a directory above the source paths it
//! changes with things the snapshot never held. Listing it would put `T` on the parent of
//! every change (issue 15 item 15). A directory's mode, owner and attributes still count.

mod live;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::TreeId;
use crate::inspect::kind_name;
use crate::repo::{Repo, Snapshot};
use crate::tally::Warning;
use crate::tree::{Entry, EntryKind, Tree};

/// One line of a diff.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `+` added, `-` removed, `M` content modified, `T` metadata only.
    pub marker: char,
    /// Absolute path.
    pub path: String,
    /// `file`, `dir`, ... (of the newer entry when there is one).
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A diff's changes and totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffReport {
    /// Changes in path order.
    pub changes: Vec<Change>,
    /// Entries added.
    pub added: u64,
    /// Entries removed.
    pub removed: u64,
    /// Files whose content changed.
    pub modified: u64,
    /// Entries whose metadata alone changed.
    pub metadata: u64,
    /// Trees compared (the cost follows the change, not the tree).
    pub trees_compared: u64,
    /// Live files read to compare their content (size equal, times or inode not): the others
    /// were judged by their metadata, as a snapshot judges them. 0 between two snapshots.
    pub files_read: u64,
    /// Paths given that neither side holds (left out when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
    /// Live entries that could not be read, so were not compared (left out when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

impl DiffReport {
    /// True when a change was found.
    #[must_use]
    pub fn differs(&self) -> bool {
        !self.changes.is_empty()
    }

    fn push(&mut self, marker: char, path: &Path, kind: EntryKind) {
        match marker {
            '+' => self.added += 1,
            '-' => self.removed += 1,
            'M' => self.modified += 1,
            _ => self.metadata += 1,
        }
        self.changes.push(Change { marker, path: path.to_string_lossy().into_owned(), kind: kind_name(kind) });
    }

    fn finish(&mut self) {
        self.changes.sort_by(|x, y| x.path.cmp(&y.path));
    }
}

/// Metadata differs: anything restore sets, but content; a directory's mtime is not counted
/// (see the module's comment).
fn meta_differs(a: &Entry, b: &Entry) -> bool {
    a.kind != b.kind
        || a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || (a.mtime != b.mtime && a.kind != EntryKind::Dir)
        || a.xattrs != b.xattrs
        || a.target != b.target
        || a.rdev != b.rdev
}

fn content_differs(a: &Entry, b: &Entry) -> bool {
    a.size != b.size || a.file_hash != b.file_hash || (a.file_hash.is_none() && a.content != b.content)
}

impl Repo {
    /// What changed from snapshot `a` to `b` (below `paths`, or everywhere). Only subtrees
    /// whose IDs differ are walked.
    pub fn diff(&self, a: &Snapshot, b: &Snapshot, paths: &[PathBuf]) -> Result<DiffReport> {
        let mut report = DiffReport::default();
        let roots: Vec<PathBuf> = if paths.is_empty() { vec![PathBuf::from("/")] } else { paths.to_vec() };
        let given = roots.len();
        for p in roots {
            let p = Path::new("/").join(p.strip_prefix("/").unwrap_or(&p));
            if p == Path::new("/") {
                self.diff_trees(Some(a.record.root), Some(b.record.root), &p, &mut report)?;
                continue;
            }
            let ea = self.find_entry(a.record.root, &p)?;
            let eb = self.find_entry(b.record.root, &p)?;
            if ea.is_none() && eb.is_none() {
                report.not_found.push(p.to_string_lossy().into_owned());
            }
            self.diff_entry(ea.as_ref(), eb.as_ref(), &p, &mut report)?;
        }
        if given > 0 && report.not_found.len() == given {
            return Err(Error::NotInSnapshot {
                paths: report.not_found.join(", "),
                snapshot: format!("{} or {}", a.id.short(8), b.id.short(8)),
            });
        }
        report.finish();
        Ok(report)
    }

    fn diff_entry(&self, a: Option<&Entry>, b: Option<&Entry>, path: &Path, r: &mut DiffReport) -> Result<()> {
        match (a, b) {
            (None, None) => {}
            (None, Some(e)) => {
                r.push('+', path, e.kind);
                if e.kind == EntryKind::Dir {
                    self.diff_trees(None, e.subtree, path, r)?;
                }
            }
            (Some(e), None) => {
                r.push('-', path, e.kind);
                if e.kind == EntryKind::Dir {
                    self.diff_trees(e.subtree, None, path, r)?;
                }
            }
            (Some(x), Some(y)) if x.kind != y.kind => {
                self.diff_entry(Some(x), None, path, r)?;
                self.diff_entry(None, Some(y), path, r)?;
            }
            (Some(x), Some(y)) => {
                if x.kind == EntryKind::File && content_differs(x, y) {
                    r.push('M', path, y.kind);
                } else if meta_differs(x, y) {
                    r.push('T', path, y.kind);
                }
                if x.kind == EntryKind::Dir && x.subtree != y.subtree {
                    self.diff_trees(x.subtree, y.subtree, path, r)?;
                }
            }
        }
        Ok(())
    }

    fn diff_trees(&self, a: Option<TreeId>, b: Option<TreeId>, at: &Path, r: &mut DiffReport) -> Result<()> {
        if a == b {
            return Ok(()); // the Merkle shortcut: equal IDs, equal subtrees
        }
        r.trees_compared += 1;
        let load = |t: Option<TreeId>| t.map_or(Ok(Tree::default()), |t| self.load_tree(t));
        let (ta, tb) = (load(a)?, load(b)?);
        let mut names: Vec<&[u8]> =
            ta.entries.iter().chain(&tb.entries).filter(|e| e.has_safe_name()).map(|e| e.name.as_slice()).collect();
        names.sort_unstable();
        names.dedup();
        for n in names {
            let path = at.join(OsStr::from_bytes(n));
            self.diff_entry(ta.get(n), tb.get(n), &path, r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Timestamp;

    #[test]
    fn a_directory_mtime_alone_is_not_a_change_but_its_mode_is() {
        let mut a = Entry::new(b"d".to_vec(), EntryKind::Dir);
        let mut b = a.clone();
        b.mtime = Timestamp { sec: 9, nsec: 0 };
        assert!(!meta_differs(&a, &b));
        b.mode = 0o700;
        assert!(meta_differs(&a, &b));
        a.kind = EntryKind::File;
        let mut f = a.clone();
        f.mtime = Timestamp { sec: 9, nsec: 0 };
        assert!(meta_differs(&a, &f), "a file's mtime still counts");
    }
}
