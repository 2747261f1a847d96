//! Store insert throughput, one reading per transaction (the agent's
//! pattern, synchronous=FULL) and batched (goal: >= 100,000 rows/s).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgeprio::domain::{PerChannel, Reading, Route, Sample};
use edgeprio::store::{Access, AgentStatus, Store};

fn readings(from: u64, n: u64) -> Vec<Reading> {
    (from..from + n)
        .map(|seq| Reading {
            node: "bench".into(),
            sensor: format!("s{}", seq % 4),
            seq: seq / 4,
            ts_ms: 1_764_000_000_000 + i64::try_from(seq).expect("small") * 3750,
            sample: Sample::new(20.0 + (seq % 50) as f64 / 10.0, 50.0),
            weights: PerChannel {
                temperature: 0,
                humidity: 0,
            },
            priority: 0,
            route: Route::Batch,
            clock_synced: None,
        })
        .collect()
}

fn status() -> AgentStatus {
    AgentStatus {
        node: "bench".into(),
        running: true,
        pid: 1,
        version: "bench".into(),
        started_ms: 0,
        heartbeat_ms: 0,
        interval_ms: 15_000,
    }
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("store");

    // The agent's real pattern: one cycle = one transaction with one reading
    // per sensor plus the heartbeat, fsynced.
    let mut store = Store::open(&dir.path().join("cycle.db"), Access::Writer).expect("open");
    let mut next = 0;
    group.throughput(Throughput::Elements(4));
    group.bench_function("cycle_of_4_per_transaction", |b| {
        b.iter_batched(
            || {
                next += 4;
                readings(next - 4, 4)
            },
            |rows| store.commit_cycle(&rows, &[], &status()).expect("commit"),
            BatchSize::SmallInput,
        );
    });

    let mut store = Store::open(&dir.path().join("single.db"), Access::Writer).expect("open");
    let mut next = 0;
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_reading_per_transaction", |b| {
        b.iter_batched(
            || {
                next += 1;
                readings(next - 1, 1)
            },
            |rows| store.insert_readings(&rows).expect("insert"),
            BatchSize::SmallInput,
        );
    });

    let mut store = Store::open(&dir.path().join("batch.db"), Access::Writer).expect("open");
    let mut next = 0;
    group.throughput(Throughput::Elements(1000));
    group.bench_function("batched_1000_per_transaction", |b| {
        b.iter_batched(
            || {
                next += 1000;
                readings(next - 1000, 1000)
            },
            |rows| store.insert_readings(&rows).expect("insert"),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
