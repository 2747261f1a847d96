use super::*;
use crate::domain::PriorityParams;
use crate::store::Access;
use crate::stream::StreamRules;

fn status() -> AgentStatus {
    AgentStatus {
        node: "gw".into(),
        running: true,
        pid: 1,
        version: "test".into(),
        started_ms: 0,
        heartbeat_ms: 0,
        interval_ms: 5_000,
        burst: Vec::new(),
    }
}

fn gateway(db: &std::path::Path) -> Gateway {
    let store = Store::open(db, Access::Writer).unwrap();
    let rules = StreamRules {
        priority: PriorityParams::default(),
        stale_after: None,
    };
    Gateway::new(store, Streams::new(rules), SensorRange::DHT22, status())
}

fn msg<'a>(topic: &'a str, payload: &'a str, received_ms: i64) -> Message<'a> {
    Message {
        topic,
        payload: payload.as_bytes(),
        received_ms,
    }
}

fn rows(g: &Gateway, node: &str) -> Vec<Reading> {
    g.store()
        .readings(&crate::store::ReadingFilter {
            node: Some(node.into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.reading)
        .collect()
}

#[test]
fn raw_readings_are_scored_as_the_agent_scores_the_papers_example() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = gateway(&dir.path().join("gw.db"));
    let t = "edgeprio/esp-1/raw";
    let v = g
        .handle(
            &[
                msg(
                    t,
                    r#"{"sensor":"lab","temperature_c":25.0,"humidity_pct":56.0}"#,
                    1_000,
                ),
                msg(
                    t,
                    r#"{"sensor":"lab","temperature_c":28.0,"humidity_pct":48.0}"#,
                    2_000,
                ),
            ],
            2_000,
        )
        .unwrap();
    assert_eq!(
        v,
        [
            Verdict::Logged(Route::Batch),
            Verdict::Logged(Route::Realtime)
        ]
    );
    let r = rows(&g, "esp-1");
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].seq, r[0].priority, r[0].ts_ms), (0, 0, 1_000));
    assert_eq!((r[1].seq, r[1].priority), (1, 2));
    assert_eq!((r[1].weights.temperature, r[1].weights.humidity), (2, 2));
    assert_eq!(
        g.store().assigned("esp-1", "lab", 1).unwrap().as_deref(),
        Some("seq,ts_ms")
    );
    // The heartbeat is the gateway's own status row.
    assert_eq!(g.store().status("gw").unwrap().unwrap().heartbeat_ms, 2_000);
}

#[test]
fn streams_are_restored_from_the_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db");
    let t = "edgeprio/esp-1/raw";
    {
        let mut g = gateway(&db);
        g.handle(
            &[msg(
                t,
                r#"{"sensor":"lab","temperature_c":25.0,"humidity_pct":56.0}"#,
                1,
            )],
            1,
        )
        .unwrap();
    }
    let mut g = gateway(&db);
    let v = g
        .handle(
            &[msg(
                t,
                r#"{"sensor":"lab","temperature_c":28.0,"humidity_pct":48.0}"#,
                2,
            )],
            2,
        )
        .unwrap();
    assert_eq!(v, [Verdict::Logged(Route::Realtime)]);
    let r = rows(&g, "esp-1");
    assert_eq!((r[1].seq, r[1].priority), (1, 2));
}

#[test]
fn a_redelivery_is_recognised_and_a_restarted_count_is_renumbered() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = gateway(&dir.path().join("gw.db"));
    let topic = "edgeprio/esp-1/raw";
    let first = r#"{"sensor":"s","temperature_c":20.0,"humidity_pct":50.0,"seq":7,"ts_ms":100}"#;
    assert_eq!(
        g.handle(&[msg(topic, first, 1)], 1).unwrap(),
        [Verdict::Logged(Route::Batch)]
    );
    // The broker delivers it again (a crash before the acknowledgement),
    // also twice in one batch.
    assert_eq!(
        g.handle(&[msg(topic, first, 2), msg(topic, first, 2)], 2)
            .unwrap(),
        [Verdict::Duplicate, Verdict::Duplicate]
    );
    // The node restarted and counts from 0 again: not a redelivery.
    let again = r#"{"sensor":"s","temperature_c":20.1,"humidity_pct":50.0,"seq":0,"ts_ms":200}"#;
    assert_eq!(
        g.handle(&[msg(topic, again, 3)], 3).unwrap(),
        [Verdict::Logged(Route::Batch)]
    );
    let logged = rows(&g, "esp-1");
    assert_eq!(logged.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 8]);
    assert_eq!(
        g.store().assigned("esp-1", "s", 8).unwrap().as_deref(),
        Some("renumbered")
    );
    assert_eq!(g.store().assigned("esp-1", "s", 7).unwrap(), None);
    assert_eq!(g.counters().duplicates.load(Ordering::Relaxed), 2);
}

