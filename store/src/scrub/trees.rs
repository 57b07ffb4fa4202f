//! The structural walk: every tree of every snapshot in scope is read and decoded once, and
//! every chunk it names is looked up in the index, many trees' worth of chunks at a time.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;

use super::{finding, is_damage, DamageMap, Finding};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, TreeId};
use crate::repo::Repo;
use crate::tally::Counter;
use crate::tree::EntryKind;
use crate::workers::{into_inner, lock};

/// Chunk IDs per index lookup batch of the structural walk (32 bytes each).
const WALK_BATCH: usize = 1 << 14;

/// The walk's state shared by the worker threads.
pub(super) struct Walk<'a> {
    repo: &'a Repo,
    visited: Mutex<HashSet<TreeId>>,
    referenced_packs: Mutex<HashSet<PackId>>,
    damage: Mutex<DamageMap>,
    unreadable: Mutex<Vec<String>>,
    trees: Counter,
    chunks: Counter,
    /// Chunk IDs waiting to be looked up: many trees' worth at once, deduplicated and in key
    /// order, so the index's leaves are read left to right once a batch instead of once a chunk
    /// (a lookup per tree was 40% of a read-data scrub).
    batch: Mutex<Vec<BlobId>>,
}

/// What the walk found.
pub(super) struct Walked {
    /// Distinct trees walked.
    pub(super) trees: u64,
    /// Chunk references looked up.
    pub(super) chunks: u64,
    pub(super) damage: DamageMap,
    pub(super) unreadable: Vec<String>,
    /// The packs that hold what the walked trees need.
    pub(super) referenced: HashSet<PackId>,
}

impl<'a> Walk<'a> {
    pub(super) fn new(repo: &'a Repo) -> Self {
        Self {
            repo,
            visited: Mutex::new(HashSet::new()),
            referenced_packs: Mutex::new(HashSet::new()),
            damage: Mutex::new(BTreeMap::new()),
            unreadable: Mutex::new(Vec::new()),
            trees: Counter::default(),
            chunks: Counter::default(),
            batch: Mutex::new(Vec::new()),
        }
    }

    /// Looks up a batch of chunk IDs: their packs are referenced, a missing one is damage.
    fn lookup(&self, mut chunks: Vec<BlobId>) -> Result<()> {
        chunks.sort_unstable();
        chunks.dedup();
        let mut packs = HashSet::new();
        for (id, loc) in chunks.iter().zip(self.repo.index.locate_many(&chunks)?) {
            match loc {
                Some(loc) => {
                    packs.insert(loc.pack);
                }
                None => self.note(*id, finding(None, None, "missing blob", "chunk is not in the index".into())),
            }
        }
        lock(&self.referenced_packs).extend(packs);
        Ok(())
    }

    /// Looks up what the batch still holds; after the last tree.
    pub(super) fn flush(&self) -> Result<()> {
        let rest = std::mem::take(&mut *lock(&self.batch));
        self.lookup(rest)
    }

    fn note(&self, blob: BlobId, f: Finding) {
        lock(&self.damage).entry(blob).or_insert(f);
    }

    /// Walks a tree once (trees shared between snapshots are walked once), checking that it
    /// decodes and that every chunk it names is indexed.
    pub(super) fn tree(&self, id: TreeId) -> Result<()> {
        if !lock(&self.visited).insert(id) {
            return Ok(());
        }
        self.trees.add(1);
        let loc = self.repo.index.locate(id.into())?;
        if let Some(loc) = &loc {
            lock(&self.referenced_packs).insert(loc.pack);
        }
        let tree = match self.repo.load_tree(id) {
            Ok(t) => t,
            Err(e @ Error::UnsupportedVersion { .. }) => {
                lock(&self.unreadable).push(format!("tree {id}: {e}"));
                return Ok(());
            }
            Err(e) if is_damage(&e) => {
                let (pack, entry) = (loc.as_ref().map(|l| l.pack), loc.as_ref().map(|l| l.entry));
                let kind = if pack.is_some() { "bad blob" } else { "missing blob" };
                self.note(id.into(), finding(pack, entry, kind, format!("tree: {e}")));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Every chunk this directory's files name goes into the batch of lookups.
        let mut n = 0;
        let full = {
            let mut batch = lock(&self.batch);
            for c in tree.entries.iter().filter(|e| e.kind == EntryKind::File).flat_map(|e| &e.content) {
                batch.push(BlobId::from(c.id));
                n += 1;
            }
            (batch.len() >= WALK_BATCH).then(|| std::mem::take(&mut *batch))
        };
        self.chunks.add(n);
        if let Some(chunks) = full {
            self.lookup(chunks)?;
        }
        tree.entries
            .par_iter()
            .filter_map(|e| e.subtree.filter(|_| e.kind == EntryKind::Dir))
            .try_for_each(|s| self.tree(s))
    }

    pub(super) fn into_walked(self) -> Walked {
        Walked {
            trees: self.trees.get(),
            chunks: self.chunks.get(),
            damage: into_inner(self.damage),
            unreadable: into_inner(self.unreadable),
            referenced: into_inner(self.referenced_packs),
        }
    }
}
