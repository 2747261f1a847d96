//! Dashboard figures (issue 5, "Performance"): with 1,000,000 readings in
//! the log, building the state of the 24 h window (goal <= 20 ms) and
//! rendering one frame (goal <= 5 ms), on two logs:
//!
//! - `realistic`: four sensors every 15 s, so 1M readings span 43 days;
//! - `dense`: all 1M readings inside the last 24 h.
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
use edgeprio::store::{Access, Store};
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rows = if full { dashlog::ROWS } else { 20_000 };
    let mut c = Criterion::default().configure_from_args();
    for shape in [Shape::Realistic, Shape::Dense] {
        bench_shape(&mut c, shape, rows);
    }
    c.final_summary();
}
