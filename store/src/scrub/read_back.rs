//! Reading stored data back: every pack in scope is read whole, oldest verification first and
//! within the budget, and every blob the index reads from it is checked against its ID.

use crate::frame::FrameCodec;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{finding, is_damage, pack_damage, Scrub};
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::index::PackRow;
use crate::pack::{self, PackEntry};
use crate::progress::Unit;
use crate::repo::Repo;
use crate::workers::{into_inner, lock};

/// What reading one pack back found.
struct Verdict {
    /// Blobs the index reads from this pack that fail their check, with the reason.
    bad: Vec<(PackEntry, String)>,
    /// Damage to the pack itself (header, trailer, footer, bytes outside the indexed blobs)
    /// that the bad blobs do not explain; the blobs that verify are still good.
    structure: Option<String>,
}

/// Checks each entry's blob in `bytes`; returns the ones that fail. A frame is decoded once for
/// all the blobs it holds.
fn check_entries(frames: &dyn FrameCodec, bytes: &[u8], entries: &[PackEntry]) -> Vec<(PackEntry, String)> {
    let mut bad = Vec::new();
    let mut frame: Option<(u64, Result<Vec<u8>>)> = None;
    for e in entries {
        if frame.as_ref().is_none_or(|(off, _)| *off != e.offset) {
            frame = Some((e.offset, frames.open(e, pack::frame_in(bytes, e).unwrap_or(&[]))));
        }
        // The frame's own error says what is wrong with it (wrapping it in a hash mismatch
        // named after the message read "blob blob ... fails its hash check" twice over).
        let result: std::result::Result<(), String> = match &frame {
            Some((_, Ok(f))) => frames.blob_from_frame(e, f).map(|_| ()).map_err(|err| err.to_string()),
            Some((_, Err(err))) => Err(err.to_string()),
            None => Ok(()),
        };
        if let Err(detail) = result {
            bad.push((*e, detail));
        }
    }
    bad
}

/// Verifies one pack read whole. An intact pack (its hash is its name) is checked from its own
/// trailer, and the index is asked only about the blobs that fail (a lookup per blob was half
/// of a read-data scrub's time): only the copy the index points at matters, other copies are
/// unreferenced space. A pack that is damaged anywhere is checked by what the index reads from
/// it, blob by blob, so that a damaged trailer or a few appended bytes never condemn frames
/// that still verify.
fn verify_pack(repo: &Repo, pack: PackId, indexed_size: u64, bytes: &[u8]) -> Result<Verdict> {
    let name = pack.to_hex();
    let whole_ok = PackId::of(bytes) == pack;
    let layout = match pack::check_pack_layout(&name, bytes, repo.frames.as_ref()) {
        // Only an intact pack is of a newer format; a damaged one's header is not believed.
        Err(e @ Error::UnsupportedVersion { .. }) if whole_ok => return Err(e),
        other => other,
    };
    if let (true, Ok(entries)) = (whole_ok, &layout) {
        let bad = check_entries(repo.frames.as_ref(), bytes, entries);
        let ids: Vec<BlobId> = bad.iter().map(|(e, _)| e.id).collect();
        let placed = repo.index.locate_many(&ids)?;
        let bad = bad
            .into_iter()
            .zip(placed)
            .filter(|((e, _), loc)| loc.as_ref().is_some_and(|l| l.pack == pack && l.entry == *e))
            .map(|(b, _)| b)
            .collect();
        return Ok(Verdict { bad, structure: None });
    }
    let bad = check_entries(repo.frames.as_ref(), bytes, &repo.index.pack_rows(pack)?);
    let structure = match layout {
        // The footer is read at the end of the file, so bytes appended after a whole pack hide
        // it: say so, rather than the footer's guess (it cannot tell this from a truncation).
        Err(_) if bytes.len() as u64 > indexed_size => Some(format!(
            "its trailer cannot be found: {} bytes were appended after its end; `cairn repair index` \
             rewrites the blobs that verify",
            bytes.len() as u64 - indexed_size
        )),
        Err(e) => {
            Some(format!("its trailer cannot be used ({e}); `cairn repair index` rewrites the blobs that verify"))
        }
        Ok(_) if bad.is_empty() => Some(
            "its content does not hash to its name, but every indexed blob verifies: bytes outside them are \
             damaged; `cairn repair index` rewrites the pack"
                .into(),
        ),
        Ok(_) => None,
    };
    Ok(Verdict { bad, structure })
}

