//! `edgeprio collect` end to end (issue 13): real agents (`edgeprio run`
//! with simulated sensors) publish to a real Mosquitto; real collectors
//! consume the routes into a real `PostgreSQL`, each test on its own
//! broker, server, ports and tempdir. Every reading of the agents' logs is
//! stored once per (node, sensor, log, seq), with the logged values, also
//! with two collectors sharing a route and when one of them is killed;
//! malformed messages are refused and counted; the `--exec` hook sees each
//! stored reading of its priority; an agent's log is never taken for a
//! collector's database.
//!
//! Needs `mosquitto`, `mosquitto_pub`/`mosquitto_sub`, the `PostgreSQL`
//! server binaries and `psql` (scripts/test installs them).

mod collect_support;
mod common;
mod mosquitto;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use collect_support::{
    Collect, Key, assert_grafana_view, assert_stored_exactly, collect_config, log_rows, pg_count,
    wait_pg_count,
};
use common::Row;
use common::postgres::Postgres;
use mosquitto::{
    Agent, AgentFiles, Broker, Sensor, Spec, Sub, agent_config, assert_reading_is_row,
    wait_progress,
};
use serde_json::Value;

/// How long the collectors get to store what the stopped agents published.
const CATCH_UP: Duration = Duration::from_secs(15);

/// `[mqtt]` lines of the agents: batches flushed every 200 ms, and a
/// generous `realtime_max_age`, so that a loaded machine never turns a
/// real-time reading into a late one on the batch topic (these tests are
/// about storing, not lateness).
fn agent_mqtt(broker: &Broker) -> String {
    format!(
        "url = \"{}\"\nbatch_interval = \"200ms\"\nbatch_max = 20\nrealtime_max_age = \"30s\"\n",
        broker.url()
    )
}

/// A broker, a `PostgreSQL` and the collectors' config, in `dir`.
fn servers(dir: &Path) -> (Broker, Postgres, std::path::PathBuf) {
    let broker = Broker::start(dir, &Spec::default());
    let pg = Postgres::start();
    let config = collect_config(dir, &broker);
    (broker, pg, config)
}

/// How many of `rows` went on `route`.
fn on_route(rows: &BTreeMap<Key, Row>, route: &str) -> usize {
    rows.values().filter(|r| r.route == route).count()
}

/// Two agents publish both routes; a real-time and a batch collector store
/// them into one `PostgreSQL`. After the agents drained (SIGTERM), every
/// (node, sensor, log, seq) of both logs is in `readings` exactly once,
/// with the logged values and route, and the Grafana view shows each of
/// them at its instant under `node/sensor`.
#[test]
fn agents_to_postgres_every_logged_reading_is_stored_once_with_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, pg, config) = servers(dir.path());
    let url = pg.url();
    let rt = Collect::start(
        dir.path(),
        &config,
        "realtime",
        &url,
        &["--client-id", "c-rt"],
    );
    let batch = Collect::start(dir.path(), &config, "batch", &url, &["--client-id", "c-b"]);

    let mqtt = agent_mqtt(&broker);
    let n1 = agent_config(
        dir.path(),
        "n1",
        "50ms",
        &[
            Sensor::Heater("lab"),
            Sensor::Random("walk", 11),
            Sensor::Alternating("alt"),
        ],
        &mqtt,
    );
    let n2 = agent_config(
        dir.path(),
        "n2",
        "20ms",
        &[Sensor::Random("walk", 12), Sensor::Alternating("alt")],
        &mqtt,
    );
    let mut a1 = Agent::start(&n1, &[]);
    let mut a2 = Agent::start(&n2, &[]);
    wait_progress(&mut a1, &n1.db, &["lab", "walk", "alt"], 40, 1);
    wait_progress(&mut a2, &n2.db, &["walk", "alt"], 80, 1);
    a1.stop();
    a2.stop();

    let mut want = log_rows(&n1.db, |_| true);
    want.extend(log_rows(&n2.db, |_| true));
    assert!(
        on_route(&want, "realtime") > 0 && on_route(&want, "batch") > 0,
        "the agents logged both routes"
    );
    wait_pg_count(&pg, want.len(), CATCH_UP, "both agents' readings");
    assert_stored_exactly(&pg, &want);

    assert_grafana_view(&pg, &want);

    let (rt, _) = rt.stop();
    let (batch, _) = batch.stop();
    assert_eq!(
        rt.inserted,
        u64::try_from(on_route(&want, "realtime")).unwrap(),
        "{rt:?}"
    );
    assert_eq!(
        batch.inserted,
        u64::try_from(on_route(&want, "batch")).unwrap(),
        "{batch:?}"
    );
    assert_eq!(rt.rejected + batch.rejected, 0, "{rt:?} {batch:?}");
    assert_eq!(
        rt.received,
        rt.inserted + rt.duplicates,
        "one reading per real-time message: {rt:?}"
    );
}

