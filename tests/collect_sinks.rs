//! The collectors' databases (`edgeprio collect --db`): the `SQLite` sink
//! on a temporary file, the `PostgreSQL` sink on a real server started per
//! test (tests/common/postgres.rs). Both store every reading once per
//! (node, sensor, log, seq) and count what they skipped.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use edgeprio::collect::postgres::SCHEMA_VERSION as PG_SCHEMA_VERSION;
use edgeprio::collect::{PostgresSink, Sink, SinkError, SqliteSink, Stored};
use edgeprio::domain::{LogId, PerChannel, Reading, Received, Route, Sample};
use rusqlite::Connection;

use common::postgres::{PASSWORD, Postgres, free_port};

/// A reading of `sensor` on node `pi` in log 1, `seq`, at a time derived
/// from the seq.
fn received(sensor: &str, seq: u64) -> Received {
    received_in(LogId::new(1), sensor, seq)
}

fn received_in(log: LogId, sensor: &str, seq: u64) -> Received {
    let seq_ms = i64::try_from(seq).unwrap();
    Received {
        reading: Reading {
            node: "pi".into(),
            sensor: sensor.into(),
            seq,
            ts_ms: 1_767_225_600_123 + seq_ms * 15_000,
            sample: Sample::new(21.5 + (seq % 10) as f64 / 10.0, 48.0),
            weights: PerChannel {
                temperature: 2,
                humidity: 1,
            },
            priority: 2,
            route: if seq.is_multiple_of(2) {
                Route::Realtime
            } else {
                Route::Batch
            },
            clock_synced: if seq == 3 { Some(false) } else { None },
        },
        log,
        late: seq == 5,
        resent: seq == 7,
    }
}

