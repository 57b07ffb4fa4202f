//! The blob map's levels and filter against a model: newest copy wins, condemned copies do not
//! deduplicate, deleted packs are never named, and no level outgrows its capacity.

use std::collections::HashMap;

use proptest::prelude::*;
use rusqlite::params;

use super::*;
use crate::id::{BlobId, PackId};
use crate::pack::{BlobKind, Compression, PackEntry};

/// Tiny capacities, so that a few packs move rows through every level.
const CAPS: [u64; 3] = [4, 16, 64];

fn open(dir: &Path) -> Index {
    let mut index = Index::open(&dir.join("index.sqlite")).unwrap();
    index.caps = CAPS;
    index
}

fn blob(n: u32) -> BlobId {
    BlobId::of(&n.to_le_bytes())
}

fn pack(n: u32) -> PackId {
    PackId::of(&(u64::from(n) << 32 | 0xfeed).to_le_bytes())
}

/// A pack's entries for `blobs`; the offset records which pack and position wrote the copy.
fn entries(pack_no: u32, blobs: &[u32]) -> Vec<PackEntry> {
    blobs
        .iter()
        .enumerate()
        .map(|(i, b)| PackEntry {
            kind: BlobKind::Chunk,
            id: blob(*b),
            offset: u64::from(pack_no) * 1000 + i as u64 + 28,
            stored_len: 10,
            frame_len: 10,
            frame_offset: 0,
            raw_len: 10,
            compression: Compression::None,
        })
        .collect()
}

fn level_rows(index: &Index) -> Vec<u64> {
    levels::LEVELS.iter().map(|l| index.with(|c| levels::rows(c, l)).unwrap()).collect()
}

#[test]
fn rows_pass_through_every_level_and_the_newest_copy_wins() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let mut want: HashMap<u32, (PackId, u64)> = HashMap::new();
    for p in 0..40u32 {
        // Each pack brings five new blobs and stores again two of an earlier pack.
        let mut blobs: Vec<u32> = (p * 5..p * 5 + 5).collect();
        if p > 0 {
            blobs.extend([(p - 1) * 5, p * 3 % (p * 5)]);
            blobs.dedup();
        }
        let es = entries(p, &blobs);
        index.add_pack(pack(p), 100_000, &es, 0).unwrap();
        for (b, e) in blobs.iter().zip(&es) {
            want.insert(*b, (pack(p), e.offset));
        }
        let rows = level_rows(&index);
        for (k, cap) in CAPS.iter().enumerate() {
            assert!(rows[k] < *cap, "after pack {p}: level {k} holds {} rows, capacity {cap}", rows[k]);
        }
    }
    assert!(level_rows(&index)[3] > 0, "rows reached the last level");
    let ids: Vec<u32> = want.keys().copied().collect();
    let found = index.locate_many(&ids.iter().map(|b| blob(*b)).collect::<Vec<_>>()).unwrap();
    for (b, loc) in ids.iter().zip(found) {
        let loc = loc.unwrap_or_else(|| panic!("blob {b} is indexed"));
        assert_eq!((loc.pack, loc.entry.offset), want[b], "blob {b}: the newest copy is its place");
    }
    // The filter is gone: the next writer builds it again from the levels, and every blob is
    // still found; absent ones are not.
    std::fs::remove_file(filter::path_of(&dir.path().join("index.sqlite"))).unwrap();
    drop(index);
    let index = open(dir.path());
    index.add_pack(pack(99), 100_000, &entries(99, &[10_000]), 0).unwrap();
    assert!(filter::path_of(&dir.path().join("index.sqlite")).exists(), "rebuilt");
    let mut probe: Vec<BlobId> = ids.iter().map(|b| blob(*b)).collect();
    probe.push(blob(10_000));
    assert!(index.has_blobs(&probe).unwrap().iter().all(|h| *h));
    assert!(!index.has_blobs(&[blob(20_000), blob(20_001)]).unwrap().iter().any(|h| *h));
}

#[derive(Clone, Debug)]
enum Op {
    /// A new pack holding these blobs.
    Add(Vec<u32>),
    /// gc condemns the n-th pack ever added (if it still exists).
    Condemn(usize),
    /// A repack: the blobs of the n-th pack that are still there move to a new pack.
    Repack(usize),
    /// gc deletes the n-th pack with every row that names it.
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::btree_set(0u32..40, 1..10).prop_map(|s| Op::Add(s.into_iter().collect())),
        1 => (0usize..30).prop_map(Op::Condemn),
        1 => (0usize..30).prop_map(Op::Repack),
        1 => (0usize..30).prop_map(Op::Delete),
    ]
}

