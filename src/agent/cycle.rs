//! One read cycle: read every sensor, validate, confirm spikes and events,
//! score, route, and commit the lot in one transaction. Blocking: it runs on
//! a blocking thread, owned by the async loop in [`super`].

use std::sync::Arc;

use anyhow::Context as _;
use std::time::Duration;

use super::spill::{self, Held};
use crate::clock::{Clock, ClockSync, Jump, JumpWatch, Now, SyncChange, SyncWatch, TakenAt};
use crate::config::{Burst, Config, SensorConfig};
use crate::domain::{
    Doubt, ErrorKind, Plausibility, Reading, Route, Sample, Scorer, SensorError, SensorRange,
    SpikeVerdict, resolve_reread,
};
use crate::sensor::{self, OpenError, ReadError, Resume, Sensor};
use crate::store::{AgentStatus, MAX_SEQ, PassReport, Retention, Store, StoreError};
use crate::stream::{Stream, StreamRules, first_free_seq, seq_exhausted};

/// How often a log that keeps refusing writes is mentioned again after the
/// first ERROR: once per cycle would flood the journal of a full disk.
const OUTAGE_REMINDER: Duration = Duration::from_mins(10);

/// Most attempts at one sensor in one cycle, whatever the time budget: a
/// simulated sensor has no 2 s spacing to pace its retries.
const MAX_ATTEMPTS: u32 = 5;

/// Time a DHT22 read takes at worst (start pulse, frame, slack): a retry is
/// only started if it can finish inside the budget.
const READ_TIME: Duration = Duration::from_millis(50);

/// Longest a cycle spends on retention after its commit (at least one
/// batch): a big backlog is worked off over many cycles instead of
/// delaying the next read.
const RETENTION_BUDGET: Duration = Duration::from_millis(20);

/// A configured sensor: the hardware, and its stream (where its history
/// stands).
pub(crate) struct Slot {
    /// The sensor backend that is read.
    sensor: Box<dyn Sensor>,
    /// When the last read of this sensor started (monotonic).
    last_attempt: Option<Duration>,
    /// Its scorer and next seq; a sensor whose stream is exhausted is not
    /// read any more (see [`seq_exhausted`]).
    stream: Stream,
    /// Readings accepted by this process (for `--count`).
    pub produced: u64,
    /// When it is read next (monotonic): with `[priority] burst`, sensors
    /// are read on their own cadence.
    next_due: Duration,
    /// Until when it is in burst (monotonic): `hold` after its last
    /// real-time reading; `None` when it is not.
    burst_until: Option<Duration>,
}

impl Slot {
    /// The sensor id.
    pub(crate) fn id(&self) -> &str {
        self.stream.sensor()
    }

    /// Whether the sensor gets no more reads: it produced its `limit`, or
    /// no seq is left for it.
    pub(crate) fn done(&self, limit: Option<u64>) -> bool {
        self.stream.is_exhausted() || limit.is_some_and(|l| self.produced >= l)
    }
}

/// What one cycle did, for the demo's output and for logs.
#[derive(Debug, Default, Clone)]
pub struct CycleReport {
    /// Readings accepted this cycle (committed, unless `commit_error`).
    pub readings: Vec<Reading>,
    /// Failed or rejected reads this cycle.
    pub errors: Vec<SensorError>,
    /// The outbox depth after the commit.
    pub outbox_depth: Option<u64>,
    /// Why the commit failed; the readings are held and retried.
    pub commit_error: Option<String>,
    /// Readings held for the log after this cycle (0 once it takes them).
    pub held: usize,
    /// The retention pass that finished this cycle, if one did.
    pub retention: Option<PassReport>,
    /// The wall clock was set since the last cycle (logged at WARN).
    pub clock_jump: Option<Jump>,
    /// The log file was deleted or replaced, and the agent moved to the
    /// log now at its path (`Store::follow_path`).
    pub log_switched: bool,
    /// What the kernel said about the wall clock's synchronization this
    /// cycle (asked once, before the reads); every reading carries it.
    pub clock_sync: ClockSync,
    /// The sensors in burst after this cycle (`[priority] burst`).
    pub burst: Vec<String>,
}

/// What a station watches of the wall clock, from cycle to cycle.
#[derive(Default)]
struct ClockWatch {
    /// Notices the wall clock being set between cycles.
    jumps: JumpWatch,
    /// Asks the kernel whether the wall clock is synchronized, and notices
    /// it losing and regaining synchronization.
    sync: SyncWatch,
}

/// The blocking half of the agent: sensors, scorers and the log.
pub struct Station {
    node: String,
    clock: Arc<dyn Clock>,
    /// How long a cycle may spend retrying failed reads.
    budget: Duration,
    /// The time between two reads of a sensor out of burst.
    period: Duration,
    /// `[priority] burst`, scaled like `period` (`demo --speed`).
    burst: Option<Burst>,
    /// What makes a frame doubtful enough to re-read, from `[priority]`.
    checks: Checks,
    /// The sensors, in config order.
    pub(crate) slots: Vec<Slot>,
    store: Store,
    status: AgentStatus,
    /// Readings, errors and losses the log has not taken yet, and their
    /// spill.
    held: Held,
    /// The failed commits since the log last took a write, if it refuses.
    outage: Option<Outage>,
    /// Deletes what `[store]` says the log no longer keeps.
    retention: Retention,
    /// What the agent watches of the wall clock.
    watch: ClockWatch,
    /// Where each reading's monotonic taken-at goes, for the publisher to
    /// tell how long it waited; `None` without a publisher that asks.
    taken: Option<TakenAt>,
}

impl Station {
    /// Opens the log, restores each sensor's seq and priority history, and
    /// opens the sensors. Each cycle may spend 80 % of `period` retrying.
    pub fn open(
        config: &Config,
        period: Duration,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Station> {
        Self::open_carrying(config, period, clock, None)
    }

    /// [`Station::open`] that takes over what an agent stopped for a
    /// reload still `carried` (the log would not take it); without it, what
    /// a stopped agent spilled is read back. If the station cannot open,
    /// what was carried is settled ([`Held::settle`]: spilled for the next
    /// start, the rest recorded as lost) before the error is returned.
    pub fn open_carrying(
        config: &Config,
        period: Duration,
        clock: Arc<dyn Clock>,
        carried: Option<Held>,
    ) -> anyhow::Result<Station> {
        let mut carried = carried;
        let sensor_clock = clock.clone();
        let wall = clock.clone();
        let opened = Self::open_inner(
            config,
            period,
            clock,
            |sc, resume| sensor::open(sc, resume, &sensor_clock),
            &mut carried,
        );
        match (opened, carried) {
            (Err(e), Some(held)) if !held.is_empty() => {
                let n = held.readings().len();
                let spill = held.path().display().to_string();
                let e = e.context(format!(
                    "the reloaded agent cannot start, so it stops; the {n} readings it carried \
                     over the reload are in the spill {spill}, and the next start writes them \
                     to the log"
                ));
                Err(match super::settle_now(held, wall.wall_ms()) {
                    Ok(()) => e,
                    Err(lost) => e.context(lost),
                })
            }
            (opened, _) => opened,
        }
    }

    /// [`Station::open`] with the sensors built by `opener`: how tests put
    /// a simulated wire under the real cycle.
    pub fn open_with(
        config: &Config,
        period: Duration,
        clock: Arc<dyn Clock>,
        opener: impl FnMut(&SensorConfig, Resume) -> Result<Box<dyn Sensor>, OpenError>,
    ) -> anyhow::Result<Station> {
        Self::open_inner(config, period, clock, opener, &mut None)
    }

    /// Opens the station; on failure, what was `carried` (or read back from
    /// the spill) is left in `carried`, for the caller to settle.
    fn open_inner(
        config: &Config,
        period: Duration,
        clock: Arc<dyn Clock>,
        mut opener: impl FnMut(&SensorConfig, Resume) -> Result<Box<dyn Sensor>, OpenError>,
        carried: &mut Option<Held>,
    ) -> anyhow::Result<Station> {
        let now_ms = clock.wall_ms();
        let store = Store::open(&config.db, crate::store::Access::Writer)?;
        let mut history = store.history(&config.node)?;
        let rules = StreamRules::from_config(config);
        if rules.wants_baseline() {
            store.fill_baselines(&config.node, &mut history, rules.stale_after)?;
        }
        let (held, lost) = restore_held(&store, config, carried, &mut history)?;
        let slots = match open_slots(config, &history, &lost, &mut opener, store.path()) {
            Ok(slots) => slots,
            Err(e) => {
                *carried = Some(held);
                return Err(e);
            }
        };
        let burst = config.burst.map(|b| scaled(b, period, config.interval));
        let mut station = Station {
            node: config.node.clone(),
            clock,
            // The whole period's, with or without burst: a failing sensor
            // keeps its retries (a cycle that retries past a burst tick
            // delays the next one, it loses no reading).
            budget: period.saturating_mul(4) / 5,
            period,
            burst,
            checks: Checks {
                bound: config.plausibility,
                confirm: config.confirm,
            },
            slots,
            store,
            status: AgentStatus {
                node: config.node.clone(),
                running: true,
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_ms: now_ms,
                heartbeat_ms: now_ms,
                interval_ms: i64::try_from(period.as_millis()).unwrap_or(i64::MAX),
                burst: Vec::new(),
            },
            held,
            outage: None,
            retention: Retention::new(config.store.retention, config.store.min_free)
                .every(config.store.prune_every),
            watch: ClockWatch::default(),
            taken: None,
        };
        if let Err(e) = station.retention.begin(&station.store) {
            let empty = Held::new(station.held.path().to_path_buf(), &config.db);
            *carried = Some(std::mem::replace(&mut station.held, empty));
            return Err(anyhow::Error::from(e).context("cannot read the log's newest rows"));
        }
        // The status row exists from the start, so the publisher (started
        // next) has a row to record the broker state in, and a reader sees
        // the agent running before its first cycle ends; what is held goes
        // in with it. A log that refuses writes (full) does not stop the
        // start: `commit` logs it, and the cycles hold their readings. (One
        // on a read-only file system already failed to open above.)
        let taken = station.held.readings().len();
        if station.commit().is_ok() && taken > 0 {
            tracing::info!(
                db = %config.db.display(),
                "the log accepts writes again: wrote the {taken} held readings"
            );
        }
        Ok(station)
    }

    /// How often the agent's loop wakes: the burst interval with `[priority]
    /// burst`, else the period (every sensor every cycle).
    pub fn tick(&self) -> Duration {
        self.burst.map_or(self.period, |b| b.interval)
    }

    /// Whether a sensor (one without `limit` readings yet) is due at `now`
    /// (monotonic): always, without burst; with it, half a tick early
    /// counts, so the jitter of the loop's wake-ups never costs a tick.
    fn slot_due(&self, slot: &Slot, now: Duration) -> bool {
        self.burst.is_none() || slot.next_due <= now + self.tick() / 2
    }

    /// Whether a cycle now would read any sensor: the loop skips the ticks
    /// where none is due, so a burst tick commits nothing for quiet sensors.
    pub fn is_due(&self, limit: Option<u64>) -> bool {
        let now = self.clock.monotonic();
        self.slots
            .iter()
            .any(|s| !s.done(limit) && self.slot_due(s, now))
    }

    /// The sensors in burst now, in config order.
    pub fn bursting(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.burst_until.is_some())
            .map(|s| s.id().to_string())
            .collect()
    }

