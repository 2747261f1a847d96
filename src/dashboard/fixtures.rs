//! Fixture logs for the dashboard's tests, written through [`Store`] the
//! way the agent (or the gateway: [`build_gateway`]) writes them, at a
//! fixed `now` so snapshots are stable.

use std::path::{Path, PathBuf};

use crate::domain::{ErrorKind, PriorityParams, Reading, Route, Sample, Scorer, SensorError};
use crate::store::{Access, Acked, AgentStatus, BrokerState, ReadingFilter, Store};

/// The fixed "now" of every fixture: 2026-11-25T01:26:40Z.
pub const NOW: i64 = 1_795_570_000_000;
/// The agent's interval.
pub const INTERVAL: i64 = 15_000;
/// The node name.
pub const NODE: &str = "pi-lab";
/// Two hours of cycles.
const CYCLES: i64 = 480;
/// The gateway whose log [`build_gateway`] writes: the owner of its one
/// status row.
pub const GATEWAY: &str = "gw-1";
/// The raw nodes behind the gateway, by name; the last went silent.
pub const RAW_NODES: [&str; 3] = ["esp-hall", "esp-porch", "esp-shed"];
/// The sensors of each raw node.
pub const RAW_SENSORS: [&str; 2] = ["lab", "yard"];
/// How long ago the last raw node's newest reading was taken.
pub const SILENT_MS: i64 = 10 * 60_000;

/// What the log shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A healthy agent, connected broker, a heater switched on near the end.
    Live,
    /// The agent died 10 minutes ago without marking itself stopped.
    Stale,
    /// The broker has been unreachable for 20 minutes; the outbox grows.
    Outage,
    /// The attic sensor fails one read in three over the last hour.
    Errors,
    /// A fresh log: schema, no rows.
    Empty,
}

fn sample(sensor: &str, k: i64) -> Sample {
    let x = k as f64;
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let (t, h) = match sensor {
        "lab" => {
            // The paper's heater near the end, a door opened now and then.
            let heater = if k >= CYCLES - 10 {
                (3.5, -8.0)
            } else {
                (0.0, 0.0)
            };
            let door = if k % 45 < 3 { (-2.5, 9.0) } else { (0.0, 0.0) };
            (
                22.0 + 0.4 * (x * 0.05).sin() + heater.0 + door.0,
                50.0 + 1.5 * (x * 0.04).cos() + heater.1 + door.1,
            )
        }
        "attic" => {
            let sun = if k % 70 < 5 { (1.5, -6.0) } else { (0.0, 0.0) };
            (
                18.0 + 1.5 * (x * 0.02).sin() + sun.0,
                60.0 + 4.0 * (x * 0.03).sin() + sun.1,
            )
        }
        _ => (12.0 + 0.1 * (x * 0.1).sin(), 80.0 + 0.5 * (x * 0.1).cos()),
    };
    Sample::new(round(t), round(h))
}

/// Writes the scenario's log as `dir/<name>.db` and returns its path.
pub fn build(dir: &Path, scenario: Scenario) -> PathBuf {
    let path = dir.join(format!("{scenario:?}.db"));
    let mut store = Store::open(&path, Access::Writer).expect("fixture log opens");
    if scenario == Scenario::Empty {
        return path;
    }
    let end = if scenario == Scenario::Stale {
        NOW - 10 * 60_000
    } else {
        NOW - 5_000
    };
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    for sensor in ["attic", "cellar", "lab"] {
        let fails = |k: i64| {
            scenario == Scenario::Errors && sensor == "attic" && k >= CYCLES / 2 && k % 3 == 0
        };
        readings.extend(series(NODE, sensor, end, fails));
        for k in (0..CYCLES).filter(|&k| fails(k)) {
            let (kind, detail) = if k % 2 == 0 {
                (ErrorKind::Timeout, "no answer from the sensor on BCM 17")
            } else {
                (ErrorKind::Checksum, "checksum 0x3c, expected 0x3d")
            };
            errors.push(SensorError {
                ts_ms: cycle_ms(end, k),
                sensor: sensor.to_owned(),
                kind,
                detail: detail.to_owned(),
            });
        }
    }
    readings.sort_by_key(|r| (r.ts_ms, r.sensor.clone()));
    store.insert_readings(&readings).expect("fixture readings");
    let status = running(NODE, end);
    let started = status.started_ms;
    store
        .commit_cycle(&[], &errors, &status)
        .expect("fixture status");
    let (broker, error, since, published_until) = match scenario {
        Scenario::Outage => (
            BrokerState::Disconnected,
            Some("connection refused (os error 111)"),
            NOW - 20 * 60_000,
            NOW - 20 * 60_000,
        ),
        // The newest cycle is still in flight.
        _ => (BrokerState::Connected, None, started + 1_000, end),
    };
    store
        .set_broker(NODE, broker, error, since)
        .expect("fixture broker");
    publish_until(&mut store, NODE, published_until);
    path
}

