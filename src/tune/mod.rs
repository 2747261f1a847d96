//! `edgeprio tune`: a recording replayed offline through the agent's own
//! validation ([`crate::agent::read_validated`]) and scoring
//! ([`crate::stream::StreamRules::scorer`]), once per setting of a grid of
//! priority parameters, so a user sees what a threshold or a baseline would
//! have done on their data before deploying it. No clock, no broker: every
//! reading's time is the recording's.
//!
//! The recording is the agent's `SQLite` log ([`input::from_log`]) or a CSV
//! file ([`input::from_csv`]). Rows of the log were validated by the agent
//! when it logged them, so they are scored as they are, and what it
//! rejected is in its `sensor_errors`; rows of a CSV go through validation
//! first: the range checks reject what the agent would; a frame the agent
//! would re-read (a jump beyond the plausibility bound, or an event with
//! `confirm`) is re-read as what was recorded, since a recording cannot be
//! read again, and the jumps are counted.

pub mod input;
pub mod plot;
pub mod report;

use crate::agent::{Checks, Take, read_validated};
use std::time::Duration;

use crate::domain::{
    Baseline, ErrorKind, Plausibility, PriorityParams, Route, Sample, SensorRange,
};
use crate::sensor::ReadError;
use crate::stream::StreamRules;

/// One row of a recording: a reading as it was logged or written down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Where it is in the input: the CSV line (1-based, the header is line
    /// 1) or the log's `seq`.
    pub line: u64,
    /// When it was read (Unix ms; for a CSV without times, the row's place
    /// times `--interval`).
    pub ts_ms: i64,
    /// Its values.
    pub sample: Sample,
}

/// The rows of one (node, sensor) stream, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    /// The node ("" for a CSV without a node column).
    pub node: String,
    /// The sensor ("" for a CSV without a sensor column).
    pub sensor: String,
    /// What the sensor can measure: validation's range checks.
    pub range: Option<SensorRange>,
    /// Every row, the ones before the chosen time range included: they are
    /// replayed as the stream's history, as the agent had them.
    pub rows: Vec<Row>,
    /// The first row counted (rows before it only set the history).
    pub counted_from: usize,
}

impl Track {
    /// The rows counted in the results.
    pub fn counted(&self) -> &[Row] {
        &self.rows[self.counted_from.min(self.rows.len())..]
    }

    /// `node/sensor`, or whichever of the two the input named.
    pub fn name(&self) -> String {
        match (self.node.is_empty(), self.sensor.is_empty()) {
            (false, false) => format!("{}/{}", self.node, self.sensor),
            (true, false) => self.sensor.clone(),
            (false, true) => self.node.clone(),
            (true, true) => "recording".into(),
        }
    }
}

/// A row of the input that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The CSV line (the header is line 1).
    pub line: u64,
    /// The column at fault, if one is.
    pub column: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "line {}, column {c}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// What is replayed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recording {
    /// What it was read from, for the report.
    pub source: String,
    /// Its streams.
    pub tracks: Vec<Track>,
    /// Whether its rows still need validating (a CSV) or were validated
    /// when they were logged (the agent's log).
    pub validate: bool,
    /// Rows of the input that could not be read (unparsable values, times
    /// going backwards), left out.
    pub problems: Vec<Problem>,
    /// For the agent's log: the failed reads it logged in the time range
    /// (`sensor_errors`), by kind: what validation rejected at the time.
    pub logged_errors: Vec<(ErrorKind, u64)>,
}

impl Recording {
    /// The rows counted, over all tracks.
    pub fn counted(&self) -> usize {
        self.tracks.iter().map(|t| t.counted().len()).sum()
    }

    /// The time the counted rows span (ms): from the first to the last.
    pub fn span_ms(&self) -> i64 {
        let times = self.tracks.iter().flat_map(Track::counted).map(|r| r.ts_ms);
        let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if lo > hi { 0 } else { hi - lo }
    }
}

/// One setting of the grid: how every stream scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// The priority parameters and the gap rule.
    pub rules: StreamRules,
    /// How a doubted frame is checked (`[priority] plausibility`,
    /// `confirm`).
    pub checks: Checks,
}

impl Setting {
    /// The defaults of a config that sets nothing but `interval` (the
    /// recording's cadence): DESIGN.md's parameters, the gap rule at 10 x
    /// `interval`, events confirmed, the default plausibility bound.
    pub fn defaults(interval: Duration) -> Setting {
        Setting {
            rules: StreamRules {
                priority: PriorityParams::default(),
                stale_after: Some(interval.saturating_mul(10)),
            },
            checks: Checks {
                bound: Plausibility::default(),
                confirm: true,
            },
        }
    }

    /// These parameters with `baseline`.
    #[must_use]
    pub fn with_baseline(mut self, baseline: Baseline) -> Setting {
        self.rules.priority.baseline = baseline;
        self
    }

