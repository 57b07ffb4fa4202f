//! Micro-benchmarks of the engine's hot paths: chunking, hashing, compression, and the index
//! (through whole snapshots, since the index is not public API).
//! Run: `cargo bench -p cairn-benches --bench engine`.

// Benchmark setup unwraps: a failure aborts the measurement, which is what it should do.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;

use cairn_store::{ChunkerParams, InitOptions, NoProgress, Repo, SnapshotOptions};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn text(len: usize) -> Vec<u8> {
    let words = ["INSERT", "INTO", "orders", "VALUES", "(42,", "'2026-11-20", "12:00:00',", "'abc'", ");\n"];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(words[i % words.len()].as_bytes());
        out.push(b' ');
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let buf = data(16 << 20, 1);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("fastcdc_8k_boundaries", |b| {
        b.iter(|| black_box(cairn_store::boundaries(ChunkerParams::default(), &buf)))
    });
    g.bench_function("streaming_chunker", |b| {
        let mut chunker = cairn_store::Chunker::new(ChunkerParams::default(), 4 << 20);
        b.iter(|| {
            let mut n = 0usize;
            chunker
                .run::<_, std::io::Error>(&mut &buf[..], u64::MAX, |_, cuts| {
                    n += cuts.len();
                    Ok(())
                })
                .unwrap();
            black_box(n)
        });
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let buf = data(16 << 20, 2);
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("blake3_16MiB", |b| b.iter(|| black_box(blake3::hash(&buf))));
    g.bench_function("blake3_per_8KiB_chunk", |b| {
        b.iter(|| buf.chunks(8192).map(|c| blake3::hash(c).as_bytes()[0]).fold(0u8, |a, x| a ^ x))
    });
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compression");
    for (name, buf) in [("text", text(8 << 20)), ("random", data(8 << 20, 3))] {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(format!("zstd3_8KiB_chunks_{name}"), |b| {
            let mut z = zstd::bulk::Compressor::new(3).unwrap();
            b.iter(|| buf.chunks(8192).map(|c| z.compress(c).unwrap().len()).sum::<usize>());
        });
    }
    g.finish();
}

fn make_tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 50));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), data(2000 + (i * 37) % 9000, i as u64)).unwrap();
    }
}

fn snapshots(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 5000);
    let mut g = c.benchmark_group("snapshot_5000_files");
    g.sample_size(10);
    g.bench_function("first", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let repo =
                    Repo::init(&cairn_store::Location::local(dir.path().join("r")), &InitOptions::default()).unwrap();
                black_box(repo.snapshot(&SnapshotOptions::new(vec![src.path().to_path_buf()]), &NoProgress).unwrap());
            },
            BatchSize::PerIteration,
        );
    });
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&cairn_store::Location::local(dir.path().join("r")), &InitOptions::default()).unwrap();
    let opts = SnapshotOptions::new(vec![src.path().to_path_buf()]);
    repo.snapshot(&opts, &NoProgress).unwrap();
    g.bench_function("no_change", |b| b.iter(|| black_box(repo.snapshot(&opts, &NoProgress).unwrap())));
    g.finish();
}

criterion_group!(benches, chunking, hashing, compression, snapshots);
criterion_main!(benches);
