//! One read cycle: read every sensor, validate, confirm spikes, score, route,
//! and commit the lot in one transaction. Blocking: it runs on a blocking
//! thread, owned by the async loop in [`super`].

use std::sync::Arc;

use anyhow::Context as _;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, SensorConfig};
use crate::domain::{
    ErrorKind, Plausibility, Reading, Sample, Scorer, SensorError, SpikeVerdict, check_range,
    resolve_spike,
};
use crate::sensor::{self, OpenError, Resume, Sensor};
use crate::store::{AgentStatus, PassReport, Retention, Store, StoreError};

/// How many committed-but-failed readings are kept in memory for the next
/// commit attempt (about four days of four sensors at 15 s): a full disk or
/// a locked file must not lose readings, but memory is finite too.
const MAX_PENDING: usize = 100_000;

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

/// A configured sensor and where its history stands.
pub(crate) struct Slot {
    /// Sensor id.
    pub id: String,
    sensor: Box<dyn Sensor>,
    /// When the last read of this sensor started (monotonic).
    last_attempt: Option<Duration>,
    scorer: Scorer,
    /// The seq the next accepted reading gets.
    next_seq: u64,
    /// Readings accepted by this process (for `--count`).
    pub produced: u64,
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
    /// Why the commit failed; the readings are kept and retried.
    pub commit_error: Option<String>,
    /// The retention pass that finished this cycle, if one did.
    pub retention: Option<PassReport>,
}

/// The blocking half of the agent: sensors, scorers and the log.
pub struct Station {
    node: String,
    clock: Arc<dyn Clock>,
    /// How long a cycle may spend retrying failed reads.
    budget: Duration,
    plausibility: Plausibility,
    /// The sensors, in config order.
    pub(crate) slots: Vec<Slot>,
    store: Store,
    status: AgentStatus,
    /// Readings and errors whose commit failed, oldest first.
    pending: (Vec<Reading>, Vec<SensorError>),
    /// Deletes what `[store]` says the log no longer keeps.
    retention: Retention,
}

