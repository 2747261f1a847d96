//! What `tune` replays: the agent's log, or a CSV file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{Problem, Recording, Row, Track};
use crate::domain::{ErrorKind, Sample};
use crate::store::{ReadingFilter, Store};

/// The part of the input to count: rows from `since_ms` on and before
/// `until_ms` (Unix ms). Earlier rows are still replayed, as history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// Rows at or after this time.
    pub since_ms: Option<i64>,
    /// Rows before this time.
    pub until_ms: Option<i64>,
}

impl Range {
    fn before_end(&self, ts_ms: i64) -> bool {
        self.until_ms.is_none_or(|u| ts_ms < u)
    }

    fn first_counted(&self, rows: &[Row]) -> usize {
        self.since_ms
            .map_or(0, |s| rows.partition_point(|r| r.ts_ms < s))
    }
}

/// Why an input cannot be replayed at all (a bad row is a [`Problem`],
/// and the rest is replayed).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file cannot be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The header lacks a column the replay needs.
    #[error(
        "{path} has no column {column:?} (its columns: {header}); name the right one with {flag}"
    )]
    MissingColumn {
        /// The file.
        path: String,
        /// The column looked for.
        column: String,
        /// The columns it has.
        header: String,
        /// The flag that names it.
        flag: &'static str,
    },
    /// Nothing to replay in the chosen part.
    #[error("{0}")]
    Empty(String),
    /// The log could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Which columns of a CSV hold what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The temperature (°C).
    pub temperature: String,
    /// The relative humidity (%).
    pub humidity: String,
    /// The time of each row; `None`: `ts_ms` if there is one, else rows are
    /// `interval` apart.
    pub time: Option<String>,
    /// The spacing of rows without a time.
    pub interval: Duration,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            temperature: "temperature_c".into(),
            humidity: "humidity_pct".into(),
            time: None,
            interval: Duration::from_secs(15),
        }
    }
}

/// How a time column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeUnit {
    /// Unix (or elapsed) milliseconds: a column whose name ends in `_ms`.
    Millis,
    /// Seconds: a column whose name ends in `_s`.
    Seconds,
    /// Numbers of at least 10^11 are milliseconds, smaller ones seconds;
    /// anything else an RFC 3339 time.
    Guess,
}

impl TimeUnit {
    fn of(column: &str) -> Self {
        if column.ends_with("_ms") {
            TimeUnit::Millis
        } else if column.ends_with("_s") {
            TimeUnit::Seconds
        } else {
            TimeUnit::Guess
        }
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "finite and within ±10^15 ms, checked first"
    )]
    fn parse(self, text: &str) -> Result<i64, String> {
        let number = text.parse::<f64>().ok().filter(|v| v.is_finite());
        let ms = match (self, number) {
            (TimeUnit::Millis, Some(v)) => v,
            (TimeUnit::Guess, Some(v)) if v.abs() >= 1e11 => v,
            (TimeUnit::Seconds | TimeUnit::Guess, Some(v)) => v * 1000.0,
            (TimeUnit::Guess, None) => {
                let t = humantime::parse_rfc3339_weak(text)
                    .map_err(|_| format!("{text:?} is neither a number nor an RFC 3339 time"))?;
                let ms = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| format!("{text:?} is before 1970"))?
                    .as_millis();
                return i64::try_from(ms).map_err(|_| format!("{text:?} is too far ahead"));
            }
            (_, None) => return Err(format!("{text:?} is not a number")),
        };
        if ms.abs() > 1e15 {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(ms.round() as i64)
    }
}

