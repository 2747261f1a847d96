//! Rows a user broke with `sqlite3` (issue 12, item 6): the real agent on a
//! log poisoned with the sqlite3 CLI, publishing to a real Mosquitto. One
//! bad row must never stop the rows after it: it is skipped, reported once
//! with its table, id, column and value, and leaves the outbox; a text seq
//! does not keep `run` or `query` from starting; a seq at `i64::MAX` stops
//! only its own sensor, loudly; a damaged index is named as corruption,
//! once, with the fix, and `doctor` says what to do.
//!
//! Needs `sqlite3`, `mosquitto` and `mosquitto_sub` (scripts/test installs
//! them).

mod common;
mod mosquitto;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Row, assert_no_panic, edgeprio, readings, text, wait_for};
use mosquitto::{
    Agent, AgentFiles, Broker, Sensor, Spec, Sub, agent_config, free_port, missing, progress,
    seen_readings, wait_all_seen,
};

/// Runs `sql` through the sqlite3 CLI, as a user would.
fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3 (scripts/test installs it)");
    assert!(
        out.status.success(),
        "sqlite3 {} {sql:?} failed: {}",
        db.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The sensors of every test: two random walks that never fail a read.
const SENSORS: [Sensor<'static>; 2] = [Sensor::Random("a", 1), Sensor::Random("b", 2)];

/// Writes the agent's config for `broker`'s URL (or a port nobody listens
/// on, so that everything stays in the outbox).
fn config(dir: &Path, broker: Option<&Broker>) -> AgentFiles {
    let url = broker.map_or_else(|| format!("mqtt://127.0.0.1:{}", free_port()), Broker::url);
    agent_config(
        dir,
        "p",
        "100ms",
        &SENSORS,
        &format!(
            "url = \"{url}\"\nbatch_interval = \"1s\"\nbatch_max = 20\nrealtime_max_age = \"1h\""
        ),
    )
}

/// Fills the log with at least `n` readings per sensor, none published.
fn unpublished_log(dir: &Path, n: i64) -> AgentFiles {
    let files = config(dir, None);
    let mut agent = Agent::start(&files, &[]);
    wait_for(Duration::from_secs(30), "the first readings", || {
        agent.assert_running();
        let p = progress(&files.db);
        ["a", "b"]
            .iter()
            .all(|s| p.get(*s).is_some_and(|(logged, _)| *logged >= n))
    });
    agent.stop();
    assert!(
        readings(&files.db).iter().all(|r| r.published_ms.is_none()),
        "nothing is published without a broker"
    );
    files
}

/// The lines of `stderr` that mention `needle`.
fn lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(needle)).collect()
}

/// Every `readings` row whose columns all hold their types (what
/// `common::readings` can read): the bad rows are read by id instead.
fn good_rows(db: &Path, bad: &[i64]) -> Vec<Row> {
    let list = bad
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // `common::readings` decodes every column strictly; copy the good rows
    // to a scratch log it can read.
    let scratch = db.with_extension("good.db");
    let _ = std::fs::remove_file(&scratch);
    sqlite3(
        db,
        &format!(
            "ATTACH '{}' AS g; CREATE TABLE g.readings AS SELECT * FROM readings \
             WHERE id NOT IN ({list});",
            scratch.display()
        ),
    );
    readings(&scratch)
}

