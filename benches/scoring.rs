//! Scoring throughput: the weight-priority algorithm on a realistic stream
//! (goal: >= 10 million readings/s on one core).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgeprio::domain::{PriorityParams, Sample, Scorer, check_range};

/// A climate that drifts with occasional jumps, so every branch of the
/// algorithm (deadband, loop, cap) is taken.
fn stream(n: usize) -> Vec<Sample> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut temperature = 22.0;
    let mut humidity = 55.0;
    (0..n)
        .map(|_| {
            // xorshift64: deterministic and dependency-free.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state % 1000) as f64 / 1000.0 - 0.5;
            let jump = if state.is_multiple_of(50) { 4.0 } else { 0.0 };
            temperature = (temperature + noise * 0.8 + jump).clamp(-40.0, 80.0);
            humidity = (humidity - noise * 3.0 - jump).clamp(0.0, 100.0);
            Sample::new(temperature, humidity)
        })
        .collect()
}

fn scoring(c: &mut Criterion) {
    let samples = stream(100_000);
    let mut group = c.benchmark_group("scoring");
    group.throughput(Throughput::Elements(samples.len() as u64));
    group.bench_function("score", |b| {
        b.iter(|| {
            let mut scorer = Scorer::new(PriorityParams::default(), None);
            let mut sum = 0u32;
            for s in &samples {
                sum += scorer.score(black_box(*s)).priority;
            }
            sum
        });
    });
    group.bench_function("validate+score", |b| {
        b.iter(|| {
            let mut scorer = Scorer::new(PriorityParams::default(), None);
            let mut sum = 0u32;
            for s in &samples {
                if let Ok(s) = check_range(black_box(*s)) {
                    sum += scorer.score(s).priority;
                }
            }
            sum
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
    targets = scoring
}
criterion_main!(benches);
