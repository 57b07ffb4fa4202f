//! Sessions and the gc lock as *lease objects* in the repository itself, for stores with no
//! `flock` and no rename (an S3 bucket that several machines write), as docs/GC.md ("Lease
//! objects") designs them. Works over any [`Backend`]; the tests use the in-memory one.
//!
//! - A session is an object `leases/sessions/<random hex>` holding its id, kind, host, pid and
//!   start time. A heartbeat thread rewrites it every [`LeaseTiming::heartbeat`]: since a `put`
//!   of an existing name keeps its bytes (the backend contract), a renewal writes the lease
//!   under a *new* random name and then removes the previous one, so the lease is never absent
//!   (for a moment there are two copies, and the session id makes them one). Dropping the
//!   [`Hold`] stops the thread and removes the lease.
//! - A lease is stale once its `modified` time *as the server lists it* is older than
//!   [`LeaseTiming::stale_after`]. "Now" on the server's clock is estimated by writing a probe
//!   object and reading its listed time (cached for a few minutes as an offset from the local
//!   clock), and the estimate errs towards *younger* leases: the local time taken after the
//!   probe's `put` returned, and servers that truncate `Last-Modified` to the second, both make
//!   a lease look younger than it is, never older. So clock skew between machines does not
//!   matter.
//! - A lease not renewed for [`LeaseTiming::give_up_after`] (shorter than `stale_after`) is
//!   *lost*, for good, before anyone can count it as ended: its renewals failed that long, or
//!   the process was suspended that long (a paused VM, SIGSTOP), whichever thread notices
//!   first. The engine asks [`Locks::check_held`] between its steps (before each pack and each
//!   snapshot record it writes, before gc deletes anything) and stops with
//!   `Error::LeaseLost`; every step before was crash-safe, so stopping there leaves what a
//!   killed run leaves (packs that the next run reuses or gc settles), and no snapshot record.
//!   A renewal counts from when it was *sent*, so a renewal that took long (retries) makes the
//!   lease look older, never younger, than the server has it.
//! - The gc lock: a collector writes `leases/gc/<random hex>`, waits
//!   [`LeaseTiming::gc_settle`] (longer than the store's listing lag) and lists `leases/gc/`:
//!   among the leases that are not stale, the one with the earliest (server time, name) wins;
//!   the others remove theirs and fail with `Error::GcRunning`. No `If-None-Match` is needed
//!   (Garage ignores it on PUT). The winner's lease is renewed by a heartbeat like a session's.
//! - Condemnations are published as `condemned/<random hex>` records (lines `<pack hex>
//!   <condemned at ns>`). gc writes one record with every condemnation its index holds and
//!   removes the older records (gc loads them into its index first, so nothing is lost); a
//!   rescue rewrites it without the rescued pack. Writers read them all when a session starts.
//! - gc on these locks deletes a condemned pack only once it has been condemned for
//!   [`LeaseTiming::min_condemned_age`] (24 hours), whatever the leases say.
//! - Polling is cheap: an object under a name never changes (renewals and new records take
//!   new names), so what a listing shows under a name already read (same size and time) is
//!   not read again: a `live_sessions` call is one listing plus a read per *new* lease. gc
//!   polls every second at first, backing off to every 5 s ([`Locks::poll_interval`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{now_ns, Hold, Locks, SessionInfo};
use crate::backend::{Backend, FileKind, ObjectInfo};
use crate::error::{Error, Result};
use crate::id::PackId;

