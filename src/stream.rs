//! The state of one (node, sensor) stream: its [`Scorer`] and the seq its
//! next reading gets, restored from the log at start. The agent keeps one
//! per configured sensor (next to the hardware, in its cycle's slot); the
//! gateway keeps one per (node, sensor) it hears from, in [`Streams`],
//! restored from its own log the first time it sees the pair. Both score
//! with the same rules, so a consumer cannot tell who scored a reading.
//!
//! Pure state: no I/O but the restore ([`Stream::open`], [`Streams`]),
//! which reads the log, and no clock: every reading's time is passed in.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::domain::{Baseline, PriorityParams, Reading, Sample, Score, Scorer};
use crate::store::{MAX_SEQ, SensorHistory, Store, StoreError, next_seq};

/// How every stream scores: the config's `[priority]` parameters and gap
/// rule, the same for each stream of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamRules {
    /// The weight-priority parameters.
    pub priority: PriorityParams,
    /// `[priority] stale_after`: a `prev` older than this counts as none;
    /// `None` turns the gap rule off.
    pub stale_after: Option<Duration>,
}

impl StreamRules {
    /// The rules `config` sets.
    pub fn from_config(config: &Config) -> Self {
        Self {
            priority: config.priority,
            stale_after: config.stale_after,
        }
    }

    /// The scorer of a stream that goes on after `history` (`None`: a
    /// stream that never logged a reading).
    pub fn scorer(&self, history: Option<&SensorHistory>) -> Scorer {
        let mut scorer = Scorer::new(self.priority, history.and_then(|h| h.last))
            .with_reported(history.and_then(|h| h.baseline));
        if let Some(stale_after) = self.stale_after {
            scorer = scorer.with_gap_rule(stale_after, history.and_then(|h| h.last_ts_ms));
        }
        scorer
    }

    /// Whether restoring a stream needs its reported baseline read from the
    /// log ([`Store::fill_baselines`]).
    pub fn wants_baseline(&self) -> bool {
        self.priority.baseline == Baseline::Reported
    }

    /// `history` moved past `reading`, logged after it (a reading held in
    /// a spill when the agent stopped): what a scorer that had scored it
    /// would go on from.
    pub fn history_after(
        &self,
        history: Option<&SensorHistory>,
        reading: &Reading,
    ) -> SensorHistory {
        let mut scorer = self.scorer(history);
        scorer.record_at(reading.sample, reading.ts_ms, reading.route);
        SensorHistory {
            last_seq: reading.seq,
            last_id: history.map_or(0, |h| h.last_id),
            last: Some(reading.sample),
            last_ts_ms: Some(reading.ts_ms),
            baseline: self.wants_baseline().then(|| scorer.baseline()).flatten(),
        }
    }
}

/// One (node, sensor) stream: what scoring and numbering its next reading
/// takes.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The node the readings are logged and published under.
    node: String,
    /// The sensor id.
    sensor: String,
    /// The priority history (`prev` and when it was read, for the gap rule).
    scorer: Scorer,
    /// The seq the next reading gets; `None` once the stream's seq reached
    /// [`MAX_SEQ`]: no reading can be numbered any more (see
    /// [`seq_exhausted`]).
    next_seq: Option<u64>,
}

/// Why [`Stream::accept`] numbered nothing: the stream's seq reached
/// [`MAX_SEQ`], so no seq is left for another reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no seq is left after {MAX_SEQ}")]
pub struct Exhausted;

/// What [`Stream::accept_seq`] did with a reading that carries its own
/// seq (the gateway's path: a raw reading may say which one it is).
#[derive(Debug, Clone, PartialEq)]
pub enum SeqOutcome {
    /// Scored and numbered with the sender's seq; the stream goes on after
    /// it (seqs the sender skipped are the sender's gap, never reused).
    Accepted(Reading),
    /// The seq is at or below the stream's last one: the same reading
    /// delivered again, or a sender that restarted counting. Nothing was
    /// scored; the caller tells the two apart (the log has the row or not)
    /// and may number a restarted sender's reading with [`Stream::accept`].
    Behind {
        /// The seq the reading carried.
        seq: u64,
        /// The stream's last seq.
        last: u64,
    },
    /// The seq is beyond [`MAX_SEQ`], which the log cannot hold. Nothing
    /// was scored.
    OutOfRange {
        /// The seq the reading carried.
        seq: u64,
    },
    /// The stream's seq reached [`MAX_SEQ`] (see [`Exhausted`]). Nothing
    /// was scored.
    Exhausted,
}