/// Reads a CSV file: a header naming the columns, then one reading per
/// row. Rows whose values do not parse, or whose time goes back, are
/// [`Problem`]s and left out; the rest is replayed. A `node` or `sensor`
/// column (as `edgeprio query --format csv` writes) splits the rows into
/// one track per stream.
pub fn from_csv(path: &Path, columns: &Columns, range: Range) -> Result<Recording, InputError> {
    let name = path.display().to_string();
    let unreadable = |reason: String| InputError::Unreadable {
        path: name.clone(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 16, file));
    let header = reader
        .headers()
        .map_err(|e| unreadable(e.to_string()))?
        .clone();
    let find = |column: &str, flag: &'static str| {
        header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| InputError::MissingColumn {
                path: name.clone(),
                column: column.to_string(),
                header: header.iter().collect::<Vec<_>>().join(","),
                flag,
            })
    };
    let t_col = find(&columns.temperature, "--temperature-column")?;
    let h_col = find(&columns.humidity, "--humidity-column")?;
    let time = match &columns.time {
        Some(c) => Some((find(c, "--time-column")?, TimeUnit::of(c), c.clone())),
        None => header
            .iter()
            .position(|h| h == "ts_ms")
            .map(|i| (i, TimeUnit::Millis, "ts_ms".to_string())),
    };
    let layout = Layout {
        temperature: (t_col, columns.temperature.as_str()),
        humidity: (h_col, columns.humidity.as_str()),
        time: time.as_ref().map(|(i, unit, c)| (*i, *unit, c.as_str())),
        node: header.iter().position(|h| h == "node"),
        sensor: header.iter().position(|h| h == "sensor"),
        step_ms: i64::try_from(columns.interval.as_millis()).unwrap_or(i64::MAX),
    };
    let mut tracks: BTreeMap<(String, String), Vec<Row>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut placed: i64 = 0;
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                problems.push(Problem {
                    line,
                    column: None,
                    message: e.to_string(),
                });
                continue;
            }
        }
        let line = record.position().map_or(line, csv::Position::line);
        match layout.row(&record, line, placed, &tracks) {
            Ok((key, row)) => {
                placed += 1;
                if range.before_end(row.ts_ms) {
                    tracks.entry(key).or_default().push(row);
                }
            }
            Err(p) => problems.push(p),
        }
    }
    let tracks = tracks
        .into_iter()
        .map(|((node, sensor), rows)| Track {
            counted_from: range.first_counted(&rows),
            node,
            sensor,
            range: None,
            rows,
        })
        .collect();
    Ok(Recording {
        source: name,
        tracks,
        validate: true,
        problems,
        logged_errors: Vec::new(),
    })
}

/// Where a CSV's values are.
struct Layout<'c> {
    /// Column index and name of the temperature.
    temperature: (usize, &'c str),
    /// Column index and name of the humidity.
    humidity: (usize, &'c str),
    /// Column index, unit and name of the time, if there is one.
    time: Option<(usize, TimeUnit, &'c str)>,
    /// The `node` column, if any.
    node: Option<usize>,
    /// The `sensor` column, if any.
    sensor: Option<usize>,
    /// The spacing of rows without a time (ms).
    step_ms: i64,
}

impl Layout<'_> {
    /// The stream and row of `record` at `line`, the `placed`-th good row
    /// (its time when the file has none), or what is wrong with it; a time
    /// before the last row of its stream in `tracks` is wrong.
    fn row(
        &self,
        record: &csv::StringRecord,
        line: u64,
        placed: i64,
        tracks: &BTreeMap<(String, String), Vec<Row>>,
    ) -> Result<((String, String), Row), Problem> {
        let bad = |column: &str, message: String| Problem {
            line,
            column: Some(column.to_string()),
            message,
        };
        let number = |(i, column): (usize, &str)| {
            let text = record.get(i).unwrap_or("");
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(column, format!("{text:?} is not a number")))
        };
        let t = number(self.temperature)?;
        let h = number(self.humidity)?;
        let ts_ms = match self.time {
            Some((i, unit, column)) => unit
                .parse(record.get(i).unwrap_or(""))
                .map_err(|e| bad(column, e))?,
            None => placed.saturating_mul(self.step_ms),
        };
        let key = (
            self.node
                .and_then(|i| record.get(i))
                .unwrap_or("")
                .to_string(),
            self.sensor
                .and_then(|i| record.get(i))
                .unwrap_or("")
                .to_string(),
        );
        if let Some(last) = tracks.get(&key).and_then(|rows| rows.last())
            && ts_ms < last.ts_ms
        {
            let column = self.time.map_or("", |t| t.2);
            return Err(bad(
                column,
                format!(
                    "the time goes backwards: {} is before line {}'s {}; sort the file by time",
                    crate::domain::rfc3339_ms(ts_ms),
                    last.line,
                    crate::domain::rfc3339_ms(last.ts_ms)
                ),
            ));
        }
        Ok((
            key,
            Row {
                line,
                ts_ms,
                sample: Sample::new(t, h),
            },
        ))
    }
}

