//! The batch collector's writes into a local `PostgreSQL` (issue 13,
//! "Performance": goal >= 50,000 readings/s on a 2-core machine), with the
//! server's default durability (fsync on, `synchronous_commit` on):
//!
//! - `PostgresSink::store` in batches (binary COPY into a temporary table,
//!   then `INSERT ... SELECT ... ON CONFLICT DO NOTHING`), one collector and
//!   two collectors splitting the route;
//! - for comparison, the other way the issue names: multi-row `INSERT ...
//!   VALUES ... ON CONFLICT DO NOTHING`, chunked under the 65,535-parameter
//!   limit, into the same table;
//! - the real-time route: one reading per call.
//!
//! `cargo bench --bench postgres_sink` runs the full sizes; under `cargo
//! test` a small smoke version runs so the code keeps working. Needs the
//! `PostgreSQL` server binaries (scripts/test installs them).

use std::fmt::Write as _;
use std::time::Instant;

use edgeprio::collect::{PostgresSink, Sink};
use edgeprio::domain::{LogId, PerChannel, Reading, Received, Route, Sample};
use tokio_postgres::types::ToSql;

#[path = "../tests/common/postgres.rs"]
mod postgres;
use postgres::Postgres;

/// `count` distinct readings from 50 nodes of 4 sensors each, in the order
/// a batch collector receives them (one node's batch after another).
fn readings(count: usize, log: u64) -> Vec<Received> {
    (0..count)
        .map(|i| {
            let stream = i % 200;
            let seq = (i / 200) as u64;
            Received {
                reading: Reading {
                    node: format!("node-{:02}", stream / 4),
                    sensor: format!("s{}", stream % 4),
                    seq,
                    ts_ms: 1_767_225_600_000 + i64::try_from(seq).expect("small") * 15_000,
                    sample: Sample::new(20.0 + (i % 50) as f64 / 10.0, 40.0 + (i % 30) as f64),
                    weights: PerChannel {
                        temperature: 0,
                        humidity: 0,
                    },
                    priority: 0,
                    route: Route::Batch,
                    clock_synced: None,
                },
                log: LogId::new(log),
                late: false,
                resent: false,
            }
        })
        .collect()
}

async fn count(url: &str) -> usize {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let n: i64 = c
        .query_one("SELECT count(*) FROM readings", &[])
        .await
        .expect("count")
        .get(0);
    usize::try_from(n).expect("a count is not negative")
}

/// One collector storing `total` readings in calls of `batch`.
async fn sink_batches(pg: &Postgres, total: usize, batch: usize, log: u64) {
    let mut sink = PostgresSink::connect(&pg.url()).await.expect("connect");
    let all = readings(total, log);
    let before = count(&pg.url()).await;
    let start = Instant::now();
    for chunk in all.chunks(batch) {
        let s = sink.store(chunk, 1).await.expect("store");
        assert_eq!(s.inserted, chunk.len() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(count(&pg.url()).await - before, total);
    println!(
        "PostgresSink (COPY), 1 collector, batches of {batch}: {total} readings in {secs:.2} s = {:.0} readings/s",
        total as f64 / secs
    );
}

/// Two collectors, each storing half of the route (a shared subscription).
async fn two_sinks(pg: &Postgres, total: usize, batch: usize, log: u64) {
    let mut a = PostgresSink::connect(&pg.url()).await.expect("connect");
    let mut b = PostgresSink::connect(&pg.url()).await.expect("connect");
    let all = readings(total, log);
    let (left, right) = all.split_at(total / 2);
    let before = count(&pg.url()).await;
    let start = Instant::now();
    let (x, y) = tokio::join!(
        store_all(&mut a, left, batch),
        store_all(&mut b, right, batch)
    );
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(x + y, total as u64);
    assert_eq!(count(&pg.url()).await - before, total);
    println!(
        "PostgresSink (COPY), 2 collectors, batches of {batch}: {total} readings in {secs:.2} s = {:.0} readings/s",
        total as f64 / secs
    );
}

async fn store_all(sink: &mut PostgresSink, part: &[Received], batch: usize) -> u64 {
    let mut inserted = 0;
    for chunk in part.chunks(batch) {
        inserted += sink.store(chunk, 1).await.expect("store").inserted;
    }
    inserted
}

/// The alternative: multi-row INSERT ... VALUES, chunked so a statement
/// has at most 65,535 parameters (15 per reading: 4,369 readings).
async fn multi_row_insert(pg: &Postgres, total: usize, batch: usize, log: u64) {
    // The sink creates the schema.
    drop(PostgresSink::connect(&pg.url()).await.expect("connect"));
    let (mut c, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let all = readings(total, log);
    let before = count(&pg.url()).await;
    let per_statement = 65_535 / 15;
    let start = Instant::now();
    for call in all.chunks(batch) {
        let tx = c.transaction().await.expect("begin");
        for chunk in call.chunks(per_statement) {
            let mut sql = String::from(
                "INSERT INTO readings (node, sensor, log, seq, ts_ms, temperature_c, humidity_pct, \
                 weight_temperature, weight_humidity, priority, route, clock_synced, late, resent, \
                 received_ms) VALUES ",
            );
            let owned: Vec<(String, i64, i32, &'static str)> = chunk
                .iter()
                .map(|r| {
                    (
                        r.log.to_string(),
                        i64::try_from(r.reading.seq).expect("small"),
                        0_i32,
                        r.reading.route.as_str(),
                    )
                })
                .collect();
            let received_ms = 1_i64;
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 15);
            for (i, (r, o)) in chunk.iter().zip(&owned).enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                let b = i * 15;
                sql.push('(');
                for k in 1..=15 {
                    if k > 1 {
                        sql.push(',');
                    }
                    let _ = write!(sql, "${}", b + k);
                }
                sql.push(')');
                params.extend_from_slice(&[
                    &r.reading.node,
                    &r.reading.sensor,
                    &o.0,
                    &o.1,
                    &r.reading.ts_ms,
                    &r.reading.sample.temperature,
                    &r.reading.sample.humidity,
                    &o.2,
                    &o.2,
                    &o.2,
                    &o.3,
                    &r.reading.clock_synced,
                    &r.late,
                    &r.resent,
                    &received_ms,
                ]);
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            tx.execute(&sql, &params).await.expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(count(&pg.url()).await - before, total);
    println!(
        "multi-row INSERT (for comparison), 1 client, batches of {batch}: {total} readings in {secs:.2} s = {:.0} readings/s",
        total as f64 / secs
    );
}

/// The real-time route: one reading per call, each its own commit.
async fn one_by_one(pg: &Postgres, total: usize, log: u64) {
    let mut sink = PostgresSink::connect(&pg.url()).await.expect("connect");
    let all = readings(total, log);
    let start = Instant::now();
    for r in &all {
        sink.store(std::slice::from_ref(r), 1).await.expect("store");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "PostgresSink, one reading per call (real-time route): {total} readings in {secs:.2} s = {:.0} readings/s",
        total as f64 / secs
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // PostgreSQL's defaults: every commit is synced, as in production.
    let pg = Postgres::start_with(&[]);
    let (total, realtime) = if full { (500_000, 2_000) } else { (5_000, 50) };
    rt.block_on(async {
        // Each run uses a log of its own, so every reading is new.
        sink_batches(&pg, total, 5_000, 1).await;
        multi_row_insert(&pg, total, 5_000, 2).await;
        sink_batches(&pg, total, 1_000, 3).await;
        two_sinks(&pg, total, 5_000, 4).await;
        one_by_one(&pg, realtime, 5).await;
    });
}
