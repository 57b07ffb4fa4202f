//! Text and JSON output helpers. Everything cairn prints goes through [`stdout`] (the
//! [`outln!`] macro) or [`errln!`]: never `println!`, which panics when the reader has gone.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use serde::Serialize;

use crate::args::Cli;

/// Set once a write to stdout met EPIPE: the reader has gone for good.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// While a report is folded into one journal event, what it writes to stdout lands here.
    static FOLDING: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// cairn's stdout. A reader that went away (`cairn snapshot SRC | head -c0`) ends the output,
/// not the command: a report is printed after its work is done (a snapshot is committed, a
/// pack deleted), and the exit code must still say how that work went (a scrub read by
/// `| head` that found damage still exits 4). So EPIPE is swallowed, and every later write is
/// dropped unseen; any other error (a full disk under `> report`) is returned.
pub struct Stdout(io::StdoutLock<'static>);

/// Locks stdout for a report (see [`Stdout`]).
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let folded = FOLDING.with(|f| f.borrow_mut().as_mut().map(|v| v.extend_from_slice(buf)).is_some());
        if folded {
            return Ok(buf.len());
        }
        if STDOUT_GONE.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        match self.0.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                STDOUT_GONE.store(true, Ordering::Relaxed);
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if STDOUT_GONE.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.0.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                STDOUT_GONE.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}

/// `println!` for reports: writes a line through [`stdout`] and evaluates to an
/// `io::Result<()>` for `?`.
macro_rules! outln {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut $crate::output::stdout(), format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics: with stderr gone there is nowhere left to say anything, and
/// the exit code still tells how the command went.
macro_rules! errln {
    ($($arg:tt)*) => {{
        let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("{}\n", format_args!($($arg)*)));
    }};
}

pub(crate) use {errln, outln};

/// Whether `-q` silences the text of a report (never its JSON: asked for, it is printed).
#[derive(Clone, Copy)]
pub enum Quiet {
    /// The text only tells what the exit code already says (a snapshot was saved): -q drops it.
    Silences,
    /// The text is what was asked for (a listing, a diff), or news the exit code does not
    /// carry in full (which data is damaged): printed even with -q.
    Ignored,
}

/// Prints a command's report on stdout: as JSON with `--json`, else as `text` renders it.
pub fn report<T, E>(cli: &Cli, value: &T, quiet: Quiet, text: impl FnOnce(&T) -> Result<(), E>) -> Result<()>
where
    T: Serialize + ?Sized,
    E: Into<anyhow::Error>,
{
    if cli.json {
        return json(value);
    }
    if cli.quiet && matches!(quiet, Quiet::Silences) {
        return Ok(());
    }
    if crate::logging::is_journal() {
        // Under systemd every line is an event of its own: the report is folded into one,
        // which names the profile and keeps the snapshot's ID beside what it says of it.
        FOLDING.with(|f| *f.borrow_mut() = Some(Vec::new()));
        let rendered = text(value).map_err(Into::into);
        let folded = FOLDING.with(|f| f.borrow_mut().take()).unwrap_or_default();
        rendered?;
        let mut out = stdout();
        out.write_all(crate::logging::event_line(&String::from_utf8_lossy(&folded)).as_bytes())?;
        return Ok(());
    }
    text(value).map_err(Into::into)
}

/// Writes `value` as JSON (one document, newline-terminated) on stdout. A command that sent
/// requests to a bucket says how many in its report, as `s3_requests`, when the report is an
/// object; a report that is an array (`list`, `ls`, `find`, `log`, `manifest`, `tag`) stays
/// the array scripts index, and `-v` gives the counts of those on stderr.
fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    /// The report's fields, then `s3_requests`.
    #[derive(Serialize)]
    struct WithRequests<'a, T: ?Sized> {
        #[serde(flatten)]
        report: &'a T,
        s3_requests: cairn_store::RequestCounts,
    }
    let mut out = io::BufWriter::new(stdout());
    // Only a map can take one more field: anything else is written as it is.
    let counted = crate::commands::s3_requests()
        .and_then(|s3_requests| serde_json::to_vec_pretty(&WithRequests { report: value, s3_requests }).ok());
    match counted {
        Some(bytes) => out.write_all(&bytes)?,
        None => serde_json::to_writer_pretty(&mut out, value)?,
    }
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Bytes in binary units, as operators read them: `1.21 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// A Unix-nanosecond time in the local time zone, to the second.
pub fn local_time(time_ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(time_ns))
        .map(|t| t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A Unix-nanosecond time as every `--json` prints it: RFC 3339 in UTC (jiff's `Timestamp`
/// display, `2026-12-04T22:57:19.123456789Z`), the same in any time zone so scripts can compare.
pub fn utc_time(time_ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(time_ns)).map(|t| t.to_string()).unwrap_or_default()
}

/// The width of the terminal stdout is, or `None` when stdout is not a terminal (a pipe or a
/// file: what a script reads is never cut to fit).
pub fn terminal_width() -> Option<usize> {
    let out = io::stdout();
    if !out.is_terminal() {
        return None;
    }
    rustix::termios::tcgetwinsize(&out).ok().map(|w| usize::from(w.ws_col)).filter(|&w| w > 0)
}

/// Fewest characters [`fit_last_column`] leaves the last column: when the other columns fill
/// the line, a wrapped row is better than a row with no path.
const LAST_COLUMN_MIN: usize = 12;

/// Cuts the last cell of each row (ending it with `…`) so that [`table`]'s lines fit in
/// `width` characters.
pub fn fit_last_column(header: &[&str], rows: &mut [Vec<String>], width: usize) {
    let Some(last) = header.len().checked_sub(1) else {
        return;
    };
    let mut widths: Vec<usize> = header[..last].iter().map(|h| h.chars().count()).collect();
    for row in rows.iter() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let used: usize = widths.iter().map(|w| w + 2).sum();
    let room = width.saturating_sub(used).max(LAST_COLUMN_MIN);
    for cell in rows.iter_mut().filter_map(|row| row.get_mut(last)) {
        if cell.chars().count() > room {
            *cell = cell.chars().take(room - 1).chain(std::iter::once('…')).collect();
        }
    }
}

/// Prints a simple left-aligned table: a header row and rows of cells.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = stdout();
    let line = |cells: Vec<&str>, out: &mut dyn Write| -> io::Result<()> {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(header.to_vec(), &mut out)?;
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.50 KiB");
        assert_eq!(size(3 << 30), "3.00 GiB");
    }

    #[test]
    fn the_last_column_is_cut_to_the_width() {
        let row = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
        let mut rows = vec![row("abcd", "/etc/nginx /opt/app/config"), row("ef", "/srv")];
        // "abcd  " takes 6: 20 leaves 14 for the paths.
        fit_last_column(&["ID", "PATHS"], &mut rows, 20);
        assert_eq!(rows, vec![row("abcd", "/etc/nginx /o…"), row("ef", "/srv")]);
        // A narrow terminal still shows the start of the paths.
        fit_last_column(&["ID", "PATHS"], &mut rows, 3);
        assert_eq!(rows[0][1].chars().count(), LAST_COLUMN_MIN);
    }
}