    /// The parameters in a line: what sets this setting apart.
    pub fn label(&self) -> String {
        let p = &self.rules.priority;
        format!(
            "threshold={} step={} deadband={}/{} baseline={} realtime_at={}",
            p.threshold,
            p.step,
            p.deadband.temperature,
            p.deadband.humidity,
            p.baseline.as_str(),
            p.realtime_at
        )
    }

    /// The priority parameters.
    pub fn params(&self) -> &PriorityParams {
        &self.rules.priority
    }
}

/// A reading that went real-time, with what it was measured against.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// `node/sensor` of its track.
    pub stream: String,
    /// Where it is in the input (CSV line or log seq).
    pub line: u64,
    /// When it was read (Unix ms).
    pub ts_ms: i64,
    /// The baseline it was measured against.
    pub before: Sample,
    /// Its values.
    pub after: Sample,
    /// Its priority.
    pub priority: u32,
}

impl Event {
    /// How far it moved, relative to the dead band of each channel: the
    /// larger of the two, so events of both channels sort together.
    fn size(&self, p: &PriorityParams) -> f64 {
        let t = (self.after.temperature - self.before.temperature).abs()
            / p.deadband.temperature.max(f64::MIN_POSITIVE);
        let h = (self.after.humidity - self.before.humidity).abs()
            / p.deadband.humidity.max(f64::MIN_POSITIVE);
        t.max(h)
    }
}

/// A row validation turned away, or replaced by its re-read.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rejected {
    /// `node/sensor` of its track.
    pub stream: String,
    /// Where it is in the input.
    pub line: u64,
    /// The `sensor_errors.kind` the agent would log.
    pub kind: String,
    /// What the agent would log as the detail.
    pub detail: String,
}

/// What one setting did to the counted rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The setting.
    pub setting: Setting,
    /// Readings scored (accepted by validation).
    pub readings: u64,
    /// Of those, the ones routed real-time.
    pub realtime: u64,
    /// Every real-time reading, biggest first (see [`Event`]): priority,
    /// then the size of the change.
    pub events: Vec<Event>,
    /// What validation turned away or replaced.
    pub rejected: Vec<Rejected>,
    /// Readings beyond the plausibility bound of the one before: the agent
    /// re-reads such a frame and keeps it only if the re-read agrees; a
    /// recording keeps them as they are.
    pub jumps: u64,
}

impl Outcome {
    /// The share of readings routed real-time (0 to 1).
    pub fn realtime_share(&self) -> f64 {
        if self.readings == 0 {
            0.0
        } else {
            self.realtime as f64 / self.readings as f64
        }
    }

    /// Real-time readings per day of the recording's span (`None` when it
    /// spans no time).
    pub fn events_per_day(&self, span_ms: i64) -> Option<f64> {
        (span_ms > 0).then(|| self.realtime as f64 * 86_400_000.0 / span_ms as f64)
    }
}

/// How a replayed row came out, for `--readings`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored<'a> {
    /// Its track.
    pub track: &'a Track,
    /// The row as recorded.
    pub row: &'a Row,
    /// Whether it is in the counted range.
    pub counted: bool,
    /// The sample scored (the re-read's, for a frame validation replaced)
    /// and its score; `None`: validation rejected it.
    pub score: Option<(Sample, crate::domain::Score)>,
}