/// A gateway's log: the readings of [`RAW_NODES`] x [`RAW_SENSORS`] that
/// it scored, every 15 s for two hours (the last node silent for the last
/// [`SILENT_MS`]), and one status row: the gateway's own, running, with a
/// connected broker and the newest cycle still in flight. Written as
/// `dir/Gateway.db`.
pub fn build_gateway(dir: &Path) -> PathBuf {
    let path = dir.join("Gateway.db");
    let mut store = Store::open(&path, Access::Writer).expect("fixture log opens");
    let end = NOW - 5_000;
    let mut readings = Vec::new();
    for (i, node) in RAW_NODES.into_iter().enumerate() {
        let last = if i + 1 == RAW_NODES.len() {
            NOW - SILENT_MS
        } else {
            end
        };
        for sensor in RAW_SENSORS {
            readings.extend(series(node, sensor, last, |_| false));
        }
    }
    readings.sort_by_key(|r| (r.ts_ms, r.node.clone(), r.sensor.clone()));
    store.insert_readings(&readings).expect("fixture readings");
    let status = running(GATEWAY, NOW - 2_000);
    store
        .commit_cycle(&[], &[], &status)
        .expect("fixture status");
    store
        .set_broker(
            GATEWAY,
            BrokerState::Connected,
            None,
            status.started_ms + 1_000,
        )
        .expect("fixture broker");
    publish_until(&mut store, GATEWAY, end - 1);
    path
}

/// When cycle `k` of a series ending at `end` ran.
fn cycle_ms(end: i64, k: i64) -> i64 {
    end - (CYCLES - 1 - k) * INTERVAL
}

/// `node`'s `sensor` scored over [`CYCLES`] cycles ending at `end`, but
/// for the cycles that `fails`.
fn series(node: &str, sensor: &str, end: i64, fails: impl Fn(i64) -> bool) -> Vec<Reading> {
    let mut weigher = Scorer::new(PriorityParams::default(), None);
    let mut readings = Vec::new();
    for k in (0..CYCLES).filter(|&k| !fails(k)) {
        let values = sample(sensor, k);
        let verdict = weigher.score(values);
        readings.push(Reading {
            node: node.to_owned(),
            sensor: sensor.to_owned(),
            seq: u64::try_from(readings.len()).expect("a few hundred"),
            ts_ms: cycle_ms(end, k),
            sample: values,
            weights: verdict.weights,
            priority: verdict.priority,
            route: verdict.route,
            clock_synced: None,
        });
    }
    readings
}

/// The status row of `node`'s agent (or gateway), running, that beat last
/// at `heartbeat_ms`.
fn running(node: &str, heartbeat_ms: i64) -> AgentStatus {
    AgentStatus {
        node: node.to_owned(),
        running: true,
        pid: 4242,
        version: "0.1.0".to_owned(),
        started_ms: heartbeat_ms - CYCLES * INTERVAL - 30_000,
        heartbeat_ms,
        interval_ms: INTERVAL,
        burst: Vec::new(),
    }
}

/// Marks every reading up to `until_ms` acknowledged, as `node`'s
/// publisher does.
fn publish_until(store: &mut Store, node: &str, until_ms: i64) {
    let sent = store
        .readings(&ReadingFilter {
            until_ms: Some(until_ms),
            ..ReadingFilter::default()
        })
        .expect("fixture readings read back");
    let acked: Vec<Acked> = [Route::Realtime, Route::Batch]
        .into_iter()
        .map(|route| Acked {
            route,
            ids: sent
                .iter()
                .filter(|r| r.reading.route == route)
                .map(|r| r.id)
                .collect(),
            late: 0,
            at_ms: until_ms,
        })
        .collect();
    store.mark_published(node, &acked).expect("fixture acks");
}