/// The model: every copy ever indexed, oldest first, and the packs that exist.
#[derive(Default)]
struct Model {
    /// (blob, pack number, offset) in the order they were indexed.
    copies: Vec<(u32, u32, u64)>,
    packs: Vec<(u32, Vec<u32>)>,
    condemned: Vec<u32>,
    deleted: Vec<u32>,
}

impl Model {
    /// Copies of `b` that may still be indexed, newest first: those of packs not deleted.
    fn candidates(&self, b: u32) -> Vec<(u32, u64)> {
        self.copies.iter().rev().filter(|c| c.0 == b && !self.deleted.contains(&c.1)).map(|c| (c.1, c.2)).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_levels_answer_like_one_table_where_the_newest_copy_wins(ops in prop::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path());
        let mut m = Model::default();
        // Whether a blob's newest copy was deleted since it was last indexed: then an older one
        // may or may not be named again, depending on whether a merge had replaced it.
        let mut unsure: Vec<u32> = Vec::new();
        for op in ops {
            match op {
                Op::Add(blobs) => {
                    let n = m.packs.len() as u32;
                    let es = entries(n, &blobs);
                    index.add_pack(pack(n), 100_000, &es, 0).unwrap();
                    for (b, e) in blobs.iter().zip(&es) {
                        m.copies.push((*b, n, e.offset));
                        unsure.retain(|u| u != b);
                    }
                    m.packs.push((n, blobs));
                }
                Op::Condemn(i) => {
                    if let Some((n, _)) = m.packs.get(i).filter(|(n, _)| !m.deleted.contains(n)) {
                        index.condemn(pack(*n), 1).unwrap();
                        m.condemned.push(*n);
                    }
                }
                Op::Repack(i) => {
                    if let Some((old, blobs)) = m.packs.get(i).filter(|(n, _)| !m.deleted.contains(n)).cloned() {
                        let n = m.packs.len() as u32;
                        let es = entries(n, &blobs);
                        index.replace_pack(pack(n), 100_000, &es, pack(old), 1, 0).unwrap();
                        for (b, e) in blobs.iter().zip(&es) {
                            m.copies.push((*b, n, e.offset));
                            unsure.retain(|u| u != b);
                        }
                        m.condemned.push(old);
                        m.packs.push((n, blobs));
                    }
                }
                Op::Delete(i) => {
                    if let Some((n, blobs)) = m.packs.get(i).filter(|(n, _)| !m.deleted.contains(n)).cloned() {
                        let ids: Vec<BlobId> = blobs.iter().map(|b| blob(*b)).collect();
                        index.delete_pack(pack(n), &ids).unwrap();
                        for b in &blobs {
                            if m.candidates(*b).first().is_some_and(|c| c.0 == n) {
                                unsure.push(*b);
                            }
                        }
                        m.deleted.push(n);
                    }
                }
            }
            let rows = level_rows(&index);
            for (k, cap) in CAPS.iter().enumerate() {
                prop_assert!(rows[k] < *cap, "level {} holds {} rows, capacity {}", k, rows[k], cap);
            }
        }
        let all: Vec<u32> = (0..40).collect();
        let ids: Vec<BlobId> = all.iter().map(|b| blob(*b)).collect();
        let located = index.locate_many(&ids).unwrap();
        let usable = index.has_blobs(&ids).unwrap();
        for ((b, loc), usable) in all.iter().zip(located).zip(usable) {
            let got = loc.map(|l| {
                let n = (0..m.packs.len() as u32).find(|n| pack(*n) == l.pack).expect("a pack of the model");
                (n, l.entry.offset)
            });
            let candidates = m.candidates(*b);
            if unsure.contains(b) {
                prop_assert!(got.is_none() || candidates.contains(&got.unwrap()), "blob {}: {:?} is a copy that exists", b, got);
            } else {
                prop_assert_eq!(got, candidates.first().copied(), "blob {}: the newest copy", b);
            }
            if let Some((n, _)) = got {
                prop_assert!(!m.deleted.contains(&n), "blob {}: a deleted pack is never named", b);
            }
            prop_assert_eq!(usable, got.is_some_and(|(n, _)| !m.condemned.contains(&n)), "blob {}: deduplicates", b);
        }
    }
}