impl Station {
    /// Opens the log, restores each sensor's seq and priority history, and
    /// opens the sensors. Each cycle may spend 80 % of `period` retrying.
    pub fn open(
        config: &Config,
        period: Duration,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Station> {
        let sensor_clock = clock.clone();
        Self::open_with(config, period, clock, |sc, resume| {
            sensor::open(sc, resume, &sensor_clock)
        })
    }

    /// [`Station::open`] with the sensors built by `opener`: how tests put
    /// a simulated wire under the real cycle.
    pub fn open_with(
        config: &Config,
        period: Duration,
        clock: Arc<dyn Clock>,
        mut opener: impl FnMut(&SensorConfig, Resume) -> Result<Box<dyn Sensor>, OpenError>,
    ) -> anyhow::Result<Station> {
        let now_ms = clock.wall_ms();
        let store = Store::open(&config.db, crate::store::Access::Writer)?;
        let history = store.history(&config.node)?;
        let mut slots = Vec::with_capacity(config.sensors.len());
        for sc in &config.sensors {
            let h = history.get(&sc.id);
            let resume = Resume {
                next_seq: h.map_or(0, |h| h.last_seq + 1),
                last: h.map(|h| h.last),
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
                id: sc.id.clone(),
                sensor,
                last_attempt: None,
                scorer: Scorer::new(config.priority, resume.last),
                next_seq: resume.next_seq,
                produced: 0,
            });
        }
        let mut station = Station {
            node: config.node.clone(),
            clock,
            budget: period.mul_f64(0.8),
            plausibility: config.plausibility,
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
            },
            pending: (Vec::new(), Vec::new()),
            retention: Retention::new(config.store.retention, config.store.min_free),
        };
        // The status row exists from the start, so the publisher (started
        // next) has a row to record the broker state in, and a reader sees
        // the agent running before its first cycle ends.
        station
            .store
            .commit_cycle(&[], &[], &station.status)
            .context("cannot write the agent's status row")?;
        Ok(station)
    }

    /// Runs one cycle: reads every sensor (skipping those with `produced >=
    /// limit`), retrying failed reads in rounds while the budget allows and
    /// each sensor's spacing permits, then commits. Readings and errors are
    /// stamped with the wall-clock time of their read.
    pub fn cycle(&mut self, limit: Option<u64>) -> CycleReport {
        let mut report = CycleReport::default();
        let start = self.clock.monotonic();
        let deadline = start + self.budget;
        let mut todo: Vec<usize> = (0..self.slots.len())
            .filter(|&i| limit.is_none_or(|l| self.slots[i].produced < l))
            .collect();
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
                self.clock.sleep_until(ready);
                slot.last_attempt = Some(self.clock.monotonic());
                let now_ms = self.clock.wall_ms();
                let (sample, errors) = read_validated(
                    slot.sensor.as_mut(),
                    slot.scorer.prev(),
                    &self.plausibility,
                    &slot.id,
                    now_ms,
                );
                report.errors.extend(errors);
                let Some(sample) = sample else {
                    failed.push(i);
                    continue;
                };
                let score = slot.scorer.score(sample);
                report.readings.push(Reading {
                    node: self.node.clone(),
                    sensor: slot.id.clone(),
                    seq: slot.next_seq,
                    ts_ms: now_ms,
                    sample,
                    weights: score.weights,
                    priority: score.priority,
                    route: score.route,
                });
                slot.next_seq += 1;
                slot.produced += 1;
            }
            todo = failed;
            if todo.is_empty() {
                break;
            }
        }
        let now_ms = self.clock.wall_ms();
        self.status.heartbeat_ms = now_ms;
        self.pending.0.extend(report.readings.iter().cloned());
        self.pending.1.extend(report.errors.iter().cloned());
        let mut result = self
            .store
            .commit_cycle(&self.pending.0, &self.pending.1, &self.status);
        if result.as_ref().is_err_and(StoreError::is_conflict) {
            self.renumber_after_conflict();
            result = self
                .store
                .commit_cycle(&self.pending.0, &self.pending.1, &self.status);
        }
        match result {
            Ok(depth) => {
                self.pending.0.clear();
                self.pending.1.clear();
                report.outbox_depth = Some(depth);
            }
            Err(e) => {
                self.shed_overflow();
                tracing::error!(
                    db = %self.store.path().display(),
                    pending = self.pending.0.len(),
                    "cannot commit to the log, keeping the readings in memory and retrying \
                     next cycle: {e}"
                );
                report.commit_error = Some(e.to_string());
            }
        }
        // After the commit, whether or not it succeeded: a full disk is
        // when shedding old rows matters most.
        report.retention = self.retain(now_ms);
        report
    }

    /// Works on retention for at most [`RETENTION_BUDGET`].
    fn retain(&mut self, now_ms: i64) -> Option<PassReport> {
        let clock = &self.clock;
        let deadline = clock.monotonic() + RETENTION_BUDGET;
        self.retention
            .run(&mut self.store, &self.node, now_ms, || {
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
        let mut renumbered = 0;
        for slot in &mut self.slots {
            let mut next = history.get(&slot.id).map_or(0, |h| h.last_seq + 1);
            for r in self.pending.0.iter_mut().filter(|r| r.sensor == slot.id) {
                if r.seq != next {
                    r.seq = next;
                    renumbered += 1;
                }
                next += 1;
            }
            slot.next_seq = next;
        }
        tracing::error!(
            db = %self.store.path().display(),
            renumbered,
            "rows with our seq numbers appeared in the log from another writer; \
             renumbered the pending readings to follow them"
        );
    }

    fn shed_overflow(&mut self) {
        let over = self.pending.0.len().saturating_sub(MAX_PENDING);
        if over > 0 {
            self.pending.0.drain(..over);
            tracing::error!(
                dropped = over,
                "in-memory backlog full: dropped the oldest readings"
            );
        }
        let over = self.pending.1.len().saturating_sub(MAX_PENDING);
        self.pending.1.drain(..over);
    }

    /// Records a clean stop; readings that could not be committed are
    /// tried once more first.
    pub fn stop(&mut self) -> Result<(), StoreError> {
        self.status.heartbeat_ms = self.clock.wall_ms();
        if !self.pending.0.is_empty() || !self.pending.1.is_empty() {
            if let Err(e) = self
                .store
                .commit_cycle(&self.pending.0, &self.pending.1, &self.status)
            {
                tracing::error!(
                    lost = self.pending.0.len(),
                    "stopping with readings that could not be written to the log: they are lost"
                );
                return Err(e);
            }
            self.pending.0.clear();
            self.pending.1.clear();
        }
        self.store.mark_stopped(&self.status)
    }
}

/// Reads `sensor` once and validates the result against `prev`: range
/// checks, then the plausibility re-read. Returns the accepted sample, if
/// any, and every failure on the way. Changes no state: the caller scores
/// the sample.
pub fn read_validated(
    sensor: &mut dyn Sensor,
    prev: Option<Sample>,
    bound: &Plausibility,
    id: &str,
    now_ms: i64,
) -> (Option<Sample>, Vec<SensorError>) {
    let mut errors = Vec::new();
    let mut error = |kind: ErrorKind, detail: String| {
        errors.push(SensorError {
            ts_ms: now_ms,
            sensor: id.to_string(),
            kind,
            detail,
        });
    };
    let mut read_checked = |error: &mut dyn FnMut(ErrorKind, String)| match sensor.read() {
        Err(e) => {
            error(e.kind(), e.detail().to_string());
            None
        }
        Ok(s) => match check_range(s) {
            Ok(s) => Some(s),
            Err(r) => {
                error(r.kind(), r.to_string());
                None
            }
        },
    };
    let Some(first) = read_checked(&mut error) else {
        return (None, errors);
    };
    let Some(prev) = prev.filter(|p| !bound.allows(*p, first)) else {
        return (Some(first), errors);
    };
    let second = read_checked(&mut error);
    let jump = |s: Sample| {
        format!(
            "{:.1} °C / {:.1} %RH after {:.1} °C / {:.1} %RH",
            s.temperature, s.humidity, prev.temperature, prev.humidity
        )
    };
    let accepted = match resolve_spike(prev, first, second, bound) {
        SpikeVerdict::Confirmed(s) => {
            tracing::info!(
                sensor = id,
                "large change confirmed by a re-read: {}",
                jump(s)
            );
            Some(s)
        }
        SpikeVerdict::Glitch(s) => {
            error(
                ErrorKind::Spike,
                format!(
                    "{} not confirmed by a re-read (corrupted frame)",
                    jump(first)
                ),
            );
            Some(s)
        }
        SpikeVerdict::Unconfirmed => {
            error(
                ErrorKind::Spike,
                format!("{} not confirmed by a re-read", jump(first)),
            );
            None
        }
    };
    (accepted, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::ReadError;
    use std::collections::VecDeque;

    /// A sensor that says what it is told to.
    struct Scripted(VecDeque<Result<Sample, ReadError>>);

    impl Sensor for Scripted {
        fn read(&mut self) -> Result<Sample, ReadError> {
            self.0.pop_front().expect("the test scripted enough reads")
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn run(
        prev: Option<Sample>,
        script: Vec<Result<Sample, ReadError>>,
    ) -> (Option<Sample>, Vec<ErrorKind>, usize) {
        let mut s = Scripted(script.into());
        let before = s.0.len();
        let (sample, errors) = read_validated(&mut s, prev, &Plausibility::default(), "x", 7);
        (
            sample,
            errors.iter().map(|e| e.kind).collect(),
            before - s.0.len(),
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
    }

    fn station(dir: &std::path::Path) -> Station {
        station_with(dir, "")
    }

    /// A station on `dir/e.db` with one simulated sensor; `extra` is TOML
    /// appended to the config.
    fn station_with(dir: &std::path::Path, extra: &str) -> Station {
        let text = format!(
            "node = \"t\"\ndb = {:?}\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n{extra}",
            dir.join("e.db").display().to_string()
        );
        let config = Config::parse(&text, None).unwrap();
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
        let mut st = station_with(dir.path(), "[store]\nretention = \"2d\"\n");
        // Three days ago: a reading the broker acknowledged, one it never
        // got, and a failed read.
        let old = st.clock.wall_ms() - 3 * 86_400_000;
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
        assert!(store.sensor_errors(0).unwrap().is_empty());
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
        assert!(!st.pending.0.is_empty());
        // Space comes back: the next cycle writes everything, in order.
        st.store.set_max_pages(1 << 30);
        let report = st.cycle(None);
        assert!(report.commit_error.is_none());
        assert!(st.pending.0.is_empty());
        assert_eq!(logged_seqs(dir.path()), (0..200).collect::<Vec<_>>());
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

    proptest::proptest! {
        /// Whatever a sensor reports, NaN and infinities included, what the
        /// cycle accepts is finite and inside the DHT22's range.
        #[test]
        fn no_nan_or_out_of_range_value_is_ever_accepted(
            prev in proptest::option::of((-40.0f64..80.0, 0.0f64..100.0)),
            frames in proptest::collection::vec(
                proptest::option::of((proptest::num::f64::ANY, proptest::num::f64::ANY)),
                2,
            ),
        ) {
            let script = frames
                .iter()
                .map(|f| f.map(|(t, h)| Sample::new(t, h)).ok_or(ReadError::Timeout("t".into())))
                .collect();
            let (sample, _, _) = run(prev.map(|(t, h)| Sample::new(t, h)), script);
            if let Some(s) = sample {
                proptest::prop_assert!(check_range(s).is_ok(), "{s:?}");
            }
        }
    }
}
