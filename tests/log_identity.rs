//! A log deleted or replaced under the agent, and seqs that start again
//! with a new log (issue 12, item 5), through the real binary, a real
//! Mosquitto and a persistent subscriber. A consumer deduplicates on
//! (node, sensor, log, seq) (README, "MQTT"): no such key may ever name
//! two different readings, and no reading the agent took may be lost.
//!
//! Needs `mosquitto` and `mosquitto_sub`/`mosquitto_pub` (scripts/test
//! installs them).

mod common;
mod mosquitto;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Row, edgeprio, open_ro, readings, text, wait_for};
use mosquitto::{Agent, Broker, Sensor, Spec, Sub, agent_config, seen_readings, wait_progress};
use serde_json::Value;

const SENSORS: [&str; 2] = ["lab", "walk"];

/// How soon the agent must say what happened: its interval is 200 ms, so
/// this is many cycles, and still far less than the 15 s the agent wrote
/// to a deleted file without a word.
const NOTICE_WITHIN: Duration = Duration::from_secs(3);

fn setup(dir: &Path, node: &str) -> (Broker, Sub, mosquitto::AgentFiles) {
    let broker = Broker::start(dir, &Spec::default());
    let files = agent_config(
        dir,
        node,
        "200ms",
        &[Sensor::Heater("lab"), Sensor::Random("walk", 5)],
        &format!(
            "url = \"{}\"\nbatch_interval = \"500ms\"\nbatch_max = 20\nrealtime_max_age = \"30s\"\n",
            broker.url()
        ),
    );
    let sub = Sub::start(&broker, &[&format!("{}/+", files.base())], Some(node));
    (broker, sub, files)
}

/// The log's identity, as `sqlite3` shows it.
fn log_id(db: &Path) -> String {
    try_log_id(db).unwrap_or_else(|| panic!("no log_identity in {}", db.display()))
}

/// The log's identity, once the file at `db` has one.
fn try_log_id(db: &Path) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row("SELECT log_id FROM log_identity", [], |r| r.get(0))
        .ok()
}

/// Freezes the broker and waits until the log holds at least `n`
/// readings taken a second later: the broker cannot have acknowledged
/// those (a PUBACK on its way when it froze only covers older ones).
/// Returns the time of the first of them.
fn freeze_until_unpublished(broker: &Broker, db: &Path, n: i64) -> i64 {
    broker.freeze();
    let after = common::now_ms() + 1_000;
    wait_for(Duration::from_secs(20), "unpublished rows", || {
        open_ro(db)
            .query_row(
                "SELECT count(*) FROM readings WHERE published_ms IS NULL AND ts_ms >= ?1",
                [after],
                |r| r.get::<_, i64>(0),
            )
            .is_ok_and(|c| c >= n)
    });
    after
}

/// A connection to the log file now at `db`, kept open (by the test, which
/// the agent does not know of) so that the file can still be read after it
/// is deleted or replaced, WAL included.
fn hold(db: &Path) -> rusqlite::Connection {
    let conn = open_ro(db);
    // The first read opens the WAL and the shared memory too.
    let _: i64 = conn
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    conn
}

/// The readings and the identity of the file `held` has open: a snapshot
/// of it at `copy`, read as any log is.
fn held_log(held: &rusqlite::Connection, copy: &Path) -> (Vec<Row>, String) {
    held.execute(&format!("VACUUM INTO '{}'", copy.display()), [])
        .unwrap();
    (readings(copy), log_id(copy))
}

