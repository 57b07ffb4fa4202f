//! Regular files: written to a fresh temporary file in their directory and renamed over the
//! destination (a symlink there is replaced, never followed), or, in a directory this restore
//! made, created under their own name (fetch.rs), or left as they are when they
//! already hold the snapshot's content; the further members of hard-link groups are linked once
//! the walk is done.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustix::fs::FileType;

use super::at::{self, Dir};
use super::fetch::FileJob;
use super::job::{file_type, reason, Deferred, Held, Job, LinkSource};
use super::{Overwrite, RestoreAction};
use crate::error::{Error, Result};
use crate::fsmeta;
use crate::tree::Entry;
use crate::workers::lock;

impl Job<'_> {
    pub(super) fn restore_file(&self, e: &Entry, dir: Option<&Arc<Held>>, name: &OsStr, dest: &Path) -> Result<()> {
        let Some(held) = dir else {
            // A dry run below a directory that does not exist yet: all of it would be written,
            // the further members of a hard-link group as links.
            if e.nlink > 1 && e.dev != 0 && !lock(&self.dry_links).insert((e.dev, e.inode)) {
                self.counts.hardlinks.add(1);
            } else {
                self.counts.files_written.add(1);
                self.counts.bytes_written.add(e.size);
            }
            self.change(dest, RestoreAction::Create);
            return Ok(());
        };
        let link = (e.nlink > 1 && e.dev != 0).then_some((e.dev, e.inode));
        if let Some(key) = link {
            let mut links = lock(&self.links);
            if links.contains_key(&key) {
                drop(links);
                held.links_pending.store(true, Ordering::SeqCst);
                lock(&self.deferred).push(Deferred {
                    dir: Arc::clone(held),
                    name: name.to_os_string(),
                    entry: e.clone(),
                });
                return Ok(());
            }
            links.insert(key, LinkSource { dir: Arc::clone(held), name: name.to_os_string(), written: None });
        }
        // Written by the pipeline, which records the inode of a link group's first member
        // once it is placed; a file kept as it is has its inode at once.
        if let (Some(kept), Some(key)) = (self.write_file(e, held, name, dest, link)?, link) {
            if let Some(src) = lock(&self.links).get_mut(&key) {
                src.written = Some(kept);
            }
        }
        Ok(())
    }

    /// Writes one file (or leaves it as it is): decides here, then hands the file to the
    /// pipeline (fetch.rs), which writes and places it (its failures are reported there).
    /// The (dev, inode) of a file left as it is, which already holds the snapshot's content.
    pub(super) fn write_file(
        &self,
        e: &Entry,
        held: &Arc<Held>,
        name: &OsStr,
        dest: &Path,
        link: Option<(u64, u64)>,
    ) -> Result<Option<(u64, u64)>> {
        let d = &held.dir;
        let io_err = |err: io::Error| Error::io(dest, err);
        // A directory this restore made holds nothing it did not put there.
        let existing = if held.fresh { None } else { d.stat(name).map_err(io_err)? };
        let action = if existing.is_some() { RestoreAction::Overwrite } else { RestoreAction::Create };
        if let Some(existing) = existing {
            if file_type(&existing) == FileType::Directory {
                self.failed.add(dest, "a directory is in the way; file not restored");
                return Ok(None);
            }
            match self.opts.overwrite {
                Overwrite::Never => {
                    self.counts.files_skipped.add(1);
                    self.progress.inc(e.size);
                    return Ok(None);
                }
                Overwrite::IfChanged if file_type(&existing) == FileType::RegularFile => {
                    if let Some(kept) = self.keep_if_same(e, d, name, dest) {
                        self.counts.files_skipped.add(1);
                        self.progress.inc(e.size);
                        return Ok(Some(kept));
                    }
                }
                _ => {}
            }
        }
        if self.opts.dry_run {
            self.counts.files_written.add(1);
            self.counts.bytes_written.add(e.size);
            self.change(dest, action);
            return Ok(None);
        }
        self.enqueue(FileJob::new(held, name, dest.to_path_buf(), e, action, link));
        Ok(None)
    }

    /// `if-changed`: the existing file is kept when it has the snapshot's content. It is opened
    /// once (never through a symlink) and judged, and its metadata set, through that one
    /// descriptor. Size and mtime vouch for the content only when owner and mode match too;
    /// before a kept file gets another owner or mode its content is hashed, so a file another
    /// user replaced (keeping size and mtime) never becomes theirs-with-root's-setuid. A file
    /// with other hard links is never kept: its inode may be shared with a file outside the
    /// target, which must not get the snapshot's metadata.
    fn keep_if_same(&self, e: &Entry, d: &Dir, name: &OsStr, dest: &Path) -> Option<(u64, u64)> {
        let f = d.open_regular(name).ok()??;
        let st = rustix::fs::fstat(&f).ok()?;
        if st.st_nlink > 1 || u64::try_from(st.st_size).ok() != Some(e.size) {
            return None;
        }
        let owner_same = !self.root_user || (st.st_uid == e.uid && st.st_gid == e.gid);
        let meta_same = owner_same && st.st_mode & 0o7777 == e.mode & 0o7777;
        let mtime_same = fsmeta::timestamp(st.st_mtime, i64::try_from(st.st_mtime_nsec).unwrap_or(0)) == e.mtime;
        let content_same =
            (meta_same && mtime_same) || (e.file_hash.is_some() && at::hash_open_file(&f).ok() == e.file_hash);
        if !content_same {
            return None;
        }
        if !(meta_same && mtime_same) {
            self.change(dest, RestoreAction::Metadata);
        }
        if !self.opts.dry_run {
            self.apply_file_meta(&f, e, dest, e.mode);
        }
        Some((st.st_dev, st.st_ino))
    }

    /// Links the remaining members of hard-link groups, then applies the metadata of the
    /// directories that received them.
    pub(super) fn finish(&self) {
        let deferred = std::mem::take(&mut *lock(&self.deferred));
        for d in deferred {
            let dest = d.dir.dir.child_path(&d.name);
            if let Err(err) = self.link_member(&d, &dest) {
                let list = if err.is_damage() { &self.damaged } else { &self.failed };
                list.add(&dest, reason(&err));
            }
        }
        let mut late = std::mem::take(&mut *lock(&self.late_dirs));
        late.sort_by_key(|(h, _)| std::cmp::Reverse(h.dir.path.components().count()));
        for (held, e) in &late {
            self.apply_dir_meta(&held.dir, e);
        }
    }

    fn link_member(&self, d: &Deferred, dest: &Path) -> Result<()> {
        let io_err = |err: io::Error| Error::io(dest, err);
        let e = &d.entry;
        let (src_dir, src_name, written) = {
            let links = lock(&self.links);
            let Some(src) = links.get(&(e.dev, e.inode)) else {
                return Ok(());
            };
            (Arc::clone(&src.dir), src.name.clone(), src.written)
        };
        // The first member must still be the inode this run wrote (or left unchanged).
        let now = src_dir.dir.stat(&src_name).map_err(io_err)?;
        if self.opts.dry_run {
            // As the real run would: a link is made unless the first member is kept and this
            // member already is that very file.
            let kept = matches!((now, written), (Some(st), Some(w)) if (st.st_dev, st.st_ino) == w);
            let here = d.dir.dir.stat(&d.name).map_err(io_err)?;
            let same = kept && here.zip(now).is_some_and(|(h, f)| (h.st_dev, h.st_ino) == (f.st_dev, f.st_ino));
            if !same {
                self.counts.hardlinks.add(1);
                self.change(dest, if here.is_some() { RestoreAction::Overwrite } else { RestoreAction::Create });
            }
            return Ok(());
        }
        let first_ok = matches!((now, written), (Some(st), Some(w)) if (st.st_dev, st.st_ino) == w);
        if !first_ok {
            // The first member could not be written (damage), was left with other content
            // (`--overwrite never`), or was changed since: this one is restored on its own.
            let mut alone = e.clone();
            alone.nlink = 1;
            return self.write_file(&alone, &d.dir, &d.name, dest, None).map(|_| ());
        }
        let here = d.dir.dir.stat(&d.name).map_err(io_err)?;
        if let Some(st) = here {
            let same = now.is_some_and(|f| (f.st_dev, f.st_ino) == (st.st_dev, st.st_ino));
            if self.opts.overwrite == Overwrite::Never || same {
                return Ok(());
            }
            if file_type(&st) == FileType::Directory {
                self.failed.add(dest, "a directory is in the way; hard link not restored");
                return Ok(());
            }
            d.dir.dir.remove_file(&d.name).map_err(io_err)?;
        }
        let Some(want) = written else { return Ok(()) };
        crate::failpoint::hit("restore.before_link");
        if !d.dir.dir.link_verified(&src_dir.dir, &src_name, want, &d.name).map_err(io_err)? {
            // Changed between the check above and now: this member is restored on its own.
            let mut alone = e.clone();
            alone.nlink = 1;
            return self.write_file(&alone, &d.dir, &d.name, dest, None).map(|_| ());
        }
        self.counts.hardlinks.add(1);
        self.change(dest, if here.is_some() { RestoreAction::Overwrite } else { RestoreAction::Create });
        Ok(())
    }
}
