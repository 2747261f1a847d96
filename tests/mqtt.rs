//! The MQTT contract end to end (DESIGN.md, "MQTT contract" and "Data
//! flow"): the real `edgeprio` binary publishing to a real Mosquitto that
//! each test starts on a free port, watched by `mosquitto_sub`. Every
//! reading arrives on its route's topic with the contract's fields, at
//! least once; the `SQLite` outbox drains; a broker outage, an agent crash
//! and a restart lose nothing; the Last Will and the Home Assistant
//! discovery configs are retained.
//!
//! Needs `mosquitto` and `mosquitto_sub`/`mosquitto_pub`: a missing broker
//! fails the tests (scripts/test installs them).

mod common;
mod mosquitto;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Row, now_ms, readings, wait_for};
use mosquitto::{
    Agent, Broker, BrokerRow, Msg, Seen, Sensor, Spec, Sub, agent_config, assert_counters_match,
    assert_gapless, assert_outbox_drained, assert_reading_is_row, assert_seen_is_the_log,
    broker_row, missing, seen_readings, wait_all_seen, wait_progress,
};
use serde_json::Value;

/// `[mqtt]` lines for a plain broker, batches flushed every second.
fn mqtt_lines(broker: &Broker, extra: &str) -> String {
    format!(
        "url = \"{}\"\nbatch_interval = \"1s\"\nbatch_max = 20\n{extra}",
        broker.url()
    )
}

/// Every reading of a run reaches a subscriber on the topic its route names,
/// as one JSON object (real-time) or in JSON arrays of at most `batch_max`
/// (batch), with exactly the contract's fields and the logged values; every
/// seq of every sensor arrives; after SIGTERM every row carries
/// `published_ms`, the outbox is empty and the status row's counters match
/// the log; each sensor's retained state is its last reading.
#[test]
fn every_reading_arrives_on_its_routes_topic_and_the_outbox_drains() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    // A generous realtime_max_age: this test is about routing, not about
    // lateness, and must not depend on how loaded the machine is.
    let files = agent_config(
        dir.path(),
        "t1",
        "100ms",
        &[
            Sensor::Heater("lab"),
            Sensor::Random("walk", 11),
            Sensor::Alternating("alt"),
        ],
        &mqtt_lines(&broker, "realtime_max_age = \"30s\""),
    );
    let base = files.base();
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let mut agent = Agent::start(&files, &[]);
    // 40 cycles: the heater's real-time readings at seq 8 and 34, the
    // alternating sensor's at every seq but 0, and batches of the rest.
    wait_progress(&mut agent, &files.db, &["lab", "walk", "alt"], 40, 1);
    let running = broker_row(&files.db, "t1").expect("status row");
    assert_eq!(
        running.state, "connected",
        "the status row of an agent whose readings are being acknowledged: {running:?}"
    );
    let stderr = agent.stop();

    let rows = readings(&files.db);
    let status = broker_row(&files.db, "t1").expect("status row");
    assert_gapless(&rows);
    assert_outbox_drained(&rows, &status);
    assert_eq!(status.published_late, 0, "{status:?}");
    assert_counters_match(&rows, &status);
    assert!(status.last_ack_ms.is_some(), "{status:?}");
    let lab_realtime: Vec<i64> = rows
        .iter()
        .filter(|r| r.sensor == "lab" && r.route == "realtime")
        .map(|r| r.seq)
        .collect();
    assert!(
        lab_realtime.iter().all(|s| s % 26 == 8) && lab_realtime.contains(&8),
        "{lab_realtime:?}"
    );

    wait_all_seen(&sub, &base, &rows, Duration::from_secs(10));
    let msgs = sub.messages();
    let seen = seen_readings(&msgs, &base);
    let by_key = assert_seen_is_the_log(&seen, &rows, &base);
    // At least once: a copy is the same message again, never another value.
    for copies in by_key.values() {
        assert!(
            copies
                .iter()
                .all(|c| c.reading == copies[0].reading && c.topic == copies[0].topic),
            "copies differ: {copies:?}"
        );
    }
    let batches: Vec<&Msg> = msgs
        .iter()
        .filter(|m| m.topic == format!("{base}/batch"))
        .collect();
    assert!(!batches.is_empty());
    for b in &batches {
        let len = serde_json::from_str::<Vec<Value>>(&b.payload)
            .unwrap()
            .len();
        assert!((1..=20).contains(&len), "batch_max = 20, got {len}");
    }
    assert!(
        msgs.iter().any(|m| m.topic == format!("{base}/realtime")),
        "no real-time message"
    );
    assert!(
        msgs.iter()
            .any(|m| m.topic == format!("{base}/status") && m.payload == "online"),
        "the agent announced itself online"
    );

    // The retained state of each sensor is its last reading.
    for sensor in ["lab", "walk", "alt"] {
        let last = rows.iter().rfind(|r| r.sensor == sensor).unwrap();
        let state = broker
            .retained(&format!("{base}/{sensor}/state"))
            .unwrap_or_else(|| panic!("no retained state for {sensor}"));
        let v: Value = serde_json::from_str(&state).unwrap();
        assert!(v.get("late").is_none(), "{v}");
        assert_reading_is_row(&v, last);
    }
    assert!(stderr.contains("MQTT connected"), "{stderr}");
}