fn batch(sensor: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<Received> {
    seqs.into_iter().map(|s| received(sensor, s)).collect()
}

fn stored(inserted: u64, duplicates: u64) -> Stored {
    Stored {
        inserted,
        duplicates,
    }
}

// ---- SQLite ----

/// One row of a collector's file: `ts_ms`, `temperature_c`, `humidity_pct`,
/// `weight_temperature`, `weight_humidity`, `priority`, `route`,
/// `clock_synced`, `late`, `resent`, `received_ms`.
type SqliteRow = (
    i64,
    f64,
    f64,
    i64,
    i64,
    i64,
    String,
    Option<i64>,
    i64,
    i64,
    i64,
);

/// (node, sensor, log, seq) of every row of a collector's file.
fn sqlite_keys(db: &Path) -> Vec<(String, String, String, i64)> {
    let c = Connection::open(db).unwrap();
    let mut stmt = c
        .prepare("SELECT node, sensor, log, seq FROM readings ORDER BY sensor, log, seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_stores_each_reading_once_and_counts_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collect.db");
    let mut sink = SqliteSink::open(&db).await.unwrap();
    assert_eq!(sink.describe(), format!("SQLite {}", db.display()));

    assert_eq!(
        sink.store(&batch("lab", 0..8), 1_000).await.unwrap(),
        stored(8, 0)
    );
    assert_eq!(
        sink.store(&batch("lab", 0..8), 2_000).await.unwrap(),
        stored(0, 8)
    );
    // New and already stored readings in one call, one of them twice.
    let mixed = batch("lab", [6, 7, 8, 9, 9, 10]);
    assert_eq!(sink.store(&mixed, 3_000).await.unwrap(), stored(3, 3));
    // The same seq in another log is another reading.
    let other_log = vec![received_in(LogId::new(2), "lab", 0)];
    assert_eq!(sink.store(&other_log, 4_000).await.unwrap(), stored(1, 0));
    assert_eq!(sink.store(&[], 4_000).await.unwrap(), stored(0, 0));

    let keys = sqlite_keys(&db);
    assert_eq!(keys.len(), 12, "{keys:?}");
    let seqs: Vec<i64> = keys
        .iter()
        .filter(|k| k.2 == "0000000000000001")
        .map(|k| k.3)
        .collect();
    assert_eq!(seqs, (0..=10).collect::<Vec<_>>());
    assert!(keys.contains(&("pi".into(), "lab".into(), "0000000000000002".into(), 0)));

    // Every column as the reading had it; received_ms from the first store.
    let c = Connection::open(&db).unwrap();
    let row: SqliteRow = c
        .query_row(
            "SELECT ts_ms, temperature_c, humidity_pct, weight_temperature, weight_humidity,
                    priority, route, clock_synced, late, resent, received_ms
             FROM readings WHERE seq = 3 AND log = '0000000000000001'",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        row,
        (
            1_767_225_645_123,
            21.8,
            48.0,
            2,
            1,
            2,
            "batch".into(),
            Some(0),
            0,
            0,
            1_000
        )
    );
    let flags: Vec<(i64, Option<i64>, i64, i64)> = c
        .prepare(
            "SELECT seq, clock_synced, late, resent FROM readings WHERE seq IN (5, 7) ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(flags, vec![(5, None, 1, 0), (7, None, 0, 1)]);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_reopens_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collect.db");
    {
        let mut sink = SqliteSink::open(&db).await.unwrap();
        assert_eq!(
            sink.store(&batch("lab", 0..5), 1).await.unwrap(),
            stored(5, 0)
        );
    }
    let mut sink = SqliteSink::open(&db).await.unwrap();
    assert_eq!(
        sink.store(&batch("lab", 3..7), 2).await.unwrap(),
        stored(2, 2)
    );
    assert_eq!(sqlite_keys(&db).len(), 7);
    let c = Connection::open(&db).unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, edgeprio::collect::sqlite::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_two_sinks_on_one_new_file_store_each_reading_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collect.db");
    let (a, b) = tokio::join!(SqliteSink::open(&db), SqliteSink::open(&db));
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let (first, second) = (batch("lab", 0..600), batch("lab", 300..900));
    let (x, y) = tokio::join!(a.store(&first, 1), b.store(&second, 2));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.inserted + y.inserted, 900);
    assert_eq!(x.duplicates + y.duplicates, 300);
    assert_eq!(sqlite_keys(&db).len(), 900);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_refuses_an_agents_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    drop(edgeprio::store::Store::open(&db, edgeprio::store::Access::Writer).unwrap());
    let before = std::fs::read(&db).unwrap();

    let err = SqliteSink::open(&db).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SinkError::Schema { .. }), "{err:?}");
    assert!(
        text.contains("agent's log") && text.contains("--db") && text.contains("agent.db"),
        "{text}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "the log was changed");

    // A file that only looks like one (an agent_status table) too.
    let lookalike = dir.path().join("lookalike.db");
    Connection::open(&lookalike)
        .unwrap()
        .execute_batch("CREATE TABLE agent_status (node TEXT)")
        .unwrap();
    let text = SqliteSink::open(&lookalike).await.unwrap_err().to_string();
    assert!(text.contains("agent's log"), "{text}");

    // Another program's database is not written either.
    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    let text = SqliteSink::open(&foreign).await.unwrap_err().to_string();
    assert!(
        text.contains("not a collector database") && text.contains("notes"),
        "{text}"
    );
}

// ---- PostgreSQL ----

