//! End to end, not hop by hop (README, "Repairs"): a real Mosquitto on its
//! default queue settings drops what a paused collector's queue cannot
//! hold; the collectors find the holes by seq, ask the agent on its resend
//! topic, and the agent sends the readings again from its log. Real
//! processes throughout: Mosquitto, `edgeprio run`, two `edgeprio collect`
//! into one `SQLite` file.

mod collect_support;
mod common;
mod mosquitto;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use collect_support::{Collect, Key, collect_config, log_rows};
use common::{open_ro, send_signal};
use mosquitto::{Agent, AgentFiles, Broker, Sensor, Spec, agent_config, free_port, wait_progress};

/// The agent's sensors: four random walks.
const SENSORS: [&str; 4] = ["a", "b", "c", "d"];

/// How long a hole may stay before the collectors ask for it.
const REPAIR_AFTER: &str = "2s";

/// An agent reading four sensors every 2 ms (2,000 readings a second),
/// batches of two readings (so that 20,000 readings are 10,000 messages,
/// ten times Mosquitto's default queue), resending at up to `rate`
/// readings a second, its metrics on `metrics`.
fn agent(dir: &Path, broker: &Broker, rate: u32, metrics: u16) -> AgentFiles {
    let mqtt = format!(
        "url = \"{}\"\nbatch_interval = \"200ms\"\nbatch_max = 2\nrealtime_max_age = \"30s\"\n\
         resend_rate = {rate}\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
        broker.url()
    );
    let sensors: Vec<Sensor<'_>> = SENSORS
        .iter()
        .zip(1..)
        .map(|(s, seed)| Sensor::Random(s, seed))
        .collect();
    agent_config(dir, "n1", "2ms", &sensors, &mqtt)
}

/// A real-time and a batch collector into the `SQLite` file `db`.
fn collectors(dir: &Path, broker: &Broker, db: &Path) -> (Collect, Collect) {
    let config = collect_config(dir, broker);
    let db = db.to_str().expect("a UTF-8 path");
    let args = |id: &'static str| ["--client-id", id, "--repair-after", REPAIR_AFTER];
    let rt = Collect::start(dir, &config, "realtime", db, &args("c-rt"));
    let batch = Collect::start(dir, &config, "batch", db, &args("c-b"));
    (rt, batch)
}

/// What the collectors' database holds: per key, whether it came resent.
fn stored(db: &Path) -> BTreeMap<Key, bool> {
    let Ok(conn) = std::panic::catch_unwind(|| open_ro(db)) else {
        return BTreeMap::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT node, sensor, log, seq, resent FROM readings") else {
        return BTreeMap::new();
    };
    stmt.query_map([], |r| {
        Ok((
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
            r.get::<_, i64>(4)? == 1,
        ))
    })
    .and_then(Iterator::collect)
    .unwrap_or_default()
}

