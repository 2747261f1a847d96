//! `edgeprio tune`'s replay: a year of 1-minute readings (525,600 rows)
//! through validation and scoring, per setting (goal: well under a second),
//! and reading that year from a CSV file once.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgeprio::domain::{Baseline, Sample};
use edgeprio::tune::input::{self, Columns, Range};
use edgeprio::tune::{Recording, Row, Setting, Track, replay};

const YEAR: usize = 365 * 24 * 60;

/// A year of a room read once a minute: a daily heating cycle (slow ramps
/// of a few degrees), the DHT22's noise and 0.1 resolution, and now and
/// then a step (a window opened).
fn year() -> Vec<Row> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1000) as f64 / 1000.0 - 0.5
    };
    (0..YEAR)
        .map(|i| {
            let minute_of_day = (i % 1440) as f64;
            let heating = if (360.0..1320.0).contains(&minute_of_day) {
                2.4
            } else {
                0.0
            };
            let step = if i % 10_007 < 20 { -3.0 } else { 0.0 };
            let t = 19.0 + heating + step + noise() * 0.3;
            let h = 52.0 - heating * 1.6 - step + noise();
            Row {
                line: i as u64 + 2,
                ts_ms: 1_767_225_600_000 + i64::try_from(i).unwrap() * 60_000,
                sample: Sample::new((t * 10.0).round() / 10.0, (h * 10.0).round() / 10.0),
            }
        })
        .collect()
}

fn tune(c: &mut Criterion) {
    let rows = year();
    let recording = |validate| Recording {
        source: "year".into(),
        tracks: vec![Track {
            sensor: "room".into(),
            rows: rows.clone(),
            ..Track::default()
        }],
        validate,
        ..Recording::default()
    };
    let csv_like = recording(true);
    let log_like = recording(false);
    let mut group = c.benchmark_group("tune");
    group.sample_size(10);
    group.throughput(Throughput::Elements(YEAR as u64));
    for (name, rec, baseline) in [
        ("year/csv/previous", &csv_like, Baseline::Previous),
        ("year/csv/reported", &csv_like, Baseline::Reported),
        ("year/log/previous", &log_like, Baseline::Previous),
    ] {
        let s = Setting::defaults(Duration::from_mins(1)).with_baseline(baseline);
        group.bench_function(name, |b| {
            b.iter(|| replay(black_box(rec), &s, |_| {}).realtime);
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("year.csv");
    let mut text = String::from("ts_ms,temperature_c,humidity_pct\n");
    for r in &rows {
        writeln!(
            text,
            "{},{},{}",
            r.ts_ms, r.sample.temperature, r.sample.humidity
        )
        .unwrap();
    }
    std::fs::write(&path, text).unwrap();
    group.bench_function("year/read-csv", |b| {
        b.iter(|| {
            input::from_csv(&path, &Columns::default(), Range::default())
                .unwrap()
                .counted()
        });
    });
    group.finish();
}

// No plots: the package's plotters draws text with fonts it is given
// (src/plot.rs registers one), and criterion's charts are given none, so
// they would fail with FontUnavailable. The figures are in the output.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = tune
}
criterion_main!(benches);