/// Waits until `what` appears in the agent's stderr; returns how long it
/// took.
fn wait_stderr(agent: &mut Agent, what: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        agent.assert_running();
        if agent.stderr().contains(what) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{limit:?} after the change, the agent has not said {what:?}; stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The deduplication key of a reading seen on the wire.
fn key(v: &Value) -> (String, String, String, i64) {
    (
        v["node"].as_str().unwrap_or_default().to_owned(),
        v["sensor"].as_str().unwrap_or_default().to_owned(),
        // A reading without `log`: every log's seqs fall together.
        v["log"].as_str().unwrap_or("(none)").to_owned(),
        v["seq"].as_i64().unwrap_or(-1),
    )
}

/// No (node, sensor, log, seq) seen names two different readings (told
/// apart by the time they were read), and every reading of `rows` (the
/// readings the agent logged, in whichever file) was seen under some key.
fn assert_no_key_reused_and_nothing_lost(sub: &Sub, base: &str, rows: &[Row]) {
    let want: BTreeSet<(String, i64)> = rows.iter().map(|r| (r.sensor.clone(), r.ts_ms)).collect();
    let mut left = Vec::new();
    wait_for(
        Duration::from_secs(20),
        "every logged reading at the subscriber",
        || {
            let seen: BTreeSet<(String, i64)> = seen_readings(&sub.messages(), base)
                .iter()
                .map(|s| {
                    (
                        s.reading["sensor"].as_str().unwrap_or_default().to_owned(),
                        s.reading["ts_ms"].as_i64().unwrap_or(-1),
                    )
                })
                .collect();
            left = want.difference(&seen).cloned().collect();
            left.is_empty()
        },
    );
    let mut by_key: BTreeMap<_, BTreeSet<i64>> = BTreeMap::new();
    for s in seen_readings(&sub.messages(), base) {
        by_key
            .entry(key(&s.reading))
            .or_default()
            .insert(s.reading["ts_ms"].as_i64().unwrap_or(-1));
    }
    let reused: Vec<_> = by_key.iter().filter(|(_, ts)| ts.len() > 1).collect();
    assert!(
        reused.is_empty(),
        "{} keys (node, sensor, log, seq) name two readings at the subscriber, e.g. {:?}",
        reused.len(),
        &reused[..reused.len().min(5)]
    );
}

/// `edgeprio doctor` on the agent's config: its output.
fn doctor(dir: &Path, config: &Path) -> String {
    let out = edgeprio(dir)
        .arg("--config")
        .arg(config)
        .arg("doctor")
        .output()
        .unwrap();
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_log_deleted_under_the_running_agent_is_noticed_and_nothing_is_lost_or_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, sub, files) = setup(dir.path(), "del");
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &SENSORS, 10, 10);
    // Readings waiting for the broker when the file goes: they must still
    // be delivered.
    let frozen = freeze_until_unpublished(&broker, &files.db, 6);
    // The old file stays readable for the test (not for the agent: its
    // path is gone).
    let held = hold(&files.db);
    let switched_ms = common::now_ms();
    std::fs::remove_file(&files.db).unwrap();
    let took = wait_stderr(
        &mut agent,
        "the log file was deleted while the agent was writing it",
        NOTICE_WITHIN,
    );
    // Thawed once the switch is done: earlier, the broker's PUBACKs for
    // the readings it already has would mark them published in the old
    // file while the agent reads what to carry over.
    wait_stderr(
        &mut agent,
        "unpublished readings were carried over",
        NOTICE_WITHIN,
    );
    broker.thaw();
    wait_for(Duration::from_secs(20), "the new log", || {
        try_log_id(&files.db).is_some()
    });
    let new_id = log_id(&files.db);
    wait_progress(&mut agent, &files.db, &SENSORS, 10, 20);
    let stderr = agent.stop();
    let (old_rows, old_id) = held_log(&held, &dir.path().join("old.db"));
    assert_ne!(new_id, old_id, "a new log gets a new identity");
    assert!(
        stderr.contains(&format!("log {old_id} became log {new_id}")),
        "{stderr}"
    );
    let new_rows = readings(&files.db);
    let carried = new_rows
        .iter()
        .filter(|r| r.ts_ms >= frozen && r.ts_ms < switched_ms)
        .count();
    assert!(
        carried >= 6,
        "the old file's unpublished readings were carried over to the new log: {new_rows:?}"
    );
    let all: Vec<Row> = old_rows.into_iter().chain(new_rows).collect();
    assert_no_key_reused_and_nothing_lost(&sub, &files.base(), &all);
    let out = doctor(dir.path(), &files.config);
    assert!(
        out.contains("the log file was deleted or replaced while the agent ran"),
        "{out}"
    );
    assert!(out.contains("stop the agent first"), "{out}");
    eprintln!("noticed after {took:?}");
}

#[test]
fn a_log_replaced_under_the_running_agent_by_a_backup_gets_its_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, sub, files) = setup(dir.path(), "rep");
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &SENSORS, 5, 5);
    let backup = dir.path().join("backup.db");
    open_ro(&files.db)
        .execute(&format!("VACUUM INTO '{}'", backup.display()), [])
        .unwrap();
    // Consumers get more readings, with seqs the backup will hand out again.
    wait_progress(&mut agent, &files.db, &SENSORS, 15, 25);
    let frozen = freeze_until_unpublished(&broker, &files.db, 4);
    let held = hold(&files.db);
    // The copy holds the original's identity, until the agent opens it.
    let old_id = try_log_id(&backup);
    std::fs::rename(&backup, &files.db).unwrap();
    wait_stderr(
        &mut agent,
        "the log file was replaced by another file while the agent was writing it",
        NOTICE_WITHIN,
    );
    let old_id = old_id.expect("the backup holds the log's identity");
    wait_stderr(
        &mut agent,
        "unpublished readings were carried over",
        NOTICE_WITHIN,
    );
    broker.thaw();
    wait_for(
        Duration::from_secs(20),
        "the restored log's new identity",
        || try_log_id(&files.db).is_some_and(|id| id != old_id),
    );
    wait_progress(&mut agent, &files.db, &SENSORS, 25, 30);
    agent.stop();
    let restored = readings(&files.db);
    assert!(
        restored.iter().filter(|r| r.ts_ms >= frozen).count() >= 4,
        "the old file's unpublished readings were carried over to the restored log"
    );
    // The restored copy continued its own seqs, under an identity of its
    // own: every one of them is a new key to consumers.
    let (old_rows, held_id) = held_log(&held, &dir.path().join("old.db"));
    assert_eq!(held_id, old_id);
    let all: Vec<Row> = old_rows.into_iter().chain(restored).collect();
    assert_no_key_reused_and_nothing_lost(&sub, &files.base(), &all);
    let out = doctor(dir.path(), &files.config);
    assert!(
        out.contains("the log file was deleted or replaced while the agent ran"),
        "{out}"
    );
}

/// The case: the log deleted while the agent was stopped. The new
/// log's seqs start at 0 again, under a new identity.
#[test]
fn a_new_log_after_a_restart_never_reuses_a_key_consumers_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, sub, files) = setup(dir.path(), "restart");
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &SENSORS, 8, 16);
    agent.stop();
    let first = readings(&files.db);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", files.db.display()));
    }
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &SENSORS, 8, 16);
    agent.stop();
    let second = readings(&files.db);
    assert_eq!(
        second.iter().map(|r| r.seq).min(),
        Some(0),
        "seqs start again"
    );
    let all: Vec<Row> = first.into_iter().chain(second).collect();
    assert_no_key_reused_and_nothing_lost(&sub, &files.base(), &all);
}
