//! Simulated sensors: what the demo, the tests and the benchmarks read.

use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use super::{ReadError, Resume, Sensor};
use crate::config::{SimConfig, SimProfile};
use crate::domain::{Sample, check_range};

/// The paper's heater experiment, 15 s apart (see the file's notes).
const HEATER_CSV: &str = include_str!("../../assets/heater.csv");

/// A trace file that cannot be replayed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace {path}: {reason}; check the `trace` path in the config")]
    Unreadable {
        /// The trace file.
        path: PathBuf,
        /// What the OS or the CSV reader said.
        reason: String,
    },
    /// The header lacks a required column.
    #[error(
        "trace {path} has no `{column}` column; the first line must name the columns, \
         e.g. `temperature_c,humidity_pct`"
    )]
    MissingColumn {
        /// The trace file.
        path: PathBuf,
        /// The missing column name.
        column: &'static str,
    },
    /// A row that is not a pair of numbers.
    #[error(
        "trace {path} line {line}: {column} = {value:?} is not a number; \
         fix or delete that row (every row needs a temperature_c and a humidity_pct value)"
    )]
    BadValue {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number in the file.
        line: u64,
        /// The column holding the bad value.
        column: &'static str,
        /// The bad value as written.
        value: String,
    },
    /// A row no DHT22 could report: a row is one reading, replayed as it is.
    #[error(
        "trace {path} line {line}: {reason}; every row is replayed as one reading, \
         so it must be one a DHT22 can report: fix or delete that row"
    )]
    OutOfRange {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number in the file.
        line: u64,
        /// Which value is wrong and what is allowed.
        reason: String,
    },
    /// A row the sensor's calibration offset pushes out of range: replayed,
    /// it could only be a failed read, which would shift every later row
    /// against its seq.
    #[error(
        "trace {path} data row {row}: {reason} once the sensor's `offset` is added; every row \
         is replayed as one reading, so it must stay in range: change the `offset` or that row"
    )]
    CalibratedOutOfRange {
        /// The trace file (or the built-in heater replay).
        path: PathBuf,
        /// 1-based data row (the header is not counted).
        row: usize,
        /// Which calibrated value is wrong and what is allowed.
        reason: String,
    },
    /// No rows at all.
    #[error("trace {path} has no data rows; record at least one reading")]
    Empty {
        /// The trace file.
        path: PathBuf,
    },
}

/// The built-in heater replay.
pub fn heater_trace() -> Vec<Sample> {
    parse_trace(HEATER_CSV.as_bytes(), Path::new("assets/heater.csv"))
        .expect("the built-in heater trace is valid (tested)")
}

/// Loads a user's trace: a CSV file with a header naming `temperature_c` and
/// `humidity_pct`; other columns are ignored.
///
/// Opened without blocking and refused unless it is a regular file: a FIFO
/// put there after `check-config` would otherwise hang the start-up, deaf
/// to SIGTERM, until something writes to it.
pub fn load_trace(path: &Path) -> Result<Vec<Sample>, TraceError> {
    let unreadable = |reason: String| TraceError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let file = crate::config::open_nonblocking(path).map_err(|e| unreadable(e.to_string()))?;
    let kind = file
        .metadata()
        .map_err(|e| unreadable(e.to_string()))?
        .file_type();
    if !kind.is_file() {
        return Err(unreadable(format!(
            "it is not a regular file ({})",
            crate::config::file_kind(kind)
        )));
    }
    parse_trace(file, path)
}

fn parse_trace(input: impl std::io::Read, path: &Path) -> Result<Vec<Sample>, TraceError> {
    let unreadable = |e: csv::Error| TraceError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader.headers().map_err(unreadable)?.clone();
    let column = |name: &'static str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| TraceError::MissingColumn {
                path: path.to_path_buf(),
                column: name,
            })
    };
    let t_col = column("temperature_c")?;
    let h_col = column("humidity_pct")?;
    let mut samples = Vec::new();
    for record in reader.records() {
        let record = record.map_err(unreadable)?;
        let line = record.position().map_or(0, csv::Position::line);
        let value = |col: usize, name: &'static str| {
            let raw = record.get(col).unwrap_or("");
            raw.parse::<f64>().map_err(|_| TraceError::BadValue {
                path: path.to_path_buf(),
                line,
                column: name,
                value: raw.to_string(),
            })
        };
        let sample = Sample::new(
            value(t_col, "temperature_c")?,
            value(h_col, "humidity_pct")?,
        );
        check_range(sample).map_err(|r| TraceError::OutOfRange {
            path: path.to_path_buf(),
            line,
            reason: r.to_string(),
        })?;
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(samples)
}

