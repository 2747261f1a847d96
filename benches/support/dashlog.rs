//! Builds the dashboard benchmarks' logs: `rows` readings (1,000,000 in a
//! full run) from four sensors, written through `Store` in batches, all
//! published but the newest 100, with a live agent's status row.

// Each bench uses its part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use edgeprio::domain::{PerChannel, Reading, Route, Sample};
use edgeprio::store::{Access, AgentStatus, Store};

/// Readings in a full run's logs.
pub const ROWS: i64 = 1_000_000;
/// Sensors in each log.
pub const SENSORS: i64 = 4;
/// The node.
pub const NODE: &str = "bench";
/// The last reading's time (Unix ms); the dashboard is loaded 5 s later.
pub const LAST_MS: i64 = 1_764_000_000_000;

/// How the readings are spread in time.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Four sensors every 15 s: 1M readings span 43 days, 24 h hold 23,040.
    Realistic,
    /// All the readings inside the last 24 h (for 1M, a reading every 86 ms).
    Dense,
}

impl Shape {
    /// Milliseconds between two cycles of the four sensors in a log of
    /// `rows` readings.
    pub fn step_ms(self, rows: i64) -> i64 {
        match self {
            Shape::Realistic => 15_000,
            Shape::Dense => 24 * 3_600_000 * SENSORS / rows,
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Realistic => "realistic",
            Shape::Dense => "dense",
        }
    }
}

/// A live agent's status row at `heartbeat_ms`.
pub fn status(heartbeat_ms: i64) -> AgentStatus {
    AgentStatus {
        node: NODE.into(),
        running: true,
        pid: 1,
        version: "bench".into(),
        started_ms: LAST_MS - 3_600_000,
        heartbeat_ms,
        interval_ms: 15_000,
        burst: Vec::new(),
    }
}

/// One cycle's reading of sensor `s`: a slow wave with a jump every 97th
/// cycle, which goes real-time.
pub fn reading(cycle: i64, s: i64, ts_ms: i64) -> Reading {
    let jump = cycle % 97 == 0;
    let t = 20.0 + (cycle % 200) as f64 / 40.0 + s as f64 + if jump { 6.0 } else { 0.0 };
    Reading {
        node: NODE.into(),
        sensor: format!("s{s}"),
        seq: u64::try_from(cycle).expect("positive"),
        ts_ms,
        sample: Sample::new(t, 40.0 + (cycle % 100) as f64 / 5.0),
        weights: PerChannel {
            temperature: if jump { 2 } else { 0 },
            humidity: 0,
        },
        priority: if jump { 2 } else { 0 },
        route: if jump { Route::Realtime } else { Route::Batch },
        clock_synced: None,
    }
}

/// Writes the log of `rows` readings of `shape` into `dir`, once: a log
/// of the same size, shape and schema is reused.
pub fn build(dir: &Path, shape: Shape, rows: i64) -> PathBuf {
    let path = dir.join(format!(
        "{}-{rows}-v{}.db",
        shape.name(),
        edgeprio::store::SCHEMA_VERSION
    ));
    if path.exists() {
        return path;
    }
    let mut store = Store::open(&path, Access::Writer).expect("open the bench log");
    let step = shape.step_ms(rows);
    let cycles = rows / SENSORS;
    let first_ms = LAST_MS - (cycles - 1) * step;
    let mut batch = Vec::with_capacity(40_000);
    for cycle in 0..cycles {
        for s in 0..SENSORS {
            batch.push(reading(cycle, s, first_ms + cycle * step));
        }
        if batch.len() >= 40_000 {
            store.insert_readings(&batch).expect("insert");
            batch.clear();
        }
    }
    store.insert_readings(&batch).expect("insert");
    store
        .commit_cycle(&[], &[], &status(LAST_MS))
        .expect("status");
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute(
        "UPDATE readings SET published_ms = ts_ms + 5 WHERE id <= ?1",
        [rows - 100],
    )
    .expect("publish");
    path
}
