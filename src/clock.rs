//! Time for the adapters: a monotonic clock for spacing reads, schedules
//! and "how long did this reading wait", the wall clock for timestamps, and
//! sleeping. The real clock reads the OS; the DHT22 wire simulator provides
//! a virtual one, so the same retry and spacing code runs in tests without
//! waiting.
//!
//! The wall clock is not to be trusted with durations: a Raspberry Pi has
//! no real-time clock, boots with an old time and is set forward by NTP
//! minutes later, and an operator or a bad NTP source can set it back.
//! So everything that waits or expires is measured on the monotonic clock
//! ([`Now::mono`]); timestamps ([`Now::wall_ms`]) are only written down.
//! [`JumpWatch`] notices when the two disagree, and [`TakenAt`] remembers
//! when this process took each reading, on the monotonic clock.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time that can also wait.
pub trait Clock: Send + Sync {
    /// Monotonic time since an arbitrary origin.
    fn monotonic(&self) -> Duration;
    /// Unix time in milliseconds, UTC.
    fn wall_ms(&self) -> i64;
    /// Blocks for `d` (virtual clocks just advance).
    fn sleep(&self, d: Duration);

    /// Blocks until `monotonic() >= t`.
    fn sleep_until(&self, t: Duration) {
        if let Some(d) = t.checked_sub(self.monotonic())
            && !d.is_zero()
        {
            self.sleep(d);
        }
    }

    /// Both clocks, read together.
    fn now(&self) -> Now {
        Now {
            mono: self.monotonic(),
            wall_ms: self.wall_ms(),
        }
    }
}

/// Both clocks at one moment: what schedules are measured on, and what
/// timestamps say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since the clock's origin: passes, flushes and ages
    /// are measured on it, so setting the wall clock moves none of them.
    pub mono: Duration,
    /// Unix ms, UTC, as the system clock says: written into readings.
    pub wall_ms: i64,
}

/// The monotonic origin every [`SystemClock`] shares, so monotonic times
/// taken by different parts of the process (the sensor thread, the
/// publisher) can be compared.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The operating system's clocks.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// The process's clock (its monotonic origin is the same for all).
    pub fn new() -> Self {
        Self { origin: *ORIGIN }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// The smallest disagreement between the wall and monotonic clocks, over
/// one cycle, that counts as a jump: NTP slews smaller errors away (at
/// most 0.5 ms a second), and two readings of the clocks a cycle apart
/// differ by microseconds.
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(2);

/// The wall clock was set: it moved `by_ms` more than the monotonic clock
/// did (negative: it was set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    /// Milliseconds the wall clock moved beyond the time that passed.
    pub by_ms: i64,
}

impl Jump {
    /// Whether the wall clock was set forward.
    pub fn forward(self) -> bool {
        self.by_ms > 0
    }

    /// `"forward"` or `"backward"`.
    pub fn direction(self) -> &'static str {
        if self.forward() {
            "forward"
        } else {
            "backward"
        }
    }

    /// How far it moved, whichever way.
    pub fn size(self) -> Duration {
        Duration::from_millis(self.by_ms.unsigned_abs())
    }
}

impl fmt::Display for Jump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole seconds: "6years 11months 3days 5h 2m 11s", not the ms.
        let size = Duration::from_secs(self.size().as_secs());
        write!(
            f,
            "{} by {}",
            self.direction(),
            humantime::format_duration(size)
        )
    }
}

/// Notices wall-clock jumps: compares how far each clock moved between
/// two observations.
#[derive(Debug, Default, Clone)]
pub struct JumpWatch {
    /// The previous observation; `None` before the first.
    last: Option<Now>,
}

impl JumpWatch {
    /// Takes `now` and returns the jump since the previous observation, if
    /// the clocks disagree by more than [`JUMP_THRESHOLD`].
    pub fn observe(&mut self, now: Now) -> Option<Jump> {
        let prev = self.last.replace(now)?;
        let wall = now.wall_ms.saturating_sub(prev.wall_ms);
        let mono =
            i64::try_from(now.mono.saturating_sub(prev.mono).as_millis()).unwrap_or(i64::MAX);
        let by_ms = wall.saturating_sub(mono);
        (Duration::from_millis(by_ms.unsigned_abs()) > JUMP_THRESHOLD).then_some(Jump { by_ms })
    }
}