/// The times leases live by (docs/GC.md gives the defaults and why).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LeaseTiming {
    /// How often a holder rewrites its lease (5 minutes).
    pub heartbeat: Duration,
    /// How old (by the server's clock) a lease is when it counts as ended (30 minutes).
    pub stale_after: Duration,
    /// How long a holder goes on without renewing before it stops itself (20 minutes); must be
    /// well below `stale_after`.
    pub give_up_after: Duration,
    /// How long a collector waits between writing its gc lease and listing the others (2 s).
    pub gc_settle: Duration,
    /// How long a pack stays condemned before gc may delete it (24 hours).
    pub min_condemned_age: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5 * 60),
            stale_after: Duration::from_secs(30 * 60),
            give_up_after: Duration::from_secs(20 * 60),
            gc_settle: Duration::from_secs(2),
            min_condemned_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Locks as lease objects in the repository (see the module's notes).
pub struct ObjectLocks {
    backend: Arc<dyn Backend>,
    timing: LeaseTiming,
    host: String,
    /// The leases this process holds now (a dropped one's entry is dead and skipped).
    held: Mutex<Vec<Weak<Renewal>>>,
    /// Server clock minus local clock (ns), and when it was measured.
    offset: Mutex<Option<(i64, Instant)>>,
    /// The condemnation record this process wrote last, and what it holds.
    published: Mutex<Option<Published>>,
    /// What records (leases, condemnations) read before hold, by kind and name, with the size
    /// and time they were listed with: read again only when those change.
    read: Mutex<HashMap<(FileKind, String), (ObjectInfo, String)>>,
}

/// A condemnation record's name and the condemnations it holds.
type Published = (String, Vec<Entry>);

/// How long a measured server clock offset is trusted.
const OFFSET_FOR: Duration = Duration::from_secs(300);

impl ObjectLocks {
    /// Leases in `backend` with the default timing.
    #[must_use]
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_timing(backend, LeaseTiming::default())
    }

    /// Leases with other times (tests shorten them).
    #[must_use]
    pub fn with_timing(backend: Arc<dyn Backend>, timing: LeaseTiming) -> Self {
        Self {
            backend,
            timing,
            host: rustix::system::uname().nodename().to_string_lossy().into_owned(),
            held: Mutex::new(Vec::new()),
            offset: Mutex::new(None),
            published: Mutex::new(None),
            read: Mutex::new(HashMap::new()),
        }
    }

    /// "Now" on the server's clock, erring early (see the module's notes).
    fn server_now(&self) -> Result<i64> {
        let mut held = lock(&self.offset);
        if let Some((offset, at)) = *held {
            if at.elapsed() < OFFSET_FOR {
                return Ok(now_ns().saturating_add(offset));
            }
        }
        let name = random_name(&self.host);
        self.backend.put(FileKind::GcLease, &name, b"clock probe\n")?;
        let local = now_ns();
        let listed = self.backend.list(FileKind::GcLease);
        let _ = self.backend.remove(FileKind::GcLease, &name);
        let modified = listed?.into_iter().find(|o| o.name == name).and_then(|o| o.modified);
        let offset = modified.map_or(0, |m| m - local);
        *held = Some((offset, Instant::now()));
        Ok(local.saturating_add(offset))
    }

    fn is_stale(&self, info: &ObjectInfo, server_now: i64) -> bool {
        // A lease of unknown age is never judged stale: it stays until its holder removes it.
        crate::backend::older_than(info, server_now, self.timing.stale_after)
    }

    fn lease(&self, kind: FileKind, body: String) -> Result<Hold> {
        let name = random_name(&self.host);
        let sent = Instant::now();
        self.backend.put(kind, &name, body.as_bytes())?;
        let renewal = Arc::new(Renewal::new(sent, self.timing.give_up_after));
        let mut held = lock(&self.held);
        held.retain(|r| r.strong_count() > 0);
        held.push(Arc::downgrade(&renewal));
        drop(held);
        Ok(Hold::new(Lease::start(self.backend.clone(), kind, name, body, self.timing.clone(), renewal)))
    }

    /// The records of a kind and their text, as listed now; only those not read before (under
    /// that name, size and time) are read.
    fn read_records(&self, kind: FileKind) -> Result<Vec<(ObjectInfo, String)>> {
        let listed = self.backend.list(kind)?;
        let mut out = Vec::new();
        for info in listed {
            let known = lock(&self.read)
                .get(&(kind, info.name.clone()))
                .filter(|(seen, _)| *seen == info)
                .map(|(_, text)| text.clone());
            let text = match known {
                Some(text) => text,
                None => match self.backend.get(kind, &info.name) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(e) if e.is_not_found() => continue, // renewed or ended meanwhile
                    Err(e) => return Err(e),
                },
            };
            out.push((info, text));
        }
        // What is no longer listed is forgotten, so the memory is that of one listing.
        let mut read = lock(&self.read);
        read.retain(|(k, _), _| *k != kind);
        read.extend(out.iter().map(|(info, text)| ((kind, info.name.clone()), (info.clone(), text.clone()))));
        Ok(out)
    }

    /// Writes one record (`<pack hex> <at ns>` lines, ` gone` after a pack gc has deleted)
    /// and removes `replace`.
    fn write_condemned(&self, entries: Vec<Entry>, replace: &[String]) -> Result<()> {
        let name = random_name(&self.host);
        if !entries.is_empty() {
            let body: String = entries
                .iter()
                .map(|(p, at, gone)| format!("{} {at}{}\n", p.to_hex(), if *gone { " gone" } else { "" }))
                .collect();
            self.backend.put(FileKind::Condemned, &name, body.as_bytes())?;
        }
        for old in replace {
            self.backend.remove(FileKind::Condemned, old)?;
        }
        *lock(&self.published) = (!entries.is_empty()).then_some((name, entries));
        Ok(())
    }

    /// Every entry of every record (names of the records, entries).
    fn read_condemned(&self) -> Result<(Vec<String>, Vec<Entry>)> {
        let (mut names, mut out) = (Vec::new(), Vec::new());
        for (info, text) in self.read_records(FileKind::Condemned)? {
            names.push(info.name);
            for line in text.lines() {
                let mut parts = line.split(' ');
                let (Some(Ok(p)), Some(Ok(at))) =
                    (parts.next().map(str::parse::<PackId>), parts.next().map(str::parse::<i64>))
                else {
                    continue;
                };
                out.push((p, at, parts.next() == Some("gone")));
            }
        }
        Ok((names, out))
    }
}