/// `demo --broker URL` publishes its four simulated sensors to that broker
/// instead of the embedded one: every logged reading arrives, the outbox
/// drains, and the closing summary reports the acknowledged counts.
#[test]
fn demo_publishes_every_reading_to_an_external_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let db = dir.path().join("demo.db");
    let out = common::edgeprio(dir.path())
        .args(["demo", "--db"])
        .arg(&db)
        .args([
            "--speed",
            "1000",
            "--count",
            "40",
            "--broker",
            &broker.url(),
        ])
        .output()
        .expect("run edgeprio demo");
    let stderr = common::text(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stderr}",
        out.status
    );
    common::assert_no_panic(&stderr);

    let rows = readings(&db);
    assert_eq!(rows.len(), 4 * 40);
    assert_gapless(&rows);
    let status = broker_row(&db, "demo").expect("status row");
    assert_outbox_drained(&rows, &status);
    assert_counters_match(&rows, &status);
    assert_eq!(status.published_late, 0, "{status:?}");
    let summary = format!(
        "broker acknowledged {} realtime and {} batch readings (0 late), 0 still in the outbox",
        status.published_realtime, status.published_batch
    );
    assert!(stderr.contains(&summary), "want {summary:?} in:\n{stderr}");
    assert!(stderr.contains(&broker.url()), "{stderr}");

    wait_all_seen(&sub, "edgeprio/demo", &rows, Duration::from_secs(10));
    assert_seen_is_the_log(
        &seen_readings(&sub.messages(), "edgeprio/demo"),
        &rows,
        "edgeprio/demo",
    );
}