/// A text `ts_ms`, a text temperature, an unknown route and a text seq in
/// the middle of an unpublished backlog: every good reading is published,
/// each bad row is reported once (table, id, column, value), leaves the
/// outbox (`published_ms` = -1), and is not reported again after a restart.
/// Before the fix: 0 of 56 readings published, and `MQTT: cannot read the
/// outbox: ... Invalid column type Text at index: 4, name: ts_ms; readings
/// stay in the local log and are sent once the broker is back` every
/// second, blaming the broker.
#[test]
fn bad_rows_are_skipped_once_and_every_good_reading_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let logged = unpublished_log(dir.path(), 30);
    let db = &logged.db;
    let ids: Vec<i64> = readings(db).iter().map(|r| r.id).collect();
    let bad = [ids[4], ids[9], ids[15], ids[22]];
    // CHECK constraints stop a text temperature and an unknown route; a
    // user who turns them off (or an older schema) gets them anyway.
    sqlite3(
        db,
        &format!(
            "UPDATE readings SET ts_ms = 'soon' WHERE id = {};
             PRAGMA ignore_check_constraints = ON;
             UPDATE readings SET temperature_c = 'warm' WHERE id = {};
             UPDATE readings SET route = 'express' WHERE id = {};
             UPDATE readings SET seq = 'x' WHERE id = {};",
            bad[0], bad[1], bad[2], bad[3]
        ),
    );
    let good = good_rows(db, &bad);

    let broker = Broker::start(dir.path(), &Spec::default());
    let files = config(dir.path(), Some(&broker));
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let agent = Agent::start(&files, &[]);
    wait_all_seen(&sub, &files.base(), &good, Duration::from_secs(30));
    let stderr = agent.stop();

    for (id, column, value) in [
        (bad[0], "ts_ms", "'soon'"),
        (bad[1], "temperature_c", "'warm'"),
        (bad[2], "route", "'express'"),
        (bad[3], "seq", "'x'"),
    ] {
        let said = lines_with(&stderr, &format!("row id {id} of table readings"));
        assert_eq!(said.len(), 1, "row {id} reported once:\n{stderr}");
        assert!(
            said[0].contains("WARN")
                && said[0].contains(&format!("column {column} holds {value}"))
                && said[0].contains("published_ms = NULL WHERE id ="),
            "{}",
            said[0]
        );
    }
    assert!(
        lines_with(&stderr, "MQTT:").is_empty(),
        "the broker was never lost:\n{stderr}"
    );
    let marked: BTreeSet<i64> = sqlite3(db, "SELECT id FROM readings WHERE published_ms = -1")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(marked, bad.into_iter().collect());

    // A restart neither reports them again nor sends them: they left the
    // outbox. The new readings go out as before.
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let agent = Agent::start(&files, &[]);
    let before = sqlite3(db, "SELECT max(id) FROM readings")
        .trim()
        .to_owned();
    wait_for(Duration::from_secs(30), "new readings published", || {
        sqlite3(
            db,
            &format!("SELECT count(*) FROM readings WHERE id > {before} AND published_ms > 0"),
        )
        .trim()
            != "0"
    });
    let stderr = agent.stop();
    assert!(
        lines_with(&stderr, "cannot be decoded").is_empty(),
        "reported once, not at every start:\n{stderr}"
    );
    let seen = seen_readings(&sub.messages(), &files.base());
    let seqs_of_bad: BTreeSet<(String, i64)> = readings_by_id(db, &bad[..3]);
    assert!(
        seen.iter().all(|s| !seqs_of_bad.contains(&s.key())),
        "a skipped row was sent: {seen:?}"
    );
}

/// (sensor, seq) of the rows `ids`, whose seq is an integer.
fn readings_by_id(db: &Path, ids: &[i64]) -> BTreeSet<(String, i64)> {
    let list = ids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    sqlite3(
        db,
        &format!("SELECT sensor || '|' || seq FROM readings WHERE id IN ({list})"),
    )
    .lines()
    .map(|l| {
        let (s, q) = l.split_once('|').unwrap();
        (s.to_owned(), q.parse().unwrap())
    })
    .collect()
}

