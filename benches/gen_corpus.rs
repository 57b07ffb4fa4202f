//! Deterministic (seeded) corpus generator for the benchmarks.
//!
//! ```text
//! gen-corpus tree   DIR [--files N] [--bytes B] [--seed S]   source-tree-shaped corpus
//! gen-corpus hourly DIR [--seed S]                           an hour of change on a tree
//! gen-corpus upgrade DIR [--seed S]                          the tree's next version
//! gen-corpus dump   FILE [--bytes B] [--seed S]              a SQL dump (COPY rows)
//! gen-corpus dump2  FILE NEXT [--seed S]                     the next hour's dump of FILE
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn arg(args: &[String], flag: &str, default: u64) -> u64 {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A vocabulary of identifiers, so that text compresses like source code does (~3-4x).
fn vocabulary(rng: &mut Rng) -> Vec<String> {
    let syllables = [
        "dev", "net", "buf", "init", "irq", "lock", "page", "map", "skb", "ops", "ctx", "reg", "dma", "fs", "io", "tx",
        "rx", "hw",
    ];
    let mut words: Vec<String> = [
        "if", "return", "struct", "static", "int", "void", "unsigned", "const", "for", "while", "{", "}", "(", ")",
        ";", "=", "->", "&&", "0", "NULL",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for _ in 0..600 {
        let n = 1 + rng.below(3);
        let w: Vec<&str> = (0..n).map(|_| syllables[rng.below(syllables.len() as u64) as usize]).collect();
        words.push(w.join("_"));
    }
    words
}

fn text(rng: &mut Rng, vocab: &[String], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut col = 0;
    while out.len() < len {
        let w = &vocab[rng.below(vocab.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 70 || rng.below(12) == 0 {
            out.push(b'\n');
            let tabs = rng.below(3) as usize;
            out.extend(std::iter::repeat_n(b'\t', tabs));
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

fn tree(dir: &Path, files: u64, bytes: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng(seed);
    let vocab = vocabulary(&mut rng);
    // Directories: a random tree, ~25 files each, up to 7 deep.
    let ndirs = (files / 25).max(1);
    let mut dirs: Vec<PathBuf> = vec![dir.to_path_buf()];
    for _ in 1..ndirs {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let depth = parent.strip_prefix(dir).map(|p| p.components().count()).unwrap_or(0);
        let parent = if depth >= 7 { dir.to_path_buf() } else { parent };
        let name = &vocab[20 + rng.below((vocab.len() - 20) as u64) as usize];
        let p = parent.join(format!("{name}{}", rng.below(100)));
        dirs.push(p);
    }
    // Sizes: log-normal around a few KiB (median ~4 KiB), scaled to the byte budget; 1 in 500
    // files is several MiB (firmware, generated tables).
    let mut sizes: Vec<f64> = (0..files)
        .map(|_| if rng.below(500) == 0 { 2.0e6 + rng.unit() * 6.0e6 } else { (8.3 + 1.2 * rng.normal()).exp() })
        .collect();
    let sum: f64 = sizes.iter().sum();
    let scale = bytes as f64 / sum;
    for s in &mut sizes {
        *s = (*s * scale).min(16.0e6);
    }
    for (i, size) in sizes.iter().enumerate() {
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        fs::create_dir_all(d)?;
        let ext = ["c", "h", "S", "txt", "rst", "dts"][rng.below(6) as usize];
        fs::write(d.join(format!("f{i}.{ext}")), text(&mut rng, &vocab, *size as usize))?;
    }
    Ok(())
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        if e.file_type()?.is_dir() {
            list_files(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

/// An hour of change: ~200 files edited in place, ~20 MiB of new files, ~100 deleted.
fn hourly(dir: &Path, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng(seed ^ 0x4855_4f52);
    let vocab = vocabulary(&mut Rng(1));
    let mut files = Vec::new();
    list_files(dir, &mut files)?;
    for _ in 0..200 {
        let f = &files[rng.below(files.len() as u64) as usize];
        let Ok(mut data) = fs::read(f) else { continue };
        let at = rng.below(data.len() as u64 + 1) as usize;
        let n = 20 + rng.below(400) as usize;
        let insert = text(&mut rng, &vocab, n);
        data.splice(at..at, insert);
        fs::write(f, data)?;
    }
    let new_dir = dir.join(format!("new-{seed}"));
    fs::create_dir_all(&new_dir)?;
    let mut written = 0usize;
    let mut i = 0;
    while written < 20 << 20 {
        let len = 1000 + rng.below(400_000) as usize;
        fs::write(new_dir.join(format!("n{i}.c")), text(&mut rng, &vocab, len))?;
        written += len;
        i += 1;
    }
    for _ in 0..100 {
        let f = &files[rng.below(files.len() as u64) as usize];
        let _ = fs::remove_file(f);
    }
    Ok(())
}

/// The next version of a tree, as an upgrade unpacked over it: of the existing files ~60% change
/// a little (one to three edits of a line or a few lines each), ~3% move to another directory
/// (same content), ~1% are deleted, the rest stay as they were; ~1% as many new files appear.
fn upgrade(dir: &Path, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng(seed ^ 0x5550_4752);
    let vocab = vocabulary(&mut Rng(1));
    let mut files = Vec::new();
    list_files(dir, &mut files)?;
    let dirs: Vec<PathBuf> = {
        let mut d: Vec<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        d.sort();
        d.dedup();
        d
    };
    let (mut edited, mut moved, mut deleted) = (0, 0, 0);
    for (i, f) in files.iter().enumerate() {
        let dice = rng.below(100);
        if dice < 60 {
            let mut data = fs::read(f)?;
            for _ in 0..1 + rng.below(3) {
                // Replace a span of 0-300 bytes at a random place with 20-400 new bytes.
                let at = rng.below(data.len() as u64 + 1) as usize;
                let end = (at + rng.below(300) as usize).min(data.len());
                let len = 20 + rng.below(380) as usize;
                let insert = text(&mut rng, &vocab, len);
                data.splice(at..end, insert);
            }
            fs::write(f, data)?;
            edited += 1;
        } else if dice < 63 {
            let to = &dirs[rng.below(dirs.len() as u64) as usize];
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            fs::rename(f, to.join(format!("m{i}-{name}")))?;
            moved += 1;
        } else if dice < 64 {
            fs::remove_file(f)?;
            deleted += 1;
        }
    }
    let added = files.len() / 100;
    for i in 0..added {
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        let len = (8.3 + 1.2 * rng.normal()).exp() as usize;
        fs::write(d.join(format!("u{seed}-{i}.c")), text(&mut rng, &vocab, len))?;
    }
    eprintln!("upgrade: {edited} edited, {moved} moved, {deleted} deleted, {added} added");
    Ok(())
}

const TABLES: [&str; 3] = ["orders", "customers", "events"];

fn row(rng: &mut Rng, vocab: &[String], id: u64, version: u64) -> String {
    let hash = format!("{:016x}{:016x}", rng.next(), rng.next());
    let words: Vec<&str> =
        (0..(3 + rng.below(8))).map(|_| vocab[rng.below(vocab.len() as u64) as usize].as_str()).collect();
    let ts = 1_700_000_000 + id * 7 + version * 3600;
    format!("{id}\t{hash}\t{}\t{ts}\t{version}\n", words.join(" "))
}

/// A SQL dump: three tables of COPY rows (id, hash, text, timestamp, version).
fn dump(file: &Path, bytes: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng(seed ^ 0x4455_4d50);
    let vocab = vocabulary(&mut Rng(2));
    let mut out = BufWriter::new(fs::File::create(file)?);
    let per_table = bytes / TABLES.len() as u64;
    for t in TABLES {
        writeln!(out, "COPY public.{t} (id, hash, body, ts, version) FROM stdin;")?;
        let mut written = 0u64;
        let mut id = 1;
        while written < per_table {
            let r = row(&mut rng, &vocab, id, 0);
            written += r.len() as u64;
            out.write_all(r.as_bytes())?;
            id += 1;
        }
        writeln!(out, "\\.\n")?;
    }
    out.flush()
}

/// The next hour's dump: 0.1% of rows updated (an updated row moves to the end of its table, as
/// in PostgreSQL's dump order), ~0.05% deleted, and a few thousand inserted.
fn dump2(file: &Path, next: &Path, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng(seed ^ 0x4e45_5854);
    let vocab = vocabulary(&mut Rng(2));
    let input = std::io::BufReader::new(fs::File::open(file)?);
    let mut out = BufWriter::new(fs::File::create(next)?);
    let mut moved: Vec<String> = Vec::new();
    let mut max_id = 0u64;
    let mut in_table = false;
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for line in input.lines() {
        let line = line?;
        if line.starts_with("COPY ") {
            in_table = true;
            moved.clear();
            max_id = 0;
            writeln!(out, "{line}")?;
            continue;
        }
        if in_table && line == "\\." {
            let n = moved.len();
            for m in moved.drain(..) {
                out.write_all(m.as_bytes())?;
            }
            for k in 0..1000 {
                out.write_all(row(&mut rng, &vocab, max_id + 1 + k, 0).as_bytes())?;
            }
            *counts.entry("updated").or_default() += n as u64;
            in_table = false;
            writeln!(out, "{line}")?;
            continue;
        }
        if in_table {
            let id: u64 = line.split('\t').next().and_then(|v| v.parse().ok()).unwrap_or(0);
            max_id = max_id.max(id);
            let dice = rng.below(10_000);
            if dice < 10 {
                moved.push(row(&mut rng, &vocab, id, 1)); // updated: moves to the end
                continue;
            }
            if dice < 15 {
                *counts.entry("deleted").or_default() += 1;
                continue;
            }
        }
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    eprintln!("dump2: {counts:?}, 3000 inserted");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: gen-corpus tree DIR [--files N] [--bytes B] [--seed S] | hourly DIR [--seed S] | upgrade DIR [--seed S] | dump FILE [--bytes B] [--seed S] | dump2 FILE NEXT [--seed S]";
    let seed = arg(&args, "--seed", 42);
    let result = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("tree"), Some(dir)) => {
            tree(Path::new(dir), arg(&args, "--files", 80_000), arg(&args, "--bytes", 1_300_000_000), seed)
        }
        (Some("hourly"), Some(dir)) => hourly(Path::new(dir), seed),
        (Some("upgrade"), Some(dir)) => upgrade(Path::new(dir), seed),
        (Some("dump"), Some(file)) => dump(Path::new(file), arg(&args, "--bytes", 600_000_000), seed),
        (Some("dump2"), Some(file)) => match args.get(3) {
            Some(next) => dump2(Path::new(file), Path::new(next), seed),
            None => {
                eprintln!("{usage}");
                std::process::exit(2)
            }
        },
        _ => {
            eprintln!("{usage}");
            std::process::exit(2)
        }
    };
    if let Err(e) = result {
        eprintln!("gen-corpus: {e}");
        std::process::exit(1);
    }
}