/// Reads the agent's log: every reading of `node` (every node when
/// `None`), of `sensor` or every sensor, before `range.until_ms`, one
/// track per (node, sensor) in seq order (the order the agent scored
/// them); and the failed reads it logged in the range.
pub fn from_log(
    store: &Store,
    node: Option<&str>,
    sensor: Option<&str>,
    range: Range,
) -> Result<Recording, InputError> {
    let rows = store.readings(&ReadingFilter {
        node: node.map(str::to_string),
        sensor: sensor.map(str::to_string),
        until_ms: range.until_ms,
        ..ReadingFilter::default()
    })?;
    let mut tracks: BTreeMap<(String, String), Vec<(u64, Row)>> = BTreeMap::new();
    for stored in rows {
        let r = stored.reading;
        tracks.entry((r.node, r.sensor)).or_default().push((
            r.seq,
            Row {
                line: r.seq,
                ts_ms: r.ts_ms,
                sample: r.sample,
            },
        ));
    }
    let tracks = tracks
        .into_iter()
        .map(|((node, sensor), mut rows)| {
            rows.sort_by_key(|(seq, _)| *seq);
            let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
            // Rows are in seq order, and a clock that went back puts an
            // earlier time after a later one: count from the first row of
            // the range on.
            let counted_from = range.since_ms.map_or(0, |s| {
                rows.iter().position(|r| r.ts_ms >= s).unwrap_or(rows.len())
            });
            Track {
                node,
                sensor,
                range: None,
                rows,
                counted_from,
            }
        })
        .collect();
    let mut errors: BTreeMap<&'static str, (ErrorKind, u64)> = BTreeMap::new();
    for e in store.sensor_errors(node, range.since_ms.unwrap_or(i64::MIN))? {
        if range.before_end(e.ts_ms) && sensor.is_none_or(|s| s == e.sensor) {
            errors.entry(e.kind.as_str()).or_insert((e.kind, 0)).1 += 1;
        }
    }
    Ok(Recording {
        source: store.path().display().to_string(),
        tracks,
        validate: false,
        problems: Vec::new(),
        logged_errors: errors.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str, columns: &Columns) -> Result<Recording, InputError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, text).unwrap();
        from_csv(&path, columns, Range::default())
    }

    #[test]
    fn a_csv_without_times_is_spaced_by_the_interval() {
        let rec = csv(
            "temperature_c,humidity_pct\n20,50\n20.5,51\n",
            &Columns::default(),
        )
        .unwrap();
        let rows = &rec.tracks[0].rows;
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[0].ts_ms), (2, 0));
        assert_eq!((rows[1].line, rows[1].ts_ms), (3, 15_000));
        assert!(rec.validate && rec.problems.is_empty());
    }

    #[test]
    fn bad_rows_are_named_and_the_rest_is_kept() {
        let rec = csv(
            "t,h,when\n20,50,2026-01-01T00:00:00Z\nwarm,50,2026-01-01T00:01:00Z\n\
             21,50,2026-01-01T00:02:00Z\n22,,2026-01-01T00:03:00Z\n\
             23,50,2025-12-31T00:00:00Z\n24,50,yesterday\n25,50,1767225840\n",
            &Columns {
                temperature: "t".into(),
                humidity: "h".into(),
                time: Some("when".into()),
                ..Columns::default()
            },
        )
        .unwrap();
        let lines: Vec<u64> = rec.tracks[0].rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 4, 8], "{:?}", rec.problems);
        let problems: Vec<(u64, Option<&str>)> = rec
            .problems
            .iter()
            .map(|p| (p.line, p.column.as_deref()))
            .collect();
        assert_eq!(
            problems,
            vec![
                (3, Some("t")),
                (5, Some("h")),
                (6, Some("when")),
                (7, Some("when"))
            ]
        );
        assert!(
            rec.problems[2].message.contains("backwards"),
            "{}",
            rec.problems[2]
        );
        assert!(
            rec.problems[3].message.contains("yesterday"),
            "{}",
            rec.problems[3]
        );
        // 1767225840 s is 2026-01-01T00:04:00Z.
        assert_eq!(rec.tracks[0].rows[2].ts_ms, 1_767_225_840_000);
    }

    #[test]
    fn a_missing_column_names_itself_the_header_and_the_flag() {
        let e = csv("temp,humidity_pct\n20,50\n", &Columns::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("\"temperature_c\"")
                && text.contains("temp,humidity_pct")
                && text.contains("--temperature-column"),
            "{text}"
        );
    }

    #[test]
    fn query_csv_splits_into_streams_and_the_range_counts_from_since() {
        let text = "node,sensor,ts_ms,temperature_c,humidity_pct\n\
                    pi,a,1000,20,50\npi,b,1000,30,40\npi,a,2000,21,50\npi,a,3000,22,50\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.csv");
        std::fs::write(&path, text).unwrap();
        let rec = from_csv(
            &path,
            &Columns::default(),
            Range {
                since_ms: Some(2000),
                until_ms: Some(3000),
            },
        )
        .unwrap();
        let names: Vec<String> = rec.tracks.iter().map(Track::name).collect();
        assert_eq!(names, vec!["pi/a", "pi/b"]);
        assert_eq!(rec.tracks[0].rows.len(), 2, "the row at until is left out");
        assert_eq!(rec.tracks[0].counted().len(), 1);
        assert_eq!(rec.tracks[1].counted().len(), 0);
        assert_eq!(rec.counted(), 1);
    }
}
