//! Dashboard figures (issue 5, "Performance"): with 1,000,000 readings in
//! the log, building the state of the 24 h window (goal <= 20 ms) and
//! rendering one frame (goal <= 5 ms), on two logs:
//!
//! - `realistic`: four sensors every 15 s, so 1M readings span 43 days;
//! - `dense`: all 1M readings inside the last 24 h.
//!
//! And a gateway's log (issue 13): the same 1M readings inside 24 h, from
//! 50 raw nodes of two sensors each, with the gateway's status row: the
//! state of every node (100 panels) and of one picked node.
//!
//! `cargo bench --bench dashboard` runs the full size; under `cargo test` a
//! log of 20,000 readings keeps the code working. The logs are built once
//! under cargo's target tmp dir and reused.

#[path = "support/dashlog.rs"]
mod dashlog;

use std::hint::black_box;
use std::path::Path;

use criterion::Criterion;
use dashlog::{LAST_MS, NODE, Shape};
use edgeprio::dashboard::{State, View, Window, load, render};
use edgeprio::domain::Reading;
use edgeprio::store::{Access, Store};

/// Raw nodes in the gateway's log, and sensors of each.
const RAW_NODES: i64 = 50;
const RAW_SENSORS: i64 = 2;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn open(path: &Path) -> Store {
    Store::open(path, Access::ReadOnly).expect("open read-only")
}

fn view(window: Window) -> View {
    View {
        window,
        ..View::default()
    }
}

fn bench_shape(c: &mut Criterion, shape: Shape, rows: i64) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dashlog::build(dir, shape, rows);
    let conn = open(&path);
    let now = LAST_MS + 5_000;
    let mut group = c.benchmark_group(format!("dashboard_{}", shape.name()));
    for window in [Window::Hour1, Window::Hour24] {
        group.bench_function(format!("load_{}", window.label()), |b| {
            b.iter(|| load(&conn, Some(NODE), black_box(now), view(window)).expect("load"));
        });
    }
    let state: State = load(&conn, Some(NODE), now, view(Window::Hour24)).expect("load");
    assert_eq!(
        state.total.total(),
        match shape {
            Shape::Dense => u64::try_from(rows).expect("positive"),
            Shape::Realistic => u64::try_from(rows.min(4 * 24 * 240)).expect("positive"),
        },
        "the 24 h window counts every reading in it"
    );
    for (w, h) in [(80, 24), (120, 40), (200, 60)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        group.bench_function(format!("render_{w}x{h}"), |b| {
            b.iter(|| {
                terminal
                    .draw(|f| render(f, black_box(&state)))
                    .map(|_| ())
                    .expect("draw");
            });
        });
    }
    group.finish();
}

/// The gateway's log of `rows` readings inside 24 h, built once: the
/// dense log's readings, each sensor `s` of a cycle becoming sensor
/// `s % 2` of node `esp-<n>`, all published but the newest 100.
fn gateway_log(dir: &Path, rows: i64) -> std::path::PathBuf {
    let path = dir.join(format!(
        "gateway-{rows}-published-v{}.db",
        edgeprio::store::SCHEMA_VERSION
    ));
    if path.exists() {
        return path;
    }
    let mut store = Store::open(&path, Access::Writer).expect("open the bench log");
    let streams = RAW_NODES * RAW_SENSORS;
    let cycles = rows / streams;
    let step = 24 * 3_600_000 / cycles;
    let mut batch: Vec<Reading> = Vec::with_capacity(40_000);
    for cycle in 0..cycles {
        for s in 0..streams {
            let base = dashlog::reading(
                cycle,
                s % RAW_SENSORS,
                LAST_MS - (cycles - 1 - cycle) * step,
            );
            batch.push(Reading {
                node: format!("esp-{:02}", s / RAW_SENSORS),
                ..base
            });
        }
        if batch.len() >= 40_000 {
            store.insert_readings(&batch).expect("insert");
            batch.clear();
        }
    }
    store.insert_readings(&batch).expect("insert");
    store
        .commit_cycle(&[], &[], &dashlog::status(LAST_MS))
        .expect("status");
    drop(store);
    // Published but the newest 100, as in the agent's logs.
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute(
            "UPDATE readings SET published_ms = ts_ms + 5 WHERE id <= ?1",
            [rows - 100],
        )
        .expect("publish");
    path
}

fn bench_gateway(c: &mut Criterion, rows: i64) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let conn = open(&gateway_log(dir, rows));
    let now = LAST_MS + 5_000;
    let mut group = c.benchmark_group("dashboard_gateway");
    for (name, node) in [("all_nodes", 0), ("one_node", 1)] {
        let view = View {
            node,
            ..view(Window::Hour24)
        };
        let state = load(&conn, None, now, view).expect("load");
        let panels = if node == 0 {
            RAW_NODES * RAW_SENSORS
        } else {
            RAW_SENSORS
        };
        assert_eq!(
            state.sensors.len(),
            usize::try_from(panels).expect("positive"),
            "a panel per (node, sensor) shown"
        );
        group.bench_function(format!("load_24h_{name}"), |b| {
            b.iter(|| load(&conn, None, black_box(now), view).expect("load"));
        });
    }
    group.finish();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rows = if full { dashlog::ROWS } else { 20_000 };
    let mut c = Criterion::default().configure_from_args();
    for shape in [Shape::Realistic, Shape::Dense] {
        bench_shape(&mut c, shape, rows);
    }
    bench_gateway(&mut c, rows);
    c.final_summary();
}