impl Scrub<'_> {
    /// Reads packs back, oldest verification first, within the budget; returns the packs that
    /// verified completely (their verification time is recorded).
    pub(super) fn read_back(&mut self, pool: &rayon::ThreadPool, mut order: Vec<&PackRow>) -> Result<HashSet<PackId>> {
        let (repo, opts, progress, now, started) = (self.repo, self.opts, self.progress, self.now, self.started);
        order.sort_by_key(|p| (p.verified_at.unwrap_or(i64::MIN), p.id));
        let total: u64 = order.iter().map(|p| p.size).sum();
        progress.start("scrub: read data", Some(opts.max_bytes.map_or(total, |m| m.min(total))), Unit::Bytes);
        let bytes_done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let found: Mutex<Vec<(PackId, std::result::Result<Verdict, String>)>> = Mutex::new(Vec::new());
        let unreadable: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let verified: Mutex<Vec<PackId>> = Mutex::new(Vec::new());
        // Workers take packs strictly in order from a shared cursor, so the budget always goes
        // to the packs verified longest ago (a parallel iterator would split the list and start
        // a second worker from its newest end).
        let cursor = AtomicUsize::new(0);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let check_one = |p: &PackRow| -> Result<()> {
            let bytes = match repo.backend.get(FileKind::Pack, &p.id.to_hex()) {
                Ok(b) => b,
                Err(e) if is_damage(&e) => {
                    lock(&found).push((p.id, Err(e.to_string())));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            progress.inc(bytes.len() as u64);
            match verify_pack(repo, p.id, p.size, &bytes) {
                Ok(v) if v.bad.is_empty() && v.structure.is_none() => {
                    // A read-only repository cannot remember it: its coverage stays as it was.
                    if !repo.read_only {
                        repo.index.set_verified(p.id, now)?;
                    }
                    lock(&verified).push(p.id);
                }
                Ok(v) => lock(&found).push((p.id, Ok(v))),
                Err(e @ Error::UnsupportedVersion { .. }) => lock(&unreadable).push(format!("pack {}: {e}", p.id)),
                Err(e) => return Err(e),
            }
            Ok(())
        };
        pool.scope(|scope| {
            for _ in 0..pool.current_num_threads() {
                scope.spawn(|_| loop {
                    let over_time = opts.max_duration.is_some_and(|d| started.elapsed() >= d);
                    let over_bytes = opts.max_bytes.is_some_and(|b| bytes_done.load(Ordering::Relaxed) >= b);
                    if over_time || over_bytes || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = order.get(i) else { return };
                    bytes_done.fetch_add(p.size, Ordering::Relaxed);
                    if let Err(e) = check_one(p) {
                        stop.store(true, Ordering::Relaxed);
                        lock(&failure).get_or_insert(e);
                    }
                });
            }
        });
        if let Some(e) = into_inner(failure) {
            return Err(e);
        }
        progress.finish();
        self.report.bytes_verified = bytes_done.load(Ordering::Relaxed);
        self.report.unreadable.extend(into_inner(unreadable));
        for (pack, outcome) in into_inner(found) {
            match outcome {
                Ok(v) => {
                    for (e, detail) in v.bad {
                        self.damage.insert(e.id, finding(Some(pack), Some(e), "bad blob", detail));
                    }
                    if let Some(detail) = v.structure {
                        // One finding a pack: the size check may have named it already (bytes
                        // appended); the read gives the fuller account.
                        let hex = pack.to_hex();
                        match self
                            .problems
                            .iter_mut()
                            .find(|d| d.kind == "damaged pack" && d.pack.as_deref() == Some(&hex))
                        {
                            Some(d) => d.detail = detail,
                            None => self.problems.push(pack_damage("damaged pack", pack, detail)),
                        }
                    }
                }
                Err(detail) => {
                    for e in repo.index.pack_rows(pack)? {
                        self.damage.entry(e.id).or_insert(finding(Some(pack), Some(e), "bad blob", detail.clone()));
                    }
                    self.problems.push(pack_damage("missing pack", pack, detail));
                }
            }
        }
        Ok(into_inner(verified).into_iter().collect())
    }
}