/// Mosquitto is killed mid-run and kept down for 2.5 s (12 intervals of
/// 200 ms, far past the default `realtime_max_age` of two intervals), then
/// started again on the same port. The agent logs on through the outage,
/// reconnects, and resends its outbox oldest first: a persistent
/// subscriber ends with every seq of every sensor, the outbox drains, and
/// the real-time readings logged during the outage arrive on the batch
/// topic with `"late": true` (their logged route stays `realtime`).
#[test]
fn broker_outage_loses_nothing_and_stale_realtime_readings_go_late_on_the_batch_topic() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(
        dir.path(),
        &Spec {
            persistence: true,
            ..Spec::default()
        },
    );
    let files = agent_config(
        dir.path(),
        "t2",
        "200ms",
        &[Sensor::Heater("lab"), Sensor::Alternating("alt")],
        &mqtt_lines(&broker, ""),
    );
    let base = files.base();
    // A persistent session on a persistent broker: what the agent resends
    // while this client is reconnecting is queued for it.
    let sub = Sub::start(&broker, &["edgeprio/#"], Some("edgeprio-test-outage"));
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &["lab", "alt"], 5, 3);
    broker.save();
    let down_ms = now_ms();
    broker.kill();

    wait_for(
        Duration::from_secs(10),
        "the agent to record the lost broker",
        || broker_row(&files.db, "t2").is_some_and(|b| b.state == "disconnected"),
    );
    let lost = broker_row(&files.db, "t2").unwrap();
    let error = lost.error.clone().unwrap_or_default();
    assert!(
        error.contains(&broker.url()),
        "the reason in the status row names the broker that was lost ({}): {lost:?}",
        broker.url()
    );
    // Keep the broker down; the agent must go on logging meanwhile.
    while now_ms() < down_ms + 2_500 {
        agent.assert_running();
        std::thread::sleep(Duration::from_millis(20));
    }
    let up_ms = now_ms();
    broker.restart();

    // The agent reconnects (its backoff is 1 s, then 2 s, 4 s, ...) and
    // drains everything logged before the broker came back.
    wait_for(
        Duration::from_secs(30),
        "the outbox to drain after the outage",
        || {
            readings(&files.db)
                .iter()
                .all(|r| r.ts_ms >= up_ms || r.published_ms.is_some())
        },
    );
    let row_count = readings(&files.db).len();
    wait_progress(
        &mut agent,
        &files.db,
        &["lab", "alt"],
        0,
        i64::try_from(row_count).unwrap() + 4,
    );
    let stderr = agent.stop();

    let rows = readings(&files.db);
    let status = broker_row(&files.db, "t2").expect("status row");
    assert_gapless(&rows);
    assert_outbox_drained(&rows, &status);
    assert_counters_match(&rows, &status);
    assert_logging_went_on(&rows, down_ms, up_ms);

    wait_all_seen(&sub, &base, &rows, Duration::from_secs(20));
    let seen = seen_readings(&sub.messages(), &base);
    assert_resent_late_and_in_order(&seen, &rows, &status, &base, (down_ms, up_ms));
    assert!(
        stderr.contains("readings stay in the local log"),
        "the outage is logged:\n{stderr}"
    );
}

/// A frozen broker (SIGSTOP) keeps the connection open but acknowledges
/// nothing: readings logged meanwhile stay in the outbox (`published_ms`
/// NULL, counted in `outbox_depth`) even though the agent has handed them
/// to the socket, and get `published_ms` only once the broker, thawed,
/// sends its PUBACKs. Then every one of them arrives.
#[test]
fn rows_are_marked_published_only_when_the_broker_acknowledges_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let files = agent_config(
        dir.path(),
        "t5",
        "100ms",
        &[Sensor::Heater("lab"), Sensor::Alternating("alt")],
        &format!("url = \"{}\"\nbatch_interval = \"300ms\"", broker.url()),
    );
    let base = files.base();
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &["lab", "alt"], 5, 5);
    let frozen_ms = now_ms();
    broker.freeze();
    // 1.5 s frozen: 15 cycles, batches due every 300 ms, all sent into the
    // socket and none acknowledged (the keep-alive is far longer).
    while now_ms() < frozen_ms + 1_500 {
        agent.assert_running();
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = readings(&files.db);
    let status = broker_row(&files.db, "t5").expect("status row");
    let thaw_ms = now_ms();
    broker.thaw();
    let logged_frozen: Vec<&Row> = during.iter().filter(|r| r.ts_ms > frozen_ms + 50).collect();
    assert!(logged_frozen.len() >= 10, "{during:?}");
    for r in &logged_frozen {
        assert_eq!(
            r.published_ms, None,
            "marked published while the broker could not acknowledge it: {r:?}"
        );
    }
    assert!(
        status.outbox_depth >= i64::try_from(logged_frozen.len()).unwrap() - 2,
        "the outbox depth counts the unacknowledged rows: {status:?}"
    );
    assert_eq!(
        status.state, "connected",
        "a frozen broker is still connected: {status:?}"
    );

    wait_for(Duration::from_secs(10), "the acknowledgements", || {
        let rows = readings(&files.db);
        logged_frozen.iter().all(|f| {
            rows.iter()
                .any(|r| r.id == f.id && r.published_ms.is_some())
        })
    });
    agent.stop();
    let rows = readings(&files.db);
    for f in &logged_frozen {
        let r = rows.iter().find(|r| r.id == f.id).unwrap();
        assert!(
            r.published_ms >= Some(thaw_ms),
            "published_ms is when the PUBACK came, after the thaw at {thaw_ms}: {r:?}"
        );
    }
    let status = broker_row(&files.db, "t5").expect("status row");
    assert_outbox_drained(&rows, &status);
    assert_counters_match(&rows, &status);
    wait_all_seen(&sub, &base, &rows, Duration::from_secs(10));
    assert_seen_is_the_log(&seen_readings(&sub.messages(), &base), &rows, &base);
}