/// A simulated DHT22.
#[derive(Debug)]
pub struct SimSensor {
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// A trace, one row per reading: a read takes the next row, a re-read
    /// the row read last. Every row is a valid reading (checked at load), so
    /// row `seq % rows` is the one logged with `seq`, and a restart resumes
    /// at the right row.
    Replay {
        /// What is replayed, for `describe`.
        what: String,
        /// The rows.
        samples: Vec<Sample>,
        /// The row the next read returns.
        next: usize,
    },
    Random(Box<RandomWalk>),
}

impl SimSensor {
    /// A simulated sensor for `cfg` that continues where `resume` left off:
    /// a replay continues at the sample after the last logged one, a random
    /// walk continues from the last logged value.
    pub fn open(cfg: &SimConfig, resume: Resume) -> Result<Self, TraceError> {
        let replay = |what: String, samples: Vec<Sample>| {
            let next = usize::try_from(resume.next_seq % samples.len() as u64)
                .expect("an index into the trace fits usize");
            Source::Replay {
                what,
                samples,
                next,
            }
        };
        let source = match &cfg.profile {
            SimProfile::Heater => replay("sim heater replay".into(), heater_trace()),
            SimProfile::Trace(path) => {
                replay(format!("sim trace {}", path.display()), load_trace(path)?)
            }
            SimProfile::Random => Source::Random(Box::new(RandomWalk::new(cfg, resume))),
        };
        Ok(Self { source })
    }
}

impl SimSensor {
    /// Refuses a replay with a row that `offset` pushes out of the DHT22's
    /// range (`calibrate` is how the offset is applied): every row must be
    /// one logged reading for the replay to resume at the right row.
    pub(crate) fn check_calibrated(
        &self,
        cfg: &SimConfig,
        calibrate: impl Fn(Sample) -> Sample,
    ) -> Result<(), TraceError> {
        let Source::Replay { samples, .. } = &self.source else {
            return Ok(());
        };
        for (i, row) in samples.iter().enumerate() {
            check_range(calibrate(*row)).map_err(|r| TraceError::CalibratedOutOfRange {
                path: match &cfg.profile {
                    SimProfile::Trace(path) => path.clone(),
                    _ => PathBuf::from("(the built-in heater replay)"),
                },
                row: i + 1,
                reason: r.to_string(),
            })?;
        }
        Ok(())
    }
}

impl Sensor for SimSensor {
    fn read(&mut self) -> Result<Sample, ReadError> {
        match &mut self.source {
            Source::Replay { samples, next, .. } => {
                let s = samples[*next];
                *next = (*next + 1) % samples.len();
                Ok(s)
            }
            Source::Random(walk) => walk.read(),
        }
    }

    fn reread(&mut self) -> Result<Sample, ReadError> {
        match &mut self.source {
            Source::Replay { samples, next, .. } => {
                Ok(samples[(*next + samples.len() - 1) % samples.len()])
            }
            Source::Random(walk) => walk.measure(),
        }
    }

    fn describe(&self) -> String {
        match &self.source {
            Source::Replay { what, samples, .. } => format!("{what} ({} samples)", samples.len()),
            Source::Random(w) => format!(
                "sim random walk (seed {}, {:.0} % failures)",
                w.seed,
                w.failure_rate * 100.0
            ),
        }
    }
}

/// An indoor climate that drifts, with occasional events (a door opens, a
/// heater starts) and the failures a DHT22 on a busy Linux box shows.
#[derive(Debug)]
struct RandomWalk {
    seed: u64,
    rng: ChaCha8Rng,
    failure_rate: f64,
    /// Where the climate settles between events.
    base: Sample,
    /// The true climate right now.
    state: Sample,
}