#[test]
fn malformed_messages_are_refused_by_kind_and_the_good_ones_flow() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = gateway(&dir.path().join("gw.db"));
    let good = r#"{"sensor":"s","temperature_c":20.0,"humidity_pct":50.0}"#;
    let blob = "x".repeat(1 << 20);
    let v = g
        .handle(
            &[
                msg("edgeprio/esp-1/raw", "{not json", 1),
                msg("edgeprio/esp-1/raw", good, 1),
                msg(
                    "edgeprio/esp-1/raw",
                    r#"{"sensor":"s","temperature_c":"20","humidity_pct":50}"#,
                    1,
                ),
                msg(
                    "edgeprio/esp-1/raw",
                    r#"{"sensor":"s","temperature_c":120.0,"humidity_pct":50.0}"#,
                    1,
                ),
                msg("edgeprio/esp-1/raw", &blob, 1),
                msg("edgeprio/bad node/raw", good, 1),
                msg("raw", good, 1),
                msg("edgeprio/esp-2/raw", good, 1),
            ],
            1,
        )
        .unwrap();
    let kinds: Vec<&str> = v
        .iter()
        .map(|v| match v {
            Verdict::Rejected { kind, .. } => kind,
            Verdict::Logged(_) => "logged",
            Verdict::Duplicate => "duplicate",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "json",
            "logged",
            "type",
            "range",
            "too_large",
            "node",
            "topic",
            "logged"
        ]
    );
    assert_eq!(rows(&g, "esp-1").len(), 1);
    assert_eq!(rows(&g, "esp-2").len(), 1);
    assert_eq!(g.counters().rejected_total(), 6);
    // The out-of-range reading of a known stream is a sensor error of its
    // node, as the agent records its own.
    let errors = g.store().sensor_errors(Some("esp-1"), 0).unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, crate::domain::ErrorKind::Range);
}

#[test]
fn scored_readings_are_routed_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = gateway(&dir.path().join("gw.db"));
    let scored = r#"{"node":"esp-1","sensor":"s","log":"00000000000000aa","seq":3,"ts_ms":5,"ts":"1970-01-01T00:00:00.005Z","temperature_c":20.0,"humidity_pct":50.0,"weight":{"temperature":0,"humidity":9},"priority":9,"route":"realtime"}"#;
    let v = g
        .handle(&[msg("edgeprio/esp-1/raw", scored, 9)], 9)
        .unwrap();
    assert_eq!(v, [Verdict::Logged(Route::Realtime)]);
    let r = rows(&g, "esp-1");
    assert_eq!((r[0].seq, r[0].priority, r[0].ts_ms), (3, 9, 5));
    // The next raw reading of that stream goes on after it, scored against it.
    let next = r#"{"sensor":"s","temperature_c":20.1,"humidity_pct":50.0}"#;
    g.handle(&[msg("edgeprio/esp-1/raw", next, 10)], 10)
        .unwrap();
    let r = rows(&g, "esp-1");
    assert_eq!((r[1].seq, r[1].priority), (4, 0));
}

#[test]
fn nodes_come_from_the_topic_level_before_the_last() {
    assert_eq!(node_of("edgeprio/esp-1/raw").unwrap(), "esp-1");
    assert_eq!(node_of("site/a/esp-1/raw").unwrap(), "esp-1");
    assert_eq!(node_of("raw").unwrap_err().kind(), "topic");
    assert_eq!(node_of("edgeprio/+/raw").unwrap_err().kind(), "topic");
}

#[test]
fn every_refusal_kind_has_a_metrics_label() {
    assert_eq!(reject_kinds().count(), REJECT_KIND_COUNT);
    let c = GatewayCounters::default();
    c.record(&[
        Verdict::Logged(Route::Realtime),
        Verdict::Duplicate,
        Verdict::Rejected {
            kind: "seq_behind",
            detail: String::new(),
        },
        Verdict::Rejected {
            kind: "json",
            detail: String::new(),
        },
    ]);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(load(&c.realtime), 1);
    assert_eq!(load(&c.duplicates), 1);
    let at = |k: &str| reject_kinds().position(|x| x == k).unwrap();
    assert_eq!(load(&c.rejected[at("seq_behind")]), 1);
    assert_eq!(load(&c.rejected[at("json")]), 1);
    assert_eq!(c.rejected.iter().map(load).sum::<u64>(), 2);
}
