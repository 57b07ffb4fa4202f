//! `show`, `stats`, `diff`, `ls`, `find`, `log`, `cat`, `manifest`: looking inside.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use cairn_store::{Listing, ShowReport, Snapshot, Stats, Visit};
use globset::Glob;
use serde::Serialize;

use crate::args::{CatArgs, Cli, DiffArgs, FindArgs, LogArgs, LsArgs, ManifestArgs, ShowArgs, StatsArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, errln, outln, size, Quiet};

pub fn show(cli: &Cli, args: &ShowArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let snap = repo.resolve_in(&args.snapshot, &lower::filter(&args.select, super::profile(cli)?)?)?;
    output::report(cli, &repo.show(&snap)?, Quiet::Ignored, |r| print_show(r, &snap))?;
    Ok(exit::OK)
}

fn print_show(r: &ShowReport, snap: &Snapshot) -> std::io::Result<()> {
    outln!("snapshot   {}", r.id)?;
    outln!("time       {} ({})", output::local_time(snap.record.time_ns), r.time)?;
    outln!("host/user  {} / {}", r.host, r.user)?;
    outln!("paths      {}", r.paths.join(" "))?;
    outln!("kind       {}{}", r.kind, r.parent.as_ref().map(|p| format!(", parent {}", &p[..8])).unwrap_or_default())?;
    if let Some(l) = &r.label {
        outln!("label      {l}")?;
    }
    if !r.tags.is_empty() {
        outln!("tags       {}", r.tags.join(", "))?;
    }
    if r.pinned {
        outln!("pinned     yes (no keep-policy removes it)")?;
    }
    if r.safety {
        outln!("safety     a restore's safety snapshot (kept by forget's --keep-safety-* rules)")?;
    }
    if let Some(o) = &r.original {
        outln!("original   {o} (its ID before `cairn tag` changed it)")?;
    }
    let t = &r.totals;
    outln!("contents   {} files, {} directories, {} symlinks, {} special", t.files, t.dirs, t.symlinks, t.specials)?;
    outln!("size       {} (logical)", size(t.bytes_total))?;
    outln!("added      {} new data, {} stored", size(t.data_added), size(t.data_stored))?;
    outln!("exclusive  {} (what forgetting only this snapshot would free)", size(r.exclusive_size))?;
    outln!("took       {:.2} s, cairn {}", r.duration_secs, r.cairn_version)?;
    for c in &r.captures {
        print_capture(c)?;
    }
    Ok(())
}

/// One capture of `show`: where it is, the command, how it ended, the end of its stderr.
fn print_capture(c: &cairn_store::CaptureRecord) -> std::io::Result<()> {
    use cairn_store::CaptureExit;
    let command = if c.argv.is_empty() {
        "standard input".to_owned()
    } else {
        shlex::try_join(c.argv.iter().map(String::as_str)).unwrap_or_else(|_| c.argv.join(" "))
    };
    let ended = match &c.exit {
        CaptureExit::Code(n) => format!("exit {n}"),
        CaptureExit::Signal(s) => format!("ended by signal {s}"),
        CaptureExit::TimedOut => "killed at its timeout".to_owned(),
        CaptureExit::NotStarted => "not started".to_owned(),
        CaptureExit::Stdin => "read to its end".to_owned(),
    };
    let stored = if c.failed { "FAILED, not stored".to_owned() } else { size(c.size) };
    outln!(
        "capture    /{}/{}: {command} ({ended}, {:.2} s, {stored})",
        cairn_store::CAPTURES_DIR,
        c.path,
        c.duration_ms as f64 / 1000.0
    )?;
    let tail = c.stderr_tail.trim_end();
    if !tail.is_empty() {
        // The last lines: the full tail is in --json.
        let lines: Vec<&str> = tail.lines().collect();
        for l in &lines[lines.len().saturating_sub(5)..] {
            outln!("             stderr: {l}")?;
        }
    }
    Ok(())
}

pub fn stats(cli: &Cli, args: &StatsArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let only: Vec<Snapshot> = args.snapshots.iter().map(|s| repo.resolve(s)).collect::<Result<_, _>>()?;
    output::report(cli, &repo.stats(&only)?, Quiet::Ignored, print_stats)?;
    Ok(exit::OK)
}