/// How long a reading has waited, as well as this process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    /// At least this long: on the monotonic clock since the reading was
    /// taken or, for a reading from before this process, its wall-clock
    /// age when the process first saw it (0 if that age was negative)
    /// plus the monotonic time since.
    pub at_least: Duration,
    /// Whether `at_least` is the whole wait: false for a reading that had a
    /// timestamp in the future when this process first saw it (the clock
    /// was set back after it was taken, by how much nobody knows).
    pub known: bool,
}

impl Waited {
    /// Whether the reading is still fresh after waiting: known to have
    /// waited at most `max`. A reading of unknown age is never fresh.
    pub fn within(self, max: Duration) -> bool {
        self.known && self.at_least <= max
    }
}

/// When a reading was first known to this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// Monotonic time it was taken or first seen.
    seen: Duration,
    /// How long it had waited by then (0 for a reading taken then).
    age_then: Duration,
    /// Whether `age_then` is known (see [`Waited::known`]).
    known: bool,
}

/// Unpublished readings remembered per (node, sensor) (a published one is
/// forgotten: [`TakenAt::forget`]; about 17 hours of readings every 15 s,
/// some 160 KiB, for an outage): the oldest seqs are forgotten first, and a forgotten
/// reading is aged by its timestamp again, so after a long outage the
/// memory stays small and what is lost is the age of readings that are
/// late anyway.
const MAX_STAMPS: usize = 4_096;

/// When this process took (or first saw) each reading, on the monotonic
/// clock: how long a reading has waited is measured on it, whatever the
/// wall clock did meanwhile. Shared by the sensor thread (which records)
/// and the publisher (which asks); cheap to clone.
#[derive(Clone)]
pub struct TakenAt {
    /// The clock `record`'s times come from and ages are measured on.
    clock: Arc<dyn Clock>,
    /// Per (node, sensor), by seq: a gateway's log holds the readings of
    /// many nodes, and two nodes' sensor "s1" are different streams.
    stamps: Arc<Mutex<Stamps>>,
}

/// Stamps by node, then sensor, then seq: looked up by `&str` without
/// building an owned key per reading (a gateway asks for every reading it
/// publishes).
type Stamps = HashMap<String, HashMap<String, BTreeMap<u64, Stamp>>>;

impl fmt::Debug for TakenAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TakenAt").finish_non_exhaustive()
    }
}

impl TakenAt {
    /// An empty record, measured on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            stamps: Arc::default(),
        }
    }

    /// The process's record for the log at `db`, on the system clock: a
    /// reload (SIGHUP) starts a new publisher on the same log, and the
    /// readings still in its outbox keep the ages they have.
    pub fn of_log(db: &Path) -> Self {
        static LOGS: LazyLock<Mutex<HashMap<PathBuf, TakenAt>>> = LazyLock::new(Mutex::default);
        LOGS.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(db.to_owned())
            .or_insert_with(|| TakenAt::new(Arc::new(SystemClock::new())))
            .clone()
    }

    /// The reading `seq` of `node`'s `sensor` was taken at monotonic time
    /// `at`.
    pub fn record(&self, node: &str, sensor: &str, seq: u64, at: Duration) {
        self.insert(
            node,
            sensor,
            seq,
            Stamp {
                seen: at,
                age_then: Duration::ZERO,
                known: true,
            },
        );
    }

    /// How long the reading `seq` of `node`'s `sensor`, stamped `ts_ms`,
    /// has waited.
    /// A reading this process did not take (restored from the log after a
    /// restart) is aged by the wall clock the first time it is asked
    /// about, clamped at zero and marked unknown if its timestamp is in the
    /// future, and on the monotonic clock from then on.
    pub fn waited(&self, node: &str, sensor: &str, seq: u64, ts_ms: i64) -> Waited {
        let now = self.clock.now();
        let stamp = {
            let mut all = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
            let of_sensor = of_stream(&mut all, node, sensor);
            let stamp = *of_sensor.entry(seq).or_insert_with(|| {
                let age_ms = now.wall_ms.saturating_sub(ts_ms);
                Stamp {
                    seen: now.mono,
                    age_then: Duration::from_millis(u64::try_from(age_ms).unwrap_or(0)),
                    known: age_ms >= 0,
                }
            });
            trim(of_sensor);
            stamp
        };
        Waited {
            at_least: stamp.age_then + now.mono.saturating_sub(stamp.seen),
            known: stamp.known,
        }
    }

    /// Forgets every reading: their seqs now name other readings (the log
    /// was followed to a new file and what it held was renumbered), which
    /// are aged by their timestamps from here on.
    pub fn forget_all(&self) {
        self.stamps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Forgets reading `seq` of `node`'s `sensor`: the log marked it
    /// published, so no one asks about it again. A gateway ages every
    /// reading it relays (1,000 streams of [`MAX_STAMPS`] would hold some
    /// 200 MB otherwise); an emptied stream goes with its last stamp.
    pub fn forget(&self, node: &str, sensor: &str, seq: u64) {
        let mut all = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(of_node) = all.get_mut(node) else {
            return;
        };
        if let Some(of_sensor) = of_node.get_mut(sensor) {
            of_sensor.remove(&seq);
            if of_sensor.is_empty() {
                of_node.remove(sensor);
            }
        }
        if of_node.is_empty() {
            all.remove(node);
        }
    }

    fn insert(&self, node: &str, sensor: &str, seq: u64, stamp: Stamp) {
        let mut all = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let of_sensor = of_stream(&mut all, node, sensor);
        of_sensor.insert(seq, stamp);
        trim(of_sensor);
    }
}