/// An agent whose readings are all but the first real-time (two
/// alternating sensors every 20 ms: about 100 real-time messages a
/// second), node `n1`, in `dir`.
fn realtime_agent(dir: &Path, broker: &Broker) -> AgentFiles {
    agent_config(
        dir,
        "n1",
        "20ms",
        &[Sensor::Alternating("a1"), Sensor::Alternating("a2")],
        &agent_mqtt(broker),
    )
}

/// The two members of group `g` on the real-time route.
fn group_member(dir: &Path, config: &Path, pg: &Postgres, id: &str) -> Collect {
    Collect::start(
        dir,
        config,
        "realtime",
        &pg.url(),
        &["--group", "g", "--client-id", id],
    )
}

/// Two collectors share the real-time route (`--group g`): the broker
/// splits the messages between them, and every real-time reading of the
/// log is stored exactly once.
#[test]
fn two_collectors_in_a_group_split_the_route_and_store_each_reading_once() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, pg, config) = servers(dir.path());
    let c1 = group_member(dir.path(), &config, &pg, "m1");
    let c2 = group_member(dir.path(), &config, &pg, "m2");
    let files = realtime_agent(dir.path(), &broker);
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &["a1", "a2"], 60, 1);
    agent.stop();

    let want = log_rows(&files.db, |r| r.route == "realtime");
    assert!(want.len() >= 100, "{} real-time readings", want.len());
    wait_pg_count(&pg, want.len(), CATCH_UP, "the route's readings");
    assert_stored_exactly(&pg, &want);

    let (t1, _) = c1.stop();
    let (t2, _) = c2.stop();
    assert!(
        t1.received > 0 && t2.received > 0,
        "both members received messages: {t1:?} {t2:?}"
    );
    assert_eq!(
        t1.inserted + t2.inserted,
        u64::try_from(want.len()).unwrap(),
        "{t1:?} {t2:?}"
    );
    assert_eq!(t1.rejected + t2.rejected, 0, "{t1:?} {t2:?}");
}

/// Starts two members of group `g` and the real-time agent, waits until
/// some readings are stored, kills member `m2` with SIGKILL mid-stream,
/// lets the agent publish about as much again, and stops it. Returns the
/// survivor, the agent's files and the route's logged readings.
fn kill_one_member_mid_stream(
    dir: &Path,
    broker: &Broker,
    pg: &Postgres,
    config: &Path,
) -> (Collect, AgentFiles, BTreeMap<Key, Row>) {
    let survivor = group_member(dir, config, pg, "m1");
    let mut victim = group_member(dir, config, pg, "m2");
    let files = realtime_agent(dir, broker);
    let mut agent = Agent::start(&files, &[]);
    common::wait_for(CATCH_UP, "40 stored readings", || pg_count(pg) >= 40);
    victim.kill9();
    let logged_at_kill = common::readings(&files.db).len();
    wait_progress(
        &mut agent,
        &files.db,
        &["a1", "a2"],
        i64::try_from(logged_at_kill).unwrap(),
        1,
    );
    agent.stop();
    let want = log_rows(&files.db, |r| r.route == "realtime");
    assert!(
        want.len() >= 2 * logged_at_kill - 20,
        "{} real-time readings, {logged_at_kill} logged at the kill",
        want.len()
    );
    (survivor, files, want)
}

/// `kill -9` of one of two members mid-stream, then that member started
/// again under its client id: every real-time reading of the log is stored
/// exactly once.
///
/// What Mosquitto 2.0.11 does with the killed member's share (measured
/// with `mosquitto_sub -c` members): the killed member's persistent session
/// is kept, with its unacknowledged in-flight messages, and the broker goes
/// on giving it every other new message of the group. The survivor carries
/// that session while the member is away (src/collect/group.rs); when the
/// member is back it takes its session over again.
#[test]
fn a_member_killed_mid_stream_and_restarted_leaves_every_reading_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, pg, config) = servers(dir.path());
    let (survivor, _files, want) = kill_one_member_mid_stream(dir.path(), &broker, &pg, &config);

    let back = group_member(dir.path(), &config, &pg, "m2");
    wait_pg_count(&pg, want.len(), CATCH_UP, "after the restart of m2");
    assert_stored_exactly(&pg, &want);

    let (t1, said) = survivor.stop();
    let (t2, _) = back.stop();
    assert!(t1.inserted > 0, "{t1:?}");
    assert!(
        said.contains("carrying its session") && said.contains("handing its session back"),
        "the survivor carried m2's session while it was away:\n{said}"
    );
    assert_eq!(t1.rejected + t2.rejected, 0, "{t1:?} {t2:?}");
}

