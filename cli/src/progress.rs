//! Progress bars (indicatif) for the store's progress hooks; hidden unless stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use cairn_store::{Progress, Unit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::Cli;

/// Draws the store's progress on stderr.
pub struct Bar {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    /// A bar for a command run with these global flags: drawn only on a terminal, and not
    /// under -q or --json (whose readers want nothing but the result).
    pub fn for_cli(cli: &Cli) -> Self {
        let wanted = !cli.quiet && !cli.json;
        Self { enabled: wanted && std::io::stderr().is_terminal(), bar: Mutex::new(None) }
    }

    fn with(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(b) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            f(b);
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, len: Option<u64>, unit: Unit) {
        if !self.enabled {
            return;
        }
        let bar = match len {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = match (unit, len.is_some()) {
            (Unit::Bytes, true) => "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {wide_msg}",
            (Unit::Bytes, false) => "{prefix} {spinner} {bytes} read, {bytes_per_sec} {elapsed} {wide_msg}",
            (Unit::Items, true) => "{prefix} [{bar:30}] {pos}/{len} ETA {eta} {wide_msg}",
            (Unit::Items, false) => "{prefix} {spinner} {pos} {elapsed} {wide_msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bar);
    }

    fn inc(&self, n: u64) {
        self.with(|b| b.inc(n));
    }

    fn item(&self, name: &str) {
        self.with(|b| b.set_message(name.to_owned()));
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            b.finish_and_clear();
        }
    }
}