/// A client of the test server, for checking what the sinks stored.
async fn client(pg: &Postgres) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn pg_keys(c: &tokio_postgres::Client) -> Vec<(String, String, String, i64)> {
    c.query(
        "SELECT node, sensor, log, seq FROM readings ORDER BY sensor, log, seq",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stores_each_reading_once_and_counts_duplicates() {
    let pg = Postgres::start();
    let mut sink = PostgresSink::connect(&pg.url()).await.unwrap();
    assert_eq!(
        sink.describe(),
        format!("postgres://edgeprio@127.0.0.1:{}/edgeprio", pg.port)
    );

    // One reading (the real-time path), then batches (the COPY path).
    assert_eq!(
        sink.store(&batch("lab", [0]), 1_000).await.unwrap(),
        stored(1, 0)
    );
    assert_eq!(
        sink.store(&batch("lab", [0]), 1_500).await.unwrap(),
        stored(0, 1)
    );
    assert_eq!(
        sink.store(&batch("lab", 0..8), 2_000).await.unwrap(),
        stored(7, 1)
    );
    assert_eq!(
        sink.store(&batch("lab", 0..8), 3_000).await.unwrap(),
        stored(0, 8)
    );
    let mixed = batch("lab", [6, 7, 8, 9, 9, 10]);
    assert_eq!(sink.store(&mixed, 4_000).await.unwrap(), stored(3, 3));
    let other_log = vec![
        received_in(LogId::new(2), "lab", 0),
        received_in(LogId::new(2), "lab", 1),
    ];
    assert_eq!(sink.store(&other_log, 5_000).await.unwrap(), stored(2, 0));
    assert_eq!(sink.store(&[], 6_000).await.unwrap(), stored(0, 0));

    let c = client(&pg).await;
    let keys = pg_keys(&c).await;
    assert_eq!(keys.len(), 13, "{keys:?}");
    let distinct: BTreeSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), 13);

    let row = c
        .query_one(
            "SELECT ts_ms, temperature_c, humidity_pct, weight_temperature, weight_humidity,
                    priority, route, clock_synced, late, resent, received_ms
             FROM readings WHERE seq = 3 AND log = '0000000000000001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1_767_225_645_123);
    assert!((row.get::<_, f64>(1) - 21.8).abs() < 1e-9);
    assert!((row.get::<_, f64>(2) - 48.0).abs() < 1e-9);
    assert_eq!(
        (
            row.get::<_, i32>(3),
            row.get::<_, i32>(4),
            row.get::<_, i32>(5)
        ),
        (2, 1, 2)
    );
    assert_eq!(row.get::<_, String>(6), "batch");
    assert_eq!(row.get::<_, Option<bool>>(7), Some(false));
    assert_eq!(
        (row.get::<_, bool>(8), row.get::<_, bool>(9)),
        (false, false)
    );
    assert_eq!(row.get::<_, i64>(10), 2_000);
    let flags: Vec<(i64, Option<bool>, bool, bool)> = c
        .query(
            "SELECT seq, clock_synced, late, resent FROM readings
             WHERE seq IN (5, 7) AND log = '0000000000000001' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(flags, vec![(5, None, true, false), (7, None, false, true)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_two_sinks_store_overlapping_batches_exactly_once() {
    let pg = Postgres::start();
    let mut first = PostgresSink::connect(&pg.url()).await.unwrap();
    let mut second = PostgresSink::connect(&pg.url()).await.unwrap();
    // Both collectors get the same redelivered stretch, in batches that
    // overlap and arrive interleaved; the first goes up, the second goes
    // down with each batch in descending order too, so their transactions
    // meet on the same keys from both sides (the sink's key order is what
    // keeps them from deadlocking).
    let up = async {
        let mut total = Stored::default();
        for start in (0..6_000).step_by(500) {
            let s = first
                .store(&batch("lab", start..start + 700), 1)
                .await
                .unwrap();
            total.inserted += s.inserted;
            total.duplicates += s.duplicates;
        }
        total
    };
    let down = async {
        let mut total = Stored::default();
        for end in (1_000..=6_000).rev().step_by(500) {
            let s = second
                .store(&batch("lab", (end - 1_000..end).rev()), 2)
                .await
                .unwrap();
            total.inserted += s.inserted;
            total.duplicates += s.duplicates;
        }
        total
    };
    let (up, down) = tokio::join!(up, down);
    // 12 batches of 700 (the last one reaching seq 6199) and 11 of 1000.
    assert_eq!(up.inserted + up.duplicates, 12 * 700);
    assert_eq!(down.inserted + down.duplicates, 11 * 1_000);
    assert_eq!(up.inserted + down.inserted, 6_200);

    let c = client(&pg).await;
    let keys = pg_keys(&c).await;
    let seqs: Vec<i64> = keys.iter().map(|k| k.3).collect();
    assert_eq!(seqs, (0..6_200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_schema_is_created_once_when_collectors_start_at_once() {
    let pg = Postgres::start();
    let url = pg.url();
    let starting: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresSink::connect(&url).await })
        })
        .collect();
    let mut sinks = Vec::new();
    for s in starting {
        sinks.push(s.await.unwrap().unwrap());
    }

    let c = client(&pg).await;
    let versions: Vec<i32> = c
        .query("SELECT version FROM edgeprio_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=PG_SCHEMA_VERSION).collect::<Vec<_>>());
    let views: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_views WHERE viewname = 'readings_grafana'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 1);
    for (i, sink) in sinks.iter_mut().enumerate() {
        let s = sink.store(&batch("lab", 0..10), 1).await.unwrap();
        assert_eq!(s, if i == 0 { stored(10, 0) } else { stored(0, 10) });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_reopens_an_existing_database() {
    let pg = Postgres::start();
    {
        let mut sink = PostgresSink::connect(&pg.url()).await.unwrap();
        assert_eq!(
            sink.store(&batch("lab", 0..5), 1).await.unwrap(),
            stored(5, 0)
        );
    }
    let mut sink = PostgresSink::connect(&pg.url()).await.unwrap();
    assert_eq!(
        sink.store(&batch("lab", 3..7), 2).await.unwrap(),
        stored(2, 2)
    );
    let c = client(&pg).await;
    assert_eq!(pg_keys(&c).await.len(), 7);
    let migrations: i64 = c
        .query_one("SELECT count(*) FROM edgeprio_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(migrations, i64::from(PG_SCHEMA_VERSION));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_grafana_view_has_the_readings_time() {
    let pg = Postgres::start();
    let mut sink = PostgresSink::connect(&pg.url()).await.unwrap();
    let mut readings = batch("lab", 0..4);
    readings.extend(batch("cellar", 0..2));
    sink.store(&readings, 1).await.unwrap();

    let c = client(&pg).await;
    // The module docs' panel query, with Grafana's $__timeFilter(time)
    // expanded as Grafana does (BETWEEN two RFC 3339 instants).
    let rows = c
        .query(
            "SELECT time, metric, temperature_c
             FROM readings_grafana
             WHERE time BETWEEN '2026-01-01T00:00:00.000Z' AND '2026-01-01T00:00:30.200Z'
             ORDER BY time",
            &[],
        )
        .await
        .unwrap();
    let mut got: Vec<(std::time::SystemTime, String, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(got.is_sorted_by_key(|g| g.0), "not in time order: {got:?}");
    // Sensors at the same instant come in any order.
    got.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    // 2026-01-01T00:00:00.123Z and every 15 s after; seq 3 is past the range.
    assert_eq!(
        got.iter()
            .map(|(t, m, _)| (*t, m.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (at(1_767_225_600_123), "pi/cellar"),
            (at(1_767_225_600_123), "pi/lab"),
            (at(1_767_225_615_123), "pi/cellar"),
            (at(1_767_225_615_123), "pi/lab"),
            (at(1_767_225_630_123), "pi/lab"),
        ],
        "{got:?}"
    );
    assert!((got[4].2 - 21.7).abs() < 1e-9);
    // ... and the time is the exact millisecond of ts_ms.
    let off: i64 = c
        .query_one(
            "SELECT count(*) FROM readings
             WHERE (extract(epoch FROM ts) * 1000)::bigint <> ts_ms",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(off, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_connect_errors_never_show_the_password() {
    // Nothing listens there.
    let url = format!(
        "postgres://edgeprio:{PASSWORD}@127.0.0.1:{}/edgeprio",
        free_port()
    );
    let err = PostgresSink::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SinkError::Connect { .. }), "{err:?}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
    assert!(
        text.contains("127.0.0.1") && text.to_lowercase().contains("refused"),
        "{text}"
    );

    // A server that refuses the password.
    let pg = Postgres::start();
    let wrong = "not-the-Password-99";
    let url = format!("postgres://edgeprio:{wrong}@127.0.0.1:{}/edgeprio", pg.port);
    let err = PostgresSink::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SinkError::Connect { .. }), "{err:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        !text.contains(wrong) && !format!("{err:?}").contains(wrong),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_sink_reconnects_after_the_server_went_away() {
    let pg = Postgres::start();
    let mut sink = PostgresSink::connect(&pg.url()).await.unwrap();
    sink.store(&batch("lab", 0..3), 1).await.unwrap();
    // Cut its session from the server's side.
    let c = client(&pg).await;
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'edgeprio collect'",
        &[],
    )
    .await
    .unwrap();
    // The call that meets the dead session fails (nothing acknowledged),
    // the next one reconnects.
    let first = sink.store(&batch("lab", 3..6), 2).await;
    let second = sink.store(&batch("lab", 3..6), 3).await.unwrap();
    match first {
        Ok(s) => assert_eq!((s, second), (stored(3, 0), stored(0, 3))),
        Err(e) => {
            assert!(matches!(e, SinkError::Write { .. }), "{e:?}");
            assert_eq!(second, stored(3, 0));
        }
    }
    assert_eq!(pg_keys(&c).await.len(), 6);
}

/// A scan by the batch collector `c-b` at `at`.
async fn gap_scan(
    sink: &mut impl Sink,
    at: i64,
    policy: edgeprio::collect::gaps::RepairPolicy,
) -> edgeprio::collect::Repair {
    let me = edgeprio::collect::Member {
        client_id: "c-b".into(),
        route: Route::Batch,
    };
    sink.repair(at, policy, &me).await.expect("a scan")
}

/// Gap tracking through the sink, the same for both databases: holes
/// found by a scan, asked for past the grace period only when collectors
/// of both routes use the database, filled (and counted repaired) when
/// the readings come, made unrecoverable by a reply, and extended by a
/// sensor's retained state.
async fn gap_repair_through(sink: &mut impl Sink) {
    use edgeprio::collect::Member;
    use edgeprio::collect::gaps::{NodeGaps, RepairPolicy, StreamKey};
    use edgeprio::domain::ResendReply;
    let policy = RepairPolicy::after(Duration::from_mins(1));
    let mut at = 1_800_000_000_000_i64;
    // Seqs 0-2 and 10: 3-9 missing, but one route alone asks nothing.
    sink.store(&batch("lab", [0, 1, 2, 10]), at).await.unwrap();
    at += 0;
    let r = gap_scan(sink, at, policy).await;
    assert_eq!(r.scanned, 4);
    at += 120_000;
    let r = gap_scan(sink, at, policy).await;
    assert!(r.asks.is_empty() && !r.asking, "{r:?}");
    // The real-time collector joins: the hole is asked for.
    let rt = Member {
        client_id: "c-rt".into(),
        route: Route::Realtime,
    };
    // Its own scan asks (either collector may; one does).
    let r = sink.repair(at, policy, &rt).await.unwrap();
    assert!(r.asking);
    assert_eq!(
        r.asks.iter().map(|a| (a.first, a.last)).collect::<Vec<_>>(),
        vec![(3, 9)]
    );
    // 5 and 6 come resent; the node says 8 and 9 are gone.
    sink.store(&batch("lab", [5, 6]), at).await.unwrap();
    let reply = ResendReply {
        sensor: "lab".into(),
        log: LogId::new(1),
        from: 3,
        to: 9,
        resent: 2,
        gone: vec![[8, 9]],
        pending: vec![],
    };
    sink.answer("pi", &reply, at).await.unwrap();
    // The sensor's state names seq 14: 11-14 are missing too.
    let key = StreamKey {
        node: "pi".into(),
        sensor: "lab".into(),
        log: LogId::new(1),
    };
    sink.observe(&[(key, 14)], at).await.unwrap();
    at += 1;
    let r = gap_scan(sink, at, policy).await;
    assert_eq!(
        r.nodes["pi"],
        NodeGaps {
            missing: 3,
            repaired: 2,
            unrecoverable: 2
        },
        "{r:?}"
    );
    at += 60_000;
    let r = gap_scan(sink, at, policy).await;
    assert_eq!(
        r.asks.iter().map(|a| (a.first, a.last)).collect::<Vec<_>>(),
        vec![(3, 4), (7, 7), (11, 14)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_tracks_gaps_and_their_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SqliteSink::open(dir.path().join("c.db")).await.unwrap();
    gap_repair_through(&mut sink).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tracks_gaps_and_their_repair() {
    let pg = Postgres::start();
    let mut sink = PostgresSink::connect(&pg.url()).await.unwrap();
    gap_repair_through(&mut sink).await;
}