fn print_stats(s: &Stats) -> std::io::Result<()> {
    outln!("snapshots          {}", s.snapshots)?;
    outln!("logical size       {}", size(s.logical_size))?;
    outln!("unique data        {} in {} blobs ({} chunks)", size(s.unique_size), s.blobs, s.chunks)?;
    outln!("stored             {}", size(s.stored_size))?;
    outln!("dedup ratio        {:.2}x", s.dedup_ratio)?;
    outln!("compression ratio  {:.2}x", s.compression_ratio)?;
    outln!("packs              {} ({})", s.packs, size(s.packs_size))?;
    outln!("index              {}", size(s.index_size))?;
    if let Some(age) = s.newest_snapshot_age_secs {
        outln!("newest snapshot    {} old", crate::units::format_age(std::time::Duration::from_secs(age)))?;
    }
    Ok(())
}

pub fn diff(cli: &Cli, args: &DiffArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let filter = lower::filter(&args.select, super::profile(cli)?)?;
    let a = repo.resolve_in(&args.a, &filter)?;
    let (report, against) = if args.live {
        // The second positional, if any, is the first path: `diff SNAP --live /etc`.
        let paths: Vec<std::path::PathBuf> = args.b.iter().map(Into::into).chain(args.paths.iter().cloned()).collect();
        (repo.diff_live(&a, &paths)?, format!("{} or on disk below its paths", a.id.short(8)))
    } else {
        let b = repo.resolve_in(args.b.as_deref().context("a second snapshot, or --live, is needed")?, &filter)?;
        (repo.diff(&a, &b, &args.paths)?, format!("{} or {}", a.id.short(8), b.id.short(8)))
    };
    let quiet = if args.exit_code { Quiet::Silences } else { Quiet::Ignored };
    output::report(cli, &report, quiet, |r| {
        let mut out = output::stdout();
        for c in &r.changes {
            writeln!(out, "{}  {}", c.marker, c.path)?;
        }
        writeln!(out, "{} added, {} removed, {} modified, {} metadata only", r.added, r.removed, r.modified, r.metadata)
    })?;
    super::print_warnings(cli, "diff", log::Level::Warn, &report.warnings);
    let code = super::say_not_found(&report.not_found, &against);
    Ok(if code != exit::OK || !report.warnings.is_empty() {
        // Something was not compared: trouble outranks "differences" (diff(1): 2 over 1).
        exit::WARNINGS
    } else if args.exit_code && report.differs() {
        exit::DIFFERENCES
    } else {
        exit::OK
    })
}

fn print_listing(out: &mut dyn Write, l: &Listing, long: bool) -> std::io::Result<()> {
    if long {
        let mtime = l.mtime.get(..19).unwrap_or(&l.mtime).replace('T', " ");
        let target = l.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
        writeln!(
            out,
            "{:<8} {} {:>8} {:>8} {:>12} {} {}{target}",
            l.kind, l.mode, l.user, l.group, l.size, mtime, l.path
        )
    } else {
        writeln!(out, "{}", l.path)
    }
}

pub fn ls(cli: &Cli, args: &LsArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let snap = repo.resolve_in(&args.snapshot, &lower::filter(&args.select, super::profile(cli)?)?)?;
    let list = repo.ls(&snap, args.path.as_deref().unwrap_or(Path::new("/")), args.recursive)?;
    output::report(cli, &list, Quiet::Ignored, |list| {
        let mut out = output::stdout();
        list.iter().try_for_each(|l| print_listing(&mut out, l, args.long))
    })?;
    Ok(exit::OK)
}

#[derive(Serialize)]
struct Found {
    snapshot: String,
    /// UTC, like every other command's JSON (the text shows local time).
    time: String,
    #[serde(skip)]
    time_ns: i64,
    #[serde(flatten)]
    entry: Listing,
}

pub fn find(cli: &Cli, args: &FindArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let glob = Glob::new(args.pattern.trim_end_matches('/'))
        .with_context(|| format!("bad pattern {:?}", args.pattern))?
        .compile_matcher();
    let by_name = !args.pattern.contains('/');
    let mut snaps: Vec<Snapshot> = if args.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        args.snapshots.iter().map(|s| repo.resolve(s)).collect::<Result<_, _>>()?
    };
    if let Some(n) = args.newest {
        let skip = snaps.len().saturating_sub(n);
        snaps.drain(..skip);
    }
    let mut found = Vec::new();
    for s in &snaps {
        repo.walk(s.record.root, &mut |p, e| {
            let hit = if by_name { p.file_name().is_some_and(|n| glob.is_match(n)) } else { glob.is_match(p) };
            if hit {
                found.push(Found {
                    snapshot: s.id.to_hex(),
                    time: output::utc_time(s.record.time_ns),
                    time_ns: s.record.time_ns,
                    entry: cairn_store::listing(p, e),
                });
            }
            Ok(Visit::Enter)
        })?;
    }
    output::report(cli, &found, Quiet::Ignored, |found| {
        let mut out = output::stdout();
        for f in found {
            writeln!(
                out,
                "{}  {}  {:>12}  {}  {}",
                &f.snapshot[..8],
                output::local_time(f.time_ns),
                f.entry.size,
                f.entry.mtime.get(..19).unwrap_or(""),
                f.entry.path
            )?;
        }
        writeln!(out, "{} matches in {} snapshots", found.len(), snaps.len())
    })?;
    Ok(exit::OK)
}