/// The availability claim: with two collectors in one group,
/// `kill -9` one mid-stream and the other carries the whole route, without
/// a restart of the dead one: it sees the dead member's Last Will and
/// consumes its persistent session (what Mosquitto queued for it, its
/// share of what is published after the kill, and what was in flight to it)
/// until it is back (src/collect/group.rs).
#[test]
fn the_survivor_alone_stores_what_is_published_after_the_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, pg, config) = servers(dir.path());
    let (survivor, _files, want) = kill_one_member_mid_stream(dir.path(), &broker, &pg, &config);
    wait_pg_count(&pg, want.len(), CATCH_UP, "the survivor alone");
    assert_stored_exactly(&pg, &want);
    survivor.stop();
}

/// The batch collector commits the agent's batch arrays (more readings
/// than messages) while a message that is not JSON and an array whose
/// reading names another node than the topic's, both on
/// `edgeprio/x/batch`, are refused, logged by kind and counted; neither is
/// stored, and every batch reading of the log is.
#[test]
fn the_batch_collector_refuses_and_counts_malformed_messages_while_good_ones_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, pg, config) = servers(dir.path());
    let collector = Collect::start(
        dir.path(),
        &config,
        "batch",
        &pg.url(),
        &["--client-id", "c-b"],
    );
    let sub = Sub::start(&broker, &["edgeprio/x/batch"], None);
    let files = agent_config(
        dir.path(),
        "x",
        "20ms",
        &[Sensor::Random("w1", 1), Sensor::Random("w2", 2)],
        &agent_mqtt(&broker),
    );
    let mut agent = Agent::start(&files, &[]);
    sub.wait(CATCH_UP, "a batch of x", |m| !m.is_empty());
    // A real batch of x's, its first reading moved to node y: valid in
    // every other way, so only the node check refuses it.
    let mut foreign: Vec<Value> = serde_json::from_str(&sub.messages()[0].payload).unwrap();
    foreign.truncate(1);
    foreign[0]["node"] = Value::from("y");
    broker.publish("edgeprio/x/batch", "not json {", false);
    broker.publish(
        "edgeprio/x/batch",
        &serde_json::to_string(&foreign).unwrap(),
        false,
    );
    wait_progress(&mut agent, &files.db, &["w1", "w2"], 60, 1);
    agent.stop();

    let want = log_rows(&files.db, |r| r.route == "batch");
    wait_pg_count(&pg, want.len(), CATCH_UP, "x's batch readings");
    assert_stored_exactly(&pg, &want);

    let (t, stderr) = collector.stop();
    assert_eq!(t.rejected, 2, "{t:?}\n{stderr}");
    assert_eq!(t.inserted, u64::try_from(want.len()).unwrap(), "{t:?}");
    assert!(
        t.received - t.rejected < t.inserted,
        "batch messages carry several readings: {t:?}"
    );
    for kind in ["json", "other_node"] {
        assert!(
            stderr.lines().any(|l| l.contains("rejected a message")
                && l.contains(kind)
                && l.contains("edgeprio/x/batch")),
            "no refusal of kind {kind} logged:\n{stderr}"
        );
    }
}