#[test]
fn a_schema_1_index_is_upgraded_in_place_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    // An index as a schema-1 build left it: every row in `blobs`, no levels, no filter.
    let old: Vec<PackEntry> = entries(1, &(0..50).collect::<Vec<_>>());
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!("{} PRAGMA user_version = 1;", schema::SCHEMA_V1)).unwrap();
        c.execute(
            "INSERT INTO packs(pid, id, kind, size, blobs, added_at) VALUES (7, ?1, 0, 100000, 50, 0)",
            [pack(1).as_bytes()],
        )
        .unwrap();
        for e in &old {
            c.execute(
                "INSERT INTO blobs(id, kind, pid, offset, stored_len, frame_len, frame_offset, raw_len, compression) \
                 VALUES (?1, 0, 7, ?2, 10, 10, 0, 10, 0)",
                params![e.id.as_bytes(), e.offset as i64],
            )
            .unwrap();
        }
    }
    let index = open(dir.path());
    let version: i64 = index.with(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0))).unwrap();
    assert_eq!(version, schema::INDEX_VERSION);
    assert_eq!(level_rows(&index), vec![0, 0, 0, 50], "the old table is the last level, untouched");
    let ids: Vec<BlobId> = old.iter().map(|e| e.id).collect();
    let check = |index: &Index| {
        for (e, loc) in old.iter().zip(index.locate_many(&ids).unwrap()) {
            let loc = loc.expect("an old row is still found");
            assert_eq!((loc.pack, loc.entry), (pack(1), *e));
        }
        assert!(index.has_blobs(&ids).unwrap().iter().all(|h| *h), "old rows deduplicate");
    };
    check(&index);
    // The first pack indexed after the upgrade builds the filter from every level, old rows too.
    index.add_pack(pack(2), 100_000, &entries(2, &[1000, 1001]), 0).unwrap();
    assert!(filter::path_of(&path).exists());
    check(&index);
    assert!(!index.has_blobs(&[blob(5000)]).unwrap()[0]);
}

#[test]
fn reads_through_the_memory_map_find_what_reads_without_it_find_and_the_map_can_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    for p in 0..20u32 {
        index.add_pack(pack(p), 100_000, &entries(p, &(p * 50..p * 50 + 50).collect::<Vec<_>>()), 0).unwrap();
    }
    let ids: Vec<BlobId> = (0..1000u32).rev().map(blob).chain([blob(5000)]).collect();
    let plain = index.locate_many(&ids).unwrap();
    let mapped_size = |index: &Index| index.with(|c| c.query_row("PRAGMA mmap_size", [], |r| r.get::<_, i64>(0)));
    assert_eq!(mapped_size(&index).unwrap(), 0);
    index.map_for_reads(READ_MAP);
    assert_eq!(mapped_size(&index).unwrap(), READ_MAP as i64, "the pooled connection maps the file");
    let mapped = index.locate_many(&ids).unwrap();
    assert_eq!(plain, mapped);
    assert!(mapped[..1000].iter().all(Option::is_some) && mapped[1000].is_none());
    // A write while mapped, then a read of it through the map.
    index.add_pack(pack(30), 100_000, &entries(30, &[5000]), 0).unwrap();
    assert_eq!(index.locate_many(&[blob(5000)]).unwrap()[0].map(|l| l.pack), Some(pack(30)));
    index.map_for_reads(0);
    assert_eq!(mapped_size(&index).unwrap(), 0, "unmapped again");
}

/// A row of a level as a test compares it: blob ID, pack ID, offset.
type LevelRow = (Vec<u8>, Vec<u8>, i64);