impl Stream {
    /// The stream of `sensor` of `node`, going on after its `history` in
    /// the log and after `lost_upto`, the highest seq recorded as lost
    /// (never handed out again). Says so loudly ([`seq_exhausted`]) when no
    /// seq is left; `db` names the log in that message.
    pub fn restore(
        node: &str,
        sensor: &str,
        rules: &StreamRules,
        history: Option<&SensorHistory>,
        lost_upto: Option<u64>,
        db: &Path,
    ) -> Self {
        let next_seq = first_free_seq(history, lost_upto);
        if next_seq.is_none() {
            seq_exhausted(sensor, history, db);
        }
        Self {
            node: node.to_owned(),
            sensor: sensor.to_owned(),
            scorer: rules.scorer(history),
            next_seq,
        }
    }

    /// [`Stream::restore`] from what `store` holds for this one (node,
    /// sensor): two indexed lookups, whatever else the log holds.
    pub fn open(
        store: &Store,
        node: &str,
        sensor: &str,
        rules: &StreamRules,
    ) -> Result<Self, StoreError> {
        let mut history = store.stream_history(node, sensor)?;
        if let Some(h) = history.as_mut().filter(|_| rules.wants_baseline()) {
            h.baseline = store.reported_baseline(node, sensor, rules.stale_after)?;
        }
        let lost = store.last_lost_seq(node, sensor)?;
        Ok(Self::restore(
            node,
            sensor,
            rules,
            history.as_ref(),
            lost,
            store.path(),
        ))
    }

    /// The node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The sensor id.
    pub fn sensor(&self) -> &str {
        &self.sensor
    }

    /// The priority history: what validation compares a new frame with.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// The seq the next reading gets; `None` when no seq is left.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Whether no seq is left for another reading.
    pub fn is_exhausted(&self) -> bool {
        self.next_seq.is_none()
    }

    /// What [`Stream::accept`] would score `sample` taken at `ts_ms`,
    /// changing nothing.
    pub fn peek(&self, sample: Sample, ts_ms: i64) -> Score {
        self.scorer.peek_at(sample, ts_ms)
    }

    /// Scores an accepted `sample` taken at `ts_ms` and numbers it with the
    /// next seq (the agent's path). `clock_synced` is what the kernel said
    /// of the wall clock that stamped it. Fails, changing nothing, when no
    /// seq is left.
    pub fn accept(
        &mut self,
        sample: Sample,
        ts_ms: i64,
        clock_synced: Option<bool>,
    ) -> Result<Reading, Exhausted> {
        let seq = self.next_seq.ok_or(Exhausted)?;
        Ok(self.number(sample, ts_ms, clock_synced, seq))
    }

    /// Scores `sample` taken at `ts_ms` under the `seq` its sender gave it
    /// (the gateway's path). A seq at or below the last one, or one the
    /// log cannot hold, is refused with the reason and changes nothing.
    pub fn accept_seq(
        &mut self,
        sample: Sample,
        ts_ms: i64,
        clock_synced: Option<bool>,
        seq: u64,
    ) -> SeqOutcome {
        let Some(next) = self.next_seq else {
            return SeqOutcome::Exhausted;
        };
        if seq > MAX_SEQ {
            return SeqOutcome::OutOfRange { seq };
        }
        if seq < next {
            // `next` > 0 here: a seq below it exists.
            return SeqOutcome::Behind {
                seq,
                last: next - 1,
            };
        }
        SeqOutcome::Accepted(self.number(sample, ts_ms, clock_synced, seq))
    }

