//! Metadata of restored entries: owner (root only), mode, extended attributes and times, set
//! through a descriptor of what this restore made or checked, never by path.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::at::{self, Dir};
use super::job::Job;
use crate::tree::Entry;

impl Job<'_> {
    /// Owner (root only; others count it), then mode (chown clears setuid), extended
    /// attributes and times, all through the open file. Failures are warnings: the data is
    /// what matters.
    pub(super) fn apply_file_meta(&self, f: &File, e: &Entry, path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        if self.owner_wanted(e) {
            if let Err(err) = std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid)) {
                self.warnings.add(path, format!("cannot set owner: {err}"));
            }
        }
        if let Err(err) = f.set_permissions(std::fs::Permissions::from_mode(mode)) {
            self.warnings.add(path, format!("cannot set mode: {err}"));
        }
        for (key, value) in &e.xattrs {
            if let Err(err) = xattr::FileExt::set_xattr(f, OsStr::from_bytes(key), value) {
                self.warnings.add(path, format!("cannot set extended attributes: {err}"));
                break;
            }
        }
        if let Err(err) = at::set_fd_times(f, e.mtime) {
            self.warnings.add(path, format!("cannot set times: {err}"));
        }
    }

    pub(super) fn apply_dir_meta(&self, d: &Dir, e: &Entry) {
        self.apply_file_meta(d.file(), e, &d.path, e.mode);
    }

    /// Metadata of a symlink or special file just made: owner and mode through an `O_PATH`
    /// descriptor checked to be what was made, times and attributes by name without following.
    pub(super) fn apply_meta_at(&self, d: &Dir, name: &OsStr, e: &Entry, path: &Path) {
        let made = match d.open_made(name, e.kind) {
            Ok(m) => m,
            Err(err) => return self.failed.add(path, err.to_string()),
        };
        if self.owner_wanted(e) {
            if let Err(err) = made.chown(e.uid, e.gid) {
                self.warnings.add(path, format!("cannot set owner: {err}"));
            }
        }
        if let Err(err) = made.chmod(e.mode) {
            self.warnings.add(path, format!("cannot set mode: {err}"));
        }
        if !e.xattrs.is_empty() {
            if let Err(err) = d.set_xattrs_at(name, &e.xattrs) {
                self.warnings.add(path, format!("cannot set extended attributes: {err}"));
            }
        }
        if let Err(err) = d.times_at(name, e.mtime) {
            self.warnings.add(path, format!("cannot set times: {err}"));
        }
    }

    /// True when this restore sets owners; a non-root restore counts the entries it cannot
    /// give their owner (one summary warning).
    fn owner_wanted(&self, e: &Entry) -> bool {
        if self.root_user {
            return true;
        }
        if e.uid != rustix::process::geteuid().as_raw() || e.gid != rustix::process::getegid().as_raw() {
            self.counts.owner_failures.add(1);
        }
        false
    }

    pub(super) fn secure_dir(&self, d: &Dir, e: &Entry) {
        use std::os::unix::fs::PermissionsExt;
        if let Err(err) = std::os::unix::fs::fchown(d.file(), Some(e.uid), Some(e.gid)) {
            self.warnings.add(&d.path, format!("cannot set owner: {err}"));
        }
        if let Err(err) = d.file().set_permissions(std::fs::Permissions::from_mode(e.mode)) {
            self.warnings.add(&d.path, format!("cannot set mode: {err}"));
        }
    }
}