    /// After a cycle that began at `start` read the slot `i`: whether it
    /// is in burst (its reading `realtime` went real-time, or its hold is
    /// not over), and when it is read next.
    fn schedule(&mut self, i: usize, start: Duration, realtime: bool) {
        let Some(burst) = self.burst else { return };
        let slot = &mut self.slots[i];
        let was = slot.burst_until.is_some();
        if realtime {
            slot.burst_until = Some(start + burst.hold);
        } else if slot.burst_until.is_some_and(|until| start >= until) {
            slot.burst_until = None;
        }
        match (was, slot.burst_until.is_some()) {
            (false, true) => tracing::info!(
                sensor = slot.id(),
                "burst: an event, read every {} until {} without one",
                humantime::format_duration(burst.interval),
                humantime::format_duration(burst.hold)
            ),
            (true, false) => tracing::info!(
                sensor = slot.id(),
                "burst over: quiet for {}, read every {} again",
                humantime::format_duration(burst.hold),
                humantime::format_duration(self.period)
            ),
            _ => {}
        }
        let spacing = if slot.burst_until.is_some() {
            burst.interval
        } else {
            self.period
        };
        slot.next_due = start + spacing;
    }

    /// Asks `probe` instead of the kernel whether the clock is
    /// synchronized: how tests fake it.
    #[cfg(test)]
    pub(crate) fn probe_sync_with(&mut self, probe: Arc<dyn crate::clock::SyncProbe>) {
        self.watch.sync = SyncWatch::asking(probe);
    }

    /// Records when each reading is taken into `taken` from now on.
    pub(crate) fn record_taken(&mut self, taken: TakenAt) {
        self.taken = Some(taken);
    }

    /// Runs one cycle: reads every sensor (skipping those with `produced >=
    /// limit`), retrying failed reads in rounds while the budget allows and
    /// each sensor's spacing permits, then commits. Readings and errors are
    /// stamped with the wall-clock time of their read.
    pub fn cycle(&mut self, limit: Option<u64>) -> CycleReport {
        let mut report = CycleReport::default();
        let start = self.clock.monotonic();
        report.clock_sync = self.watch_sync(start);
        let deadline = start + self.budget;
        let mut todo: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].done(limit) && self.slot_due(&self.slots[i], start))
            .collect();
        let read = todo.clone();
        let mut realtime = vec![false; self.slots.len()];
        for attempt in 0..MAX_ATTEMPTS {
            let mut failed = Vec::new();
            for &i in &todo {
                let slot = &mut self.slots[i];
                let ready = slot
                    .last_attempt
                    .map_or(Duration::ZERO, |t| t + slot.sensor.min_interval());
                if attempt > 0 && ready.max(self.clock.monotonic()) + READ_TIME > deadline {
                    continue;
                }
                let clock = &self.clock;
                let range = slot.sensor.range();
                // The reading's first frame: its monotonic taken-at.
                let mut first_at = Duration::ZERO;
                // Every frame, the re-read too, keeps the sensor's spacing.
                let mut take = |take: Take| {
                    let ready = slot
                        .last_attempt
                        .map_or(Duration::ZERO, |t| t + slot.sensor.min_interval());
                    clock.sleep_until(ready);
                    let at = clock.monotonic();
                    if take == Take::Read {
                        first_at = at;
                    }
                    slot.last_attempt = Some(at);
                    let ts_ms = clock.wall_ms();
                    let result = match take {
                        Take::Read => slot.sensor.read(),
                        Take::Reread => slot.sensor.reread(),
                    };
                    (ts_ms, result)
                };
                let (accepted, errors) = read_validated(
                    &mut take,
                    slot.stream.scorer(),
                    range,
                    &self.checks,
                    slot.stream.sensor(),
                );
                report.errors.extend(errors);
                let Some((now_ms, sample)) = accepted else {
                    failed.push(i);
                    continue;
                };
                let reading = slot
                    .stream
                    .accept(sample, now_ms, report.clock_sync.as_bool())
                    .expect("only sensors with a next seq are read");
                if let Some(taken) = &self.taken {
                    taken.record(&reading.node, &reading.sensor, reading.seq, first_at);
                }
                realtime[i] = reading.route == Route::Realtime;
                report.readings.push(reading);
                if slot.stream.is_exhausted() {
                    seq_exhausted(slot.stream.sensor(), None, self.store.path());
                }
                slot.produced += 1;
            }
            todo = failed;
            if todo.is_empty() {
                break;
            }
        }
        for i in read {
            self.schedule(i, start, realtime[i]);
        }
        self.status.burst = self.bursting();
        report.burst.clone_from(&self.status.burst);
        let now = self.clock.now();
        report.clock_jump = self.watch_clock(now);
        self.status.heartbeat_ms = now.wall_ms;
        self.held
            .hold(&report.readings, &report.errors, now.wall_ms);
        report.log_switched = self.follow_log(now.wall_ms, &mut report.readings);
        match self.commit() {
            Ok(depth) => report.outbox_depth = Some(depth),
            Err(e) => report.commit_error = Some(e),
        }
        report.held = self.held.readings().len();
        // After the commit, whether or not it succeeded: a full disk is
        // when shedding old rows matters most.
        report.retention = self.retain(now);
        report
    }

    /// Follows the log to the file now at its path if it was deleted or
    /// replaced (`Store::follow_path`): the sensors continue after the new
    /// log's seqs, `readings` (this cycle's, held last) are renumbered with
    /// the rest, and retention starts over. Whether it did.
    fn follow_log(&mut self, now_ms: i64, readings: &mut Vec<Reading>) -> bool {
        let (store, node) = (&mut self.store, &self.node);
        let followed = self.held.edit_readings(
            |held| store.follow_path(node, now_ms, held),
            |followed| matches!(followed, Ok(Some(_))),
        );
        if let Ok(Some(switched)) = followed {
            // The old log's rows are not this one's: retention starts over.
            if let Err(e) = self.retention.restart(&self.store) {
                tracing::warn!("cannot read the new log's newest rows for retention: {e}");
            }
            for slot in &mut self.slots {
                let next = switched.next_seq.get(slot.id()).copied().unwrap_or(0);
                slot.stream.continue_at(Some(next));
            }
            // This cycle's readings are the last ones held, renumbered.
            let held = self.held.readings();
            let from = held.len().saturating_sub(readings.len());
            *readings = held[from..].to_vec();
            true
        } else {
            false
        }
    }

    /// Says so when the wall clock was set since the last cycle.
    fn watch_clock(&mut self, now: Now) -> Option<Jump> {
        let jump = self.watch.jumps.observe(now)?;
        tracing::warn!(
            by_ms = jump.by_ms,
            "the system clock jumped {jump}: readings are stamped with the new time from now \
             on; schedules, retention and how long readings wait are measured on the \
             monotonic clock and are not affected"
        );
        Some(jump)
    }

    /// Asks the kernel whether the clock is synchronized, and says so when
    /// that changed.
    fn watch_sync(&mut self, mono: Duration) -> ClockSync {
        let (sync, change) = self.watch.sync.check(mono);
        match change {
            Some(SyncChange::Lost) => tracing::warn!(
                "the kernel says the system clock is not synchronized (no NTP server reached \
                 yet?): readings are stamped with it all the same, and marked \
                 \"clock_synced\": false on the wire and 0 in the log's clock_synced column"
            ),
            Some(SyncChange::Regained { after }) => tracing::info!(
                after_s = after.as_secs(),
                "the system clock is synchronized again, after at least {}: readings are no \
                 longer marked",
                humantime::format_duration(Duration::from_secs(after.as_secs()))
            ),
            None => {}
        }
        sync
    }

    /// Works on retention for at most [`RETENTION_BUDGET`].
    fn retain(&mut self, now: Now) -> Option<PassReport> {
        let clock = &self.clock;
        let deadline = clock.monotonic() + RETENTION_BUDGET;
        self.retention
            .run(&mut self.store, &self.node, now, || {
                clock.monotonic() < deadline
            })
            .unwrap_or_else(|e| {
                tracing::warn!(
                    db = %self.store.path().display(),
                    "retention stopped, it tries again in an hour: {e}"
                );
                None
            })
    }

    /// Someone else wrote rows with the seqs we handed out (the writer lock
    /// keeps other agents out, but not a hand-run `INSERT`). Our readings
    /// are different readings, so they get the next free seqs instead of
    /// being retried as they are forever.
    fn renumber_after_conflict(&mut self) {
        let history = match self.store.history(&self.node) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("cannot re-read the log after a seq conflict: {e}");
                return;
            }
        };
        let lost = self.store.last_lost_seqs(&self.node).unwrap_or_default();
        let mut renumbered = 0;
        for slot in &mut self.slots {
            let id = slot.stream.sensor();
            let h = history.get(id);
            let mut next = first_free_seq(h, lost.get(id).copied());
            let node = &self.node;
            let (before, after) = self.held.edit_readings(
                |held| {
                    let before = held.len();
                    // Readings no seq is left for cannot be logged
                    // (seq_exhausted).
                    held.retain_mut(|r| {
                        if r.node != *node || r.sensor != id {
                            return true;
                        }
                        let Some(seq) = next else { return false };
                        if r.seq != seq {
                            r.seq = seq;
                            renumbered += 1;
                        }
                        next = crate::store::next_seq(seq);
                        true
                    });
                    (before, held.len())
                },
                |_| true,
            );
            if next.is_none() && !slot.stream.is_exhausted() {
                seq_exhausted(id, h, self.store.path());
                if after < before {
                    tracing::error!(
                        sensor = %id,
                        lost = before - after,
                        "dropped the sensor's pending readings: no seq is left for them"
                    );
                }
            }
            slot.stream.continue_at(next);
        }
        tracing::error!(
            db = %self.store.path().display(),
            renumbered,
            "rows with our seq numbers appeared in the log from another writer; \
             renumbered the pending readings to follow them"
        );
    }

    /// Commits what is held (with the heartbeat): the losses first, then
    /// the readings and errors. On failure everything stays held and is
    /// spilled; the outage is logged once, then every
    /// [`OUTAGE_REMINDER`].
    fn commit(&mut self) -> Result<u64, String> {
        let wrote = self.held.readings().len();
        let result = self.try_commit();
        let now = self.clock.monotonic();
        match result {
            Ok(depth) => {
                if let Some(outage) = self.outage.take() {
                    tracing::info!(
                        db = %self.store.path().display(),
                        "the log accepts writes again after {} failed commits ({}): wrote {wrote} \
                         held readings",
                        outage.failed,
                        humantime::format_duration(Duration::from_secs(
                            now.saturating_sub(outage.since).as_secs()
                        )),
                    );
                }
                Ok(depth)
            }
            Err(e) => {
                let spilled = self.held.spill();
                let held = self.held.readings().len();
                let spill = self.held.path().display();
                match &mut self.outage {
                    None => {
                        tracing::error!(
                            db = %self.store.path().display(),
                            "cannot commit to the log, holding {held} readings ({spilled} of them \
                             spilled to {spill}) and retrying every cycle: {e}"
                        );
                        self.outage = Some(Outage::new(now));
                    }
                    Some(outage) => {
                        if outage.again(now) {
                            tracing::error!(
                                db = %self.store.path().display(),
                                "the log still refuses writes after {} failed commits ({}): \
                                 holding {held} readings ({spilled} of them spilled to {spill}): \
                                 {e}",
                                outage.failed,
                                humantime::format_duration(Duration::from_secs(
                                    now.saturating_sub(outage.since).as_secs()
                                )),
                            );
                        }
                    }
                }
                Err(e.to_string())
            }
        }
    }

    fn try_commit(&mut self) -> Result<u64, StoreError> {
        if !self.held.losses().is_empty() {
            self.store.record_losses(self.held.losses())?;
            for l in self.held.losses() {
                tracing::warn!("recorded in the log (table lost_readings): {l}");
            }
            self.held.losses_recorded();
        }
        let mut result =
            self.store
                .commit_cycle(self.held.readings(), self.held.errors(), &self.status);
        if result.as_ref().is_err_and(StoreError::is_conflict) {
            self.renumber_after_conflict();
            result =
                self.store
                    .commit_cycle(self.held.readings(), self.held.errors(), &self.status);
        }
        let depth = result?;
        self.held.committed();
        Ok(depth)
    }

    /// Records a clean stop; what is held is tried once more first. If the
    /// log still refuses it, it is spilled and returned, to be carried into
    /// a reloaded agent or settled ([`Held::settle`]) at the final stop.
    pub fn stop(&mut self) -> Result<Option<Held>, StoreError> {
        self.status.heartbeat_ms = self.clock.wall_ms();
        if self.store.lost_path() {
            return Ok(Some(self.leave_orphan()));
        }
        if !self.held.is_empty() && self.commit().is_err() {
            // Best effort: the log refuses writes, the dashboard tells a
            // stopped agent by its heartbeat.
            if let Err(e) = self.store.mark_stopped(&self.status) {
                tracing::debug!("cannot mark the agent stopped in the log: {e}");
            }
            let empty = Held::new(self.held.path().to_path_buf(), self.store.path());
            return Ok(Some(std::mem::replace(&mut self.held, empty)));
        }
        self.store.mark_stopped(&self.status)?;
        Ok(None)
    }

    /// The stop of an agent whose log file is no longer at its path (it was
    /// deleted or replaced, and no log could be opened there): the file it
    /// has been writing since is unreachable once it exits, so its
    /// unpublished readings join what is held, all spilled for the next
    /// start at the path. Returns them, to be carried or settled.
    fn leave_orphan(&mut self) -> Held {
        let db = self.store.path().display().to_string();
        let orphan = match self.store.unpublished(&self.node) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(
                    db = %db,
                    "cannot read the unpublished readings of the file the agent was writing \
                     in place of the log at {db}: {e}; they are lost"
                );
                Vec::new()
            }
        };
        let moved = orphan.len();
        let already = self.held.readings().len();
        self.held
            .edit_readings(|held| drop(held.splice(0..0, orphan)), |()| true);
        let spilled = self.held.spill();
        tracing::error!(
            db = %db,
            "stopping while the log file at {db} is not the one the agent writes (it was \
             deleted or replaced, and no log could be opened there): moved the {moved} \
             unpublished readings of the file it wrote instead, and {already} held ones, to \
             the spill {} ({spilled} of them fit); the next start with db = {db} writes them \
             to the log once one opens there: move away what is at {db} now (or make its \
             directory again), then start the agent",
            self.held.path().display()
        );
        let empty = Held::new(self.held.path().to_path_buf(), self.store.path());
        std::mem::replace(&mut self.held, empty)
    }
}

