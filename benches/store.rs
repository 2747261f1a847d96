//! Store insert throughput, one reading per transaction (the agent's
//! pattern, synchronous=FULL) and batched (goal: >= 100,000 rows/s); and a
//! gateway's pattern: batches of 1,000 readings spread over 1,000
//! (node, sensor) streams, committed, then marked published by the outbox's
//! own connection, as the gateway does under a flood (its `SQLite` cost
//! without the broker's noise: `cargo bench --bench gateway` measures the
//! whole path).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgeprio::domain::{PerChannel, Reading, Route, Sample};
use edgeprio::store::{Access, Acked, AgentStatus, Assigned, GatewayRow, Store, Turns};

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
        burst: Vec::new(),
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

/// 1,000 readings, one for each of 50 nodes x 20 sensors, in a fixed
/// shuffled order (the order a flood's publishers interleave in), the
/// `round`-th of each stream.
fn gateway_batch(round: u64) -> Vec<GatewayRow> {
    (0..1000u64)
        .map(|i| {
            let stream = (i * 7919 + round * 104_729) % 1000;
            let mut reading = readings(round, 1).remove(0);
            reading.node = format!("node-{:03}", stream / 20);
            reading.sensor = format!("s{:02}", stream % 20);
            reading.seq = round;
            if i % 20 == 0 {
                reading.route = Route::Realtime;
                reading.priority = 3;
            }
            GatewayRow {
                reading,
                assigned: Assigned::default(),
            }
        })
        .collect()
}

/// One batch of a gateway's work: committed by its writer, read back from
/// the outbox and marked published (in messages of 20) by the publisher's
/// connection. Returns the last row id read.
fn gateway_round(
    store: &mut Store,
    outbox: &mut Store,
    status: &AgentStatus,
    round: u64,
    after: i64,
) -> i64 {
    store
        .commit_gateway(&gateway_batch(round), &[], status)
        .expect("commit");
    let read = outbox.outbox_of_all(after, 1000).expect("read the outbox");
    let acked: Vec<Acked> = read
        .rows
        .chunks(20)
        .map(|chunk| Acked {
            route: Route::Batch,
            ids: chunk.iter().map(|r| r.id).collect(),
            late: 0,
            at_ms: 1_764_000_000_000,
        })
        .collect();
    outbox.mark_published("gateway", &acked).expect("mark");
    read.last_id.expect("rows were committed")
}

fn gateway(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.db");
    let mut store = Store::open(&path, Access::Writer).expect("open");
    let mut outbox = Store::open(&path, Access::Outbox).expect("open the outbox");
    // As the gateway opens them: taking turns, checkpointed as a busy log.
    let turns = Turns::new();
    store.take_turns_with(turns.clone()).expect("turns");
    outbox.take_turns_with(turns).expect("turns");
    let mut status = status();
    status.node = "gateway".into();
    // A log that already holds 100 readings per stream.
    let (mut round, mut after) = (0, 0);
    while round < 100 {
        after = gateway_round(&mut store, &mut outbox, &status, round, after);
        round += 1;
    }
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1000));
    group.sample_size(20);
    group.bench_function("gateway_1000_over_1000_streams_commit_and_mark", |b| {
        b.iter(|| {
            after = gateway_round(&mut store, &mut outbox, &status, round, after);
            round += 1;
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
    targets = store, gateway
}
criterion_main!(benches);
