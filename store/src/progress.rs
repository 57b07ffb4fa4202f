//! Progress reporting. The store calls these hooks; the CLI draws them (indicatif). The default
//! implementation does nothing, so library users and tests pay nothing.

/// Receives progress of a long operation.
pub trait Progress: Send + Sync {
    /// A new phase starts; `len` is its total in `unit`s when known.
    fn start(&self, _phase: &str, _len: Option<u64>, _unit: Unit) {}
    /// `n` more units are done.
    fn inc(&self, _n: u64) {}
    /// The current item (a path), for display.
    fn item(&self, _name: &str) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// What a progress count counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Files or other items.
    Items,
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A `Progress` handed over in options (`OpenOptions::progress`).
#[derive(Clone)]
pub struct SharedProgress(pub std::sync::Arc<dyn Progress>);

impl std::fmt::Debug for SharedProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedProgress")
    }
}