/// The stamps of (node, sensor), made empty the first time; two nodes'
/// sensor "s1" are different streams.
fn of_stream<'a>(all: &'a mut Stamps, node: &str, sensor: &str) -> &'a mut BTreeMap<u64, Stamp> {
    if !all.contains_key(node) {
        all.insert(node.to_owned(), HashMap::new());
    }
    let of_node = all.get_mut(node).expect("inserted above");
    if !of_node.contains_key(sensor) {
        of_node.insert(sensor.to_owned(), BTreeMap::new());
    }
    of_node.get_mut(sensor).expect("inserted above")
}

/// Forgets a stream's oldest readings past [`MAX_STAMPS`].
fn trim(of_sensor: &mut BTreeMap<u64, Stamp>) {
    while of_sensor.len() > MAX_STAMPS {
        of_sensor.pop_first();
    }
}

/// What the kernel says about the wall clock, as NTP left it: whether the
/// timestamps of readings taken now can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockSync {
    /// The kernel says the clock is synchronized.
    Synced,
    /// The kernel says it is not (`adjtimex` returned `TIME_ERROR` or set
    /// `STA_UNSYNC`): no NTP daemon has disciplined it yet, as on a Pi
    /// without a real-time clock shortly after boot.
    Unsynced,
    /// Nobody knows: not Linux, or `adjtimex` failed. Never taken for
    /// unsynchronized.
    #[default]
    Unknown,
}

impl ClockSync {
    /// The log's `clock_synced` column: 1, 0, or NULL when unknown.
    pub fn as_bool(self) -> Option<bool> {
        match self {
            ClockSync::Synced => Some(true),
            ClockSync::Unsynced => Some(false),
            ClockSync::Unknown => None,
        }
    }
}

/// Asks whether the wall clock is synchronized; a trait so that tests can
/// say what the kernel would.
pub trait SyncProbe: Send + Sync {
    /// The kernel's answer now.
    fn probe(&self) -> ClockSync;
}

/// The test hook of [`KernelSync`]: in debug builds only, `synced`,
/// `unsynced` or `unknown` here replaces the kernel's answer, so the
/// scenario tests can run an agent on a clock that is not synchronized (or
/// is, whatever the machine's NTP state). Not a config key: release builds
/// ignore it.
pub const SYNC_TEST_HOOK: &str = "EDGEPRIO_TEST_CLOCK_SYNC";

/// The kernel's NTP state, from `adjtimex(2)` (read only).
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSync;

impl SyncProbe for KernelSync {
    fn probe(&self) -> ClockSync {
        if cfg!(debug_assertions)
            && let Ok(hook) = std::env::var(SYNC_TEST_HOOK)
        {
            match hook.as_str() {
                "synced" => return ClockSync::Synced,
                "unsynced" => return ClockSync::Unsynced,
                "unknown" => return ClockSync::Unknown,
                _ => {}
            }
        }
        kernel_sync()
    }
}

/// Asks the kernel with `adjtimex(2)`, changing nothing.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn kernel_sync() -> ClockSync {
    // SAFETY: `timex` is a plain C struct for which all-zero bytes are a
    // valid value; `modes` 0 makes the call read only, and the kernel
    // writes only into the struct we own for the duration of the call.
    let (state, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        tx.modes = 0;
        (libc::adjtimex(&raw mut tx), tx.status)
    };
    if state < 0 {
        ClockSync::Unknown
    } else if state == libc::TIME_ERROR || status & libc::STA_UNSYNC != 0 {
        ClockSync::Unsynced
    } else {
        ClockSync::Synced
    }
}

