//! One publisher drains a log that holds the readings of two nodes (as
//! `edgeprio gateway`'s will): each reading goes out on its own node's
//! topics, exactly as that node's agent would send it, and every row is
//! marked published, counted on the publisher's home status row. Checked
//! against a real Mosquitto.

mod common;
mod mosquitto;

use std::collections::BTreeSet;
use std::time::Duration;

use edgeprio::agent::{Publisher, now_ms};
use edgeprio::config::MqttConfig;
use edgeprio::domain::{PerChannel, Reading, Route, Sample};
use edgeprio::publish::{MqttPublisher, PublisherSpec};
use edgeprio::store::{Access, AgentStatus, Store};
use mosquitto::{
    Broker, Spec, Sub, assert_counters_match, assert_outbox_drained, assert_reading_is_row,
    broker_row, seen_readings, wait_all_seen,
};
use serde_json::Value;

/// The publisher's own node: its status row and status topic.
const HOME: &str = "gw";

/// The logged (node, sensor) streams: both nodes have a sensor "s1".
const STREAMS: [(&str, &str); 4] = [("n1", "s1"), ("n2", "s1"), ("n1", "hall"), ("n2", "attic")];

fn reading(node: &str, sensor: &str, seq: u64, route: Route) -> Reading {
    Reading {
        node: node.into(),
        sensor: sensor.into(),
        seq,
        ts_ms: now_ms(),
        sample: Sample::new(20.0 + f64::from(u32::try_from(seq).unwrap()), 50.0),
        weights: PerChannel {
            temperature: u32::from(route == Route::Realtime),
            humidity: 0,
        },
        priority: u32::from(route == Route::Realtime),
        route,
        clock_synced: None,
    }
}

/// Two nodes with a sensor of the same name ("s1") and one more each,
/// their rows interleaved in the log; every third reading real-time.
#[test]
fn a_log_of_two_nodes_is_published_on_each_nodes_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let db = dir.path().join("gw.db");
    let mut store = Store::open(&db, Access::Writer).unwrap();
    store
        .commit_cycle(
            &[],
            &[],
            &AgentStatus {
                node: HOME.into(),
                running: true,
                pid: std::process::id(),
                version: "test".into(),
                started_ms: now_ms(),
                heartbeat_ms: now_ms(),
                interval_ms: 15_000,
                burst: Vec::new(),
            },
        )
        .unwrap();
    let mut logged = Vec::new();
    for seq in 0..30 {
        for (node, sensor) in STREAMS {
            let route = if seq % 3 == 1 {
                Route::Realtime
            } else {
                Route::Batch
            };
            logged.push(reading(node, sensor, seq, route));
        }
    }
    store.insert_readings(&logged).unwrap();

    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let mut mqtt = MqttConfig::local(
        format!("127.0.0.1:{}", broker.port).parse().unwrap(),
        HOME,
        Duration::from_secs(15),
    );
    // Batches of at most 7, flushed within a second; a generous
    // realtime_max_age: this test is about topics, not lateness.
    mqtt.batch_max = 7;
    mqtt.batch_interval = Duration::from_secs(1);
    mqtt.realtime_max_age = Duration::from_mins(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut publisher = MqttPublisher::from_spec(PublisherSpec {
        every_node: true,
        home_node: HOME.into(),
        db: db.clone(),
        mqtt,
        announce: Vec::new(),
        expire_after_s: 45,
        turns: None,
    });
    {
        let _in_runtime = rt.enter();
        publisher.ready();
        publisher.committed(&[]);
    }

    let rows = common::readings(&db);
    assert_eq!(rows.len(), logged.len());
    for node in ["n1", "n2"] {
        let of_node: Vec<common::Row> = rows.iter().filter(|r| r.node == node).cloned().collect();
        wait_all_seen(
            &sub,
            &format!("edgeprio/{node}"),
            &of_node,
            Duration::from_secs(20),
        );
    }
    common::wait_for(
        Duration::from_secs(10),
        "every row marked published",
        || {
            common::readings(&db)
                .iter()
                .all(|r| r.published_ms.is_some())
        },
    );
    rt.block_on(publisher.close());

    let rows = common::readings(&db);
    let status = broker_row(&db, HOME).expect("the home status row");
    assert_outbox_drained(&rows, &status);
    assert_counters_match(&rows, &status);
    assert_eq!(status.published_late, 0, "{status:?}");
    assert!(broker_row(&db, "n1").is_none(), "no status row for n1");

    let msgs = sub.messages();
    for node in ["n1", "n2"] {
        assert_node_published(&broker, &msgs, &rows, node, &STREAMS);
    }
    // The status topic is the publisher's own.
    assert!(
        msgs.iter()
            .any(|m| m.topic == format!("edgeprio/{HOME}/status") && m.payload == "online"),
        "the publisher announced itself online as {HOME}"
    );
    assert!(
        !msgs
            .iter()
            .any(|m| m.topic == "edgeprio/n1/status" || m.topic == "edgeprio/n2/status"),
        "the nodes' status topics are their own agents'"
    );
}

/// What `node`'s agent would have sent, `sub` saw under `node`'s topics:
/// each of its rows on its route's topic with the log's values, nothing of
/// another node, batches of at most `batch_max`, and each sensor's last
/// reading as its retained state.
fn assert_node_published(
    broker: &Broker,
    msgs: &[mosquitto::Msg],
    rows: &[common::Row],
    node: &str,
    streams: &[(&str, &str)],
) {
    let base = format!("edgeprio/{node}");
    let seen = seen_readings(msgs, &base);
    // Every reading under a node's topics is that node's, on its
    // route's topic, with the log's values; and each of the node's
    // rows arrived.
    for s in &seen {
        assert_eq!(s.reading["node"], node, "{} carried {}", s.topic, s.reading);
        let row = rows
            .iter()
            .find(|r| {
                r.node == node
                    && r.sensor == s.reading["sensor"]
                    && r.seq == s.reading["seq"].as_i64().unwrap()
            })
            .unwrap_or_else(|| panic!("{} is not in the log", s.reading));
        assert_eq!(s.topic, format!("{base}/{}", row.route), "{}", s.reading);
        assert_reading_is_row(&s.reading, row);
    }
    let keys: BTreeSet<(String, i64)> = seen.iter().map(mosquitto::Seen::key).collect();
    let want: BTreeSet<(String, i64)> = rows
        .iter()
        .filter(|r| r.node == node)
        .map(|r| (r.sensor.clone(), r.seq))
        .collect();
    assert_eq!(keys, want, "the readings of {node}");
    // A batch message holds one node's readings, at most batch_max.
    for m in msgs.iter().filter(|m| m.topic == format!("{base}/batch")) {
        let batch: Vec<Value> = serde_json::from_str(&m.payload).unwrap();
        assert!((1..=7).contains(&batch.len()), "{}", m.payload);
    }
    // Each (node, sensor)'s retained state is its last reading.
    for (n, sensor) in streams.iter().filter(|(n, _)| *n == node) {
        let last = rows
            .iter()
            .rfind(|r| r.node == *n && r.sensor == *sensor)
            .unwrap();
        let state = broker
            .retained(&format!("{base}/{sensor}/state"))
            .unwrap_or_else(|| panic!("no retained state for {n}/{sensor}"));
        assert_reading_is_row(&serde_json::from_str(&state).unwrap(), last);
    }
}