/// A text seq on a sensor's newest row: `query` lists the other rows and
/// says which one it left out; `run` starts, continues the seq after the
/// highest integer one, and publishes. Before the fix both refused to
/// start: `error: SQLite error on ...: Invalid column type Text at index: 1,
/// name: seq` (run; index 3 for query).
#[test]
fn a_text_seq_does_not_keep_run_or_query_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let logged = unpublished_log(dir.path(), 5);
    let db = &logged.db;
    let newest_a = sqlite3(
        db,
        "SELECT id, seq FROM readings WHERE sensor = 'a' ORDER BY seq DESC LIMIT 1",
    );
    let (id, seq) = newest_a.trim().split_once('|').unwrap();
    let (id, seq): (i64, i64) = (id.parse().unwrap(), seq.parse().unwrap());
    sqlite3(
        db,
        &format!("UPDATE readings SET seq = 'nine' WHERE id = {id}"),
    );

    let out = edgeprio(dir.path())
        .args(["query", "--format", "csv", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_no_panic(&stderr);
    assert!(out.status.success(), "query failed:\n{stderr}");
    let total: usize = sqlite3(db, "SELECT count(*) FROM readings")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        stdout.lines().count(),
        total,
        "a header and every other row:\n{stdout}"
    );
    let said = lines_with(&stderr, "cannot be decoded");
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].contains(&format!(
            "row id {id} of table readings: column seq holds 'nine'"
        )),
        "{stderr}"
    );

    let broker = Broker::start(dir.path(), &Spec::default());
    let files = config(dir.path(), Some(&broker));
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let agent = Agent::start(&files, &[]);
    sub.wait(
        Duration::from_secs(30),
        "a new reading of sensor a",
        |msgs| {
            seen_readings(msgs, &files.base())
                .iter()
                .any(|s| s.key() == ("a".to_owned(), seq + 1))
        },
    );
    let stderr = agent.stop();
    // The seq the text replaced is free again, and is the next one handed
    // out: nothing can clash with a text seq.
    let seqs: Vec<i64> = sqlite3(
        db,
        &format!("SELECT seq FROM readings WHERE sensor = 'a' AND id > {id} ORDER BY seq LIMIT 2"),
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    assert_eq!(seqs, vec![seq, seq + 1], "{stderr}");
    assert!(lines_with(&stderr, "another writer").is_empty(), "{stderr}");
}

/// A row with `seq = i64::MAX`: no seq is left after it, so its sensor is
/// refused, loudly, once, naming the row, and the other sensor is read and
/// published as before. Before the fix every commit failed with "rows with
/// our seq numbers appeared in the log from another writer; renumbered the
/// pending readings" and "cannot commit to the log", every cycle, forever:
/// nothing of either sensor was logged again.
#[test]
fn a_seq_at_i64_max_stops_only_its_own_sensor_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let logged = unpublished_log(dir.path(), 3);
    let db = &logged.db;
    sqlite3(
        db,
        "INSERT INTO readings (node, sensor, seq, ts_ms, temperature_c, humidity_pct,
            weight_temperature, weight_humidity, priority, route, published_ms)
         VALUES ('p', 'a', 9223372036854775807, strftime('%s', 'now') * 1000, 20, 50,
                 0, 0, 0, 'batch', strftime('%s', 'now') * 1000)",
    );
    let max_id = sqlite3(db, "SELECT max(id) FROM readings")
        .trim()
        .to_owned();
    let a_before = sqlite3(db, "SELECT count(*) FROM readings WHERE sensor = 'a'");

    let broker = Broker::start(dir.path(), &Spec::default());
    let files = config(dir.path(), Some(&broker));
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let mut agent = Agent::start(&files, &[]);
    wait_for(Duration::from_secs(30), "20 new readings of b", || {
        agent.assert_running();
        sqlite3(
            db,
            &format!("SELECT count(*) FROM readings WHERE sensor = 'b' AND id > {max_id}"),
        )
        .trim()
        .parse::<i64>()
        .unwrap()
            >= 20
    });
    let stderr = agent.stop();
    assert_eq!(
        sqlite3(db, "SELECT count(*) FROM readings WHERE sensor = 'a'"),
        a_before,
        "sensor a got no new rows:\n{stderr}"
    );
    let said = lines_with(&stderr, "is not read any more");
    assert_eq!(said.len(), 1, "said once:\n{stderr}");
    assert!(
        said[0].contains("ERROR")
            && said[0].contains("sensor \"a\"")
            && said[0].contains(&format!(
                "readings row id {max_id} has seq 9223372036854775807"
            )),
        "{}",
        said[0]
    );
    assert!(lines_with(&stderr, "another writer").is_empty(), "{stderr}");
    assert!(lines_with(&stderr, "cannot commit").is_empty(), "{stderr}");
    // Every reading of b, old and new, reached the subscriber.
    let b: Vec<Row> = good_rows(db, &[])
        .into_iter()
        .filter(|r| r.sensor == "b")
        .collect();
    wait_all_seen(&sub, &files.base(), &b, Duration::from_secs(10));
    assert!(missing(&seen_readings(&sub.messages(), &files.base()), &b).is_empty());
}