/// Not Linux: nobody knows.
#[cfg(not(target_os = "linux"))]
fn kernel_sync() -> ClockSync {
    ClockSync::Unknown
}

/// The wall clock's synchronization changed, as the agent tells it (a WARN
/// when it is lost, an INFO when it is back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncChange {
    /// The kernel says the clock is not synchronized (first seen at start
    /// too: a Pi without a real-time clock boots so).
    Lost,
    /// Synchronized again, after at least `after` (on the monotonic clock,
    /// since this process first saw it unsynchronized).
    Regained {
        /// How long it was unsynchronized, as far as this process saw.
        after: Duration,
    },
}

/// Asks a [`SyncProbe`] and tells [`SyncChange`]s from its answers, once
/// per change; an unknown answer changes nothing.
#[derive(Clone)]
pub struct SyncWatch {
    /// What is asked: the kernel, or a test's fake.
    probe: Arc<dyn SyncProbe>,
    /// Since when (monotonic) the clock is unsynchronized, if it is.
    unsynced_since: Option<Duration>,
}

impl Default for SyncWatch {
    /// Asks the kernel.
    fn default() -> Self {
        Self::asking(Arc::new(KernelSync))
    }
}

impl SyncWatch {
    /// A watch that asks `probe`.
    pub fn asking(probe: Arc<dyn SyncProbe>) -> Self {
        Self {
            probe,
            unsynced_since: None,
        }
    }

    /// Asks the probe (once) at monotonic time `mono`: its answer, and the
    /// change it makes, if any.
    pub fn check(&mut self, mono: Duration) -> (ClockSync, Option<SyncChange>) {
        let sync = self.probe.probe();
        (sync, self.observe(sync, mono))
    }