    /// Takes `reading`, scored by its sender (a node that scores for itself
    /// and sends on the raw topic), as it is: its seq is checked as in
    /// [`Stream::accept_seq`], and the stream's `prev` moves to its values
    /// (and the reported baseline, if it went real-time), so the next raw
    /// reading of the stream is scored against it.
    pub fn accept_scored(&mut self, reading: Reading) -> SeqOutcome {
        let Some(next) = self.next_seq else {
            return SeqOutcome::Exhausted;
        };
        if reading.seq > MAX_SEQ {
            return SeqOutcome::OutOfRange { seq: reading.seq };
        }
        if reading.seq < next {
            return SeqOutcome::Behind {
                seq: reading.seq,
                last: next - 1,
            };
        }
        self.scorer
            .record_at(reading.sample, reading.ts_ms, reading.route);
        self.next_seq = next_seq(reading.seq);
        SeqOutcome::Accepted(reading)
    }

    /// Continues at `next` instead (`None`: no seq left): the agent's log
    /// was replaced, or another writer took the seqs it handed out.
    pub(crate) fn continue_at(&mut self, next: Option<u64>) {
        self.next_seq = next;
    }

    /// Scores `sample` and makes it reading `seq`; the stream goes on after
    /// `seq`.
    fn number(
        &mut self,
        sample: Sample,
        ts_ms: i64,
        clock_synced: Option<bool>,
        seq: u64,
    ) -> Reading {
        let score = self.scorer.score_at(sample, ts_ms);
        self.next_seq = next_seq(seq);
        Reading {
            node: self.node.clone(),
            sensor: self.sensor.clone(),
            seq,
            ts_ms,
            sample,
            weights: score.weights,
            priority: score.priority,
            route: score.route,
            clock_synced,
        }
    }

    /// Bytes this stream takes, its strings included: what [`Streams`]
    /// counts.
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<Self>() + self.node.capacity() + self.sensor.capacity()
    }
}

/// The streams of many nodes, keyed by (node, sensor), each restored from
/// the log the first time it is asked for: the gateway hears from nodes it
/// never configured. A stream takes 184 bytes plus its names
/// ([`Streams::footprint`]; a test holds 1,000 of them under 256 KiB), so
/// they are kept for the life of the process: dropping one whose last
/// reading is not committed yet would restore it behind that reading.
#[derive(Debug, Clone)]
pub struct Streams {
    /// How each stream scores.
    rules: StreamRules,
    /// node -> sensor -> stream: two lookups by `&str`, no key to
    /// allocate for a stream already known.
    by_node: HashMap<String, HashMap<String, Stream>>,
}

impl Streams {
    /// No streams yet; each will score by `rules`.
    pub fn new(rules: StreamRules) -> Self {
        Self {
            rules,
            by_node: HashMap::new(),
        }
    }

    /// The stream of (`node`, `sensor`), restored from `store` if this is
    /// the first time it is asked for.
    pub fn get_or_open(
        &mut self,
        store: &Store,
        node: &str,
        sensor: &str,
    ) -> Result<&mut Stream, StoreError> {
        // Two steps so a known stream costs no allocation; the first
        // lookup is repeated only for a stream seen for the first time.
        let known = self
            .by_node
            .get(node)
            .is_some_and(|sensors| sensors.contains_key(sensor));
        if !known {
            let stream = Stream::open(store, node, sensor, &self.rules)?;
            self.by_node
                .entry(node.to_owned())
                .or_default()
                .insert(sensor.to_owned(), stream);
        }
        Ok(self
            .by_node
            .get_mut(node)
            .and_then(|sensors| sensors.get_mut(sensor))
            .expect("the stream was found or inserted just above"))
    }

    /// The stream of (`node`, `sensor`), if it was opened.
    pub fn get(&self, node: &str, sensor: &str) -> Option<&Stream> {
        self.by_node.get(node)?.get(sensor)
    }

    /// Forgets every stream of `node`, to be restored from the log when
    /// next asked for: after its readings were renumbered or its log
    /// replaced, what is in memory is no longer what the log says.
    pub fn forget_node(&mut self, node: &str) {
        self.by_node.remove(node);
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.by_node.values().map(HashMap::len).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_node.values().all(HashMap::is_empty)
    }