/// The seqs the collectors' database records as gone, per key.
fn gone(db: &Path) -> BTreeSet<Key> {
    let conn = open_ro(db);
    let mut stmt = conn
        .prepare(
            "SELECT node, sensor, log, first_seq, last_seq FROM gaps WHERE gone_ms IS NOT NULL",
        )
        .expect("the gaps table");
    let rows: Vec<(String, String, String, i64, i64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .and_then(Iterator::collect)
        .expect("read the gaps");
    rows.into_iter()
        .flat_map(|(n, s, l, a, b)| (a..=b).map(move |q| (n.clone(), s.clone(), l.clone(), q)))
        .collect()
}

/// Seqs still missing (not gone) in the collectors' database.
fn missing(db: &Path) -> i64 {
    open_ro(db)
        .query_row(
            "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM gaps WHERE gone_ms IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap_or(-1)
}

/// The value of a sample of the agent's metrics (`name{labels}`), 0 if
/// absent.
fn metric(port: u16, sample: &str) -> u64 {
    common::scrape_metrics(port)
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().expect("a whole number"))
}

/// Runs the agent until it has logged and the broker has acknowledged
/// `n` readings while the batch collector is stopped (SIGSTOP), then
/// resumes it. Returns the keys the collectors' database lacked when it
/// resumed, as far as the log then held them.
fn pause_batch_collector_for(agent: &mut Agent, files: &AgentFiles, batch: &Collect, n: i64) {
    wait_progress(agent, &files.db, &SENSORS, 50, 200);
    send_signal(batch.pid(), "STOP");
    let per_sensor = n / i64::try_from(SENSORS.len()).unwrap();
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        agent.assert_running();
        let p = mosquitto::progress(&files.db);
        if SENSORS.iter().all(|s| {
            p.get(*s)
                .is_some_and(|(logged, acked)| *logged >= per_sensor && *acked >= per_sensor - 100)
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "the agent logged {p:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the collectors' database holds every key of `want` (or
/// records it as gone).
fn wait_repaired(db: &Path, want: &BTreeMap<Key, common::Row>, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let got = stored(db);
        let gone = gone(db);
        let lacking = want
            .keys()
            .filter(|k| !got.contains_key(*k) && !gone.contains(*k))
            .count();
        if lacking == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?} waiting for {what}, the database lacks {lacking} of {} readings \
             ({} missing in its gaps table)",
            want.len(),
            missing(db)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Stops the agent (it drains its outbox), waits for the collectors, and
/// checks that their database holds every reading of the log exactly once
/// with no gap left. Returns how many came resent.
fn stop_and_check_all_stored_once(agent: Agent, files: &AgentFiles, db: &Path) -> usize {
    agent.stop();
    let want = log_rows(&files.db, |_| true);
    wait_repaired(
        db,
        &want,
        Duration::from_mins(1),
        "every reading of the log",
    );
    let got = stored(db);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the database holds exactly the log's readings"
    );
    assert!(gone(db).is_empty(), "nothing is gone");
    // The gaps table follows at the collectors' next scans.
    common::wait_for(Duration::from_secs(10), "no gap left", || missing(db) == 0);
    got.values().filter(|r| **r).count()
}

#[test]
fn readings_a_paused_collector_lost_to_the_broker_are_resent_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let db = dir.path().join("collected.db");
    let (rt, batch) = collectors(dir.path(), &broker, &db);
    let port = free_port();
    let files = agent(dir.path(), &broker, 5_000, port);
    let mut agent = Agent::start(&files, &[]);

    pause_batch_collector_for(&mut agent, &files, &batch, 20_000);
    let logged = log_rows(&files.db, |_| true);
    let before = stored(&db);
    send_signal(batch.pid(), "CONT");
    let lacked = logged.keys().filter(|k| !before.contains_key(*k)).count();
    assert!(
        lacked >= 15_000,
        "the collectors lacked only {lacked} readings"
    );

    wait_repaired(
        &db,
        &logged,
        Duration::from_mins(3),
        "the paused collector's readings",
    );
    let resent_served = metric(port, "edgeprio_resent_readings_total{node=\"n1\"}");
    let resent = stop_and_check_all_stored_once(agent, &files, &db);
    // Mosquitto kept at most 1,000 messages queued and 20 in flight
    // (2,040 readings) for the paused collector: the rest came resent.
    assert!(
        resent + 2_040 >= lacked && resent > 0,
        "{resent} of the {lacked} lacked readings came resent"
    );
    assert!(
        resent_served >= resent as u64,
        "the agent counted {resent_served} resent readings, the database holds {resent}"
    );
    let (rt, _) = rt.stop();
    let (b, b_err) = batch.stop();
    assert_eq!(rt.rejected + b.rejected, 0, "{rt:?} {b:?}");
    assert!(
        b_err.contains("asking for missing readings again"),
        "{b_err}"
    );
}

#[test]
fn readings_deleted_from_the_log_are_recorded_as_unrecoverable_and_not_asked_for_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let db = dir.path().join("collected.db");
    let (rt, batch) = collectors(dir.path(), &broker, &db);
    let port = free_port();
    let files = agent(dir.path(), &broker, 5_000, port);
    let mut agent = Agent::start(&files, &[]);

    pause_batch_collector_for(&mut agent, &files, &batch, 8_000);
    let logged = log_rows(&files.db, |_| true);
    let before = stored(&db);
    // What retention does to a log: published rows of a sensor go. Here
    // 300 of sensor "a" the collectors lack, past the first 1,000 (which
    // may be among the messages Mosquitto kept queued for the collector).
    let deleted: Vec<Key> = logged
        .keys()
        .filter(|k| k.1 == "a" && !before.contains_key(*k))
        .skip(1_000)
        .take(300)
        .cloned()
        .collect();
    assert_eq!(deleted.len(), 300);
    {
        let conn = rusqlite::Connection::open(&files.db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let (lo, hi) = (deleted[0].3, deleted[299].3);
        let n = conn
            .execute(
                "DELETE FROM readings WHERE sensor = 'a' AND seq BETWEEN ?1 AND ?2",
                [lo, hi],
            )
            .unwrap();
        assert!(n >= 300, "deleted {n}");
    }
    let deleted_range: BTreeSet<Key> = logged
        .keys()
        .filter(|k| k.1 == "a" && k.3 >= deleted[0].3 && k.3 <= deleted[299].3)
        .cloned()
        .collect();
    send_signal(batch.pid(), "CONT");

    wait_repaired(
        &db,
        &logged,
        Duration::from_mins(3),
        "every reading, or its loss",
    );
    let got = stored(&db);
    let lost = gone(&db);
    assert!(!lost.is_empty(), "nothing was recorded as gone");
    assert!(
        lost.is_subset(&deleted_range),
        "only deleted seqs are gone: {:?}",
        lost.difference(&deleted_range).take(5).collect::<Vec<_>>()
    );
    for k in logged.keys() {
        assert!(
            got.contains_key(k) != lost.contains(k),
            "{k:?} is stored or gone, not both nor neither"
        );
    }
    // Gone is final: the collectors stop asking for it, so the agent
    // answers no more seqs as gone (fresh holes of the running agent may
    // still be asked for and resent).
    let gone_answered = || metric(port, "edgeprio_resend_gone_total{node=\"n1\"}");
    let first = gone_answered();
    assert!(first >= lost.len() as u64, "{first}");
    let asks = || -> Vec<(i64, i64)> {
        let conn = open_ro(&db);
        let mut stmt = conn
            .prepare("SELECT first_seq, asks FROM gaps WHERE gone_ms IS NOT NULL ORDER BY 1")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .unwrap()
    };
    let asked = asks();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        gone_answered(),
        first,
        "the agent was asked for gone seqs again"
    );
    assert_eq!(asks(), asked);
    assert_eq!(gone(&db), lost);

    agent.stop();
    common::wait_for(Duration::from_secs(10), "no gap left", || missing(&db) == 0);
    // The README's query says the same.
    let sql = readme_collector_sql();
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(&sql)
        .output()
        .expect("run sqlite3");
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let repaired = open_ro(&db)
        .query_row("SELECT sum(repaired) FROM streams", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap();
    assert!(repaired > 0);
    assert_eq!(
        common::text(&out.stdout),
        format!("n1|0|{}\nn1|{repaired}\n", lost.len()),
        "{sql}"
    );
    rt.stop();
    batch.stop();
}

/// The README's query of a collector's gaps (its `sql collector` block).
fn readme_collector_sql() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```sql collector\n")
        .expect("the README's gaps query")
        + 17;
    let len = readme[start..].find("```").expect("its end");
    readme[start..start + len].to_owned()
}

#[test]
fn readings_a_broker_restarted_without_persistence_lost_are_resent_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), &Spec::default());
    let db = dir.path().join("collected.db");
    let (rt, batch) = collectors(dir.path(), &broker, &db);
    let port = free_port();
    let files = agent(dir.path(), &broker, 5_000, port);
    let mut agent = Agent::start(&files, &[]);

    // The broker holds what it acknowledged to the agent and has not
    // delivered yet (the batch collector is slow: stopped), and dies with
    // it: no persistence, so the sessions and their queues are gone.
    pause_batch_collector_for(&mut agent, &files, &batch, 4_000);
    let before = stored(&db);
    broker.kill();
    let lost_with_it = log_rows(&files.db, |_| true);
    send_signal(batch.pid(), "CONT");
    std::thread::sleep(Duration::from_secs(1));
    broker.restart();
    let lacked = lost_with_it
        .keys()
        .filter(|k| !before.contains_key(*k))
        .count();
    assert!(
        lacked >= 3_000,
        "the collectors lacked only {lacked} readings"
    );
    // Until both collectors have subscribed again (after their reconnect
    // backoff), what the agent publishes has no subscriber and is dropped
    // too: what the log holds a little after that is what must be
    // repaired while the agent runs.
    common::wait_for(Duration::from_secs(30), "both collectors back", || {
        [&rt, &batch]
            .iter()
            .all(|c| c.stderr().matches("MQTT consumer subscribed").count() >= 2)
    });
    std::thread::sleep(Duration::from_secs(3));
    let logged = log_rows(&files.db, |_| true);

    wait_repaired(&db, &logged, Duration::from_mins(3), "what the broker lost");
    let resent = stop_and_check_all_stored_once(agent, &files, &db);
    assert!(
        resent > 0,
        "none of the {lacked} readings the broker lost came resent"
    );
    let (rt, _) = rt.stop();
    let (b, _) = batch.stop();
    assert_eq!(rt.rejected + b.rejected, 0, "{rt:?} {b:?}");
}

