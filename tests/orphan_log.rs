//! A log that cannot be followed (a foreign `SQLite` file moved onto its
//! path while the agent runs), through the real binary, without a broker:
//! every reading stays unpublished, so everything the agent wrote since it
//! started is what a stop must not lose. And a spill left under another
//! log's path (the log moved to a bigger disk) is reported at start and by
//! `doctor`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{RunAgent as Agent, edgeprio, readings, text, wait_for};

/// How long the agent gets to say what a test waits for.
const WAIT: Duration = Duration::from_secs(30);

/// A test's files: the log at `d/e.db` and a runtime directory of its own.
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    config: PathBuf,
    runtime: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir(dir.join("d")).unwrap();
    let db = dir.join("d/e.db");
    let config = dir.join("e.toml");
    write_config(&config, &db);
    let runtime = dir.join("run");
    Setup {
        _tmp: tmp,
        dir,
        db,
        config,
        runtime,
    }
}

/// Two simulated sensors every 100 ms, no `[mqtt]`: nothing is published.
fn write_config(config: &Path, db: &Path) {
    std::fs::write(
        config,
        format!(
            "node = \"t\"\ninterval = \"100ms\"\ndb = \"{}\"\n\
             [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n\
             [[sensor]]\nid = \"attic\"\nkind = \"sim\"\nprofile = \"random\"\nseed = 7\n\
             failure_rate = 0.0\n",
            db.display()
        ),
    )
    .unwrap();
}

/// The agent on the setup's config, its stderr in `<name>.err`.
fn start(s: &Setup, name: &str) -> Agent {
    Agent::start(&s.dir, &s.config, &s.runtime, name)
}

/// The spill files in the runtime directory.
fn spills(s: &Setup) -> Vec<PathBuf> {
    std::fs::read_dir(&s.runtime)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// Runs the agent until it has logged `n` readings, then moves a foreign
/// `SQLite` file (one table) onto the log's path and waits until the agent
/// says it cannot open a log there. The agent keeps writing the old file,
/// which only it (and the test, which holds it open) can reach: returns
/// once it has three more cycles in it, with how many readings it has.
fn replace_with_foreign(s: &Setup, n: i64) -> (Agent, i64) {
    let mut agent = start(s, "first");
    agent.wait_line(&["agent running"], WAIT);
    let old = common::open_ro(&s.db);
    let count = |c: &rusqlite::Connection| {
        c.query_row("SELECT count(*) FROM readings", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    wait_for(Duration::from_secs(30), "readings in the log", || {
        count(&old) >= n
    });
    let foreign = s.dir.join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');")
        .unwrap();
    std::fs::rename(&foreign, &s.db).unwrap();
    agent.wait_line(&["cannot open a log at the path"], WAIT);
    let then = count(&old);
    let mut took = then;
    wait_for(Duration::from_secs(30), "cycles into the old file", || {
        took = count(&old);
        took >= then + 6
    });
    (agent, took)
}

/// The path is fixed (the foreign file moved away), a new agent starts and
/// stops: every seq of each sensor, 0 up to the last one the first agent
/// took, is in the new log exactly once, and no spill is left.
fn assert_next_start_has_everything(s: &Setup, took: i64) {
    std::fs::rename(&s.db, s.dir.join("foreign-moved-away.db")).unwrap();
    let mut agent = start(s, "second");
    agent.wait_line(&["read", "readings back from the spill"], WAIT);
    agent.wait_line(&["agent running"], WAIT);
    wait_for(Duration::from_secs(30), "the spill removed", || {
        spills(s).is_empty()
    });
    let (status, stderr) = agent.signal_and_wait("TERM");
    assert!(status.success(), "{status}:\n{stderr}");
    let seqs = common::seqs_by_sensor(&readings(&s.db));
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    let logged: i64 = seqs.values().map(|v| i64::try_from(v.len()).unwrap()).sum();
    for (sensor, got) in &seqs {
        let want: Vec<i64> = (0..i64::try_from(got.len()).unwrap()).collect();
        assert_eq!(got, &want, "sensor {sensor}: seqs not 0..n once each");
    }
    assert!(
        logged >= took,
        "the new log has {logged} readings, the first agent had taken at least {took}:\n{stderr}"
    );
}

#[test]
fn sigterm_with_a_log_that_cannot_be_followed_spills_what_it_wrote_since() {
    let s = setup();
    let (agent, took) = replace_with_foreign(&s, 10);
    let (status, stderr) = agent.signal_and_wait("TERM");
    assert!(status.success(), "{status}:\n{stderr}");
    assert_eq!(
        spills(&s).len(),
        1,
        "one spill in {:?}:\n{stderr}",
        s.runtime
    );
    assert!(
        stderr.contains("is not the one the agent writes") && stderr.contains("to the spill"),
        "the stop says where the readings went:\n{stderr}"
    );
    assert_next_start_has_everything(&s, took);
}

#[test]
fn sighup_with_a_log_that_cannot_be_followed_exits_1_and_keeps_the_readings() {
    let s = setup();
    let (agent, took) = replace_with_foreign(&s, 10);
    let (status, stderr) = agent.signal_and_wait("HUP");
    assert_eq!(status.code(), Some(1), "{status}:\n{stderr}");
    assert_eq!(
        spills(&s).len(),
        1,
        "one spill in {:?}:\n{stderr}",
        s.runtime
    );
    assert!(
        stderr.contains("is a SQLite database of another program")
            && stderr.contains("the next start writes them"),
        "the exit says why and where the readings are:\n{stderr}"
    );
    assert_next_start_has_everything(&s, took);
}

#[test]
fn a_spill_of_another_log_path_is_reported_at_start_and_by_doctor() {
    let s = setup();
    let (agent, _) = replace_with_foreign(&s, 10);
    let (status, stderr) = agent.signal_and_wait("TERM");
    assert!(status.success(), "{status}:\n{stderr}");
    let spill = spills(&s);
    assert_eq!(spill.len(), 1, "one spill in {:?}:\n{stderr}", s.runtime);
    // The log is pointed elsewhere (as after moving it to a bigger disk).
    std::fs::create_dir(s.dir.join("big")).unwrap();
    write_config(&s.config, &s.dir.join("big/e.db"));
    let mut agent = start(&s, "moved");
    agent.wait_line(&["WARN", "spill", "of another log path"], WAIT);
    let (status, stderr) = agent.signal_and_wait("TERM");
    assert!(status.success(), "{status}:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("of another log path"))
        .unwrap();
    let name = spill[0].display().to_string();
    for want in [name.as_str(), "lab seq 0..", "attic seq 0..", "d/e.db"] {
        assert!(line.contains(want), "{want:?} missing in {line}");
    }
    assert_eq!(spills(&s), spill, "the spill is left alone");
    let out = edgeprio(&s.dir)
        .arg("--config")
        .arg(&s.config)
        .arg("doctor")
        .env("RUNTIME_DIRECTORY", &s.runtime)
        .output()
        .unwrap();
    let doctor = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        doctor.contains(&name) && doctor.contains("of another log path"),
        "doctor names the spill:\n{doctor}"
    );
}