/// A published condemnation: the pack, when it was condemned, and whether gc has deleted it.
type Entry = (PackId, i64, bool);

/// How long the record keeps naming a pack gc deleted, for caches on other machines that last
/// looked before it was condemned (they drop its rows when they open the repository).
const GONE_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fresh 64-hex name: unique across machines (host, pid, time, counter).
fn random_name(host: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{host} {} {:?} {} {:?}",
        std::process::id(),
        jiff::Timestamp::now(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::thread::current().id()
    );
    blake3::hash(seed.as_bytes()).to_hex().to_string()
}

/// `key value` lines of a lease.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

/// When a lease was last renewed, and whether it is lost (for good).
struct Renewal {
    give_up_after: Duration,
    /// When the last renewal that succeeded was sent.
    sent: Mutex<Instant>,
    lost: Mutex<Option<String>>,
}

impl Renewal {
    fn new(sent: Instant, give_up_after: Duration) -> Self {
        Self { give_up_after, sent: Mutex::new(sent), lost: Mutex::new(None) }
    }

    /// Why the lease is lost, if it is: said once, then for good. Unrenewed for
    /// `give_up_after` is lost even when the next renewal would succeed: the gap happened.
    fn lost(&self, failure: Option<&str>) -> Option<String> {
        let mut lost = lock(&self.lost);
        if lost.is_none() {
            let unrenewed = lock(&self.sent).elapsed();
            if unrenewed >= self.give_up_after {
                let why = failure.map_or_else(|| "the process was suspended or starved".to_owned(), str::to_owned);
                let reason = format!(
                    "the lease on the repository was not renewed for {} s ({why}), so another machine's gc \
                     may soon count this run as ended",
                    unrenewed.as_secs()
                );
                log::warn!("{reason}");
                *lost = Some(reason);
            }
        }
        lost.clone()
    }

    /// Records a renewal sent at `sent` that succeeded, unless the lease was lost before it.
    fn renewed(&self, sent: Instant) -> bool {
        if self.lost(None).is_some() {
            return false;
        }
        *lock(&self.sent) = sent;
        true
    }
}

/// A held lease and its heartbeat thread; dropping it stops the thread and removes the lease.
struct Lease {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    current: Arc<Mutex<String>>,
    backend: Arc<dyn Backend>,
    kind: FileKind,
    /// Kept alive as long as the lease is held: `ObjectLocks::check_held` looks at it.
    _renewal: Arc<Renewal>,
}

impl Lease {
    fn start(
        backend: Arc<dyn Backend>,
        kind: FileKind,
        name: String,
        body: String,
        timing: LeaseTiming,
        renewal: Arc<Renewal>,
    ) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let current = Arc::new(Mutex::new(name));
        let thread = {
            let (stop, current, backend, renewal) = (stop.clone(), current.clone(), backend.clone(), renewal.clone());
            std::thread::Builder::new()
                .name("cairn-lease".into())
                .spawn(move || heartbeat(&*backend, kind, &body, &timing, &stop, &current, &renewal))
                .ok()
        };
        Self { stop, thread, current, backend, kind, _renewal: renewal }
    }
}