    /// Takes the answer at monotonic time `mono`.
    pub fn observe(&mut self, sync: ClockSync, mono: Duration) -> Option<SyncChange> {
        match sync {
            ClockSync::Unknown => None,
            ClockSync::Unsynced if self.unsynced_since.is_some() => None,
            ClockSync::Unsynced => {
                self.unsynced_since = Some(mono);
                Some(SyncChange::Lost)
            }
            ClockSync::Synced => self
                .unsynced_since
                .take()
                .map(|since| SyncChange::Regained {
                    after: mono.saturating_sub(since),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

    /// Clocks a test sets by hand.
    #[derive(Default)]
    struct Hand {
        mono_ms: AtomicU64,
        wall_ms: AtomicI64,
    }

    impl Hand {
        fn at(wall_ms: i64) -> Arc<Self> {
            let h = Self::default();
            h.wall_ms.store(wall_ms, Relaxed);
            Arc::new(h)
        }
        /// Time passes: both clocks move.
        fn pass(&self, ms: u64) {
            self.mono_ms.fetch_add(ms, Relaxed);
            self.wall_ms
                .fetch_add(i64::try_from(ms).expect("small"), Relaxed);
        }
        /// Someone sets the wall clock.
        fn set_wall(&self, by_ms: i64) {
            self.wall_ms.fetch_add(by_ms, Relaxed);
        }
    }

    impl Clock for Hand {
        fn monotonic(&self) -> Duration {
            Duration::from_millis(self.mono_ms.load(Relaxed))
        }
        fn wall_ms(&self) -> i64 {
            self.wall_ms.load(Relaxed)
        }
        fn sleep(&self, d: Duration) {
            self.pass(u64::try_from(d.as_millis()).expect("small"));
        }
    }

    const YEAR_MS: i64 = 365 * 86_400_000;
    /// 2020-01-01T00:00:00Z, what a Pi without a real-time clock may boot with.
    const Y2020: i64 = 1_577_836_800_000;

    #[test]
    fn jumps_are_told_from_time_passing() {
        let clock = Hand::at(Y2020);
        let mut watch = JumpWatch::default();
        assert_eq!(watch.observe(clock.now()), None, "nothing to compare yet");
        clock.pass(15_000);
        assert_eq!(watch.observe(clock.now()), None, "a cycle is no jump");
        // NTP slews: a second over a cycle is no jump either.
        clock.pass(15_000);
        clock.set_wall(1_000);
        assert_eq!(watch.observe(clock.now()), None);
        // NTP steps the clock from 2020 to 2026 during a cycle.
        clock.pass(15_000);
        clock.set_wall(6 * YEAR_MS);
        let jump = watch.observe(clock.now()).expect("a jump");
        assert_eq!(jump.by_ms, 6 * YEAR_MS);
        assert_eq!(jump.direction(), "forward");
        assert_eq!(
            jump.to_string(),
            "forward by 5years 11months 28days 21h 50m 24s"
        );
        clock.pass(15_000);
        assert_eq!(watch.observe(clock.now()), None, "the jump is told once");
        clock.set_wall(-3_000);
        let back = watch.observe(clock.now()).expect("a jump back");
        assert!(!back.forward());
        assert_eq!(back.to_string(), "backward by 3s");
    }

    #[test]
    fn a_reading_taken_here_ages_on_the_monotonic_clock() {
        let clock = Hand::at(Y2020);
        let taken = TakenAt::new(clock.clone());
        taken.record("pi", "lab", 7, clock.monotonic());
        let ts = clock.wall_ms();
        clock.pass(10_000);
        // The clock is set forward six years, then back three.
        clock.set_wall(6 * YEAR_MS);
        let w = taken.waited("pi", "lab", 7, ts);
        assert_eq!(
            w,
            Waited {
                at_least: Duration::from_secs(10),
                known: true
            }
        );
        assert!(w.within(Duration::from_secs(30)));
        clock.set_wall(-9 * YEAR_MS);
        clock.pass(20_000);
        let w = taken.waited("pi", "lab", 7, ts);
        assert_eq!(w.at_least, Duration::from_secs(30));
        assert!(w.within(Duration::from_secs(30)));
        clock.pass(1);
        assert!(
            !taken
                .waited("pi", "lab", 7, ts)
                .within(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_restored_reading_is_aged_by_the_wall_clock_once() {
        let clock = Hand::at(Y2020 + YEAR_MS);
        let taken = TakenAt::new(clock.clone());
        // Taken by an earlier process 40 s ago.
        let w = taken.waited("pi", "lab", 1, clock.wall_ms() - 40_000);
        assert_eq!(
            w,
            Waited {
                at_least: Duration::from_secs(40),
                known: true
            }
        );
        // The wall clock is set back: the reading keeps ageing.
        clock.set_wall(-YEAR_MS);
        clock.pass(5_000);
        assert_eq!(
            taken.waited("pi", "lab", 1, 0).at_least,
            Duration::from_secs(45)
        );
    }

    #[test]
    fn a_reading_from_the_future_is_never_fresh() {
        let clock = Hand::at(Y2020);
        let taken = TakenAt::new(clock.clone());
        // Taken before the clock was set back three years, by a process
        // that did not see it happen.
        let ts = clock.wall_ms() + 3 * YEAR_MS;
        let w = taken.waited("pi", "lab", 3, ts);
        assert_eq!(
            w,
            Waited {
                at_least: Duration::ZERO,
                known: false
            }
        );
        assert!(!w.within(Duration::from_secs(30)));
        // It still ages, so a batch that waits for it is flushed.
        clock.pass(60_000);
        assert_eq!(
            taken.waited("pi", "lab", 3, ts).at_least,
            Duration::from_mins(1)
        );
    }

    #[test]
    fn a_reload_keeps_the_record_of_its_log() {
        let (a, b) = (Path::new("/run/x/a.db"), Path::new("/run/x/b.db"));
        let first = TakenAt::of_log(a);
        first.record("pi", "lab", 1, Duration::ZERO);
        let ts = SystemClock::new().wall_ms() + 365 * 86_400_000;
        // A reading stamped a year ahead: known to the record of its log
        // (taken at the monotonic origin), unknown to another log's.
        assert!(TakenAt::of_log(a).waited("pi", "lab", 1, ts).known);
        assert!(!TakenAt::of_log(b).waited("pi", "lab", 1, ts).known);
    }

    #[test]
    fn the_oldest_readings_are_forgotten_first() {
        let clock = Hand::at(Y2020);
        let taken = TakenAt::new(clock.clone());
        for seq in 0..=u64::try_from(MAX_STAMPS).expect("fits") {
            taken.record("pi", "lab", seq, clock.monotonic());
        }
        clock.pass(1_000);
        let len = |t: &TakenAt| t.stamps.lock().expect("no panic")["pi"]["lab"].len();
        assert_eq!(len(&taken), MAX_STAMPS);
        // seq 0 was forgotten: now aged by its (here, wrong) wall stamp.
        assert_eq!(
            taken
                .waited("pi", "lab", 0, clock.wall_ms() - 99_000)
                .at_least,
            Duration::from_secs(99)
        );
        assert_eq!(
            taken.waited("pi", "lab", 1, 0).at_least,
            Duration::from_secs(1),
            "seq 1 is still known"
        );
    }

    #[test]
    fn published_readings_are_forgotten_and_an_emptied_stream_goes() {
        let clock = Hand::at(Y2020);
        let taken = TakenAt::new(clock.clone());
        taken.record("a", "s1", 1, clock.monotonic());
        taken.record("a", "s1", 2, clock.monotonic());
        let ts = clock.wall_ms();
        // b's reading was first seen here, 10 s old by its stamp.
        assert_eq!(
            taken.waited("b", "s1", 7, ts - 10_000).at_least,
            Duration::from_secs(10)
        );
        taken.forget("a", "s1", 1);
        taken.forget("b", "s1", 7);
        taken.forget("c", "s1", 3);
        {
            let all = taken.stamps.lock().expect("no panic");
            assert_eq!(all.len(), 1, "b's only stream went with its last stamp");
            assert_eq!(all["a"]["s1"].keys().copied().collect::<Vec<_>>(), [2]);
        }
        clock.pass(5_000);
        // The forgotten reading is aged by its stamp again (had it been
        // asked about, which a published one is not); the kept one still
        // on the monotonic clock.
        assert_eq!(
            taken.waited("a", "s1", 1, ts - 60_000).at_least,
            Duration::from_secs(65)
        );
        assert_eq!(
            taken.waited("a", "s1", 2, ts - 60_000).at_least,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn two_nodes_sensors_of_one_name_are_two_streams() {
        let clock = Hand::at(Y2020);
        let taken = TakenAt::new(clock.clone());
        // Node a took its s1 seq 1 here; node b's s1 seq 1 came from an
        // earlier process, 40 s ago by its stamp.
        taken.record("a", "s1", 1, clock.monotonic());
        let ts = clock.wall_ms();
        clock.pass(2_000);
        assert_eq!(
            taken.waited("a", "s1", 1, ts - 40_000).at_least,
            Duration::from_secs(2)
        );
        assert_eq!(
            taken.waited("b", "s1", 1, ts - 40_000).at_least,
            Duration::from_secs(42)
        );
        // Trimming one stream leaves the other alone.
        for seq in 2..=u64::try_from(MAX_STAMPS).expect("fits") + 1 {
            taken.record("b", "s1", seq, clock.monotonic());
        }
        assert_eq!(
            taken.waited("a", "s1", 1, 0).at_least,
            Duration::from_secs(2),
            "node a's reading is still known"
        );
    }

    #[test]
    fn losing_and_regaining_sync_is_told_once_each() {
        let mut watch = SyncWatch::default();
        let s = Duration::from_secs;
        assert_eq!(
            watch.observe(ClockSync::Synced, s(0)),
            None,
            "synced at start"
        );
        assert_eq!(watch.observe(ClockSync::Unknown, s(15)), None);
        assert_eq!(
            watch.observe(ClockSync::Unsynced, s(30)),
            Some(SyncChange::Lost)
        );
        assert_eq!(watch.observe(ClockSync::Unsynced, s(45)), None, "told once");
        assert_eq!(watch.observe(ClockSync::Unknown, s(60)), None);
        assert_eq!(
            watch.observe(ClockSync::Synced, s(90)),
            Some(SyncChange::Regained { after: s(60) })
        );
        assert_eq!(watch.observe(ClockSync::Synced, s(105)), None);
        // Unsynchronized from the start (a Pi just booted) is told too.
        let mut boot = SyncWatch::default();
        assert_eq!(
            boot.observe(ClockSync::Unsynced, s(0)),
            Some(SyncChange::Lost)
        );
    }

    #[test]
    fn the_kernel_answers_without_changing_the_clock() {
        // Whatever this machine's NTP state, Linux answers (modes 0 needs
        // no privilege), and asking twice gives the same answer.
        let first = kernel_sync();
        if cfg!(target_os = "linux") {
            assert_ne!(first, ClockSync::Unknown);
        }
        assert_eq!(kernel_sync(), first);
    }
}