/// The status row tells the broker state from the agent's first reading
/// on: on a fresh log, against a broker that takes the TCP connection but
/// does not answer yet (frozen), it says `connecting` (not `disabled`, the
/// state of an agent without a broker), then `connected` once the broker
/// answers.
#[test]
fn status_row_says_connecting_until_the_broker_answers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    // Forty sensors make the first commit, which creates the status row,
    // take a little while: the publisher records `connecting` before that
    // row exists, and that must not be lost.
    let ids: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
    let sensors: Vec<Sensor<'_>> = ids.iter().map(|id| Sensor::Heater(id)).collect();
    let files = agent_config(
        dir.path(),
        "t6",
        "100ms",
        &sensors,
        &mqtt_lines(&broker, ""),
    );
    broker.freeze();
    let mut agent = Agent::start(&files, &[]);
    wait_progress(&mut agent, &files.db, &["s0"], 3, 0);
    let waiting = broker_row(&files.db, "t6").expect("status row");
    broker.thaw();
    assert_eq!(
        (waiting.state.as_str(), waiting.error.as_deref()),
        ("connecting", None),
        "an agent waiting for its broker's CONNACK: {waiting:?}"
    );
    assert!(waiting.since_ms.is_some(), "{waiting:?}");
    wait_for(Duration::from_secs(10), "the connected state", || {
        broker_row(&files.db, "t6").is_some_and(|b| b.state == "connected")
    });
    wait_progress(&mut agent, &files.db, &["s0"], 0, 3);
    agent.stop();
}

/// After an outage from `down_ms` to `up_ms` (default `realtime_max_age`,
/// 400 ms): the real-time rows already stale when the broker came back were
/// only ever sent late, on the batch topic; the outage's readings reached
/// the batch topic oldest first; `published_late` counts each late reading
/// once.
fn assert_resent_late_and_in_order(
    seen: &[Seen],
    rows: &[Row],
    status: &BrokerRow,
    base: &str,
    (down_ms, up_ms): (i64, i64),
) {
    let by_key = assert_seen_is_the_log(seen, rows, base);
    // Real-time rows that were already stale when the broker came back:
    // only ever sent late, on the batch topic.
    let max_age = 400;
    let stale: Vec<_> = rows
        .iter()
        .filter(|r| r.route == "realtime" && r.ts_ms > down_ms + 100)
        .filter(|r| r.ts_ms < up_ms - max_age - 100)
        .collect();
    assert!(stale.len() >= 5, "too few outage real-time rows: {stale:?}");
    for r in &stale {
        let copies = &by_key[&(r.sensor.clone(), r.seq)];
        assert!(
            copies
                .iter()
                .all(|c| c.late() && c.topic == format!("{base}/batch")),
            "a real-time row logged during the outage must arrive late on the batch topic: \
             {copies:?}"
        );
    }
    // Oldest first: the outage's readings reach the batch topic in log order.
    let id_of: BTreeMap<(String, i64), i64> = rows
        .iter()
        .map(|r| ((r.sensor.clone(), r.seq), r.id))
        .collect();
    let resent: Vec<i64> = seen
        .iter()
        .filter(|s| s.topic == format!("{base}/batch"))
        .map(|s| id_of[&s.key()])
        .filter(|id| {
            rows.iter()
                .any(|r| r.id == *id && (down_ms..up_ms).contains(&r.ts_ms))
        })
        .collect();
    assert!(
        resent.is_sorted(),
        "the outbox is resent oldest first: row ids in arrival order {resent:?}"
    );
    let late: BTreeSet<(String, i64)> = seen.iter().filter(|s| s.late()).map(Seen::key).collect();
    assert!(status.published_late > 0, "{status:?}");
    assert_eq!(
        status.published_late,
        i64::try_from(late.len()).unwrap(),
        "published_late counts each late reading once: {status:?}"
    );
}