/// Pack usage as one SQL join, the way it was computed before the merge walk (slow at scale:
/// a lookup per row): the reference the walk must agree with.
fn usage_by_join(index: &Index, mark: &MarkSet) -> Vec<(PackId, u64, u64, u64)> {
    let m = mark.path().unwrap().to_string_lossy().into_owned();
    let rows: Vec<(Vec<u8>, i64, i64, i64)> = index
        .with(|c| {
            c.execute("ATTACH DATABASE ?1 AS mark", [&m])?;
            let rows = c
                .prepare(
                    "SELECT p.id, count(b.id), count(m.id), \
                     coalesce(sum(CASE WHEN m.id IS NULL THEN 0 ELSE b.stored_len * b.raw_len / max(b.frame_len, 1) END), 0) \
                     FROM packs p LEFT JOIN blobs_all b ON b.pid = p.pid LEFT JOIN mark.reachable m ON m.id = b.id \
                     WHERE p.condemned_at IS NULL GROUP BY p.pid ORDER BY p.pid",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>();
            c.execute("DETACH DATABASE mark", [])?;
            rows
        })
        .unwrap();
    rows.into_iter().map(|(p, n, l, b)| (PackId::from_slice(&p).unwrap(), n as u64, l as u64, b as u64)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// gc's two questions, answered by walking the levels and the mark set side by side, agree
    /// with asking blob by blob: a pack's usage counts every row that names it; a condemned
    /// pack is rescued exactly when a marked blob's newest row names it (and it may be), and
    /// every other one leaves no row behind.
    #[test]
    fn gc_walks_answer_like_lookups_blob_by_blob(
        packs in prop::collection::vec(prop::collection::btree_set(0u32..40, 1..10), 1..16),
        repacks in prop::collection::vec(0usize..16, 0..4),
        condemned in prop::collection::btree_set(0usize..20, 0..10),
        marked in prop::collection::btree_set(0u32..40, 0..30),
        unrescuable in prop::collection::btree_set(0usize..20, 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path());
        let mut all: Vec<(u32, Vec<u32>)> = Vec::new();
        for blobs in packs {
            let n = all.len() as u32;
            let blobs: Vec<u32> = blobs.into_iter().collect();
            index.add_pack(pack(n), 100_000, &entries(n, &blobs), 0).unwrap();
            all.push((n, blobs));
        }
        for i in repacks {
            if let Some((old, blobs)) = all.get(i).cloned() {
                let n = all.len() as u32;
                index.replace_pack(pack(n), 100_000, &entries(n, &blobs), pack(old), 1, 0).unwrap();
                all.push((n, blobs));
            }
        }
        for &i in &condemned {
            if let Some((n, _)) = all.get(i) {
                index.condemn(pack(*n), 2).unwrap();
            }
        }
        let mark = MarkSet::create(&dir.path().join("mark.sqlite")).unwrap();
        mark.add(marked.iter().map(|b| blob(*b))).unwrap();

        let walked: Vec<(PackId, u64, u64, u64)> =
            index.pack_usage(&mark).unwrap().iter().map(|u| (u.id, u.blobs, u.live_blobs, u.live_bytes)).collect();
        prop_assert_eq!(walked, usage_by_join(&index, &mark));

        let doomed: Vec<(PackId, bool)> =
            index.condemned().unwrap().into_iter().map(|(p, _)| {
                let n = (0..all.len() as u32).find(|n| pack(*n) == p).unwrap() as usize;
                (p, !unrescuable.contains(&n))
            }).collect();
        let newest = index.locate_many(&marked.iter().map(|b| blob(*b)).collect::<Vec<_>>()).unwrap();
        let want_rescued: std::collections::BTreeSet<PackId> = doomed
            .iter()
            .filter(|(p, rescuable)| *rescuable && newest.iter().flatten().any(|l| l.pack == *p))
            .map(|(p, _)| *p)
            .collect();
        let level_contents = |index: &Index| -> Vec<Vec<LevelRow>> {
            levels::LEVELS
                .iter()
                .map(|l| {
                    index
                        .with(|c| {
                            c.prepare(&format!("SELECT b.id, p.id, b.offset FROM {l} b JOIN packs p ON p.pid = b.pid ORDER BY b.id"))?
                                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                                .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .unwrap()
                })
                .collect()
        };
        let before = level_contents(&index);
        let ripe: Vec<PackId> = doomed.iter().map(|(p, _)| *p).collect();
        let swept = index.sweep_condemned(&ripe, &mark, &mut |p| doomed.contains(&(p, true))).unwrap();
        prop_assert_eq!(swept.rescued.iter().copied().collect::<std::collections::BTreeSet<_>>(), want_rescued.clone());
        let want_deleted: std::collections::BTreeSet<PackId> =
            doomed.iter().map(|(p, _)| *p).filter(|p| !want_rescued.contains(p)).collect();
        prop_assert_eq!(swept.deleted.iter().copied().collect::<std::collections::BTreeSet<_>>(), want_deleted.clone());
        // Every other row stays as it was, in its level.
        let kept: Vec<Vec<LevelRow>> = before
            .into_iter()
            .map(|rows| rows.into_iter().filter(|r| !want_deleted.contains(&PackId::from_slice(&r.1).unwrap())).collect())
            .collect();
        prop_assert_eq!(level_contents(&index), kept);
        let left = index.condemned().unwrap();
        prop_assert!(left.is_empty(), "every condemned pack was deleted or rescued: {:?}", left);
        let orphans: i64 = index
            .with(|c| c.query_row("SELECT count(*) FROM blobs_all WHERE pid NOT IN (SELECT pid FROM packs)", [], |r| r.get(0)))
            .unwrap();
        prop_assert_eq!(orphans, 0, "no row names a deleted pack");
        // Every marked blob that was indexed in a pack that stays is still found there.
        for (b, before) in marked.iter().zip(&newest) {
            if let Some(l) = before.filter(|l| !want_deleted.contains(&l.pack)) {
                prop_assert_eq!(index.locate(blob(*b)).unwrap().map(|n| n.pack), Some(l.pack), "blob {}", b);
            }
        }
    }
}
