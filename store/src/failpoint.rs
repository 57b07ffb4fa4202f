//! Fail-points for the crash-consistency harness (tests/e2e/crash_matrix.rs).
//!
//! `CAIRN_FAILPOINTS=name=kill@N` makes the process SIGKILL itself the Nth time it reaches the
//! point `name` (a real `kill -9`: no destructor runs, nothing is flushed);
//! `name=pause@MS` makes it sleep there, so a test can change a file mid-read;
//! `name=stop@N` makes it stop itself (SIGSTOP) the Nth time, so a test knows where the run
//! is, acts (kills a storage node, waits past a lease's time) and lets it go on with SIGCONT.
//! Several points are separated by commas. Unset, a point costs one check of a value read once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

enum Action {
    KillAt(u64),
    Pause(u64),
    StopAt(u64),
}

struct Armed {
    action: Action,
    hits: AtomicU64,
}

fn armed() -> &'static HashMap<String, Armed> {
    static ARMED: OnceLock<HashMap<String, Armed>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let spec = std::env::var("CAIRN_FAILPOINTS").unwrap_or_default();
        spec.split(',')
            .filter_map(|item| {
                let (name, action) = item.trim().split_once('=')?;
                let (verb, n) = action.split_once('@')?;
                let n: u64 = n.parse().ok()?;
                let action = match verb {
                    "kill" => Action::KillAt(n.max(1)),
                    "pause" => Action::Pause(n),
                    "stop" => Action::StopAt(n.max(1)),
                    _ => return None,
                };
                Some((name.to_owned(), Armed { action, hits: AtomicU64::new(0) }))
            })
            .collect()
    })
}

/// Passes the point `name`.
pub(crate) fn hit(name: &str) {
    let Some(a) = armed().get(name) else { return };
    let n = a.hits.fetch_add(1, Ordering::SeqCst) + 1;
    match a.action {
        Action::KillAt(at) if n == at => {
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        }
        Action::StopAt(at) if n == at => {
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
        }
        Action::Pause(ms) => std::thread::sleep(Duration::from_millis(ms)),
        Action::KillAt(_) | Action::StopAt(_) => {}
    }
}

/// Every fail-point in the store, for the harness to iterate over.
pub const POINTS: &[&str] = &[
    "snapshot.pack_written",
    "snapshot.pack_indexed",
    "snapshot.before_record",
    "snapshot.record_written",
    "snapshot.file_read",
    "restore.dir_created",
    "restore.temp_written",
    "restore.file_written",
    "restore.before_link",
    "forget.tombstone_written",
    "forget.record_removed",
    "tag.new_record_written",
    "copy.pack_written",
    "copy.pack_indexed",
    "copy.before_record",
    "copy.record_written",
    "gc.marked",
    "gc.condemned",
    "gc.repack_written",
    "gc.rows_deleted",
    "repair.pack_indexed",
    "repair.salvage_written",
    "repair.record_rewritten",
    "repair.before_swap",
    "repair.pack_quarantined",
    "scrub.records_listed",
];