/// `burst` for a station whose period is `period` instead of the config's
/// `interval` (`demo --speed`): both of its times scaled alike.
fn scaled(burst: Burst, period: Duration, interval: Duration) -> Burst {
    if period == interval || interval.is_zero() {
        return burst;
    }
    let factor = period.as_secs_f64() / interval.as_secs_f64();
    Burst {
        interval: burst.interval.mul_f64(factor),
        hold: burst.hold.mul_f64(factor),
    }
}

/// Opens the sensors of `config`, each going on after its `history` and
/// its seqs given up (`lost`).
fn open_slots(
    config: &Config,
    history: &std::collections::HashMap<String, crate::store::SensorHistory>,
    lost: &std::collections::HashMap<String, u64>,
    opener: &mut impl FnMut(&SensorConfig, Resume) -> Result<Box<dyn Sensor>, OpenError>,
    db: &std::path::Path,
) -> anyhow::Result<Vec<Slot>> {
    let rules = StreamRules::from_config(config);
    let mut slots = Vec::with_capacity(config.sensors.len());
    for sc in &config.sensors {
        let h = history.get(&sc.id);
        let stream = Stream::restore(
            &config.node,
            &sc.id,
            &rules,
            h,
            lost.get(&sc.id).copied(),
            db,
        );
        let resume = Resume {
            next_seq: stream.next_seq().unwrap_or(MAX_SEQ),
            last: h.and_then(|h| h.last),
        };
        let sensor =
            opener(sc, resume).with_context(|| format!("cannot open sensor {:?}", sc.id))?;
        tracing::info!(
            sensor = %sc.id,
            backend = %sensor.describe(),
            next_seq = resume.next_seq,
            "sensor ready"
        );
        slots.push(Slot {
            sensor,
            last_attempt: None,
            stream,
            produced: 0,
            next_due: Duration::ZERO,
            burst_until: None,
        });
    }
    Ok(slots)
}

/// The held readings a station starts with: those `carried` over a
/// reload, or those a stopped agent spilled for this log.
fn take_held(config: &Config, carried: Option<Held>) -> Held {
    if let Some(held) = carried {
        if !held.is_empty() {
            tracing::info!(
                "carried {} held readings into the reloaded agent: they go to the log once it \
                 accepts writes",
                held.readings().len()
            );
        }
        return held;
    }
    let dir = spill::runtime_dir();
    let path = spill::spill_path(&dir, &config.db);
    for stray in spill::strays(&dir, &path) {
        tracing::warn!(
            spill = %stray.path.display(),
            "{}; this agent writes db = {}: {}",
            stray.summary(),
            config.db.display(),
            stray.fix()
        );
    }
    match Held::restore(path.clone(), &config.db) {
        Ok((held, restored)) => {
            if restored.dropped_bytes > 0 {
                tracing::warn!(
                    spill = %path.display(),
                    "dropped the last {} bytes of the spill: a record torn by a crash or \
                     damaged (its checksum does not match)",
                    restored.dropped_bytes
                );
            }
            if !held.is_empty() {
                tracing::info!(
                    spill = %path.display(),
                    "read {} readings back from the spill {}: they go to the log once it \
                     accepts writes",
                    restored.readings,
                    path.display()
                );
            }
            held
        }
        Err(e) => {
            tracing::error!(
                spill = %path.display(),
                "cannot read the spill {}: {e}; starting without it (readings a stopped agent \
                 spilled there are not in the log)",
                path.display()
            );
            Held::new(path, &config.db)
        }
    }
}

/// A run of failed commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outage {
    /// When the first one failed (monotonic).
    since: Duration,
    /// How many failed.
    failed: u64,
    /// When it was last logged (monotonic).
    said: Duration,
}

impl Outage {
    /// The first failed commit, at `now` (logged by the caller).
    fn new(now: Duration) -> Outage {
        Outage {
            since: now,
            failed: 1,
            said: now,
        }
    }

    /// One more failed commit at `now`: whether to log it, which is once
    /// per [`OUTAGE_REMINDER`].
    fn again(&mut self, now: Duration) -> bool {
        self.failed += 1;
        if now.saturating_sub(self.said) >= OUTAGE_REMINDER {
            self.said = now;
            return true;
        }
        false
    }
}

/// What [`read_validated`] asks its frame source for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A new reading.
    Read,
    /// The same reading again, to confirm a doubted frame
    /// ([`Sensor::reread`]).
    Reread,
}

/// When a frame is doubted, from the config's `[priority]` section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checks {
    /// Larger jumps from `prev` are re-read before they are believed.
    pub bound: Plausibility,
    /// A frame that would go real-time is re-read, and only goes real-time
    /// if the re-read agrees.
    pub confirm: bool,
}

/// Takes a reading with `take` (which returns each frame with the Unix ms
/// it was read at) and validates it against `scorer`'s history: range
/// checks, then one re-read for a jump beyond the plausibility bound or,
/// with `confirm`, for a frame that would go real-time. Returns the accepted
/// sample with the time of the reading's first frame, if any, and every
/// failure on the way.
/// Changes no state: the caller scores the sample.
pub fn read_validated(
    take: &mut dyn FnMut(Take) -> (i64, Result<Sample, ReadError>),
    scorer: &Scorer,
    range: SensorRange,
    checks: &Checks,
    id: &str,
) -> (Option<(i64, Sample)>, Vec<SensorError>) {
    let mut errors = Vec::new();
    let error = |errors: &mut Vec<SensorError>, ts_ms: i64, kind: ErrorKind, detail: String| {
        errors.push(SensorError {
            ts_ms,
            sensor: id.to_string(),
            kind,
            detail,
        });
    };
    // A reading is stamped with the time of its first frame, and so is
    // everything that happened on the way to it (as before re-reads served
    // events too).
    let mut checked = |t: Take, errors: &mut Vec<SensorError>, stamp: Option<i64>| {
        let (frame_ms, result) = take(t);
        let ts_ms = stamp.unwrap_or(frame_ms);
        match sensor::checked(range, result) {
            Ok(s) => Some((ts_ms, s)),
            Err(e) => {
                error(errors, ts_ms, e.kind(), e.detail().to_string());
                None
            }
        }
    };
    let Some((first_ms, first)) = checked(Take::Read, &mut errors, None) else {
        return (None, errors);
    };
    let is_event = |s: Sample, ts_ms: i64| scorer.peek_at(s, ts_ms).route == Route::Realtime;
    let doubt = Doubt::of(
        scorer.prev(),
        first,
        is_event(first, first_ms),
        &checks.bound,
        checks.confirm,
    );
    let (Some(prev), Some(doubt)) = (scorer.prev(), doubt) else {
        return (Some((first_ms, first)), errors);
    };
    let second = checked(Take::Reread, &mut errors, Some(first_ms)).map(|(_, s)| s);
    let change = |s: Sample| {
        format!(
            "{:.1} °C / {:.1} %RH after {:.1} °C / {:.1} %RH",
            s.temperature, s.humidity, prev.temperature, prev.humidity
        )
    };
    // What the rejected first frame was: a jump, or an event (or both,
    // in which case the jump is what the re-read failed to confirm).
    let what = if doubt.jump {
        change(first)
    } else {
        format!("real-time event {}", change(first))
    };
    let verdict = resolve_reread(
        prev,
        first,
        second.map(|s| (s, is_event(s, first_ms))),
        doubt,
        &checks.bound,
        checks.confirm,
    );
    let accepted = match verdict {
        SpikeVerdict::Confirmed(s) => {
            tracing::info!(
                sensor = id,
                "{} confirmed by a re-read: {}",
                if doubt.jump { "large change" } else { "event" },
                change(s)
            );
            Some((first_ms, s))
        }
        SpikeVerdict::Glitch(s) => {
            let detail = if doubt.jump {
                format!("{what} not confirmed by a re-read (corrupted frame)")
            } else {
                format!(
                    "{what} not confirmed by a re-read ({:.1} °C / {:.1} %RH), \
                     which is logged instead",
                    s.temperature, s.humidity
                )
            };
            error(&mut errors, first_ms, ErrorKind::Spike, detail);
            Some((first_ms, s))
        }
        SpikeVerdict::Unconfirmed => {
            error(
                &mut errors,
                first_ms,
                ErrorKind::Spike,
                format!("{what} not confirmed by a re-read"),
            );
            None
        }
    };
    (accepted, errors)
}

