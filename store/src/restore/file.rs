//! Regular files: written to a fresh temporary file in their directory and renamed over the
//! destination (a symlink there is replaced, never followed), or left as they are when they
//! already hold the snapshot's content; the further members of hard-link groups are linked once
//! the walk is done.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rayon::prelude::*;
use rustix::fs::FileType;

use super::at::{self, Dir};
use super::job::{file_type, reason, Deferred, Held, Job, LinkSource};
use super::{Overwrite, RestoreAction};
use crate::error::{Error, Result};
use crate::fsmeta;
use crate::id::BlobId;
use crate::index::BlobLocation;
use crate::tree::{ChunkRef, Entry};
use crate::workers::lock;

/// Files up to this size without holes are written in one call.
const SMALL_FILE: u64 = 1 << 20;

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
        let d = &held.dir;
        if e.nlink > 1 && e.dev != 0 {
            let mut links = lock(&self.links);
            if links.contains_key(&(e.dev, e.inode)) {
                drop(links);
                held.links_pending.store(true, Ordering::SeqCst);
                lock(&self.deferred).push(Deferred {
                    dir: Arc::clone(held),
                    name: name.to_os_string(),
                    entry: e.clone(),
                });
                return Ok(());
            }
            links.insert(
                (e.dev, e.inode),
                LinkSource { dir: Arc::clone(held), name: name.to_os_string(), written: None },
            );
        }
        self.write_file(e, d, name, dest).map(|written| {
            if let (Some(ino), true) = (written, e.nlink > 1 && e.dev != 0) {
                if let Some(src) = lock(&self.links).get_mut(&(e.dev, e.inode)) {
                    src.written = Some(ino);
                }
            }
        })
    }

    /// Writes one file (or leaves it as it is); the (dev, inode) now holding the snapshot's
    /// content there, if any.
    pub(super) fn write_file(&self, e: &Entry, d: &Dir, name: &OsStr, dest: &Path) -> Result<Option<(u64, u64)>> {
        let io_err = |err: io::Error| Error::io(dest, err);
        let existing = d.stat(name).map_err(io_err)?;
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
        let (file, tmp) = d.create_temp(&self.tmp_counter).map_err(io_err)?;
        let verified = self.write_content(e, &file, dest).and_then(|()| {
            // Checked before it replaces anything: a file that fails its hash is never put in place.
            if !self.opts.verify {
                return Ok(false);
            }
            match at::hash_open_file(&file) {
                Ok(h) if Some(h) == e.file_hash => Ok(true),
                Ok(_) => Err(Error::HashMismatch {
                    what: "restored file (its stored BLAKE3 differs)",
                    id: dest.display().to_string(),
                }),
                Err(err) => Err(io_err(err)),
            }
        });
        let placed = verified.and_then(|verified| {
            // setuid/setgid only once the file is in place: a killed restore never leaves a
            // set-id copy under a temporary name.
            self.apply_file_meta(&file, e, dest, e.mode & !0o6000);
            crate::failpoint::hit("restore.temp_written");
            d.rename(&tmp, name).map_err(io_err).map(|()| verified)
        });
        let verified = match placed {
            Ok(v) => v,
            Err(err) => {
                let _ = d.remove_file(&tmp);
                return Err(err);
            }
        };
        crate::failpoint::hit("restore.file_written");
        self.change(dest, action);
        if e.mode & 0o6000 != 0 {
            use std::os::unix::fs::PermissionsExt;
            if let Err(err) = file.set_permissions(std::fs::Permissions::from_mode(e.mode)) {
                self.warnings.add(dest, format!("cannot set mode: {err}"));
            }
        }
        self.counts.files_written.add(1);
        self.counts.bytes_written.add(e.size);
        if verified {
            self.counts.files_verified.add(1);
        }
        let st = rustix::fs::fstat(&file).map_err(|e| io_err(e.into()))?;
        Ok(Some((st.st_dev, st.st_ino)))
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

    /// A chunk's bytes, which must be as long as the file's list says.
    fn fetch(&self, c: &ChunkRef, loc: Option<&BlobLocation>) -> Result<Vec<u8>> {
        let loc = loc.ok_or_else(|| Error::Missing { what: "chunk", id: c.id.to_hex() })?;
        let data = self.repo.read_located(loc)?;
        if data.len() != c.len as usize {
            return Err(misfit(c));
        }
        Ok(data)
    }

    /// Writes a file's content into its new temporary file; holes stay holes.
    fn write_content(&self, e: &Entry, file: &File, dest: &Path) -> Result<()> {
        let io_err = |err: io::Error| Error::io(dest, err);
        let ids: Vec<BlobId> = e.content.iter().map(|c| BlobId::from(c.id)).collect();
        let locations = self.repo.index.locate_many(&ids)?;
        // A small file without holes is assembled in memory and written with one call, instead
        // of one write per 4 KiB chunk (most files of a source tree are one to a few chunks).
        let mut next = 0u64;
        let dense = e.size <= SMALL_FILE
            && e.content.iter().all(|c| {
                let at = next;
                next = next.saturating_add(u64::from(c.len));
                c.offset == at
            })
            && next == e.size;
        if dense {
            let mut buf = Vec::with_capacity(e.size as usize);
            for (c, loc) in e.content.iter().zip(&locations) {
                buf.extend_from_slice(&self.fetch(c, loc.as_ref())?);
            }
            file.write_all_at(&buf, 0).map_err(io_err)?;
            self.progress.inc(e.size);
            return Ok(());
        }
        file.set_len(e.size).map_err(io_err)?;
        let write = |(c, loc): (&ChunkRef, &Option<BlobLocation>)| -> Result<()> {
            let data = self.fetch(c, loc.as_ref())?;
            if c.offset.checked_add(u64::from(c.len)).is_none_or(|end| end > e.size) {
                return Err(misfit(c));
            }
            file.write_all_at(&data, c.offset).map_err(io_err)?;
            self.progress.inc(data.len() as u64);
            Ok(())
        };
        if e.content.len() > 8 {
            e.content.par_iter().zip(locations.par_iter()).try_for_each(write)
        } else {
            e.content.iter().zip(locations.iter()).try_for_each(write)
        }
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
            return self.write_file(&alone, &d.dir.dir, &d.name, dest).map(|_| ());
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
            return self.write_file(&alone, &d.dir.dir, &d.name, dest).map(|_| ());
        }
        self.counts.hardlinks.add(1);
        self.change(dest, if here.is_some() { RestoreAction::Overwrite } else { RestoreAction::Create });
        Ok(())
    }
}

fn misfit(c: &ChunkRef) -> Error {
    Error::corrupt(format!("chunk {}", c.id), "does not fit the file it belongs to")
}