impl RandomWalk {
    fn new(cfg: &SimConfig, resume: Resume) -> Self {
        // Mixing in the seq gives a restarted agent fresh randomness instead
        // of replaying the same noise it logged before.
        let rng = ChaCha8Rng::seed_from_u64(
            cfg.seed ^ resume.next_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut base_rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let base = Sample::new(
            base_rng.random_range(17.0..26.0),
            base_rng.random_range(40.0..70.0),
        );
        let state = resume.last.unwrap_or(base);
        Self {
            seed: cfg.seed,
            rng,
            failure_rate: cfg.failure_rate,
            base,
            state,
        }
    }

    fn noise(&mut self, amplitude: f64) -> f64 {
        // The sum of two uniforms: a cheap bell shape.
        (self.rng.random_range(-1.0..1.0) + self.rng.random_range(-1.0..1.0)) * amplitude / 2.0
    }

    /// One interval: the climate moves, and is measured.
    fn read(&mut self) -> Result<Sample, ReadError> {
        self.advance();
        self.measure()
    }

    /// The climate moves whether or not the read succeeds.
    fn advance(&mut self) {
        let t = self.state.temperature
            + 0.08 * (self.base.temperature - self.state.temperature)
            + self.noise(0.15);
        let h = self.state.humidity
            + 0.08 * (self.base.humidity - self.state.humidity)
            + self.noise(0.6);
        self.state = Sample::new(t, h);
        if self.rng.random_bool(0.04) {
            let up = self.rng.random_bool(0.5);
            let dt = self.rng.random_range(1.5..4.0);
            let dh = self.rng.random_range(3.0..10.0);
            let sign = if up { 1.0 } else { -1.0 };
            self.state.temperature += sign * dt;
            self.state.humidity -= sign * dh;
        }
        self.state.temperature = self.state.temperature.clamp(-39.0, 79.0);
        self.state.humidity = self.state.humidity.clamp(1.0, 99.0);
    }

    /// One frame of the climate as it is now: sensor noise, and a failure
    /// at the configured rate. A re-read, 2 s after the read, is another
    /// frame of the same climate.
    fn measure(&mut self) -> Result<Sample, ReadError> {
        // The DHT22 reports tenths.
        let measured = Sample::new(
            round1(self.state.temperature + self.noise(0.1)),
            round1((self.state.humidity + self.noise(0.4)).clamp(0.0, 100.0)),
        );
        if !self.rng.random_bool(self.failure_rate) {
            return Ok(measured);
        }
        match self.rng.random_range(0..4) {
            0 => Err(ReadError::Timeout(
                "sensor did not pull the line low after the start pulse (simulated)".into(),
            )),
            1 => Err(ReadError::Checksum(
                "frame checksum 0x3c, computed 0x3d (simulated)".into(),
            )),
            // A frame of all ones: 6553.5 %RH, -3276.7 °C, which a checksum
            // over a stuck-high line can still match.
            2 => Ok(Sample::new(-3276.7, 6553.5)),
            // Bit 8 of the temperature word flipped together with a
            // checksum bit: +25.6 °C that passes the checksum.
            _ => Ok(Sample::new(measured.temperature + 25.6, measured.humidity)),
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PriorityParams, Route, Scorer, check_range};

    fn sim(profile: SimProfile, seed: u64, failure_rate: f64) -> SimConfig {
        SimConfig {
            profile,
            seed,
            failure_rate,
        }
    }

    #[test]
    fn heater_replay_matches_the_paper() {
        let trace = heater_trace();
        assert_eq!(trace[0], Sample::new(22.0, 61.0));
        assert_eq!(trace[7], Sample::new(25.0, 56.0));
        assert_eq!(trace[8], Sample::new(28.0, 48.0));
        // Scored from the start, only the paper's record 9 is an event.
        let mut scorer = Scorer::new(PriorityParams::default(), None);
        let realtime: Vec<usize> = trace
            .iter()
            .enumerate()
            .filter(|(_, s)| scorer.score(**s).route == Route::Realtime)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(realtime, vec![8]);
        // The loop back to the start is quiet too.
        assert_eq!(scorer.score(trace[0]).priority, 0);
    }

    #[test]
    fn replay_resumes_after_the_last_logged_sample() {
        let mut s = SimSensor::open(
            &sim(SimProfile::Heater, 0, 0.0),
            Resume {
                next_seq: 8 + 26,
                last: None,
            },
        )
        .unwrap();
        assert_eq!(s.read().unwrap(), Sample::new(28.0, 48.0));
    }

    #[test]
    fn a_reread_of_a_replay_returns_the_same_row() {
        let mut s = SimSensor::open(&sim(SimProfile::Heater, 0, 0.0), Resume::default()).unwrap();
        let trace = heater_trace();
        for (i, row) in trace.iter().enumerate().take(10) {
            assert_eq!(s.read().unwrap(), *row, "row {i}");
            assert_eq!(s.reread().unwrap(), *row, "re-read of row {i}");
            assert_eq!(s.reread().unwrap(), *row, "second re-read of row {i}");
        }
        assert_eq!(s.read().unwrap(), trace[10], "re-reads consumed no row");
    }

    #[test]
    fn a_trace_row_no_dht22_reports_is_refused_at_load() {
        let e = parse_trace(
            "temperature_c,humidity_pct\n21.0,50\n-3276.7,50\n".as_bytes(),
            Path::new("t.csv"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "trace t.csv line 3: temperature -3276.7 °C is outside the DHT22 range -40..80; \
             every row is replayed as one reading, so it must be one a DHT22 can report: \
             fix or delete that row"
        );
        let e = parse_trace(
            "temperature_c,humidity_pct\n21.0,NaN\n".as_bytes(),
            Path::new("t.csv"),
        )
        .unwrap_err();
        assert!(matches!(e, TraceError::OutOfRange { line: 2, .. }), "{e}");
    }

    #[test]
    fn random_walk_is_reproducible_and_mostly_plausible() {
        let cfg = sim(SimProfile::Random, 7, 0.0);
        let mut a = SimSensor::open(&cfg, Resume::default()).unwrap();
        let mut b = SimSensor::open(&cfg, Resume::default()).unwrap();
        let mut scorer = Scorer::new(PriorityParams::default(), None);
        let mut events = 0;
        for _ in 0..2000 {
            let x = a.read().unwrap();
            assert_eq!(Ok(x), b.read());
            assert!(check_range(x).is_ok(), "{x:?}");
            if scorer.score(x).route == Route::Realtime {
                events += 1;
            }
        }
        // Events happen (the demo shows both routes), but they are the exception.
        assert!((20..400).contains(&events), "{events} events in 2000 reads");
    }

    #[test]
    fn a_reread_of_the_random_walk_measures_the_same_climate() {
        let cfg = sim(SimProfile::Random, 7, 0.0);
        let mut s = SimSensor::open(&cfg, Resume::default()).unwrap();
        for _ in 0..500 {
            let x = s.read().unwrap();
            let again = s.reread().unwrap();
            // Only the sensor noise differs (under 0.1 °C / 0.4 %RH each
            // way, then rounded to tenths), not the climate: a climate
            // step moves it by up to 4 °C / 10 %RH.
            assert!(
                (again.temperature - x.temperature).abs() < 0.3 + 1e-9,
                "{x:?} {again:?}"
            );
            assert!(
                (again.humidity - x.humidity).abs() < 0.9 + 1e-9,
                "{x:?} {again:?}"
            );
        }
    }

    #[test]
    fn random_walk_injects_every_failure_kind_at_the_configured_rate() {
        let mut s = SimSensor::open(&sim(SimProfile::Random, 1, 0.2), Resume::default()).unwrap();
        let (mut timeouts, mut checksums, mut ranges, mut spikes, mut ok) = (0, 0, 0, 0, 0);
        let mut last = None;
        for _ in 0..5000 {
            match s.read() {
                Err(ReadError::Timeout(_)) => timeouts += 1,
                Err(ReadError::Checksum(_)) => checksums += 1,
                Err(ReadError::Io(_) | ReadError::Range(_)) => {
                    unreachable!("the simulation reports ranges as values, never io errors")
                }
                Ok(x) if check_range(x).is_err() => ranges += 1,
                Ok(x)
                    if last
                        .is_some_and(|l: Sample| (x.temperature - l.temperature).abs() > 15.0) =>
                {
                    spikes += 1;
                }
                Ok(x) => {
                    ok += 1;
                    last = Some(x);
                }
            }
        }
        let failures = timeouts + checksums + ranges + spikes;
        assert!(
            (800..1200).contains(&failures),
            "{failures} failures in 5000 reads at 20 %"
        );
        for (kind, n) in [
            ("timeout", timeouts),
            ("checksum", checksums),
            ("range", ranges),
            ("spike", spikes),
        ] {
            assert!(n > 150, "{kind}: {n}");
        }
        assert!(ok > 3500);
    }

    #[test]
    fn a_fifo_trace_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("t.csv");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        // No writer ever opens it: a blocking open would wait forever.
        let e = load_trace(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
        let e = load_trace(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }

    #[test]
    fn trace_errors_name_line_column_and_value() {
        let e = parse_trace(
            "temperature_c,humidity_pct\n21.0,50\n21.x,50\n".as_bytes(),
            Path::new("t.csv"),
        )
        .unwrap_err();
        assert_eq!(
            e,
            TraceError::BadValue {
                path: "t.csv".into(),
                line: 3,
                column: "temperature_c",
                value: "21.x".into()
            }
        );
        let e =
            parse_trace("temp,humidity_pct\n21,50\n".as_bytes(), Path::new("t.csv")).unwrap_err();
        assert!(matches!(
            e,
            TraceError::MissingColumn {
                column: "temperature_c",
                ..
            }
        ));
        let e = parse_trace(
            "temperature_c,humidity_pct\n".as_bytes(),
            Path::new("t.csv"),
        )
        .unwrap_err();
        assert!(matches!(e, TraceError::Empty { .. }));
        let e = parse_trace(
            "temperature_c,humidity_pct\n21,50\n22\n".as_bytes(),
            Path::new("t.csv"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("t.csv"), "{e}");
    }

    #[test]
    fn trace_ignores_extra_columns() {
        let t = parse_trace(
            "time,temperature_c,note,humidity_pct\n10:00,21.5,x,40.5\n".as_bytes(),
            Path::new("t.csv"),
        )
        .unwrap();
        assert_eq!(t, vec![Sample::new(21.5, 40.5)]);
    }
}
