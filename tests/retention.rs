//! Retention through the real binary: `run` with a `[store]` section
//! deletes, at its first cycle, the published readings and the sensor
//! errors past `retention`, and nothing else; with the disk "nearly full"
//! it says so loudly and sheds the oldest published readings first.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{
    ChildGuard, assert_no_panic, now_ms, open_ro, readings, send_signal, std_cmd, stderr_file,
    wait_for,
};
use edgeprio::store::{Access, Store};

const DAY_MS: i64 = 86_400_000;

/// A log holding, per `(sensor, age in days, published)` entry, one reading
/// of that age, and one sensor error per age in `error_ages` (days).
fn prepare_log(db: &Path, rows: &[(&str, i64, bool)], error_ages: &[i64]) {
    // The agent's own code creates the schema; the rows go in as a user's
    // sqlite3 would put them.
    drop(Store::open(db, Access::Writer).unwrap());
    let conn = rusqlite::Connection::open(db).unwrap();
    let now = now_ms();
    for (seq, &(sensor, age, published)) in rows.iter().enumerate() {
        let seq = i64::try_from(seq).unwrap();
        let ts = now - age * DAY_MS + seq;
        conn.execute(
            "INSERT INTO readings (node, sensor, seq, ts_ms, temperature_c, humidity_pct,
               weight_temperature, weight_humidity, priority, route, published_ms)
             VALUES ('test-node', ?1, ?2, ?3, 20, 50, 0, 0, 0, 'batch', ?4)",
            rusqlite::params![sensor, seq, ts, published.then_some(ts + 1)],
        )
        .unwrap();
    }
    for age in error_ages {
        conn.execute(
            "INSERT INTO sensor_errors (ts_ms, node, sensor, kind, detail)
             VALUES (?1, 'test-node', 'old', 'timeout', 'no answer')",
            [now - age * DAY_MS],
        )
        .unwrap();
    }
}

/// Runs the agent on `db` with `store` as its `[store]` section until its
/// first retention pass is recorded, stops it with SIGTERM, and returns
/// its stderr.
fn run_one_pass(dir: &Path, db: &Path, store: &str) -> String {
    let config = dir.join("retention.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"test-node\"\ninterval = \"50ms\"\ndb = \"{}\"\n[store]\n{store}\n\
             [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n",
            db.display()
        ),
    )
    .unwrap();
    let err_path = dir.join("run.err");
    let mut cmd = std_cmd(dir);
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(stderr_file(&err_path));
    let mut child = ChildGuard::spawn(cmd);
    let pruned = || {
        open_ro(db)
            .query_row(
                "SELECT last_prune_ms IS NOT NULL FROM agent_status WHERE node = 'test-node'",
                [],
                |r| r.get::<_, bool>(0),
            )
            .unwrap_or(false)
    };
    wait_for(Duration::from_secs(30), "the first retention pass", || {
        if let Some(status) = child.child.try_wait().unwrap() {
            panic!(
                "run exited early ({status}): {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        pruned()
    });
    send_signal(child.id(), "TERM");
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("run stops within 20 s of SIGTERM");
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_no_panic(&stderr);
    stderr
}

/// (sensor, seq, published) of the readings left, not counting the
/// agent's own sensor.
fn left(db: &Path) -> Vec<(String, i64, bool)> {
    readings(db)
        .into_iter()
        .filter(|r| r.sensor != "lab")
        .map(|r| (r.sensor, r.seq, r.published_ms.is_some()))
        .collect()
}

#[test]
fn retention_deletes_only_published_rows_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    prepare_log(
        &db,
        &[
            ("old", 5, true),  // past the retention, published: goes
            ("old", 5, false), // past it, never acknowledged: stays
            ("old", 3, true),  // goes
            ("new", 1, true),  // inside the retention: stays
            ("new", 1, false), // stays
        ],
        &[5, 3, 1],
    );
    run_one_pass(dir.path(), &db, "retention = \"2d\"\nmin_free = \"0\"");
    assert_eq!(
        left(&db),
        vec![
            ("old".into(), 1, false),
            ("new".into(), 3, true),
            ("new".into(), 4, false),
        ]
    );
    let conn = open_ro(&db);
    let errors: i64 = conn
        .query_row(
            "SELECT count(*) FROM sensor_errors WHERE sensor = 'old'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(errors, 1, "only the error inside the retention is left");
    let (pruned, shed, db_bytes, disk_free): (i64, i64, i64, Option<i64>) = conn
        .query_row(
            "SELECT pruned_readings, shed_readings, db_bytes, disk_free_bytes
             FROM agent_status WHERE node = 'test-node'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((pruned, shed), (2, 0));
    assert!(db_bytes > 0 && disk_free.is_some_and(|f| f > 0));
}

#[test]
fn nearly_full_disk_is_logged_and_sheds_the_oldest_published_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    // Twenty readings inside the default 30 days, oldest first; the two
    // oldest were never acknowledged.
    let rows: Vec<(&str, i64, bool)> = (0..20).map(|i| ("old", 20 - i, i >= 2)).collect();
    prepare_log(&db, &rows, &[]);
    // No disk has this much free: the guard always sees it nearly full.
    let stderr = run_one_pass(dir.path(), &db, "min_free = \"1000TiB\"");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("disk holding the log is nearly full")),
        "{stderr}"
    );
    let left = left(&db);
    // A pass sheds at most a tenth of the log: here 3 of ~21 readings.
    // The two unpublished ones stay; the oldest published go first.
    assert_eq!(
        left[..2],
        [("old".into(), 0, false), ("old".into(), 1, false)]
    );
    let first_kept = left[2].1;
    assert!((3..=6).contains(&first_kept), "{left:?}");
    let seqs: Vec<i64> = left[2..].iter().map(|r| r.1).collect();
    assert_eq!(seqs, (first_kept..20).collect::<Vec<_>>());
}