/// Through the outage the agent read on time: per sensor, the readings
/// logged while the broker was down are about as many as the intervals,
/// and no two consecutive readings are more than a second apart.
fn assert_logging_went_on(rows: &[Row], down_ms: i64, up_ms: i64) {
    for (sensor, ts) in rows
        .iter()
        .fold(BTreeMap::<&str, Vec<i64>>::new(), |mut m, r| {
            m.entry(r.sensor.as_str()).or_default().push(r.ts_ms);
            m
        })
    {
        let during = ts.iter().filter(|t| (down_ms..up_ms).contains(*t)).count();
        let intervals = usize::try_from((up_ms - down_ms) / 200).unwrap();
        assert!(
            during + 3 >= intervals,
            "{sensor}: {during} readings logged in {} ms of outage",
            up_ms - down_ms
        );
        let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(gap <= 1_000, "{sensor}: a {gap} ms hole in the log");
    }
}

/// `kill -9` of the agent mid-run, with a batch still waiting for its flush
/// and readings committed but not acknowledged; a new agent on the same log
/// resends them: the subscriber ends with every seq (duplicates allowed),
/// and every row is acknowledged once.
#[test]
fn a_crashed_agent_resends_its_outbox_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    // Batches wait 5 s: the crash surely leaves some unsent.
    let files = agent_config(
        dir.path(),
        "t3",
        "200ms",
        &[Sensor::Heater("lab"), Sensor::Alternating("alt")],
        &format!(
            "url = \"{}\"\nbatch_interval = \"5s\"\nbatch_max = 100",
            broker.url()
        ),
    );
    let base = files.base();
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let mut first = Agent::start(&files, &[]);
    wait_progress(&mut first, &files.db, &["lab", "alt"], 10, 3);
    let status = first.crash();
    assert!(!status.success(), "{status}");
    let at_crash = readings(&files.db);
    let pending = at_crash.iter().filter(|r| r.published_ms.is_none()).count();
    assert!(pending > 0, "nothing was left to resend: {at_crash:?}");
    assert!(
        pending < at_crash.len(),
        "nothing was published before the crash"
    );

    let mut second = Agent::start(&files, &[]);
    let logged = i64::try_from(at_crash.len() / 2).unwrap() + 5;
    wait_progress(&mut second, &files.db, &["lab", "alt"], logged, 1);
    second.stop();

    let rows = readings(&files.db);
    // The first agent's rows are kept as they were, bar the acknowledgement.
    let unmarked = |r: &Row| Row {
        published_ms: None,
        ..r.clone()
    };
    assert_eq!(
        rows[..at_crash.len()]
            .iter()
            .map(unmarked)
            .collect::<Vec<_>>(),
        at_crash.iter().map(unmarked).collect::<Vec<_>>()
    );
    assert_gapless(&rows);
    let status = broker_row(&files.db, "t3").expect("status row");
    assert_outbox_drained(&rows, &status);
    assert_counters_match(&rows, &status);
    wait_all_seen(&sub, &base, &rows, Duration::from_secs(10));
    let seen = seen_readings(&sub.messages(), &base);
    assert_seen_is_the_log(&seen, &rows, &base);
    // The rows pending at the crash came from the second agent.
    for r in at_crash.iter().filter(|r| r.published_ms.is_none()) {
        assert!(
            missing(&seen, std::slice::from_ref(r)).is_empty(),
            "{r:?} was lost"
        );
    }
}