fn heartbeat(
    backend: &dyn Backend,
    kind: FileKind,
    body: &str,
    timing: &LeaseTiming,
    stop: &(Mutex<bool>, Condvar),
    current: &Mutex<String>,
    renewal: &Renewal,
) {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    loop {
        let mut stopped = lock(&stop.0);
        let (guard, _) = stop
            .1
            .wait_timeout_while(stopped, timing.heartbeat, |s| !*s)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stopped = guard;
        if *stopped {
            return;
        }
        drop(stopped);
        let next = random_name(&host);
        let sent = Instant::now();
        let failure = match backend.put(kind, &next, body.as_bytes()) {
            Ok(()) => {
                let old = std::mem::replace(&mut *lock(current), next);
                let _ = backend.remove(kind, &old);
                if renewal.renewed(sent) {
                    continue;
                }
                None
            }
            Err(e) => {
                log::warn!("could not renew a lease: {e}");
                Some(e.to_string())
            }
        };
        // Lost: the holder stops at its next check; renewing further would change nothing.
        if renewal.lost(failure.as_deref()).is_some() {
            return;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let name = lock(&self.current).clone();
        let _ = self.backend.remove(self.kind, &name);
    }
}

impl Locks for ObjectLocks {
    fn start_session(&self, kind: &str) -> Result<Hold> {
        let id = random_name(&self.host);
        let started = now_ns();
        let body = format!(
            "cairn-lease 1\nid {id}\nkind {kind}\nhost {}\npid {}\nstarted {started}\n",
            self.host,
            std::process::id()
        );
        self.lease(FileKind::SessionLease, body)
    }

    /// Leases that are not stale, one per session (a renewal briefly shows two copies). Stale
    /// leases are removed on the way: their holders stopped before they turned stale.
    fn live_sessions(&self) -> Result<Vec<SessionInfo>> {
        let now = self.server_now()?;
        let mut seen: HashMap<String, SessionInfo> = HashMap::new();
        for (info, text) in self.read_records(FileKind::SessionLease)? {
            if self.is_stale(&info, now) {
                let _ = self.backend.remove(FileKind::SessionLease, &info.name);
                continue;
            }
            let id = field(&text, "id").unwrap_or(&info.name).to_owned();
            let session = SessionInfo {
                kind: field(&text, "kind").unwrap_or("?").to_owned(),
                pid: field(&text, "pid").and_then(|p| p.parse().ok()).unwrap_or(0),
                // Unknown: the oldest, so gc waits for it.
                started_ns: field(&text, "started").and_then(|p| p.parse().ok()).unwrap_or(0),
            };
            seen.insert(id, session);
        }
        Ok(seen.into_values().collect())
    }

    fn gc_lock(&self, what: &str) -> Result<Hold> {
        let body = format!("cairn-lease 1\nkind {what}\nhost {}\npid {}\n", self.host, std::process::id());
        let hold = self.lease(FileKind::GcLease, body)?;
        std::thread::sleep(self.timing.gc_settle);
        let now = self.server_now()?;
        let mut contenders: Vec<(ObjectInfo, String)> = self
            .read_records(FileKind::GcLease)?
            .into_iter()
            .filter(|(info, text)| text.starts_with("cairn-lease") && !self.is_stale(info, now))
            .collect();
        contenders.sort_by(|a, b| {
            (a.0.modified.unwrap_or(i64::MAX), &a.0.name).cmp(&(b.0.modified.unwrap_or(i64::MAX), &b.0.name))
        });
        let held = hold.inner::<Lease>().map(|l| lock(&l.current).clone());
        match contenders.first() {
            Some((info, _)) if Some(&info.name) == held.as_ref() => Ok(hold),
            None => Ok(hold), // ours vanished from the listing: listing lag; ours is the only one known
            Some((_, text)) => {
                drop(hold); // removes ours
                Err(Error::GcRunning {
                    pid: format!("{} on {}", field(text, "pid").unwrap_or("?"), field(text, "host").unwrap_or("?")),
                    holder: field(text, "kind").unwrap_or("gc").to_owned(),
                })
            }
        }
    }

    /// One record holding every condemnation gc's index knows (it loaded the published ones
    /// first), and the packs older records named that are gone from the store (gc deleted
    /// them) for [`GONE_KEPT`]; then the older records go. gc publishes when it has condemned
    /// and again when it has swept.
    fn publish_condemned(&self, packs: &[(PackId, i64)]) -> Result<()> {
        let (older, entries) = self.read_condemned()?;
        let mut out: Vec<Entry> = packs.iter().map(|&(p, at)| (p, at, false)).collect();
        let now = now_ns();
        let kept = i64::try_from(GONE_KEPT.as_nanos()).unwrap_or(i64::MAX);
        let mut seen: std::collections::HashSet<PackId> = packs.iter().map(|(p, _)| *p).collect();
        for (p, at, gone) in entries {
            if seen.contains(&p) || now.saturating_sub(at) > kept {
                continue;
            }
            let gone = gone
                || match self.backend.size(FileKind::Pack, &p.to_hex()) {
                    Ok(_) => false, // rescued: no longer condemned
                    Err(e) if e.is_not_found() => true,
                    Err(e) => return Err(e),
                };
            if gone {
                seen.insert(p);
                out.push((p, at, true));
            }
        }
        self.write_condemned(out, &older)
    }

    fn withdraw_condemned(&self, pack: PackId) -> Result<()> {
        let Some((name, entries)) = lock(&self.published).clone() else { return Ok(()) };
        let left: Vec<Entry> = entries.into_iter().filter(|(p, _, _)| *p != pack).collect();
        self.write_condemned(left, &[name])
    }

    /// Gone packs included: loading their condemnation is harmless (they have no file), and
    /// it lets a cache drop their rows.
    fn published_condemned(&self) -> Result<Vec<(PackId, i64)>> {
        let mut out: HashMap<PackId, i64> = HashMap::new();
        for (p, at, _) in self.read_condemned()?.1 {
            let e = out.entry(p).or_insert(at);
            *e = (*e).min(at);
        }
        Ok(out.into_iter().collect())
    }

    fn min_condemned_age(&self) -> Duration {
        self.timing.min_condemned_age
    }

    /// Each poll is a request (or more) to a store that may bill for it and that other
    /// machines share: every second at first, then every 2, 4 and 5 seconds.
    fn poll_interval(&self, polls: u32) -> Duration {
        Duration::from_secs(1u64 << polls.min(3)).min(Duration::from_secs(5))
    }

    /// Fails once a lease this process holds is lost (see the module's notes).
    fn check_held(&self) -> Result<()> {
        let held: Vec<Arc<Renewal>> = lock(&self.held).iter().filter_map(Weak::upgrade).collect();
        match held.iter().find_map(|r| r.lost(None)) {
            Some(reason) => Err(Error::LeaseLost { reason }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::backend::MemoryBackend;

    fn fast() -> LeaseTiming {
        LeaseTiming {
            heartbeat: Duration::from_secs(3600),
            stale_after: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(3000),
            gc_settle: Duration::from_millis(30),
            min_condemned_age: Duration::from_secs(24 * 3600),
        }
    }

    fn pack(n: u8) -> PackId {
        PackId::from_slice(&[n; 32]).unwrap()
    }

    #[test]
    fn sessions_of_two_holders_are_seen_until_dropped() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let (a, b) =
            (ObjectLocks::with_timing(backend.clone(), fast()), ObjectLocks::with_timing(backend.clone(), fast()));
        let before = now_ns();
        let s1 = a.start_session("snapshot").unwrap();
        let s2 = b.start_session("restore").unwrap();
        let mut live = a.live_sessions().unwrap();
        live.sort_by(|x, y| x.kind.cmp(&y.kind));
        assert_eq!(live.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>(), ["restore", "snapshot"]);
        assert!(live.iter().all(|s| s.pid == std::process::id() && s.started_ns >= before));
        drop(s1);
        assert_eq!(b.live_sessions().unwrap().len(), 1);
        drop(s2);
        assert!(a.live_sessions().unwrap().is_empty());
        assert!(backend.list(FileKind::SessionLease).unwrap().is_empty(), "leases are removed when they end");
        assert!(a.sees_every_session());
        assert_eq!(a.min_condemned_age(), Duration::from_secs(24 * 3600));
    }

    #[test]
    fn a_lease_not_renewed_turns_stale_and_a_renewed_one_does_not() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        // No heartbeat within the test: the lease ages.
        let idle = LeaseTiming { stale_after: Duration::from_millis(150), ..fast() };
        let locks = ObjectLocks::with_timing(backend.clone(), idle);
        let held = locks.start_session("snapshot").unwrap();
        assert_eq!(locks.live_sessions().unwrap().len(), 1);
        std::thread::sleep(Duration::from_millis(300));
        assert!(locks.live_sessions().unwrap().is_empty(), "a stale lease counts as ended");
        assert!(backend.list(FileKind::SessionLease).unwrap().is_empty(), "and is cleared");
        drop(held);
        // A heartbeat every 20 ms keeps a lease young far past its stale age.
        let beating =
            LeaseTiming { heartbeat: Duration::from_millis(20), stale_after: Duration::from_millis(150), ..fast() };
        let locks = ObjectLocks::with_timing(backend.clone(), beating);
        let held = locks.start_session("scrub").unwrap();
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(locks.live_sessions().unwrap().len(), 1, "one session, even while renewing");
        }
        drop(held);
        assert!(locks.live_sessions().unwrap().is_empty());
        assert!(backend.list(FileKind::SessionLease).unwrap().is_empty());
    }

    #[test]
    fn one_of_two_racing_collectors_wins_and_stale_gc_leases_are_ignored() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let contenders: Vec<Arc<ObjectLocks>> =
            (0..2).map(|_| Arc::new(ObjectLocks::with_timing(backend.clone(), fast()))).collect();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let results: Vec<Result<Hold>> = contenders
            .iter()
            .map(|l| {
                let (l, barrier) = (l.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    l.gc_lock("gc")
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(Error::GcRunning { holder, .. }) if holder == "gc")));
        assert_eq!(backend.list(FileKind::GcLease).unwrap().len(), 1, "the loser removed its lease");
        assert!(matches!(contenders[0].gc_lock("repair index"), Err(Error::GcRunning { .. })));
        drop(results);
        assert!(backend.list(FileKind::GcLease).unwrap().is_empty());
        let hold = contenders[1].gc_lock("gc").unwrap();
        drop(hold);
        // A crashed collector's lease stops counting once stale.
        let body = "cairn-lease 1\nkind gc\nhost elsewhere\npid 7\n";
        backend.put(FileKind::GcLease, &"0".repeat(64), body.as_bytes()).unwrap();
        assert!(matches!(contenders[0].gc_lock("gc"), Err(Error::GcRunning { pid, .. }) if pid == "7 on elsewhere"));
        let short = ObjectLocks::with_timing(
            backend.clone(),
            LeaseTiming { stale_after: Duration::from_millis(100), ..fast() },
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(short.gc_lock("gc").is_ok());
    }

    #[test]
    fn condemnations_round_trip_and_are_withdrawn() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let (gc, writer) =
            (ObjectLocks::with_timing(backend.clone(), fast()), ObjectLocks::with_timing(backend.clone(), fast()));
        assert!(writer.published_condemned().unwrap().is_empty());
        gc.publish_condemned(&[(pack(1), 10), (pack(2), 20)]).unwrap();
        let mut seen = writer.published_condemned().unwrap();
        seen.sort();
        assert_eq!(seen, [(pack(1), 10), (pack(2), 20)]);
        gc.withdraw_condemned(pack(1)).unwrap();
        assert_eq!(writer.published_condemned().unwrap(), [(pack(2), 20)]);
        // The next collector (which loaded these first) publishes its whole set; older records go.
        writer.publish_condemned(&[(pack(2), 20), (pack(3), 30)]).unwrap();
        assert_eq!(backend.list(FileKind::Condemned).unwrap().len(), 1);
        let mut seen = gc.published_condemned().unwrap();
        seen.sort();
        assert_eq!(seen, [(pack(2), 20), (pack(3), 30)]);
        writer.withdraw_condemned(pack(2)).unwrap();
        writer.withdraw_condemned(pack(3)).unwrap();
        assert!(backend.list(FileKind::Condemned).unwrap().is_empty());

        // A pack swept since it was published stays named (as gone) for caches elsewhere; one
        // that still exists and is no longer condemned (rescued) is dropped.
        let now = now_ns();
        backend.put(FileKind::Pack, &pack(5).to_hex(), b"still here").unwrap();
        gc.publish_condemned(&[(pack(4), now), (pack(5), now)]).unwrap();
        gc.publish_condemned(&[]).unwrap();
        assert_eq!(writer.published_condemned().unwrap(), [(pack(4), now)]);
        let record = backend.list(FileKind::Condemned).unwrap();
        let text = String::from_utf8(backend.get(FileKind::Condemned, &record[0].name).unwrap()).unwrap();
        assert_eq!(text, format!("{} {now} gone\n", pack(4).to_hex()));
    }

    /// A store that refuses writes once told to, and counts the whole-object reads made of it.
    #[derive(Default)]
    struct Failing {
        inner: MemoryBackend,
        fail: AtomicBool,
        gets: AtomicU64,
    }

    impl Backend for Failing {
        fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(Error::InvalidInput("refused".into()));
            }
            self.inner.put(kind, name, data)
        }
        fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(kind, name)
        }
        fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            self.inner.get_range(kind, name, offset, len)
        }
        fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
            self.inner.size(kind, name)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
            self.inner.list(kind)
        }
        fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
            self.inner.remove(kind, name)
        }
    }

    #[test]
    fn polling_reads_each_lease_once_and_backs_off() {
        let backend = Arc::new(Failing::default());
        let renewing = LeaseTiming { heartbeat: Duration::from_millis(100), ..fast() };
        let (gc, a, b) = (
            ObjectLocks::with_timing(backend.clone(), fast()),
            ObjectLocks::with_timing(backend.clone(), fast()),
            ObjectLocks::with_timing(backend.clone(), renewing),
        );
        let _s1 = a.start_session("snapshot").unwrap();
        let _s2 = a.start_session("restore").unwrap();
        let gets = || backend.gets.load(Ordering::SeqCst);
        assert_eq!(gc.live_sessions().unwrap().len(), 2);
        assert_eq!(gets(), 2, "each lease read once");
        for _ in 0..5 {
            assert_eq!(gc.live_sessions().unwrap().len(), 2);
        }
        assert_eq!(gets(), 2, "unchanged leases are not read again");
        // A new session, and one renewed under a new name: only those are read.
        let s3 = b.start_session("scrub").unwrap();
        assert_eq!(gc.live_sessions().unwrap().len(), 3);
        assert_eq!(gets(), 3);
        std::thread::sleep(Duration::from_millis(250));
        let before = gets();
        assert_eq!(gc.live_sessions().unwrap().len(), 3, "renewed, still one session");
        assert!((1..=2).contains(&(gets() - before)), "only the renewed lease is read: {}", gets() - before);
        drop(s3);
        assert_eq!(gc.live_sessions().unwrap().len(), 2);
        assert_eq!(lock(&gc.read).len(), 2, "what is no longer listed is forgotten");

        let waits: Vec<u64> = (0..6).map(|n| gc.poll_interval(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5, 5]);
    }

    #[test]
    fn a_lease_that_cannot_be_renewed_is_lost_before_it_is_stale_and_stays_lost() {
        let backend = Arc::new(Failing::default());
        let timing = LeaseTiming {
            heartbeat: Duration::from_millis(10),
            give_up_after: Duration::from_millis(100),
            stale_after: Duration::from_millis(300),
            ..fast()
        };
        let locks = ObjectLocks::with_timing(backend.clone(), timing);
        assert!(locks.check_held().is_ok(), "nothing held, nothing lost");
        let held = locks.start_session("snapshot").unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert!(locks.check_held().is_ok(), "renewed every 10 ms");
        backend.fail.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(60));
        assert!(locks.check_held().is_ok(), "not yet: 60 ms without a renewal");
        std::thread::sleep(Duration::from_millis(100));
        let Err(Error::LeaseLost { reason }) = locks.check_held() else { panic!("lost after 160 ms") };
        assert!(reason.contains("refused"), "says why: {reason}");
        // Renewals working again do not bring it back: the gap happened.
        backend.fail.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(locks.check_held(), Err(Error::LeaseLost { .. })));
        // A session of its own, after the lost one ended, is held again.
        drop(held);
        assert!(locks.check_held().is_ok());
        let again = locks.start_session("snapshot").unwrap();
        assert!(locks.check_held().is_ok());
        drop(again);
    }

    #[test]
    fn a_holder_suspended_past_its_give_up_time_finds_its_lease_lost_however_it_wakes() {
        // No failure at all: the process stops (here: the heartbeat is an hour away, as if
        // the whole process had been paused) longer than the lease allows.
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let timing = LeaseTiming { give_up_after: Duration::from_millis(80), ..fast() };
        let locks = ObjectLocks::with_timing(backend, timing);
        let _gc = locks.gc_lock("gc").unwrap();
        assert!(locks.check_held().is_ok());
        std::thread::sleep(Duration::from_millis(120));
        let Err(Error::LeaseLost { reason }) = locks.check_held() else { panic!("lost") };
        assert!(reason.contains("suspended"), "{reason}");
    }
}