/// Replays `recording` under `setting`: every track from its first row,
/// counting from its `counted_from`. `each` sees every row as it is scored.
pub fn replay(
    recording: &Recording,
    setting: &Setting,
    mut each: impl FnMut(Scored<'_>),
) -> Outcome {
    let mut out = Outcome {
        setting: *setting,
        readings: 0,
        realtime: 0,
        events: Vec::new(),
        rejected: Vec::new(),
        jumps: 0,
    };
    for track in &recording.tracks {
        let stream = track.name();
        let mut scorer = setting.rules.scorer(None);
        let range = track.range.unwrap_or(SensorRange::DHT22);
        for (i, row) in track.rows.iter().enumerate() {
            let counted = i >= track.counted_from;
            let accepted = if recording.validate {
                // A recording cannot be read again: the re-read of a doubted
                // frame gives what was recorded, as a sensor re-read a
                // moment later does for a real change. Jumps the agent
                // would have re-read are counted.
                let prev = scorer.prev();
                let mut take =
                    |_: Take| -> (i64, Result<Sample, ReadError>) { (row.ts_ms, Ok(row.sample)) };
                let (accepted, errors) =
                    read_validated(&mut take, &scorer, range, &setting.checks, &track.sensor);
                if counted {
                    out.rejected.extend(errors.into_iter().map(|e| Rejected {
                        stream: stream.clone(),
                        line: row.line,
                        kind: e.kind.as_str().to_string(),
                        detail: e.detail,
                    }));
                }
                let accepted = accepted.map(|(_, s)| s);
                if let (Some(prev), Some(s), true) = (prev, accepted, counted)
                    && !setting.checks.bound.allows(prev, s)
                {
                    out.jumps += 1;
                }
                accepted
            } else {
                Some(row.sample)
            };
            let Some(sample) = accepted else {
                each(Scored {
                    track,
                    row,
                    counted,
                    score: None,
                });
                continue;
            };
            let before = scorer.baseline();
            let score = scorer.score_at(sample, row.ts_ms);
            each(Scored {
                track,
                row,
                counted,
                score: Some((sample, score)),
            });
            if !counted {
                continue;
            }
            out.readings += 1;
            if score.route == Route::Realtime {
                out.realtime += 1;
                out.events.push(Event {
                    stream: stream.clone(),
                    line: row.line,
                    ts_ms: row.ts_ms,
                    // A reading that goes real-time was measured against
                    // something: `realtime_at = 0` sends a first one too.
                    before: before.unwrap_or(sample),
                    after: sample,
                    priority: score.priority,
                });
            }
        }
    }
    let p = *setting.params();
    out.events.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.size(&p).total_cmp(&a.size(&p)))
            .then(a.ts_ms.cmp(&b.ts_ms))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(baseline: Baseline) -> Setting {
        Setting::defaults(Duration::from_secs(15)).with_baseline(baseline)
    }

    fn recording(values: &[(f64, f64)], validate: bool) -> Recording {
        let rows = (0i64..)
            .zip(values)
            .map(|(i, &(t, h))| Row {
                line: u64::try_from(i).unwrap() + 2,
                ts_ms: i * 60_000,
                sample: Sample::new(t, h),
            })
            .collect();
        Recording {
            source: "test".into(),
            tracks: vec![Track {
                sensor: "lab".into(),
                rows,
                ..Track::default()
            }],
            validate,
            ..Recording::default()
        }
    }

    #[test]
    fn a_ramp_counts_only_with_the_reported_baseline() {
        let ramp: Vec<(f64, f64)> = (0..=80)
            .map(|i| (20.0 + 0.03 * f64::from(i), 50.0))
            .collect();
        let rec = recording(&ramp, true);
        let previous = replay(&rec, &setting(Baseline::Previous), |_| {});
        assert_eq!((previous.readings, previous.realtime), (81, 0));
        let reported = replay(&rec, &setting(Baseline::Reported), |_| {});
        assert_eq!(reported.realtime, 2);
        let first = reported
            .events
            .iter()
            .find(|e| e.line == 36)
            .expect("the first crossing, row 34 (line 36)");
        assert_eq!(first.before, Sample::new(20.0, 50.0));
        assert!((first.after.temperature - 21.02).abs() < 1e-9);
        assert_eq!(rec.span_ms(), 80 * 60_000);
        let per_day = reported.events_per_day(rec.span_ms()).unwrap();
        assert!((per_day - 2.0 * 1440.0 / 80.0).abs() < 1e-9, "{per_day}");
    }

    #[test]
    fn validation_rejects_what_the_agent_would_and_counts_the_rest() {
        // Row 3 is out of range; row 5 jumps 20 °C, which the agent would
        // re-read: a recording keeps it, and counts the jump there and back.
        let rec = recording(
            &[
                (20.0, 50.0),
                (20.1, 50.0),
                (120.0, 50.0),
                (20.2, 50.0),
                (40.0, 50.0),
                (20.3, 50.0),
            ],
            true,
        );
        let out = replay(&rec, &setting(Baseline::Previous), |_| {});
        let kinds: Vec<(u64, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.line, r.kind.as_str()))
            .collect();
        assert_eq!(kinds, vec![(4, "range")], "{:?}", out.rejected);
        assert!(out.rejected[0].detail.contains("120"), "{:?}", out.rejected);
        assert_eq!(
            out.readings, 5,
            "the out-of-range row is the only one left out"
        );
        assert_eq!(out.jumps, 2);
        assert_eq!(out.realtime, 2, "up to 40 °C and back");
    }

    #[test]
    fn logged_rows_are_scored_as_they_are_and_history_is_not_counted() {
        let mut rec = recording(&[(20.0, 50.0), (25.5, 50.0), (25.6, 50.0)], false);
        rec.tracks[0].counted_from = 1;
        let mut seen = Vec::new();
        let out = replay(&rec, &setting(Baseline::Previous), |s| {
            seen.push((s.row.line, s.counted, s.score.map(|(_, sc)| sc.priority)));
        });
        assert_eq!(out.readings, 2);
        assert_eq!(
            out.realtime, 1,
            "25.5 °C after 20 °C, the uncounted history"
        );
        assert_eq!(
            seen,
            vec![(2, false, Some(0)), (3, true, Some(5)), (4, true, Some(0))],
            "27.5 % weighs 5"
        );
    }
}