/// The agent's readings of `sensor` taken in `from_ms..to_ms`, their
/// times in order.
fn times(db: &Path, sensor: &str, from_ms: i64, to_ms: i64) -> Vec<i64> {
    let conn = open_ro(db);
    let mut stmt = conn
        .prepare(
            "SELECT ts_ms FROM readings WHERE sensor = ?1 AND ts_ms BETWEEN ?2 AND ?3 ORDER BY seq",
        )
        .unwrap();
    stmt.query_map(rusqlite::params![sensor, from_ms, to_ms], |r| r.get(0))
        .and_then(Iterator::collect)
        .unwrap()
}

/// 10,000 resend requests for log `log` of node n1: overlapping ranges
/// (coalesced), ranges past the queue's cap (dropped), garbage, a sensor
/// and a log that do not exist.
fn flood(log: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..4_000_u64 {
        let from = i % 100;
        lines.push(format!(
            r#"{{"sensor":"a","log":"{log}","from":{from},"to":{}}}"#,
            from + 99
        ));
    }
    for i in 0..2_000_u64 {
        let from = 1_000 + i * 1_000;
        lines.push(format!(
            r#"{{"sensor":"{}","log":"{log}","from":{from},"to":{}}}"#,
            SENSORS[usize::try_from(i).unwrap() % 4],
            from + 999
        ));
    }
    for i in 0..2_000 {
        lines.push(format!("{{\"sensor\":\"a\",\"from\":{i}"));
    }
    for _ in 0..1_000 {
        lines.push(format!(
            r#"{{"sensor":"zz","log":"{log}","from":0,"to":9}}"#
        ));
    }
    for _ in 0..1_000 {
        lines.push(r#"{"sensor":"a","log":"0123456789abcdef","from":0,"to":9}"#.to_owned());
    }
    lines
}

#[test]
fn a_flood_of_resend_requests_leaves_the_read_cycle_on_time_and_the_rate_within_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let port = free_port();
    let mqtt = format!(
        "url = \"{}\"\nbatch_interval = \"200ms\"\nresend_rate = 20\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        broker.url()
    );
    let sensors: Vec<Sensor<'_>> = SENSORS
        .iter()
        .zip(1..)
        .map(|(s, seed)| Sensor::Random(s, seed))
        .collect();
    let files = agent_config(dir.path(), "n1", "100ms", &sensors, &mqtt);
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &SENSORS, 150, 600);
    let log = collect_support::log_id(&files.db);
    let watch = mosquitto::Sub::start(&broker, &["edgeprio/n1/batch"], None);

    let lines = flood(&log);
    assert_eq!(lines.len(), 10_000);
    let t0 = common::now_ms();
    let resent0 = metric(port, "edgeprio_resent_readings_total{node=\"n1\"}");
    let flood = dir.path().join("flood.txt");
    std::fs::write(&flood, lines.join("\n") + "\n").unwrap();
    let started = Instant::now();
    broker.publish_lines("edgeprio/n1/resend", &flood);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the flood took {took:?}");
    std::thread::sleep(Duration::from_secs(10));
    let t1 = common::now_ms();
    let resent = metric(port, "edgeprio_resent_readings_total{node=\"n1\"}") - resent0;

    let outcome = |o: &str| {
        metric(
            port,
            &format!("edgeprio_resend_requests_total{{node=\"n1\",outcome=\"{o}\"}}"),
        )
    };
    // Mosquitto drops what its queue for the agent cannot hold while the
    // burst lasts (1,000 messages; up to 1,500 of the 10,000 were lost so
    // here): most reach the agent, none is counted twice.
    let (queued, coalesced, dropped, invalid) = (
        outcome("queued"),
        outcome("coalesced"),
        outcome("dropped"),
        outcome("invalid"),
    );
    let counted = queued + coalesced + dropped + invalid;
    assert!(
        (5_000..=10_000).contains(&counted) && (1..=2_000).contains(&invalid),
        "queued {queued} coalesced {coalesced} dropped {dropped} invalid {invalid}; agent:\n{}",
        agent.stderr()
    );
    assert!(coalesced >= 2_000, "{coalesced} coalesced");
    assert!(dropped > 0, "the queue took every range");

    // At the rate (20 a second, the first second's worth at once): the
    // log holds more than that of what was asked.
    let secs = u64::try_from(t1 - t0).unwrap().div_ceil(1_000);
    assert!(
        resent >= 10 * secs,
        "only {resent} resent in {secs} s; agent:\n{}",
        agent.stderr()
    );
    assert!(resent <= 20 * (secs + 1), "{resent} resent in {secs} s");
    let on_the_wire: usize = watch
        .messages()
        .iter()
        .filter(|m| m.payload.contains("\"resent\":true"))
        .map(|m| m.payload.matches("\"seq\"").count())
        .sum();
    assert!(
        u64::try_from(on_the_wire).unwrap() <= 20 * (secs + 1),
        "{on_the_wire} resent readings on the batch topic in {secs} s"
    );

    // The read cycle kept its 100 ms through the flood.
    let mut worst = 0;
    for s in SENSORS {
        let ts = times(&files.db, s, t0, t1);
        assert!(ts.len() >= 90, "{s}: {} readings in {secs} s", ts.len());
        worst = worst.max(ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0));
    }
    assert!(worst <= 300, "{worst} ms between two readings of a sensor");
    eprintln!(
        "flood of 10,000 requests published in {took:?}; {resent} readings resent in {secs} s \
         ({on_the_wire} seen on the batch topic); longest gap between two readings {worst} ms"
    );
    agent.assert_running();
    agent.stop();
}
