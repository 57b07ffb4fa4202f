//! The logger for what the store says through `log` (a config copy it could not write, a
//! space reserve it gave back): without one installed those diagnostics are dropped.
//!
//! On a terminal or in a file a line reads `cairn: warning: ...`, the prefix the CLI's own
//! notices have always had. Under systemd (stderr is the stream `JOURNAL_STREAM` names) each
//! event is one line with an sd-daemon priority prefix (`<4>`), so that the journal files it at
//! the right priority and never splits it, and names the profile it ran for (`[profile gw]`).
//! A command's report is one such line too (`output::report`), so a unit's run reads in
//! `journalctl -u cairn-snapshot@gw` as one event per run, with the snapshot's ID in it.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Installs the logger for the global `-v`/`-q` flags. Called once, before any command runs.
pub fn init(verbose: u8, quiet: bool) {
    let max = max_level(verbose, quiet);
    let journal = stderr_is_journal();
    let _ = JOURNAL.set(journal);
    let logger = Logger { max, journal };
    // Only fails when a logger is installed already, and then that one stays in charge.
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// Warnings and errors by default; `-v` adds info, `-vv` debug; `-q` leaves errors only.
fn max_level(verbose: u8, quiet: bool) -> LevelFilter {
    match (quiet, verbose) {
        (true, _) => LevelFilter::Error,
        (false, 0) => LevelFilter::Warn,
        (false, 1) => LevelFilter::Info,
        (false, _) => LevelFilter::Debug,
    }
}

struct Logger {
    max: LevelFilter,
    journal: bool,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.max
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format_line(record.level(), &record.args().to_string(), self.journal, context());
            // One write per event keeps lines from threads whole; with stderr gone there is
            // nowhere left to say anything.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Whether stderr is the journal, as `init` found.
static JOURNAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// What every journal line names: the profile (`[profile gw] `), or nothing.
static CONTEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names the profile in every journal line from now on (once; later calls change nothing).
pub fn set_profile(name: &str) {
    let _ = CONTEXT.set(format!("[profile {name}] "));
}

fn context() -> &'static str {
    CONTEXT.get().map_or("", String::as_str)
}

/// True when stderr is the journal (see [`init`]).
pub fn is_journal() -> bool {
    JOURNAL.get().copied().unwrap_or(false)
}

/// A command's whole text report as one journal event at info priority: its lines joined with
/// `; `, after the profile.
pub fn event_line(report: &str) -> String {
    // Columns aligned for a terminal are runs of spaces: one space each in the journal.
    let parts: Vec<String> =
        report.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|l| !l.is_empty()).collect();
    format!("<{}>cairn: {}{}\n", priority(Level::Info), context(), one_line(&parts.join("; ")))
}

/// A line a command prints on stderr itself (a report's per-file warnings), as the journal
/// must get it when stderr is the journal: one line, with `level`'s priority. On a terminal it
/// stays as it is.
pub fn stderr_line(level: Level, text: &str) -> String {
    if is_journal() {
        format!("<{}>{}{}", priority(level), context(), one_line(text))
    } else {
        text.to_owned()
    }
}

/// sd-daemon(3): LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// The journal reads a line as one event: a message that went on to a second line would reach
/// it as a second event at the default priority.
fn one_line(text: &str) -> String {
    text.trim_end().replace("\r\n", " ").replace(['\n', '\r'], " ")
}

/// One event as written to stderr, newline included; `context` names the profile.
fn format_line(level: Level, message: &str, journal: bool, context: &str) -> String {
    let name = match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    if !journal {
        return format!("cairn: {name}: {message}\n");
    }
    format!("<{}>cairn: {context}{name}: {}\n", priority(level), one_line(message))
}

/// True when stderr is the journal stream systemd set up, as systemd.exec(5) says to tell:
/// `JOURNAL_STREAM` is inherited by children whose stderr was redirected elsewhere (`2>file`
/// in a service's script), so the variable alone does not say it.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    // Not u64 on every target.
    #[allow(clippy::useless_conversion)]
    let (dev, ino) = (u64::from(stat.st_dev), u64::from(stat.st_ino));
    names_stream(&value.to_string_lossy(), dev, ino)
}

/// `JOURNAL_STREAM` is `DEVICE:INODE` in decimal.
fn names_stream(value: &str, dev: u64, ino: u64) -> bool {
    value.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_lines_keep_the_cli_prefix_and_the_message_as_it_is() {
        assert_eq!(format_line(Level::Warn, "disk nearly full", false, ""), "cairn: warning: disk nearly full\n");
        assert_eq!(format_line(Level::Error, "a\nb", false, ""), "cairn: error: a\nb\n");
        assert_eq!(format_line(Level::Info, "x", false, ""), "cairn: info: x\n");
        assert_eq!(format_line(Level::Debug, "x", false, ""), "cairn: debug: x\n");
    }

    #[test]
    fn journal_lines_are_one_line_with_the_sd_daemon_priority() {
        assert_eq!(format_line(Level::Error, "cannot\nopen\r\nit\n", true, ""), "<3>cairn: error: cannot open it\n");
        assert_eq!(format_line(Level::Warn, "w", true, ""), "<4>cairn: warning: w\n");
        assert_eq!(format_line(Level::Info, "i", true, ""), "<6>cairn: info: i\n");
        assert_eq!(format_line(Level::Debug, "d", true, ""), "<7>cairn: debug: d\n");
        assert_eq!(format_line(Level::Trace, "t", true, ""), "<7>cairn: trace: t\n");
        for level in [Level::Error, Level::Warn, Level::Info, Level::Debug] {
            assert_eq!(format_line(level, "a\nb\rc\n\n", true, "").lines().count(), 1);
        }
        assert_eq!(format_line(Level::Warn, "w", true, "[profile gw] "), "<4>cairn: [profile gw] warning: w\n");
    }

    #[test]
    fn flags_choose_the_level() {
        assert_eq!(max_level(0, false), LevelFilter::Warn);
        assert_eq!(max_level(1, false), LevelFilter::Info);
        assert_eq!(max_level(2, false), LevelFilter::Debug);
        assert_eq!(max_level(5, false), LevelFilter::Debug);
        assert_eq!(max_level(0, true), LevelFilter::Error);
    }

    fn shown(max: LevelFilter, level: Level, target: &str) -> bool {
        Logger { max, journal: false }.enabled(&Metadata::builder().level(level).target(target).build())
    }

    #[test]
    fn levels_are_filtered() {
        let store = "cairn_store::repo";
        assert!(shown(LevelFilter::Warn, Level::Warn, store));
        assert!(shown(LevelFilter::Warn, Level::Error, store));
        assert!(!shown(LevelFilter::Warn, Level::Info, store));
        assert!(shown(LevelFilter::Info, Level::Info, store));
        assert!(!shown(LevelFilter::Info, Level::Debug, store));
        assert!(shown(LevelFilter::Debug, Level::Debug, store));
        assert!(!shown(LevelFilter::Error, Level::Warn, store));
        assert!(shown(LevelFilter::Error, Level::Error, store));
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(names_stream("8:1234", 8, 1234));
        assert!(!names_stream("8:1234", 8, 1235));
        assert!(!names_stream("9:1234", 8, 1234));
        assert!(!names_stream("", 8, 1234));
        assert!(!names_stream("8", 8, 1234));
    }
}