/// The retained status topic: `online` while the agent runs; `offline`
/// from the Last Will soon after a `kill -9` (the socket closes at once);
/// `online` again after a restart; `offline` after a clean SIGTERM, set
/// before the agent exits.
#[test]
fn status_is_online_while_running_and_offline_after_a_crash_or_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let files = agent_config(
        dir.path(),
        "t4",
        "200ms",
        &[Sensor::Heater("lab")],
        &mqtt_lines(&broker, ""),
    );
    let topic = format!("{}/status", files.base());
    let sub = Sub::start(&broker, &[&topic], None);
    let long = Duration::from_secs(15);

    let mut first = Agent::start(&files, &[]);
    broker.wait_retained(&topic, "online", long);
    let crash_ms = now_ms();
    first.crash();
    broker.wait_retained(&topic, "offline", Duration::from_secs(5));
    sub.wait(Duration::from_secs(5), "the Last Will", |msgs| {
        msgs.iter()
            .any(|m| m.payload == "offline" && m.at_ms >= crash_ms)
    });

    let second = Agent::start(&files, &[]);
    broker.wait_retained(&topic, "online", long);
    second.stop();
    assert_eq!(
        broker.retained(&topic).as_deref(),
        Some("offline"),
        "a clean stop publishes the retained offline before exiting"
    );
    sub.wait(Duration::from_secs(5), "the clean offline", |msgs| {
        let mut seq: Vec<&str> = msgs.iter().map(|m| m.payload.as_str()).collect();
        seq.dedup();
        seq == ["online", "offline", "online", "offline"]
    });
}

/// Home Assistant discovery (`ha_discovery = true`): per sensor, one
/// retained per-component config per entity at
/// `homeassistant/sensor/<unique_id>/config`: temperature and humidity
/// (device class, unit, state class measurement) and a diagnostic priority,
/// each with the sensor's state topic, the node's status topic for
/// availability, `expire_after` of three intervals (at least 1 s) and `QoS` 1,
/// all three with the same device block. A device config that edgeprio 0.1
/// left retained at `homeassistant/device/<id>/config` is cleared (and
/// nothing is sent where there was none); `online` on
/// `homeassistant/status` makes the agent announce again, identically.
/// `tests/home_assistant.rs` checks the same configs against a real Home
/// Assistant.
#[test]
fn home_assistant_discovery_is_retained_valid_and_announced_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let extra = "ha_discovery = true";
    let slow = agent_config(
        dir.path(),
        "ha",
        "1s",
        &[Sensor::Heater("lab"), Sensor::Random("attic", 3)],
        &mqtt_lines(&broker, extra),
    );
    let fast = agent_config(
        dir.path(),
        "ha-fast",
        "200ms",
        &[Sensor::Heater("lab")],
        &mqtt_lines(&broker, extra),
    );
    // (unique id prefix, node, sensor, expire_after)
    let sensors = [
        ("edgeprio_ha_lab", "ha", "lab", 3),
        ("edgeprio_ha_attic", "ha", "attic", 3),
        ("edgeprio_ha-fast_lab", "ha-fast", "lab", 1),
    ];
    let topic = |id: &str, channel: &str| format!("homeassistant/sensor/{id}_{channel}/config");
    let channels = ["temperature", "humidity", "priority"];
    let all_topics: Vec<String> = sensors
        .iter()
        .flat_map(|s| channels.map(|c| topic(s.0, c)))
        .collect();
    // An installation upgraded from 0.1 has its device config retained.
    let legacy = "homeassistant/device/edgeprio_ha_lab/config";
    broker.publish(
        legacy,
        r#"{"dev":{"ids":["edgeprio_ha_lab"]},"o":{"name":"edgeprio"},"cmps":{},"expire_after":3}"#,
        true,
    );
    let sub = Sub::start(&broker, &["homeassistant/#"], None);
    let agents = [Agent::start(&slow, &[]), Agent::start(&fast, &[])];
    let configs = |msgs: &[Msg], topic: &str| -> Vec<String> {
        msgs.iter()
            .filter(|m| m.topic == topic && !m.retain)
            .map(|m| m.payload.clone())
            .collect()
    };
    sub.wait(Duration::from_secs(15), "every discovery config", |msgs| {
        all_topics.iter().all(|t| !configs(msgs, t).is_empty())
    });
    let first = sub.messages();
    let mut unique_ids = BTreeSet::new();
    for (id, node, sensor, expire) in sensors {
        let mut devices = BTreeSet::new();
        for channel in channels {
            let topic = topic(id, channel);
            let payload = configs(&first, &topic)[0].clone();
            assert_eq!(
                broker.retained(&topic).as_deref(),
                Some(payload.as_str()),
                "{topic} is retained"
            );
            let config: Value = serde_json::from_str(&payload)
                .unwrap_or_else(|e| panic!("{topic} is not JSON ({e}): {payload}"));
            assert_discovery_config(&config, node, sensor, expire, channel);
            assert_eq!(config["unique_id"], format!("{id}_{channel}"), "{config}");
            assert!(unique_ids.insert(config["unique_id"].to_string()));
            devices.insert(config["device"].to_string());
        }
        assert_eq!(devices.len(), 1, "one device per sensor: {devices:?}");
    }
    assert_legacy_cleared(&broker, &sub, legacy);
    // The state topic carries the fields the value templates read.
    let state = broker
        .retained("edgeprio/ha/lab/state")
        .expect("retained state");
    let state: Value = serde_json::from_str(&state).unwrap();
    for field in ["temperature_c", "humidity_pct", "priority"] {
        assert!(state[field].is_number(), "{field} in {state}");
    }

    // Home Assistant restarted: every agent announces again, identically.
    let before: Vec<usize> = all_topics
        .iter()
        .map(|t| configs(&first, t).len())
        .collect();
    broker.publish("homeassistant/status", "online", false);
    sub.wait(Duration::from_secs(10), "the announcement again", |msgs| {
        all_topics
            .iter()
            .zip(&before)
            .all(|(t, n)| configs(msgs, t).len() > *n)
    });
    let again = sub.messages();
    for t in &all_topics {
        let all = configs(&again, t);
        assert!(all.iter().all(|p| *p == all[0]), "{t}: {all:?}");
    }
    for agent in agents {
        agent.stop();
    }
}