/// `--on-priority 1 --exec 'cat >> FILE'` on the real-time collector:
/// FILE ends with one JSON line per stored reading of priority 1 or more,
/// each the logged reading.
#[test]
fn the_exec_hook_gets_one_json_line_per_stored_reading_of_its_priority() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, pg, config) = servers(dir.path());
    let file = dir.path().join("alerts.jsonl");
    let exec = format!("cat >> '{}'", file.display());
    let collector = Collect::start(
        dir.path(),
        &config,
        "realtime",
        &pg.url(),
        &["--client-id", "c-rt", "--on-priority", "1", "--exec", &exec],
    );
    let files = agent_config(
        dir.path(),
        "h",
        "50ms",
        &[Sensor::Heater("lab"), Sensor::Alternating("alt")],
        &agent_mqtt(&broker),
    );
    let mut agent = Agent::start(&files, &[]);
    // 40 cycles: the heater's event at seq 8 and 34, the alternating
    // sensor's real-time readings at every seq but 0.
    wait_progress(&mut agent, &files.db, &["lab", "alt"], 40, 1);
    agent.stop();

    let stored = log_rows(&files.db, |r| r.route == "realtime");
    wait_pg_count(&pg, stored.len(), CATCH_UP, "the real-time readings");
    let want: BTreeMap<Key, Row> = stored
        .into_iter()
        .filter(|(_, r)| r.priority >= 1)
        .collect();
    assert!(
        want.keys().any(|k| k.1 == "lab"),
        "the heater's event is a real-time reading of priority >= 1: {want:?}"
    );
    let lines = || {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    common::wait_for(CATCH_UP, "a hook line per reading", || {
        lines().len() >= want.len()
    });
    // Hooks still queued would show up now.
    std::thread::sleep(Duration::from_millis(500));
    let (t, stderr) = collector.stop();
    let lines = lines();
    assert_eq!(lines.len(), want.len(), "{lines:#?}\n{stderr}");
    let mut seen = BTreeSet::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let key: Key = (
            v["node"].as_str().unwrap().to_owned(),
            v["sensor"].as_str().unwrap().to_owned(),
            v["log"].as_str().unwrap().to_owned(),
            v["seq"].as_i64().unwrap(),
        );
        let row = want
            .get(&key)
            .unwrap_or_else(|| panic!("a hook line for no stored reading of priority >= 1: {v}"));
        assert_reading_is_row(&v, row);
        assert!(seen.insert(key), "twice: {v}");
    }
    assert_eq!(t.rejected, 0, "{t:?}");
}

/// The log file and its write-ahead log, as bytes (`None`: no such file),
/// and the log's modification time.
type LogState = (Vec<u8>, Option<Vec<u8>>, std::time::SystemTime);

/// What `collect` may never change of an agent's log at `db`.
fn log_state(db: &Path) -> LogState {
    let wal = Path::new(&format!("{}-wal", db.display())).to_path_buf();
    (
        std::fs::read(db).unwrap(),
        std::fs::read(&wal).ok(),
        std::fs::metadata(db).unwrap().modified().unwrap(),
    )
}

/// `collect --db` naming an agent's log refuses with a message that says
/// so, exits non-zero, and leaves the log as it was: the file, and its
/// write-ahead log, whose frames a read-write open would checkpoint into
/// the file (and then delete) when it closes. Two logs: one at rest
/// (`demo` exited), one of an agent killed with SIGKILL, whose last
/// commits are only in its write-ahead log.
#[test]
fn a_collector_given_an_agents_log_refuses_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let config = collect_config(dir.path(), &broker);
    let at_rest = dir.path().join("agent.db");
    common::demo(dir.path(), &at_rest, 3);
    let files = agent_config(
        dir.path(),
        "crashed",
        "20ms",
        &[Sensor::Random("w", 3)],
        &agent_mqtt(&broker),
    );
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &["w"], 10, 0);
    agent.crash();
    let crashed = files.db.clone();
    assert!(
        log_state(&crashed).1.is_some_and(|wal| !wal.is_empty()),
        "the crashed agent left frames in its write-ahead log"
    );

    for (db, name) in [(&at_rest, "agent.db"), (&crashed, "crashed.db")] {
        let before = log_state(db);
        for route in ["realtime", "batch"] {
            let out = common::edgeprio(dir.path())
                .arg("--config")
                .arg(&config)
                .args(["collect", "--route", route, "--db"])
                .arg(db)
                .output()
                .expect("run edgeprio collect");
            let stderr = common::text(&out.stderr);
            assert!(
                !out.status.success(),
                "collect took an agent's log:\n{stderr}"
            );
            common::assert_no_panic(&stderr);
            assert!(
                stderr.contains("agent's log") && stderr.contains("--db") && stderr.contains(name),
                "{stderr}"
            );
        }
        let after = log_state(db);
        assert!(after.0 == before.0, "{name} was changed");
        assert!(
            after.1 == before.1,
            "the write-ahead log of {name} was changed or removed ({:?} -> {:?} bytes)",
            before.1.as_ref().map(Vec::len),
            after.1.as_ref().map(Vec::len)
        );
        assert_eq!(after.2, before.2, "{name} was written");
    }
}