pub fn log(cli: &Cli, args: &LogArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let versions = repo.log(&args.path)?;
    output::report(cli, &versions, Quiet::Ignored, |versions| {
        let mut out = output::stdout();
        for v in versions {
            let first = &v.snapshots[0][..8];
            let last = &v.snapshots[v.snapshots.len() - 1][..8];
            let id = if v.kind == "absent" { "(absent)".to_owned() } else { v.version[..16].to_owned() };
            let when = |rfc3339: &str| {
                rfc3339
                    .parse::<jiff::Timestamp>()
                    .map(|t| output::local_time(i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)))
                    .unwrap_or_default()
            };
            writeln!(
                out,
                "{id}  {:<7} {:>12}  {} .. {}  in {} snapshots ({first} .. {last})",
                v.kind,
                v.size,
                when(&v.first_time),
                when(&v.last_time),
                v.snapshots.len()
            )?;
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(exit::OK)
}

pub fn cat(cli: &Cli, args: &CatArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let snap = repo.resolve_in(&args.snapshot, &lower::filter(&args.select, super::profile(cli)?)?)?;
    // Not output::stdout(): a file is streamed as it is decompressed, so a reader that went
    // away (`| head`) should stop the work, not have the rest of the file decoded for nobody.
    let mut out = std::io::stdout().lock();
    match repo.cat(&snap, &args.path, &mut out) {
        Ok(_) => Ok(exit::OK),
        // A reader that went away (`| head`) is not an error.
        Err(cairn_store::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(e) => Err(e.into()),
    }
}

/// One file of `manifest --json`.
#[derive(Serialize)]
struct Line<'a> {
    blake3: &'a str,
    path: &'a str,
}

/// b3sum's format: a line starting with `\\` has `\\` and newline escaped in its path.
fn b3sum_line(hash: &str, path: &str) -> String {
    if path.contains('\\') || path.contains('\n') || path.contains('\r') {
        let escaped = path.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r");
        format!("\\{hash}  {escaped}")
    } else {
        format!("{hash}  {path}")
    }
}

pub fn manifest(cli: &Cli, args: &ManifestArgs) -> Result<u8> {
    let repo = super::open(cli)?;
    let snap = repo.resolve_in(&args.snapshot, &lower::filter(&args.select, super::profile(cli)?)?)?;
    let files = repo.manifest(&snap, args.path.as_deref().unwrap_or(Path::new("/")))?;
    let mut skipped = Vec::new();
    let mut lines = Vec::new();
    for (hash, path) in &files {
        match std::str::from_utf8(path) {
            Ok(p) => lines.push((hash.clone(), p.to_owned())),
            Err(_) => skipped.push(String::from_utf8_lossy(path).into_owned()),
        }
    }
    let lines: Vec<Line<'_>> = lines.iter().map(|(h, p)| Line { blake3: h, path: p }).collect();
    output::report(cli, &lines, Quiet::Ignored, |lines| {
        let mut out = output::stdout();
        lines.iter().try_for_each(|l| writeln!(out, "{}", b3sum_line(l.blake3, l.path)))
    })?;
    // b3sum --check reads UTF-8 paths only: say which files cannot be listed.
    for s in &skipped {
        errln!("cairn: manifest: {s}: name is not UTF-8; b3sum cannot check it, left out");
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b3sum_escapes_like_b3sum() {
        assert_eq!(b3sum_line("ab", "a b"), "ab  a b");
        assert_eq!(b3sum_line("ab", "new\\nline"), "\\ab  new\\\\nline");
        assert_eq!(b3sum_line("ab", "x\ny"), "\\ab  x\\ny");
    }
}