/// The 0.1 config at `legacy` is gone, and no other device topic got
/// anything (there was nothing to clear).
fn assert_legacy_cleared(broker: &Broker, sub: &Sub, legacy: &str) {
    sub.wait(
        Duration::from_secs(10),
        "the legacy config cleared",
        |msgs| {
            msgs.iter()
                .any(|m| m.topic == legacy && m.payload.is_empty())
        },
    );
    assert_eq!(broker.retained(legacy), None, "{legacy} is cleared");
    let others: Vec<Msg> = sub
        .messages()
        .into_iter()
        .filter(|m| m.topic.starts_with("homeassistant/device/") && m.topic != legacy)
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

/// Checks one entity's discovery config.
fn assert_discovery_config(c: &Value, node: &str, sensor: &str, expire: u64, channel: &str) {
    let base = format!("edgeprio/{node}");
    assert_eq!(c["state_topic"], format!("{base}/{sensor}/state"), "{c}");
    assert_eq!(c["availability_topic"], format!("{base}/status"), "{c}");
    assert_eq!(c["payload_available"], "online", "{c}");
    assert_eq!(c["payload_not_available"], "offline", "{c}");
    assert_eq!(
        c["expire_after"], expire,
        "three intervals, at least 1 s: {c}"
    );
    assert_eq!(c["qos"], 1, "{c}");
    let object_id = c["object_id"].as_str().expect("object_id");
    assert_eq!(c["default_entity_id"], format!("sensor.{object_id}"), "{c}");
    assert!(
        c["device"]["identifiers"]
            .as_array()
            .is_some_and(|ids| !ids.is_empty() && ids.iter().all(Value::is_string)),
        "{c}"
    );
    assert!(
        c["device"]["name"]
            .as_str()
            .is_some_and(|n| n.contains(sensor)),
        "{c}"
    );
    assert!(c["origin"]["name"].is_string(), "origin: {c}");
    let field = match channel {
        "temperature" => {
            assert_eq!(c["device_class"], "temperature", "{c}");
            assert_eq!(c["unit_of_measurement"], "°C", "{c}");
            "temperature_c"
        }
        "humidity" => {
            assert_eq!(c["device_class"], "humidity", "{c}");
            assert_eq!(c["unit_of_measurement"], "%", "{c}");
            "humidity_pct"
        }
        _ => {
            assert_eq!(c["entity_category"], "diagnostic", "{c}");
            "priority"
        }
    };
    assert_eq!(c["state_class"], "measurement", "{c}");
    assert!(
        c["value_template"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("value_json.{field}"))),
        "{c}"
    );
}
