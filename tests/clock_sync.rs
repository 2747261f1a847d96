//! Readings taken while the kernel says the system clock is not
//! synchronized (issue 12, item 7, last sentence): the real agent marks
//! them `"clock_synced": false` on the wire (absent otherwise) and 0 in the
//! log's `clock_synced` column, says so once at WARN, and shows it in
//! `/metrics`, `query` and `doctor`.
//!
//! libfaketime does not fake `adjtimex(2)`, so the unsynchronized clock is
//! the debug-build test hook `EDGEPRIO_TEST_CLOCK_SYNC=unsynced`
//! (src/clock.rs; tests/common sets it to `synced` for every other test,
//! whatever this machine's NTP state). One test runs the agent on the real
//! kernel answer and checks it against `adjtimex` called from Python
//! (needs `python3`). Needs Mosquitto.

mod common;
mod mosquitto;

use std::path::Path;
use std::time::Duration;

use common::{edgeprio, open_ro, readings, scrape_metrics, std_cmd, text};
use mosquitto::{Agent, Broker, Sensor, Spec, Sub, agent_config, seen_readings, wait_all_seen};

/// The hook, as src/clock.rs names it.
const HOOK: &str = "EDGEPRIO_TEST_CLOCK_SYNC";

/// The `clock_synced` column of every reading, oldest first.
fn clock_column(db: &Path) -> Vec<Option<i64>> {
    open_ro(db)
        .prepare("SELECT clock_synced FROM readings ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn readings_taken_on_an_unsynchronized_clock_reach_the_subscriber_marked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let metrics = mosquitto::free_port();
    let files = agent_config(
        dir.path(),
        "nontp",
        "200ms",
        &[Sensor::Heater("lab")],
        &format!(
            "url = \"{}\"\nbatch_interval = \"1s\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            broker.url()
        ),
    );
    let sub = Sub::start(&broker, &[&format!("{}/#", files.base())], None);
    let mut agent = Agent::start(&files, &[(HOOK, "unsynced")]);
    mosquitto::wait_progress(&mut agent, &files.db, &["lab"], 8, 8);
    let gauge = scrape_metrics(metrics);
    let stderr = agent.stop();

    let rows = readings(&files.db);
    let column = clock_column(&files.db);
    assert!(
        !column.is_empty() && column.iter().all(|c| *c == Some(0)),
        "every reading is logged with clock_synced 0: {column:?}"
    );
    wait_all_seen(&sub, &files.base(), &rows, Duration::from_secs(10));
    let seen = seen_readings(&sub.messages(), &files.base());
    for s in &seen {
        assert_eq!(
            s.reading.get("clock_synced"),
            Some(&serde_json::Value::Bool(false)),
            "on {}: {}",
            s.topic,
            s.reading
        );
    }
    // The retained state of the sensor is a reading too.
    let state = broker
        .retained(&format!("{}/lab/state", files.base()))
        .expect("a retained state");
    assert!(state.contains("\"clock_synced\":false"), "{state}");

    assert!(
        gauge.contains("edgeprio_clock_synchronized{node=\"nontp\"} 0\n"),
        "{gauge}"
    );
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("not synchronized"))
        .collect();
    assert_eq!(warned.len(), 1, "one WARN, not one per cycle:\n{stderr}");

    // `query` shows it: JSON as on the wire, the CSV's last column.
    let json = edgeprio(dir.path())
        .args(["query", "--db"])
        .arg(&files.db)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let json = text(&json.stdout);
    assert_eq!(json.lines().count(), rows.len(), "{json}");
    assert!(
        json.lines().all(|l| l.contains("\"clock_synced\":false")),
        "{json}"
    );
    let csv = edgeprio(dir.path())
        .args(["query", "--db"])
        .arg(&files.db)
        .args(["--format", "csv"])
        .output()
        .unwrap();
    let csv = text(&csv.stdout);
    assert!(csv.lines().skip(1).all(|l| l.ends_with(",0")), "{csv}");
}

#[test]
fn a_synchronized_clock_changes_nothing_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let files = agent_config(
        dir.path(),
        "ntp",
        "200ms",
        &[Sensor::Heater("lab")],
        &format!("url = \"{}\"\nbatch_interval = \"1s\"\n", broker.url()),
    );
    let sub = Sub::start(&broker, &[&format!("{}/#", files.base())], None);
    // tests/common sets the hook to "synced".
    let mut agent = Agent::start(&files, &[]);
    mosquitto::wait_progress(&mut agent, &files.db, &["lab"], 5, 5);
    let stderr = agent.stop();
    let rows = readings(&files.db);
    assert!(clock_column(&files.db).iter().all(|c| *c == Some(1)));
    wait_all_seen(&sub, &files.base(), &rows, Duration::from_secs(10));
    for (s, row) in seen_readings(&sub.messages(), &files.base())
        .iter()
        .zip(&rows)
    {
        // Exactly the contract's keys, as before.
        mosquitto::assert_reading_is_row(&s.reading, row);
    }
    assert!(!stderr.contains("not synchronized"), "{stderr}");
}

/// What the kernel says, asked by Python through ctypes (a zeroed
/// buffer larger than any `struct timex`: modes 0, read only): whether the
/// clock is synchronized. Linux returns `TIME_ERROR` (5) whenever
/// `STA_UNSYNC` is set, so the return value alone tells.
fn kernel_says() -> bool {
    let script = "import ctypes\n\
                  buf = ctypes.create_string_buffer(1024)\n\
                  state = ctypes.CDLL(None).adjtimex(buf)\n\
                  assert state >= 0, state\n\
                  print(0 if state == 5 else 1)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 is needed to ask adjtimex independently (scripts/test installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    match text(&out.stdout).trim() {
        "1" => true,
        "0" => false,
        other => panic!("python3 said {other:?}"),
    }
}

#[test]
fn without_the_hook_the_agent_asks_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let before = kernel_says();
    let mut cmd = std_cmd(dir.path());
    cmd.env_remove(HOOK)
        .args(["demo", "--db"])
        .arg(&db)
        .args(["--speed", "1000", "--count", "2"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = kernel_says();
    assert_eq!(before, after, "the clock's state changed during the test");
    let want = Some(i64::from(before));
    let column = clock_column(&db);
    assert!(
        !column.is_empty() && column.iter().all(|c| *c == want),
        "the kernel says synchronized = {before}; the log: {column:?}"
    );
    let doctor_line = if before { "ok    clock" } else { "WARN  clock" };
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"k\"\ndb = {:?}\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = std_cmd(dir.path());
    cmd.env_remove(HOOK)
        .arg("--config")
        .arg(&config)
        .args(["doctor", "--reads", "1"]);
    let out = text(&cmd.output().unwrap().stdout);
    assert!(out.contains(doctor_line), "{out}");
}