/// Overwrites the type byte of page `page` (the b-tree page's first byte:
/// 0x0a an index leaf, 0x0d a table leaf; 0xff is no type at all), after a
/// checkpoint moved everything out of the WAL, as a torn write would.
fn damage_page(db: &Path, page: u64) {
    sqlite3(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    let page_size: u64 = sqlite3(db, "PRAGMA page_size").trim().parse().unwrap();
    let mut bytes = std::fs::read(db).unwrap();
    let at = usize::try_from((page - 1) * page_size).unwrap();
    bytes[at] = 0xff;
    std::fs::write(db, bytes).unwrap();
}

/// `doctor` on `files`: its exit code and stdout.
fn doctor(files: &AgentFiles) -> (Option<i32>, String) {
    let dir = files.config.parent().unwrap();
    let out = edgeprio(dir)
        .arg("--config")
        .arg(&files.config)
        .args(["doctor", "--reads", "1"])
        .output()
        .unwrap();
    assert_no_panic(&text(&out.stderr));
    (out.status.code(), text(&out.stdout))
}

/// Asserts that `line` names the corruption of `db` and the way out.
fn assert_names_corruption(line: &str, db: &Path) {
    assert!(
        line.contains(&format!("the log {} is corrupt", db.display()))
            && line.contains("REINDEX")
            && line.contains("stop the agent")
            && line.contains("move the log"),
        "{line}"
    );
}

/// Points the outbox index's entry for row `id` at row 127, which does not
/// exist: the index no longer matches its table, as after a torn write. The
/// entry is the record (node 'p', id, rowid) in the index's only page (its
/// root, from `sqlite_master`): header size 4, a one-character text, two
/// 8-bit integers.
fn damage_index_entry(db: &Path, index: &str, id: u8) {
    sqlite3(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    let root: usize = sqlite3(
        db,
        &format!("SELECT rootpage FROM sqlite_master WHERE name = '{index}'"),
    )
    .trim()
    .parse()
    .unwrap();
    let page_size: usize = sqlite3(db, "PRAGMA page_size").trim().parse().unwrap();
    let mut bytes = std::fs::read(db).unwrap();
    let page = &mut bytes[(root - 1) * page_size..root * page_size];
    let entry = [0x04, 0x0f, 0x01, 0x01, b'p', id, id];
    let at: Vec<usize> = (0..page.len() - entry.len())
        .filter(|&i| page[i..i + entry.len()] == entry)
        .collect();
    assert_eq!(at.len(), 1, "the entry of row {id} in {index}");
    page[at[0] + entry.len() - 1] = 127;
    std::fs::write(db, bytes).unwrap();
}

/// A damaged outbox index (an entry pointing at a row that does not
/// exist): the agent starts and logs, and the publisher says once that the
/// log is corrupt, with the fix, instead of blaming the broker at every
/// retry; `doctor` fails the integrity check and says to REINDEX; after
/// `sqlite3 DB REINDEX` doctor passes and the agent publishes the whole
/// backlog. Before the fix: `WARN MQTT: cannot read the outbox: ... is not
/// a usable SQLite database (database disk image is malformed); edgeprio
/// will not touch it: move it away, ...; readings stay in the local log and
/// are sent once the broker is back` every second, forever, nothing
/// published, and doctor said `ok database ... outbox 79`.
#[test]
fn a_damaged_index_is_named_as_corruption_once_and_reindex_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let logged = unpublished_log(dir.path(), 10);
    let db = &logged.db;
    damage_index_entry(db, "readings_outbox", 5);

    let broker = Broker::start(dir.path(), &Spec::default());
    let files = config(dir.path(), Some(&broker));
    let mut agent = Agent::start(&files, &[]);
    wait_for(Duration::from_secs(30), "the corruption named", || {
        agent.assert_running();
        agent.stderr().contains("is corrupt")
    });
    let logged_before = progress(db)["a"].0;
    wait_for(Duration::from_secs(30), "20 more cycles", || {
        agent.assert_running();
        progress(db)["a"].0 >= logged_before + 20
    });
    let stderr = agent.stop();
    // Many retries (every 200 ms) later, said once.
    let said = lines_with(&stderr, "cannot read the outbox");
    assert_eq!(said.len(), 1, "said once:\n{stderr}");
    assert_names_corruption(said[0], db);
    assert!(
        lines_with(&stderr, "MQTT:").is_empty(),
        "the broker is not to blame:\n{stderr}"
    );

    let (code, out) = doctor(&files);
    assert_eq!(code, Some(1), "{out}");
    let fail = lines_with(&out, "FAIL  integrity");
    assert_eq!(fail.len(), 1, "{out}");
    assert!(
        fail[0].contains(&format!(
            "the log {} is corrupt: PRAGMA integrity_check: ",
            db.display()
        )) && fail[0].contains("missing from index readings_outbox"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "fix: stop the agent (systemctl stop edgeprio), run `sqlite3 {} 'REINDEX'`",
            db.display()
        )),
        "{out}"
    );

    sqlite3(db, "REINDEX");
    let (code, out) = doctor(&files);
    assert!(
        out.contains("ok    integrity      PRAGMA integrity_check"),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
    let good = good_rows(db, &[]);
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let agent = Agent::start(&files, &[]);
    wait_all_seen(&sub, &files.base(), &good, Duration::from_secs(30));
    agent.stop();
}

/// A damaged table page under the oldest unpublished rows (its page number
/// from `dbstat`, its type byte overwritten: REINDEX cannot repair that):
/// the agent starts and logs, and the publisher says once that the log is
/// corrupt, with the way out (move the log away); doctor fails the
/// integrity check. Before the fix: the same `MQTT: cannot read the outbox:
/// ... is not a usable SQLite database ...` every second, forever.
#[test]
fn a_damaged_table_page_is_named_as_corruption_once() {
    let dir = tempfile::tempdir().unwrap();
    let logged = unpublished_log(dir.path(), 3);
    let db = &logged.db;
    // 600 unpublished rows of a sensor no longer configured come first
    // (the agent's own rows move behind them), so the first leaf page of
    // `readings` holds only rows the outbox reads first and nothing the
    // agent needs to start.
    sqlite3(
        db,
        "UPDATE readings SET id = id + 100000;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 599)
         INSERT INTO readings (id, node, sensor, seq, ts_ms, temperature_c, humidity_pct,
             weight_temperature, weight_humidity, priority, route)
         SELECT i + 1, 'p', 'gone', i, strftime('%s', 'now') * 1000, 20, 50, 0, 0, 0, 'batch'
         FROM n;",
    );
    let first_leaf: u64 = sqlite3(
        db,
        "SELECT pageno FROM dbstat WHERE name = 'readings' AND pagetype = 'leaf' \
         ORDER BY path LIMIT 1",
    )
    .trim()
    .parse()
    .unwrap();
    damage_page(db, first_leaf);

    let broker = Broker::start(dir.path(), &Spec::default());
    let files = config(dir.path(), Some(&broker));
    let mut agent = Agent::start(&files, &[]);
    wait_for(Duration::from_secs(30), "the corruption named", || {
        agent.assert_running();
        agent.stderr().contains("is corrupt")
    });
    // Many retries (every 200 ms) and cycles later, still said once.
    // Counted through the seq index: a scan of the table meets the damage.
    let logged = || -> i64 {
        sqlite3(
            db,
            "SELECT count(*) FROM readings WHERE node = 'p' AND sensor = 'a'",
        )
        .trim()
        .parse()
        .unwrap()
    };
    let logged_before = logged();
    wait_for(Duration::from_secs(30), "20 more cycles", || {
        agent.assert_running();
        logged() >= logged_before + 20
    });
    let stderr = agent.stop();
    let said = lines_with(&stderr, "cannot read the outbox");
    assert_eq!(said.len(), 1, "said once:\n{stderr}");
    assert_names_corruption(said[0], db);
    assert!(
        lines_with(&stderr, "MQTT:").is_empty(),
        "the broker is not to blame:\n{stderr}"
    );

    let (code, out) = doctor(&files);
    assert_eq!(code, Some(1), "{out}");
    let fail = lines_with(&out, "FAIL  integrity");
    assert_eq!(fail.len(), 1, "{out}");
    assert!(fail[0].contains("is corrupt"), "{out}");
    assert!(out.contains("move") && out.contains(".recover"), "{out}");
}