/// What the last run (a spill) or the reload (`carried`) held for the log,
/// with `history` moved past its readings, and the highest lost seq of each
/// sensor: seqs no new reading may take.
fn restore_held(
    store: &Store,
    config: &Config,
    carried: &mut Option<Held>,
    history: &mut std::collections::HashMap<String, crate::store::SensorHistory>,
) -> anyhow::Result<(Held, std::collections::HashMap<String, u64>)> {
    let mut held = take_held(config, carried.take());
    match settle_restored(store, config, &mut held, history) {
        Ok(lost) => Ok((held, lost)),
        Err(e) => {
            *carried = Some(held);
            Err(e)
        }
    }
}

/// [`restore_held`] once `held` is taken: drops what the log already has,
/// moves `history` past the rest, and returns the highest lost seq of each
/// sensor.
fn settle_restored(
    store: &Store,
    config: &Config,
    held: &mut Held,
    history: &mut std::collections::HashMap<String, crate::store::SensorHistory>,
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    // Held readings go in with one transaction: if the log has one of
    // them, it has all, and the agent stopped between that commit and
    // removing the spill. Committing them again would renumber them
    // into duplicates.
    if let Some(first) = held.readings().first()
        && store.contains(first)?
    {
        tracing::warn!(
            spill = %held.path().display(),
            "the log already has the {} spilled readings (the agent stopped before it \
             removed the spill): removing the spill",
            held.readings().len()
        );
        held.committed();
    }
    // Held readings were never committed, so never published: they keep
    // their seqs, and the sensors go on after them.
    let rules = StreamRules::from_config(config);
    for r in held.readings().iter().filter(|r| r.node == config.node) {
        let newer = history.get(&r.sensor).is_none_or(|h| r.seq > h.last_seq);
        if newer {
            let after = rules.history_after(history.get(&r.sensor), r);
            history.insert(r.sensor.clone(), after);
        }
    }
    // Nor are seqs given up: the log's losses and the held ones.
    let mut lost = store.last_lost_seqs(&config.node)?;
    for l in held.losses().iter().filter(|l| l.node == config.node) {
        let seq = lost.entry(l.sensor.clone()).or_default();
        *seq = (*seq).max(l.last_seq);
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PriorityParams, check_range, resolve_spike};
    use crate::sensor::wire_sim::{WireConfig, WireSim};
    use std::collections::VecDeque;
    use std::fmt::Write as _;

    /// A sensor that says what it is told to, and notes when it was read.
    struct Scripted {
        script: VecDeque<Result<Sample, ReadError>>,
        /// The spacing it asks for: 2 s plays a DHT22.
        spacing: Duration,
        /// The clock that stamps `reads`, if the test looks at times.
        clock: Option<Arc<dyn Clock>>,
        /// Each read and when it happened, shared with the test that
        /// handed the sensor to a station.
        reads: Arc<std::sync::Mutex<Vec<(Take, Duration)>>>,
        /// The part it plays: the DHT22 unless a test says otherwise.
        range: SensorRange,
    }

    impl Scripted {
        fn new(script: Vec<Result<Sample, ReadError>>) -> Self {
            Self {
                script: script.into(),
                spacing: Duration::ZERO,
                clock: None,
                reads: Arc::default(),
                range: SensorRange::DHT22,
            }
        }

        fn next(&mut self, take: Take) -> Result<Sample, ReadError> {
            let at = self
                .clock
                .as_ref()
                .map_or(Duration::ZERO, |c| c.monotonic());
            self.reads
                .lock()
                .expect("no test thread panicked")
                .push((take, at));
            self.script
                .pop_front()
                .expect("the test scripted enough reads")
        }
    }

    impl Sensor for Scripted {
        fn read(&mut self) -> Result<Sample, ReadError> {
            self.next(Take::Read)
        }
        fn reread(&mut self) -> Result<Sample, ReadError> {
            self.next(Take::Reread)
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn min_interval(&self) -> Duration {
            self.spacing
        }
        fn range(&self) -> SensorRange {
            self.range
        }
    }

    /// Validates one reading of `script` against `scorer` with `checks`;
    /// frames are 2 s apart from t = 7 ms. Returns the accepted sample, the
    /// error kinds and the frames taken.
    fn validate(
        scorer: &Scorer,
        checks: Checks,
        script: Vec<Result<Sample, ReadError>>,
    ) -> (Option<Sample>, Vec<ErrorKind>, Vec<Take>) {
        let mut script: VecDeque<_> = script.into();
        let mut takes = Vec::new();
        let mut ts = 7 - 2000;
        let mut take = |t: Take| {
            takes.push(t);
            ts += 2000;
            (
                ts,
                script.pop_front().expect("the test scripted enough reads"),
            )
        };
        let (sample, errors) = read_validated(&mut take, scorer, SensorRange::DHT22, &checks, "x");
        (
            sample.map(|(_, s)| s),
            errors.iter().map(|e| e.kind).collect(),
            takes,
        )
    }

    fn checks(confirm: bool) -> Checks {
        Checks {
            bound: Plausibility::default(),
            confirm,
        }
    }

    /// The plausibility rule alone (`confirm = false`), as before events
    /// were confirmed: returns the sample, error kinds and reads taken.
    fn run(
        prev: Option<Sample>,
        script: Vec<Result<Sample, ReadError>>,
    ) -> (Option<Sample>, Vec<ErrorKind>, usize) {
        let scorer = Scorer::new(PriorityParams::default(), prev);
        let (sample, kinds, takes) = validate(&scorer, checks(false), script);
        (sample, kinds, takes.len())
    }

    /// [`run`] with `confirm = true`, the default.
    fn confirmed(
        prev: Option<Sample>,
        script: Vec<Result<Sample, ReadError>>,
    ) -> (Option<Sample>, Vec<ErrorKind>, Vec<Take>) {
        validate(
            &Scorer::new(PriorityParams::default(), prev),
            checks(true),
            script,
        )
    }

    const P: Option<Sample> = Some(Sample {
        temperature: 20.0,
        humidity: 50.0,
    });

    #[test]
    fn plausible_read_is_accepted_without_a_reread() {
        assert_eq!(
            run(P, vec![Ok(Sample::new(21.0, 52.0))]),
            (Some(Sample::new(21.0, 52.0)), vec![], 1)
        );
    }

    #[test]
    fn failures_are_classified_and_accept_nothing() {
        assert_eq!(
            run(P, vec![Err(ReadError::Timeout("t".into()))]),
            (None, vec![ErrorKind::Timeout], 1)
        );
        assert_eq!(
            run(P, vec![Err(ReadError::Checksum("c".into()))]),
            (None, vec![ErrorKind::Checksum], 1)
        );
        assert_eq!(
            run(P, vec![Ok(Sample::new(f64::NAN, 50.0))]),
            (None, vec![ErrorKind::Range], 1)
        );
    }

    #[test]
    fn spike_is_reread_and_replaced() {
        let r = run(
            P,
            vec![Ok(Sample::new(45.6, 50.0)), Ok(Sample::new(20.1, 50.0))],
        );
        assert_eq!(
            r,
            (Some(Sample::new(20.1, 50.0)), vec![ErrorKind::Spike], 2)
        );
    }

    #[test]
    fn real_jump_is_confirmed() {
        let r = run(
            P,
            vec![Ok(Sample::new(40.0, 50.0)), Ok(Sample::new(40.1, 50.0))],
        );
        assert_eq!(r, (Some(Sample::new(40.1, 50.0)), vec![], 2));
    }

    #[test]
    fn spike_with_failed_reread_is_rejected() {
        let r = run(
            P,
            vec![
                Ok(Sample::new(45.6, 50.0)),
                Err(ReadError::Timeout("t".into())),
            ],
        );
        assert_eq!(r, (None, vec![ErrorKind::Timeout, ErrorKind::Spike], 2));
    }

    #[test]
    fn first_reading_of_a_sensor_needs_no_confirmation() {
        assert_eq!(
            run(None, vec![Ok(Sample::new(45.6, 50.0))]).0,
            Some(Sample::new(45.6, 50.0))
        );
        assert_eq!(
            confirmed(None, vec![Ok(Sample::new(45.6, 50.0))]),
            (Some(Sample::new(45.6, 50.0)), vec![], vec![Take::Read])
        );
    }

    const HUMID: Option<Sample> = Some(Sample {
        temperature: 22.0,
        humidity: 72.5,
    });

    #[test]
    fn a_corrupted_event_under_the_bound_is_replaced_by_its_reread() {
        // 99.9 %RH after 72.5 %RH passes the checksum and the 30 %RH bound;
        // alone it scores priority 7.
        let scorer = Scorer::new(PriorityParams::default(), HUMID);
        assert_eq!(scorer.peek_at(Sample::new(22.0, 99.9), 0).priority, 7);
        let r = confirmed(
            HUMID,
            vec![Ok(Sample::new(22.0, 99.9)), Ok(Sample::new(22.0, 72.6))],
        );
        assert_eq!(
            r,
            (
                Some(Sample::new(22.0, 72.6)),
                vec![ErrorKind::Spike],
                vec![Take::Read, Take::Reread]
            )
        );
        assert_eq!(
            scorer.peek_at(Sample::new(22.0, 72.6), 0).route,
            Route::Batch
        );
        // Without confirmation it is the event it looks like.
        assert_eq!(
            run(HUMID, vec![Ok(Sample::new(22.0, 99.9))]),
            (Some(Sample::new(22.0, 99.9)), vec![], 1)
        );
    }

    #[test]
    fn an_event_the_reread_agrees_with_is_accepted_as_the_reread() {
        let r = confirmed(
            P,
            vec![Ok(Sample::new(23.0, 50.0)), Ok(Sample::new(23.1, 50.2))],
        );
        assert_eq!(
            r,
            (
                Some(Sample::new(23.1, 50.2)),
                vec![],
                vec![Take::Read, Take::Reread]
            )
        );
    }

    #[test]
    fn one_reread_serves_a_jump_and_an_event() {
        let r = confirmed(
            P,
            vec![Ok(Sample::new(40.0, 50.0)), Ok(Sample::new(40.1, 50.0))],
        );
        assert_eq!(
            r,
            (
                Some(Sample::new(40.1, 50.0)),
                vec![],
                vec![Take::Read, Take::Reread]
            )
        );
        // A corrupted jump whose re-read shows the history: one re-read,
        // one spike, the re-read logged.
        let r = confirmed(
            P,
            vec![Ok(Sample::new(45.6, 50.0)), Ok(Sample::new(20.1, 50.0))],
        );
        assert_eq!(
            r,
            (
                Some(Sample::new(20.1, 50.0)),
                vec![ErrorKind::Spike],
                vec![Take::Read, Take::Reread]
            )
        );
    }

    #[test]
    fn an_event_that_cannot_be_confirmed_accepts_nothing() {
        // The re-read fails: the event is neither believed nor logged as
        // batch; the cycle's next round reads again.
        let r = confirmed(
            P,
            vec![
                Ok(Sample::new(23.0, 50.0)),
                Err(ReadError::Checksum("c".into())),
            ],
        );
        assert_eq!(r.0, None);
        assert_eq!(r.1, vec![ErrorKind::Checksum, ErrorKind::Spike]);
        // A corrupted jump, then a re-read that is an event of its own.
        let r = confirmed(
            P,
            vec![Ok(Sample::new(45.6, 50.0)), Ok(Sample::new(22.0, 50.0))],
        );
        assert_eq!((r.0, r.1), (None, vec![ErrorKind::Spike]));
    }

    #[test]
    fn a_quiet_reading_is_not_reread() {
        assert_eq!(
            confirmed(P, vec![Ok(Sample::new(20.3, 51.0))]),
            (Some(Sample::new(20.3, 51.0)), vec![], vec![Take::Read])
        );
    }

    #[test]
    fn after_a_long_gap_an_event_sized_change_is_not_reread_but_a_jump_is() {
        // The prev was read at t = 0; frames come at t = 7 ms + 2 s x n,
        // so a 1 ms limit makes it stale.
        let scorer = Scorer::new(PriorityParams::default(), P)
            .with_gap_rule(Duration::from_millis(1), Some(0));
        let r = validate(&scorer, checks(true), vec![Ok(Sample::new(23.0, 50.0))]);
        assert_eq!(r, (Some(Sample::new(23.0, 50.0)), vec![], vec![Take::Read]));
        // The plausibility bound still compares with the stale value.
        let r = validate(
            &scorer,
            checks(true),
            vec![Ok(Sample::new(45.6, 50.0)), Ok(Sample::new(20.1, 50.0))],
        );
        assert_eq!(r.0, Some(Sample::new(20.1, 50.0)));
        assert_eq!(r.2.len(), 2);
    }

    /// The cycle holds each sensor to its own part's range: -5 °C is a
    /// reading from a DHT22 and a failed read (every retry) from a DHT11.
    #[test]
    fn the_cycle_validates_against_the_sensors_own_range() {
        for (range, logged) in [(SensorRange::DHT22, 1), (SensorRange::DHT11, 0)] {
            let dir = tempfile::tempdir().unwrap();
            let mut sensor =
                Scripted::new(vec![Ok(Sample::new(-5.0, 50.0)); MAX_ATTEMPTS as usize]);
            sensor.range = range;
            let mut st = scripted_station(dir.path(), "", virtual_clock(), sensor);
            let report = st.cycle(None);
            assert_eq!(report.readings.len(), logged, "{}", range.model);
            let range_errors: Vec<&str> = report
                .errors
                .iter()
                .filter(|e| e.kind == ErrorKind::Range)
                .map(|e| e.detail.as_str())
                .collect();
            if logged == 0 {
                assert!(!range_errors.is_empty());
                assert!(
                    range_errors
                        .iter()
                        .all(|d| d.contains("outside the DHT11 range")),
                    "{range_errors:?}"
                );
            } else {
                assert!(range_errors.is_empty(), "{range_errors:?}");
            }
        }
    }

    /// A station on `dir/e.db` whose one sensor `lab` is `sensor`, on a
    /// virtual `clock`; `extra` is TOML for the config.
    fn scripted_station(
        dir: &std::path::Path,
        extra: &str,
        clock: Arc<dyn Clock>,
        sensor: Scripted,
    ) -> Station {
        let config = scripted_config(dir, extra);
        let mut sensor = Some(sensor);
        Station::open_with(&config, Duration::from_secs(15), clock, |_, _| {
            Ok(Box::new(sensor.take().expect("one sensor")) as Box<dyn Sensor>)
        })
        .unwrap()
    }

    /// Node `t`, log `dir/e.db`, one sensor `lab`; `extra` is TOML.
    fn scripted_config(dir: &std::path::Path, extra: &str) -> Config {
        let text = format!(
            "node = \"t\"\ndb = {:?}\n{extra}\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\n",
            dir.join("e.db").display().to_string()
        );
        Config::parse(&text, None).unwrap()
    }

    fn virtual_clock() -> Arc<dyn Clock> {
        WireSim::new(WireConfig::linux(0), Sample::new(20.0, 50.0)).clock()
    }

    #[test]
    fn a_sensor_in_burst_is_read_every_burst_interval_until_quiet_for_hold() {
        let dir = tempfile::tempdir().unwrap();
        let clock = virtual_clock();
        let mut script = vec![Ok(Sample::new(20.0, 50.0)), Ok(Sample::new(25.0, 50.0))];
        script.extend((0..10).map(|_| Ok(Sample::new(25.0, 50.0))));
        let mut sensor = Scripted::new(script);
        sensor.clock = Some(clock.clone());
        let reads = sensor.reads.clone();
        let mut st = scripted_station(
            dir.path(),
            "[priority]\nconfirm = false\nburst = { interval = \"3s\", hold = \"9s\" }",
            clock.clone(),
            sensor,
        );
        assert_eq!(st.tick(), Duration::from_secs(3));
        assert_eq!(
            st.budget,
            Duration::from_secs(12),
            "the period's retry budget"
        );
        let start = clock.monotonic();
        let mut in_burst = Vec::new();
        // The agent's loop: a tick every 3 s, a cycle when a sensor is due.
        for tick in 0..20u32 {
            if tick > 0 {
                clock.sleep(Duration::from_secs(3));
            }
            if st.is_due(None) {
                let report = st.cycle(None);
                in_burst.push((tick * 3, report.burst.clone()));
                // The status row says which sensors are in burst.
                let store =
                    Store::open(&dir.path().join("e.db"), crate::store::Access::ReadOnly).unwrap();
                let row = store.status("t").unwrap().unwrap();
                assert_eq!(row.burst, report.burst, "at {} s", tick * 3);
            }
        }
        let at: Vec<u64> = reads
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.saturating_sub(start).as_secs())
            .collect();
        // 0: the first reading; 15: the event (25 °C after 20 °C) starts a
        // burst; 18, 21: in burst; 24: 9 s without an event, the burst is
        // over and the next read is a whole interval later.
        assert_eq!(at, vec![0, 15, 18, 21, 24, 39, 54], "{in_burst:?}");
        let lab = || vec!["lab".to_string()];
        assert_eq!(
            in_burst,
            vec![
                (0, vec![]),
                (15, lab()),
                (18, lab()),
                (21, lab()),
                (24, vec![]),
                (39, vec![]),
                (54, vec![]),
            ]
        );
    }

    #[test]
    fn without_burst_every_sensor_is_due_every_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let clock = virtual_clock();
        let st = scripted_station(dir.path(), "", clock, Scripted::new(vec![]));
        assert_eq!(st.tick(), Duration::from_secs(15));
        assert!(st.is_due(None));
        assert!(st.bursting().is_empty());
    }

    #[test]
    fn the_confirming_reread_keeps_the_spacing_and_the_log_shows_why() {
        let dir = tempfile::tempdir().unwrap();
        let clock = virtual_clock();
        let mut sensor = Scripted::new(vec![
            Ok(Sample::new(22.0, 72.5)),
            Ok(Sample::new(22.0, 99.9)),
            Ok(Sample::new(22.0, 72.6)),
        ]);
        sensor.spacing = Duration::from_secs(2);
        sensor.clock = Some(clock.clone());
        let reads = sensor.reads.clone();
        let mut st = scripted_station(dir.path(), "", clock.clone(), sensor);
        st.cycle(None);
        clock.sleep(Duration::from_secs(15));
        let report = st.cycle(None);
        let r = &report.readings[0];
        assert_eq!(
            (r.sample, r.priority, r.route),
            (Sample::new(22.0, 72.6), 0, Route::Batch)
        );
        assert_eq!(report.errors.len(), 1);
        let e = &report.errors[0];
        assert_eq!(e.kind, ErrorKind::Spike);
        assert_eq!(
            e.detail,
            "real-time event 22.0 °C / 99.9 %RH after 22.0 °C / 72.5 %RH not confirmed by a \
             re-read (22.0 °C / 72.6 %RH), which is logged instead"
        );
        // The reading and the error are stamped with the reading's first
        // frame; the re-read came 2 s later (below).
        assert_eq!(r.ts_ms, e.ts_ms);
        let reads = reads.lock().unwrap().clone();
        assert_eq!(
            reads.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![Take::Read, Take::Read, Take::Reread]
        );
        assert_eq!(
            reads[2].1.checked_sub(reads[1].1),
            Some(Duration::from_secs(2))
        );
        let store = Store::open(&dir.path().join("e.db"), crate::store::Access::ReadOnly).unwrap();
        let logged = store.sensor_errors(None, 0).unwrap();
        assert_eq!(logged, report.errors);
        let rows = store
            .readings(&crate::store::ReadingFilter::default())
            .unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| r.reading.sample.humidity)
                .collect::<Vec<_>>(),
            vec![72.5, 72.6],
            "the corrupted 99.9 %RH never reaches the log"
        );
    }

    #[test]
    fn an_unconfirmed_event_shows_in_the_metrics_as_a_spike() {
        let dir = tempfile::tempdir().unwrap();
        let clock = virtual_clock();
        let sensor = Scripted::new(vec![
            Ok(Sample::new(22.0, 72.5)),
            Ok(Sample::new(22.0, 99.9)),
            Ok(Sample::new(22.0, 72.6)),
        ]);
        let mut st = scripted_station(dir.path(), "", clock.clone(), sensor);
        let metrics =
            crate::metrics::Metrics::with_clock(&scripted_config(dir.path(), ""), clock.clone());
        for _ in 0..2 {
            metrics.record_cycle(&st.cycle(None));
        }
        let text = metrics.encode(clock.now(), crate::metrics::Format::OpenMetrics);
        for series in [
            "edgeprio_read_failures_total{node=\"t\",sensor=\"lab\",kind=\"spike\"} 1\n",
            "edgeprio_readings_total{node=\"t\",sensor=\"lab\",route=\"realtime\"} 0\n",
            "edgeprio_readings_total{node=\"t\",sensor=\"lab\",route=\"batch\"} 2\n",
        ] {
            assert!(text.contains(series), "no {series:?} in\n{text}");
        }
    }

    /// Through the production path (`sensor::open` on a kernel driver's
    /// sysfs directory): the offset is added before validation and scoring,
    /// and a value it pushes out of range is a counted failed read that
    /// names the offset, never a logged value.
    #[test]
    fn offsets_are_applied_before_validation_and_scoring() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("iio:device0");
        std::fs::create_dir(&device).unwrap();
        let set = |t: &str, h: &str| {
            std::fs::write(device.join("in_temp_input"), t).unwrap();
            std::fs::write(device.join("in_humidityrelative_input"), h).unwrap();
        };
        set("21000\n", "50000\n");
        let text = format!(
            "node = \"t\"\ndb = {:?}\n[[sensor]]\nid = \"lab\"\nkind = \"iio\"\ndevice = {:?}\n\
             offset = {{ temperature = -0.5, humidity = 15.0 }}\n",
            dir.path().join("e.db"),
            device
        );
        let config = Config::parse(&text, None).unwrap();
        let mut st = Station::open(&config, config.interval, virtual_clock()).unwrap();
        let first = st.cycle(None);
        assert_eq!(first.readings.len(), 1, "{:?}", first.errors);
        assert_eq!(first.readings[0].sample, Sample::new(20.5, 65.0));
        // 90 %RH + 15 is out of range: counted failures (the cycle retries),
        // not a 100 %RH reading nor a 105 %RH one.
        set("21000\n", "90000\n");
        let second = st.cycle(None);
        assert!(second.readings.is_empty(), "{:?}", second.readings);
        assert!(!second.errors.is_empty());
        for e in &second.errors {
            assert_eq!(e.kind, ErrorKind::Range, "{e:?}");
            assert!(
                e.detail
                    .contains("humidity 90 %RH read, 105 %RH with the offset +15"),
                "{e:?}"
            );
        }
        let store = Store::open(&dir.path().join("e.db"), crate::store::Access::ReadOnly).unwrap();
        let logged = store
            .readings(&crate::store::ReadingFilter::default())
            .unwrap();
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0].reading.sample, Sample::new(20.5, 65.0));
        assert_eq!(store.sensor_errors(None, 0).unwrap(), second.errors);
    }

    /// A replayed trace with a row its sensor's offset pushes out of range
    /// is refused at start-up: replayed, that row could only be a failed
    /// read, and every later row would be logged against the wrong seq.
    #[test]
    fn a_trace_row_the_offset_pushes_out_of_range_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.csv"),
            "temperature_c,humidity_pct\n21.0,50.0\n21.0,90.0\n",
        )
        .unwrap();
        let text = format!(
            "node = \"t\"\ndb = {:?}\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\ntrace = {:?}\n\
             offset = {{ humidity = 15.0 }}\n",
            dir.path().join("e.db"),
            dir.path().join("t.csv")
        );
        let config = Config::parse(&text, None).unwrap();
        let err = Station::open(&config, config.interval, virtual_clock())
            .err()
            .expect("the trace is refused");
        let message = format!("{err:#}");
        assert!(message.contains("data row 2"), "{message}");
        assert!(message.contains("humidity 105 %RH"), "{message}");
        assert!(message.contains("`offset`"), "{message}");
    }

    #[test]
    fn with_confirm_off_the_same_frame_is_a_priority_7_event() {
        let dir = tempfile::tempdir().unwrap();
        let clock = virtual_clock();
        let sensor = Scripted::new(vec![
            Ok(Sample::new(22.0, 72.5)),
            Ok(Sample::new(22.0, 99.9)),
        ]);
        let reads = sensor.reads.clone();
        let mut st = scripted_station(dir.path(), "[priority]\nconfirm = false", clock, sensor);
        st.cycle(None);
        let report = st.cycle(None);
        assert!(report.errors.is_empty());
        assert_eq!(
            (report.readings[0].priority, report.readings[0].route),
            (7, Route::Realtime)
        );
        assert_eq!(reads.lock().unwrap().len(), 2, "no re-read");
    }

    #[test]
    fn an_unconfirmed_event_is_read_again_in_the_next_round() {
        let dir = tempfile::tempdir().unwrap();
        let clock = virtual_clock();
        let mut sensor = Scripted::new(vec![
            Ok(Sample::new(20.0, 50.0)),
            // An event whose re-read fails, then a real event, confirmed.
            Ok(Sample::new(23.0, 50.0)),
            Err(ReadError::Timeout("t".into())),
            Ok(Sample::new(23.1, 50.0)),
            Ok(Sample::new(23.1, 50.1)),
        ]);
        sensor.spacing = Duration::from_secs(2);
        sensor.clock = Some(clock.clone());
        let reads = sensor.reads.clone();
        let mut st = scripted_station(dir.path(), "", clock.clone(), sensor);
        st.cycle(None);
        clock.sleep(Duration::from_secs(15));
        let start = clock.monotonic();
        let report = st.cycle(None);
        assert_eq!(
            report.errors.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![ErrorKind::Timeout, ErrorKind::Spike]
        );
        let r = &report.readings[0];
        assert_eq!(
            (r.sample, r.route),
            (Sample::new(23.1, 50.1), Route::Realtime)
        );
        // Four frames 2 s apart, well inside the 12 s budget.
        let reads = reads.lock().unwrap().clone();
        assert_eq!(reads.len(), 5);
        assert!(
            reads[1..]
                .windows(2)
                .all(|w| w[1].1.checked_sub(w[0].1) == Some(Duration::from_secs(2)))
        );
        assert_eq!(
            clock.monotonic().checked_sub(start),
            Some(Duration::from_secs(6))
        );
    }

    #[test]
    fn a_first_reading_after_a_long_gap_is_scored_as_a_first_one() {
        let dir = tempfile::tempdir().unwrap();
        let clock = virtual_clock();
        let sensor = Scripted::new(vec![Ok(Sample::new(25.0, 56.0))]);
        let mut st = scripted_station(dir.path(), "", clock.clone(), sensor);
        st.cycle(None);
        st.stop().unwrap();
        drop(st);
        // A power cut of two hours; then the paper's event-sized change,
        // and the same change again a cycle later.
        clock.sleep(Duration::from_hours(2));
        let sensor = Scripted::new(vec![
            Ok(Sample::new(28.0, 48.0)),
            Ok(Sample::new(25.0, 56.0)),
            Ok(Sample::new(25.0, 56.0)),
        ]);
        let reads = sensor.reads.clone();
        let mut st = scripted_station(dir.path(), "", clock.clone(), sensor);
        let after_gap = st.cycle(None);
        let r = &after_gap.readings[0];
        assert_eq!((r.seq, r.priority, r.route), (1, 0, Route::Batch));
        assert_eq!(reads.lock().unwrap().len(), 1, "nothing to confirm");
        clock.sleep(Duration::from_secs(15));
        let next = st.cycle(None);
        let r = &next.readings[0];
        // 10.7 % and 16.7 % back: weights 2 and 3.
        assert_eq!(
            (r.priority, r.route),
            (3, Route::Realtime),
            "the new prev is fresh"
        );
    }

    #[test]
    fn the_gap_rule_can_be_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let clock = virtual_clock();
        let extra = "[priority]\nstale_after = \"0s\"";
        let sensor = Scripted::new(vec![Ok(Sample::new(25.0, 56.0))]);
        let mut st = scripted_station(dir.path(), extra, clock.clone(), sensor);
        st.cycle(None);
        drop(st);
        clock.sleep(Duration::from_hours(2));
        let sensor = Scripted::new(vec![
            Ok(Sample::new(28.0, 48.0)),
            Ok(Sample::new(28.1, 48.0)),
        ]);
        let mut st = scripted_station(dir.path(), extra, clock, sensor);
        let r = st.cycle(None).readings[0].clone();
        assert_eq!((r.priority, r.route), (2, Route::Realtime));
    }

    #[test]
    fn a_replayed_trace_logs_each_row_once_in_order_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // Quiet rows, an event, a jump beyond the bound and back: each
        // event and jump is re-read, and a re-read reads the same row.
        let rows = [
            (21.0, 50.0),
            (21.1, 50.2),
            (24.0, 50.0),
            (24.1, 50.1),
            (45.0, 50.0),
            (24.0, 50.0),
            (24.0, 99.0),
            (24.0, 60.0),
            (24.1, 60.0),
        ];
        let mut csv = String::from("temperature_c,humidity_pct\n");
        for (t, h) in rows {
            writeln!(csv, "{t},{h}").unwrap();
        }
        std::fs::write(dir.path().join("t.csv"), csv).unwrap();
        let text = format!(
            "node = \"t\"\ndb = {:?}\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\ntrace = {:?}\n",
            dir.path().join("e.db"),
            dir.path().join("t.csv")
        );
        let config = Config::parse(&text, None).unwrap();
        let open = || {
            Station::open(
                &config,
                config.interval,
                Arc::new(crate::clock::SystemClock::new()),
            )
            .unwrap()
        };
        // Five cycles, a restart, then the rest and one lap more.
        let mut st = open();
        let mut errors = Vec::new();
        for _ in 0..5 {
            errors.extend(st.cycle(None).errors);
        }
        st.stop().unwrap();
        drop(st);
        let mut st = open();
        for _ in 5..rows.len() + 3 {
            errors.extend(st.cycle(None).errors);
        }
        let store = Store::open(&dir.path().join("e.db"), crate::store::Access::ReadOnly).unwrap();
        let logged: Vec<(u64, (f64, f64), Route)> = store
            .readings(&crate::store::ReadingFilter::default())
            .unwrap()
            .iter()
            .map(|r| {
                let s = r.reading.sample;
                (r.reading.seq, (s.temperature, s.humidity), r.reading.route)
            })
            .collect();
        let want: Vec<(u64, (f64, f64))> = (0..rows.len() + 3)
            .map(|i| (i as u64, rows[i % rows.len()]))
            .collect();
        assert_eq!(
            logged
                .iter()
                .map(|(seq, s, _)| (*seq, *s))
                .collect::<Vec<_>>(),
            want
        );
        assert!(errors.is_empty(), "{errors:?}");
        // The events were confirmed by their re-reads, not dropped.
        let events: Vec<u64> = logged
            .iter()
            .filter(|(_, _, r)| *r == Route::Realtime)
            .map(|(seq, _, _)| *seq)
            .collect();
        assert_eq!(events, vec![2, 4, 5, 6, 7, 9, 11]);
    }

    fn station(dir: &std::path::Path) -> Station {
        station_with(dir, "")
    }

    /// The config of [`station_with`].
    fn st_config_with(dir: &std::path::Path, extra: &str) -> Config {
        let text = format!(
            "node = \"t\"\ndb = {:?}\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n{extra}",
            dir.join("e.db").display().to_string()
        );
        Config::parse(&text, None).unwrap()
    }

    /// The config of [`station`].
    fn st_config(dir: &std::path::Path) -> Config {
        st_config_with(dir, "")
    }

    /// A station on `dir/e.db` with one simulated sensor; `extra` is TOML
    /// appended to the config.
    fn station_with(dir: &std::path::Path, extra: &str) -> Station {
        let config = st_config_with(dir, extra);
        Station::open(
            &config,
            config.interval,
            Arc::new(crate::clock::SystemClock::new()),
        )
        .unwrap()
    }

    fn logged_seqs(dir: &std::path::Path) -> Vec<u64> {
        let store = Store::open(&dir.join("e.db"), crate::store::Access::ReadOnly).unwrap();
        store
            .readings(&crate::store::ReadingFilter::default())
            .unwrap()
            .iter()
            .map(|r| r.reading.seq)
            .collect()
    }

    #[test]
    fn cycles_delete_published_rows_past_the_retention_only() {
        let dir = tempfile::tempdir().unwrap();
        // Three days ago: a reading the broker acknowledged, one it never
        // got, and a failed read, logged before the agent starts: what the
        // agent writes itself is not expired before it is two days old by
        // the monotonic clock, whatever its stamp says.
        drop(Store::open(&dir.path().join("e.db"), crate::store::Access::Writer).unwrap());
        let old = crate::clock::SystemClock::new().wall_ms() - 3 * 86_400_000;
        rusqlite::Connection::open(dir.path().join("e.db"))
            .unwrap()
            .execute_batch(&format!(
                "INSERT INTO readings (node, sensor, seq, ts_ms, temperature_c, humidity_pct,
                   weight_temperature, weight_humidity, priority, route, published_ms)
                 VALUES ('t', 'old', 0, {old}, 20, 50, 0, 0, 0, 'batch', {old}),
                        ('t', 'old', 1, {old}, 20, 50, 0, 0, 0, 'batch', NULL);
                 INSERT INTO sensor_errors (ts_ms, node, sensor, kind, detail)
                 VALUES ({old}, 't', 'old', 'timeout', 'no answer');"
            ))
            .unwrap();
        let mut st = station_with(dir.path(), "[store]\nretention = \"2d\"\n");
        // The pass starts in the first cycle and spends a bounded time per
        // cycle: on a slow machine (qemu) it finishes in a later one.
        let mut cycles = 0;
        let pass = loop {
            cycles += 1;
            if let Some(pass) = st.cycle(None).retention {
                break pass;
            }
            assert!(cycles < 20, "no retention pass finished in 20 cycles");
        };
        assert_eq!((pass.expired, pass.errors, pass.shed), (1, 1, 0));
        let store = Store::open(&dir.path().join("e.db"), crate::store::Access::ReadOnly).unwrap();
        let left: Vec<(String, u64)> = store
            .readings(&crate::store::ReadingFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| (r.reading.sensor, r.reading.seq))
            .collect();
        let lab: Vec<(String, u64)> = (0..cycles).map(|i| ("lab".into(), i)).collect();
        assert_eq!(left[0], ("old".into(), 1), "the unpublished old row stays");
        assert_eq!(left[1..], lab[..], "every new reading stays");
        assert!(store.sensor_errors(None, 0).unwrap().is_empty());
        let h = store.housekeeping("t").unwrap().unwrap();
        assert_eq!(h.pruned_readings, 1);
        assert!(h.last_prune_ms.is_some() && h.space.is_some());
        // The next pass is an hour away.
        assert!(st.cycle(None).retention.is_none());
    }

    #[test]
    fn full_disk_keeps_readings_in_memory_and_writes_them_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = station(dir.path());
        // The spill goes to the test's directory, not the machine's /run.
        let spill = dir.path().join("run/e.spill");
        st.held = Held::new(spill.clone(), &dir.path().join("e.db"));
        assert!(st.cycle(None).commit_error.is_none());
        // Fill the file up: every page in use is all it may have.
        let pages: i64 = rusqlite::Connection::open(dir.path().join("e.db"))
            .unwrap()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        st.store.set_max_pages(pages);
        let mut failed = 0;
        for _ in 2..200 {
            let report = st.cycle(None);
            if let Some(e) = report.commit_error {
                assert!(e.contains("is full"), "{e}");
                failed += 1;
            }
        }
        assert!(failed > 0, "the cap never bit");
        assert!(!st.held.readings().is_empty());
        assert!(spill.exists(), "the held readings are spilled");
        // Space comes back: the next cycle writes everything, in order.
        st.store.set_max_pages(1 << 30);
        let report = st.cycle(None);
        assert!(report.commit_error.is_none());
        assert_eq!(report.held, 0);
        assert!(st.held.is_empty());
        assert!(!spill.exists(), "the spill goes once the log has it");
        assert_eq!(logged_seqs(dir.path()), (0..200).collect::<Vec<_>>());
    }

    /// Fills the log of `st` up and runs cycles until one commit failed
    /// and `more` after it.
    fn fail_commits(st: &mut Station, dir: &std::path::Path, more: usize) {
        let pages: i64 = rusqlite::Connection::open(dir.join("e.db"))
            .unwrap()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        st.store.set_max_pages(pages);
        let mut cycles = 0;
        while st.cycle(None).commit_error.is_none() {
            cycles += 1;
            assert!(cycles < 200, "the cap never bit");
        }
        for _ in 0..more {
            assert!(st.cycle(None).commit_error.is_some());
        }
    }

    #[test]
    fn a_spill_the_log_already_has_is_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let spill = dir.path().join("run/e.spill");
        let mut st = station(dir.path());
        st.held = Held::new(spill.clone(), &db);
        st.cycle(None);
        fail_commits(&mut st, dir.path(), 3);
        let spilled = std::fs::read(&spill).unwrap();
        st.store.set_max_pages(1 << 30);
        assert!(st.cycle(None).commit_error.is_none());
        assert!(!spill.exists());
        let logged = logged_seqs(dir.path());
        drop(st);
        // The agent stopped after the commit, before removing the spill.
        std::fs::write(&spill, spilled).unwrap();
        let (held, _) = Held::restore(spill.clone(), &db).unwrap();
        assert!(!held.is_empty());
        let mut st = Station::open_carrying(
            &st_config(dir.path()),
            Duration::from_secs(15),
            Arc::new(crate::clock::SystemClock::new()),
            Some(held),
        )
        .unwrap();
        assert!(!spill.exists(), "the stale spill is removed");
        assert!(st.cycle(None).commit_error.is_none());
        let n = logged.len() as u64;
        assert_eq!(logged_seqs(dir.path()), (0..=n).collect::<Vec<_>>());
    }

    #[test]
    fn seqs_given_up_are_never_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let mut st = station(dir.path());
        st.cycle(None);
        drop(st);
        // Readings 1..=5 that a stopped agent could not even spill: only
        // their loss is in the spill.
        let spill = dir.path().join("run/e.spill");
        let mut held = Held::new(spill.clone(), &db).with_limit(0);
        let readings: Vec<Reading> = (1..=5)
            .map(|seq| Reading {
                node: "t".into(),
                sensor: "lab".into(),
                seq,
                ts_ms: 1_000,
                sample: Sample::new(20.0, 50.0),
                weights: crate::domain::PerChannel {
                    temperature: 0,
                    humidity: 0,
                },
                priority: 0,
                route: Route::Batch,
                clock_synced: None,
            })
            .collect();
        held.hold(&readings, &[], 1_000);
        assert_eq!(held.settle(2_000).len(), 1);
        let (held, _) = Held::restore(spill.clone(), &db).unwrap();
        let mut st = Station::open_carrying(
            &st_config(dir.path()),
            Duration::from_secs(15),
            Arc::new(crate::clock::SystemClock::new()),
            Some(held),
        )
        .unwrap();
        assert!(st.cycle(None).commit_error.is_none());
        assert_eq!(logged_seqs(dir.path()), vec![0, 6]);
        let (first, last): (i64, i64) = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT first_seq, last_seq FROM lost_readings WHERE sensor = 'lab'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((first, last), (1, 5));
        // Restarted again: the recorded loss still keeps its seqs taken.
        drop(st);
        let mut st = station(dir.path());
        st.cycle(None);
        assert_eq!(logged_seqs(dir.path()), vec![0, 6, 7]);
    }

    /// A kernel that says what the test sets, counting the questions.
    struct FakeSync {
        says: std::sync::Mutex<ClockSync>,
        asked: std::sync::atomic::AtomicU32,
    }

    impl crate::clock::SyncProbe for FakeSync {
        fn probe(&self) -> ClockSync {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *self.says.lock().unwrap()
        }
    }

    #[test]
    fn readings_taken_on_an_unsynchronized_clock_are_marked_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        // Two sensors: the kernel is asked once per cycle, not per reading.
        let mut st = station_with(
            dir.path(),
            "[[sensor]]\nid = \"hall\"\nkind = \"sim\"\nprofile = \"heater\"\n",
        );
        let probe = Arc::new(FakeSync {
            says: std::sync::Mutex::new(ClockSync::Unsynced),
            asked: std::sync::atomic::AtomicU32::new(0),
        });
        st.probe_sync_with(probe.clone());
        let mut want = Vec::new();
        for sync in [ClockSync::Unsynced, ClockSync::Synced, ClockSync::Unknown] {
            *probe.says.lock().unwrap() = sync;
            let report = st.cycle(None);
            assert_eq!(report.clock_sync, sync);
            assert_eq!(report.readings.len(), 2);
            for r in &report.readings {
                assert_eq!(r.clock_synced, sync.as_bool(), "{r:?}");
                want.push((r.sensor.clone(), r.seq, sync.as_bool()));
            }
        }
        assert_eq!(probe.asked.load(std::sync::atomic::Ordering::Relaxed), 3);
        let store = Store::open(&dir.path().join("e.db"), crate::store::Access::ReadOnly).unwrap();
        let logged: Vec<_> = store
            .readings(&crate::store::ReadingFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| (r.reading.sensor, r.reading.seq, r.reading.clock_synced))
            .collect();
        assert_eq!(logged, want);
        let column: Vec<Option<i64>> = rusqlite::Connection::open(dir.path().join("e.db"))
            .unwrap()
            .prepare("SELECT clock_synced FROM readings ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            column,
            vec![Some(0), Some(0), Some(1), Some(1), None, None],
            "0 unsynchronized, 1 synchronized, NULL unknown"
        );
    }

    #[test]
    fn a_long_outage_is_mentioned_every_ten_minutes_only() {
        let start = Duration::from_secs(100);
        let mut outage = Outage::new(start);
        // A cycle every 15 s for an hour.
        let said: Vec<u64> = (1..=240u64)
            .filter(|i| outage.again(start + Duration::from_secs(15 * i)))
            .map(|i| 15 * i / 60)
            .collect();
        assert_eq!(said, vec![10, 20, 30, 40, 50, 60]);
        assert_eq!(outage.failed, 241);
    }

    #[test]
    fn seq_conflict_renumbers_instead_of_wedging() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = station(dir.path());
        st.cycle(None);
        // Someone inserts seq 1 and 2 behind the agent's back.
        rusqlite::Connection::open(dir.path().join("e.db"))
            .unwrap()
            .execute_batch(
                "INSERT INTO readings (node, sensor, seq, ts_ms, temperature_c, humidity_pct,
                   weight_temperature, weight_humidity, priority, route)
                 VALUES ('t', 'lab', 1, 5, 20, 50, 0, 0, 0, 'batch'),
                        ('t', 'lab', 2, 5, 20, 50, 0, 0, 0, 'batch');",
            )
            .unwrap();
        let report = st.cycle(None);
        assert!(report.commit_error.is_none(), "{:?}", report.commit_error);
        assert!(st.cycle(None).commit_error.is_none());
        assert_eq!(logged_seqs(dir.path()), vec![0, 1, 2, 3, 4]);
    }

    /// A DHT22 whose frames, at `rate`, have one bit of the humidity or
    /// temperature word flipped together with a matching checksum bit (so
    /// the frame passes the checksum): the corruption confirmation is for.
    struct Flipping {
        /// Decides which frames are corrupted, and how: seeded, so the
        /// measurement repeats.
        rng: rand_chacha::ChaCha8Rng,
        /// What an intact frame says: the room does not change.
        truth: Sample,
        /// Share of frames corrupted.
        rate: f64,
    }

    impl Sensor for Flipping {
        fn read(&mut self) -> Result<Sample, ReadError> {
            use rand::RngExt as _;
            if !self.rng.random_bool(self.rate) {
                return Ok(self.truth);
            }
            // The words are tenths; bit k is worth 0.1 x 2^k.
            let bit = f64::from(1u32 << self.rng.random_range(0..16)) / 10.0;
            let mut s = self.truth;
            if self.rng.random_bool(0.5) {
                s.humidity = (s.humidity * 10.0).round() / 10.0 + bit;
            } else {
                s.temperature += bit;
            }
            Ok(s)
        }
        fn describe(&self) -> String {
            "flipping".into()
        }
    }

    /// Measured: 20,000 readings of a steady 22 °C / 72.5 %RH with 1 % of
    /// frames corrupted past the checksum. With confirm on, no reading goes
    /// real-time; with it off, some do. (Flips too small to be an event,
    /// a few %RH, are accepted either way: nothing tells them from a real
    /// small change.)
    #[test]
    fn checksum_passing_bit_flips_make_no_event_when_confirmed() {
        use rand::SeedableRng as _;
        let run = |confirm: bool| {
            let mut sensor = Flipping {
                rng: rand_chacha::ChaCha8Rng::seed_from_u64(11),
                truth: Sample::new(22.0, 72.5),
                rate: 0.01,
            };
            let mut scorer = Scorer::new(PriorityParams::default(), Some(sensor.truth));
            let (mut events, mut wrong, mut spikes, mut frames) = (0, 0, 0, 0);
            for i in 0..20_000i64 {
                let mut take = |t: Take| {
                    frames += 1;
                    let r = match t {
                        Take::Read => sensor.read(),
                        Take::Reread => sensor.reread(),
                    };
                    (i * 15_000, r)
                };
                let (accepted, errors) = read_validated(
                    &mut take,
                    &scorer,
                    SensorRange::DHT22,
                    &checks(confirm),
                    "x",
                );
                spikes += errors.iter().filter(|e| e.kind == ErrorKind::Spike).count();
                if let Some((ts, s)) = accepted {
                    wrong += usize::from(s != sensor.truth);
                    events += usize::from(scorer.score_at(s, ts).route == Route::Realtime);
                }
            }
            eprintln!(
                "confirm = {confirm}: {frames} frames, {events} real-time readings, \
                 {wrong} corrupted values accepted, {spikes} spike errors"
            );
            (events, wrong)
        };
        let (events_on, wrong_on) = run(true);
        let (events_off, wrong_off) = run(false);
        assert_eq!(events_on, 0);
        assert!(
            events_off > 0,
            "the flips do make events without confirmation"
        );
        assert!(wrong_on < wrong_off, "{wrong_on} vs {wrong_off}");
    }

    /// The read path as it was before events were confirmed, kept as the
    /// oracle that `confirm = false` changes nothing: one read, and a
    /// re-read only for a jump beyond the bound, judged by `resolve_spike`.
    fn before_confirm(
        prev: Option<Sample>,
        mut script: VecDeque<Result<Sample, ReadError>>,
    ) -> (Option<Sample>, Vec<(ErrorKind, String)>, usize) {
        let before = script.len();
        let bound = Plausibility::default();
        let mut errors = Vec::new();
        let mut read_checked =
            |errors: &mut Vec<(ErrorKind, String)>| match script.pop_front().expect("scripted") {
                Err(e) => {
                    errors.push((e.kind(), e.detail().to_string()));
                    None
                }
                Ok(s) => match check_range(s) {
                    Ok(s) => Some(s),
                    Err(r) => {
                        errors.push((r.kind(), r.to_string()));
                        None
                    }
                },
            };
        let Some(first) = read_checked(&mut errors) else {
            return (None, errors, 1);
        };
        let Some(prev) = prev.filter(|p| !bound.allows(*p, first)) else {
            return (Some(first), errors, 1);
        };
        let second = read_checked(&mut errors);
        let jump = format!(
            "{:.1} °C / {:.1} %RH after {:.1} °C / {:.1} %RH",
            first.temperature, first.humidity, prev.temperature, prev.humidity
        );
        let accepted = match resolve_spike(prev, first, second, &bound) {
            SpikeVerdict::Confirmed(s) => Some(s),
            SpikeVerdict::Glitch(s) => {
                errors.push((
                    ErrorKind::Spike,
                    format!("{jump} not confirmed by a re-read (corrupted frame)"),
                ));
                Some(s)
            }
            SpikeVerdict::Unconfirmed => {
                errors.push((
                    ErrorKind::Spike,
                    format!("{jump} not confirmed by a re-read"),
                ));
                None
            }
        };
        (accepted, errors, before - script.len())
    }

    fn frame() -> impl proptest::strategy::Strategy<Value = Result<Sample, ReadError>> {
        use proptest::prelude::*;
        prop_oneof![
            1 => Just(Err(ReadError::Timeout("t".into()))),
            2 => (proptest::num::f64::ANY, proptest::num::f64::ANY)
                .prop_map(|(t, h)| Ok(Sample::new(t, h))),
            6 => (-40.0f64..80.0, 0.0f64..100.0).prop_map(|(t, h)| Ok(Sample::new(t, h))),
        ]
    }

    proptest::proptest! {
        /// Whatever a sensor reports, NaN and infinities included, what the
        /// cycle accepts is finite and inside the DHT22's range.
        #[test]
        fn no_nan_or_out_of_range_value_is_ever_accepted(
            prev in proptest::option::of((-40.0f64..80.0, 0.0f64..100.0)),
            frames in proptest::collection::vec(frame(), 2),
            confirm in proptest::bool::ANY,
        ) {
            let scorer = Scorer::new(PriorityParams::default(), prev.map(|(t, h)| Sample::new(t, h)));
            let (sample, _, _) = validate(&scorer, checks(confirm), frames);
            if let Some(s) = sample {
                proptest::prop_assert!(check_range(s).is_ok(), "{s:?}");
            }
        }

        /// With `confirm = true`, one corrupted frame (any value, in either
        /// position) among frames of the truth never yields a real-time
        /// reading unless the truth itself is one.
        #[test]
        fn a_single_corrupted_frame_never_yields_a_realtime_reading(
            prev in (-40.0f64..80.0, 0.0f64..100.0),
            truth in (-40.0f64..80.0, 0.0f64..100.0),
            near in proptest::bool::ANY,
            corrupt in frame(),
            at in 0usize..2,
        ) {
            let prev = Sample::new(prev.0, prev.1);
            // Half the cases: a truth in the deadband of prev (no event),
            // where a corrupted frame matters most.
            let truth = if near {
                Sample::new(prev.temperature + (truth.0 / 400.0), prev.humidity + (truth.1 / 60.0) - 0.8)
            } else {
                Sample::new(truth.0, truth.1)
            };
            proptest::prop_assume!(check_range(truth).is_ok());
            let scorer = Scorer::new(PriorityParams::default(), Some(prev));
            let truth_is_event = scorer.peek_at(truth, 0).route == Route::Realtime;
            let mut frames = vec![Ok(truth), Ok(truth)];
            frames[at] = corrupt;
            let (sample, _, _) = validate(&scorer, checks(true), frames);
            if let Some(s) = sample {
                let route = scorer.peek_at(s, 0).route;
                proptest::prop_assert!(
                    route == Route::Batch || truth_is_event,
                    "{s:?} went real-time after {prev:?}, truth {truth:?}"
                );
            }
        }

        /// With `confirm = false` every read, verdict, error and detail is
        /// what the agent did before confirmation existed.
        #[test]
        fn with_confirm_off_validation_is_exactly_as_before(
            prev in proptest::option::of((-40.0f64..80.0, 0.0f64..100.0)),
            frames in proptest::collection::vec(frame(), 2),
        ) {
            let prev = prev.map(|(t, h)| Sample::new(t, h));
            let mut script: VecDeque<_> = frames.clone().into();
            // Frames 2 s apart: everything is stamped with the first, as before.
            let mut ts = 7 - 2000;
            let mut take = |_: Take| {
                ts += 2000;
                (ts, script.pop_front().expect("scripted"))
            };
            let (sample, errors) = read_validated(
                &mut take,
                &Scorer::new(PriorityParams::default(), prev),
                SensorRange::DHT22,
                &checks(false),
                "x",
            );
            let taken = 2 - script.len();
            proptest::prop_assert!(errors.iter().all(|e| e.ts_ms == 7), "{errors:?}");
            proptest::prop_assert!(sample.is_none_or(|(ts, _)| ts == 7));
            let now: Vec<(ErrorKind, String)> =
                errors.into_iter().map(|e| (e.kind, e.detail)).collect();
            proptest::prop_assert_eq!(
                (sample.map(|(_, s)| s), now, taken),
                before_confirm(prev, frames.into())
            );
        }
    }
}