    /// Bytes the streams take, their keys included (not counting the hash
    /// tables' spare capacity).
    pub fn footprint(&self) -> usize {
        self.by_node
            .iter()
            .map(|(node, sensors)| {
                node.capacity()
                    + sensors
                        .iter()
                        .map(|(sensor, s)| sensor.capacity() + s.footprint())
                        .sum::<usize>()
            })
            .sum()
    }
}

/// The seq a stream's next reading gets: after the highest logged one and
/// after the highest recorded lost, which is never handed out again;
/// `None` when no seq is left (see [`crate::store::next_seq`]).
pub(crate) fn first_free_seq(
    history: Option<&SensorHistory>,
    lost_upto: Option<u64>,
) -> Option<u64> {
    let logged = history.map_or(Some(0), SensorHistory::next_seq);
    match lost_upto {
        None => logged,
        Some(l) => logged.zip(next_seq(l)).map(|(a, b)| a.max(b)),
    }
}

/// Says, loudly, that `sensor` gets no more readings: its last seq is
/// [`MAX_SEQ`], the largest the log holds. The agent counts from 0 by 1, so
/// only a hand edit gets there; handing out a lower seq again would give
/// consumers a (node, sensor, seq) they may already hold, so the sensor is
/// not read until the row is fixed, and the other sensors go on.
pub(crate) fn seq_exhausted(sensor: &str, last: Option<&SensorHistory>, db: &Path) {
    let row = last.map_or_else(
        || "the reading just taken".to_owned(),
        |h| format!("readings row id {}", h.last_id),
    );
    tracing::error!(
        sensor,
        db = %db.display(),
        "sensor {sensor:?} is not read any more: {row} has seq {MAX_SEQ}, the largest seq the \
         log can hold, so no seq is left for its next reading (the agent counts from 0 by 1: \
         such a seq comes from an edit of the log); fix or delete that row (sqlite3 {} \
         \"SELECT id, seq FROM readings WHERE sensor = '{sensor}' ORDER BY seq DESC LIMIT 3\"), \
         then restart the agent",
        db.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Route;
    use crate::store::{Access, Loss};

    fn rules() -> StreamRules {
        StreamRules {
            priority: PriorityParams::default(),
            stale_after: Some(Duration::from_mins(5)),
        }
    }

    fn history(last_seq: u64, last: Sample, ts_ms: i64) -> SensorHistory {
        SensorHistory {
            last_seq,
            last_id: 7,
            last: Some(last),
            last_ts_ms: Some(ts_ms),
            baseline: None,
        }
    }

    fn fresh() -> Stream {
        Stream::restore("n", "s", &rules(), None, None, Path::new("e.db"))
    }

    #[test]
    fn a_new_stream_starts_at_seq_0_and_scores_its_first_reading_0() {
        let mut s = fresh();
        let r = s
            .accept(Sample::new(25.0, 56.0), 1_000, Some(true))
            .unwrap();
        assert_eq!((r.node.as_str(), r.sensor.as_str()), ("n", "s"));
        assert_eq!((r.seq, r.priority, r.route), (0, 0, Route::Batch));
        assert_eq!(r.clock_synced, Some(true));
        assert_eq!(s.next_seq(), Some(1));
    }

    #[test]
    fn a_restored_stream_goes_on_after_its_history_with_the_papers_example() {
        let h = history(8, Sample::new(25.0, 56.0), 1_000);
        let mut s = Stream::restore("n", "s", &rules(), Some(&h), None, Path::new("e.db"));
        let peeked = s.peek(Sample::new(28.0, 48.0), 2_000);
        let r = s.accept(Sample::new(28.0, 48.0), 2_000, None).unwrap();
        assert_eq!(r.seq, 9);
        assert_eq!((r.weights.temperature, r.weights.humidity), (2, 2));
        assert_eq!((r.priority, r.route), (2, Route::Realtime));
        assert_eq!(peeked.priority, r.priority, "peek scores as accept does");
    }

    #[test]
    fn peek_changes_nothing() {
        let h = history(0, Sample::new(25.0, 56.0), 1_000);
        let mut s = Stream::restore("n", "s", &rules(), Some(&h), None, Path::new("e.db"));
        assert_eq!(s.peek(Sample::new(28.0, 48.0), 2_000).priority, 2);
        assert_eq!(s.peek(Sample::new(28.0, 48.0), 2_000).priority, 2);
        assert_eq!(s.scorer().prev(), Some(Sample::new(25.0, 56.0)));
        assert_eq!(s.next_seq(), Some(1));
        assert_eq!(
            s.accept(Sample::new(28.0, 48.0), 2_000, None).unwrap().seq,
            1
        );
    }

    #[test]
    fn the_gap_rule_scores_a_reading_long_after_the_last_as_a_first_one() {
        let h = history(3, Sample::new(25.0, 56.0), 0);
        let mut s = Stream::restore("n", "s", &rules(), Some(&h), None, Path::new("e.db"));
        let late = 5 * 60_000 + 1;
        let r = s.accept(Sample::new(28.0, 48.0), late, None).unwrap();
        assert_eq!((r.seq, r.priority), (4, 0));
        let off = StreamRules {
            stale_after: None,
            ..rules()
        };
        let mut s = Stream::restore("n", "s", &off, Some(&h), None, Path::new("e.db"));
        assert_eq!(
            s.accept(Sample::new(28.0, 48.0), late, None)
                .unwrap()
                .priority,
            2
        );
    }

    #[test]
    fn lost_seqs_are_never_handed_out_again() {
        let h = history(4, Sample::new(25.0, 56.0), 0);
        let s = Stream::restore("n", "s", &rules(), Some(&h), Some(9), Path::new("e.db"));
        assert_eq!(s.next_seq(), Some(10));
        let s = Stream::restore("n", "s", &rules(), Some(&h), Some(2), Path::new("e.db"));
        assert_eq!(s.next_seq(), Some(5));
        let s = Stream::restore("n", "s", &rules(), None, Some(0), Path::new("e.db"));
        assert_eq!(s.next_seq(), Some(1));
    }

    #[test]
    fn a_stream_at_max_seq_numbers_nothing_and_keeps_its_history() {
        let h = history(MAX_SEQ, Sample::new(25.0, 56.0), 0);
        let mut s = Stream::restore("n", "s", &rules(), Some(&h), None, Path::new("e.db"));
        assert!(s.is_exhausted());
        assert_eq!(s.accept(Sample::new(28.0, 48.0), 1, None), Err(Exhausted));
        assert_eq!(
            s.accept_seq(Sample::new(28.0, 48.0), 1, None, 3),
            SeqOutcome::Exhausted
        );
        assert_eq!(s.scorer().prev(), Some(Sample::new(25.0, 56.0)));
        let lost = Stream::restore("n", "s", &rules(), None, Some(MAX_SEQ), Path::new("e.db"));
        assert!(lost.is_exhausted());
        // The last seq there is can be handed out, and then none.
        let h = history(MAX_SEQ - 1, Sample::new(25.0, 56.0), 0);
        let mut s = Stream::restore("n", "s", &rules(), Some(&h), None, Path::new("e.db"));
        assert_eq!(
            s.accept(Sample::new(25.0, 56.0), 1, None).unwrap().seq,
            MAX_SEQ
        );
        assert!(s.is_exhausted());
    }

    #[test]
    fn a_senders_seq_is_taken_and_a_gap_in_it_is_kept() {
        let mut s = fresh();
        let SeqOutcome::Accepted(r) = s.accept_seq(Sample::new(25.0, 56.0), 1, None, 0) else {
            panic!("seq 0 of a new stream is accepted");
        };
        assert_eq!(r.seq, 0);
        let SeqOutcome::Accepted(r) = s.accept_seq(Sample::new(28.0, 48.0), 2, None, 5) else {
            panic!("a seq past the last is accepted");
        };
        assert_eq!((r.seq, r.priority), (5, 2));
        assert_eq!(s.next_seq(), Some(6));
        // The agent's path goes on after the sender's seq.
        assert_eq!(s.accept(Sample::new(28.0, 48.0), 3, None).unwrap().seq, 6);
    }

    #[test]
    fn a_senders_seq_at_or_below_the_last_is_behind_and_scores_nothing() {
        let h = history(4, Sample::new(25.0, 56.0), 0);
        let mut s = Stream::restore("n", "s", &rules(), Some(&h), None, Path::new("e.db"));
        for seq in [4, 0] {
            assert_eq!(
                s.accept_seq(Sample::new(28.0, 48.0), 1, None, seq),
                SeqOutcome::Behind { seq, last: 4 }
            );
        }
        assert_eq!(
            s.accept_seq(Sample::new(28.0, 48.0), 1, None, MAX_SEQ + 1),
            SeqOutcome::OutOfRange { seq: MAX_SEQ + 1 }
        );
        assert_eq!(s.scorer().prev(), Some(Sample::new(25.0, 56.0)));
        assert_eq!(s.next_seq(), Some(5));
    }

    fn reading(node: &str, sensor: &str, seq: u64, t: f64) -> Reading {
        Reading {
            node: node.into(),
            sensor: sensor.into(),
            seq,
            ts_ms: 1_000 * i64::try_from(seq).unwrap(),
            sample: Sample::new(t, 50.0),
            weights: crate::domain::PerChannel {
                temperature: 0,
                humidity: 0,
            },
            priority: 0,
            route: Route::Batch,
            clock_synced: None,
        }
    }

    #[test]
    fn streams_restore_each_node_and_sensor_from_the_log_on_first_sight() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let mut store = Store::open(&db, Access::Writer).unwrap();
        store
            .insert_readings(&[
                reading("a", "x", 0, 20.0),
                reading("a", "x", 1, 25.0),
                reading("b", "x", 0, 30.0),
                reading("a", "y", 3, 10.0),
            ])
            .unwrap();
        store
            .record_losses(&[Loss {
                node: "b".into(),
                sensor: "x".into(),
                first_seq: 1,
                last_seq: 6,
                ts_ms: 0,
                reason: "test".into(),
            }])
            .unwrap();
        let mut streams = Streams::new(StreamRules {
            stale_after: None,
            ..rules()
        });
        assert!(streams.is_empty());
        let ax = streams.get_or_open(&store, "a", "x").unwrap();
        assert_eq!(ax.next_seq(), Some(2));
        assert_eq!(ax.scorer().prev(), Some(Sample::new(25.0, 50.0)));
        let r = ax.accept(Sample::new(28.0, 50.0), 5_000, None).unwrap();
        assert_eq!((r.node.as_str(), r.seq, r.priority), ("a", 2, 2));
        assert_eq!(
            streams.get_or_open(&store, "b", "x").unwrap().next_seq(),
            Some(7)
        );
        assert_eq!(
            streams.get_or_open(&store, "a", "y").unwrap().next_seq(),
            Some(4)
        );
        let new = streams.get_or_open(&store, "c", "x").unwrap();
        assert_eq!((new.next_seq(), new.scorer().prev()), (Some(0), None));
        // A known stream is the one in memory, not restored again.
        assert_eq!(
            streams.get_or_open(&store, "a", "x").unwrap().next_seq(),
            Some(3)
        );
        assert_eq!(streams.len(), 4);
        streams.forget_node("a");
        assert_eq!(streams.len(), 2);
        assert!(streams.get("a", "x").is_none());
        assert_eq!(streams.get("b", "x").unwrap().node(), "b");
    }

    #[test]
    fn a_thousand_streams_take_well_under_a_mebibyte() {
        let mut streams = Streams::new(rules());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db"), Access::Writer).unwrap();
        for node in 0..100 {
            for sensor in 0..10 {
                streams
                    .get_or_open(
                        &store,
                        &format!("node-{node:03}"),
                        &format!("sensor-{sensor}"),
                    )
                    .unwrap();
            }
        }
        assert_eq!(streams.len(), 1_000);
        let bytes = streams.footprint();
        assert!(
            std::mem::size_of::<Stream>() <= 192,
            "a stream grew to {} bytes",
            std::mem::size_of::<Stream>()
        );
        assert!(bytes < 256 * 1024, "1,000 streams take {bytes} bytes");
    }
}
