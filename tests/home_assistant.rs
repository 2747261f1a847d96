//! Home Assistant discovery against real Home Assistant Core (README, "Home
//! Assistant"): for each tested release, the test starts Mosquitto and Home
//! Assistant on free loopback ports, onboards it and adds the MQTT
//! integration over REST, runs the real `edgeprio run` with simulated
//! sensors and `ha_discovery = true`, and checks through `GET /api/states`
//! that the entities appear with their device class, unit and state class,
//! that their states follow the agent's log, that they go `unavailable` on
//! `kill -9` of the agent (Last Will) and come back with it, and that they
//! survive a Home Assistant restart (retained discovery). The broker starts
//! with the retained device config edgeprio 0.1 published, which Home
//! Assistant rejects; the agent clears it. Home Assistant's log must show no
//! other warning or error about MQTT or edgeprio.
//!
//! A second test per release runs Home Assistant's own discovery schema on
//! the exact payloads, offline.
//!
//! The venvs come from `scripts/ha-venv`; a missing one fails the test with
//! the command that makes it.

mod common;
mod hass;
mod mosquitto;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Row, readings};
use hass::{Hass, Venv};
use mosquitto::{Agent, AgentFiles, Broker, Sensor, Spec, agent_config, free_port};
use serde_json::Value;

/// Home Assistant 2025.4.4, the newest that installs on Python 3.13.0:
/// device-based discovery exists and validates strictly.
const NEW: (&str, &str) = ("2025.4.4", "3.13.0");
/// Home Assistant 2024.1.6, the newest on Python 3.11: no device-based
/// discovery at all.
const OLD: (&str, &str) = ("2024.1.6", "3.11.7");

/// The node and its sensors.
const NODE: &str = "hapi";
const SENSORS: [&str; 2] = ["lab", "attic"];
/// The entities per sensor and the field of a reading each shows.
const CHANNELS: [(&str, &str); 3] = [
    ("temperature", "temperature_c"),
    ("humidity", "humidity_pct"),
    ("priority", "priority"),
];

/// What edgeprio 0.1 published for sensor `lab`: device-based discovery
/// with `expire_after` and `qos` at the device level.
const LEGACY_TOPIC: &str = "homeassistant/device/edgeprio_hapi_lab/config";
const LEGACY_PAYLOAD: &str = r#"{"dev":{"ids":["edgeprio_hapi_lab"],"name":"lab (hapi)","mf":"edgeprio","mdl":"DHT22","sw":"0.1.0"},"o":{"name":"edgeprio","sw":"0.1.0"},"cmps":{"edgeprio_hapi_lab_temperature":{"p":"sensor","unique_id":"edgeprio_hapi_lab_temperature","object_id":"edgeprio_hapi_lab_temperature","name":"Temperature","device_class":"temperature","unit_of_measurement":"°C","state_class":"measurement","value_template":"{{ value_json.temperature_c }}"}},"state_topic":"edgeprio/hapi/lab/state","availability_topic":"edgeprio/hapi/status","payload_available":"online","payload_not_available":"offline","expire_after":6,"qos":1}"#;

/// The entity id of a sensor's channel.
fn entity(sensor: &str, channel: &str) -> String {
    format!("sensor.edgeprio_{NODE}_{sensor}_{channel}")
}

fn all_entities() -> Vec<String> {
    SENSORS
        .iter()
        .flat_map(|s| CHANNELS.map(|(c, _)| entity(s, c)))
        .collect()
}

/// Whether every one of our entities has a number as its state.
fn all_numeric(states: &BTreeMap<String, Value>) -> bool {
    all_entities().iter().all(|e| {
        states
            .get(e)
            .and_then(|s| s["state"].as_str())
            .is_some_and(|v| v.parse::<f64>().is_ok())
    })
}

/// The discovered attributes Home Assistant shows, and that the priority
/// has neither a device class nor a unit.
fn assert_attributes(states: &BTreeMap<String, Value>) {
    for sensor in SENSORS {
        for (channel, _) in CHANNELS {
            let e = entity(sensor, channel);
            let a = &states[&e]["attributes"];
            assert_eq!(a["state_class"], "measurement", "{e}: {a}");
            assert!(a.get("restored").is_none(), "{e} is only restored: {a}");
            match channel {
                "temperature" => {
                    assert_eq!(a["device_class"], "temperature", "{e}: {a}");
                    assert_eq!(a["unit_of_measurement"], "°C", "{e}: {a}");
                }
                "humidity" => {
                    assert_eq!(a["device_class"], "humidity", "{e}: {a}");
                    assert_eq!(a["unit_of_measurement"], "%", "{e}: {a}");
                }
                _ => {
                    assert!(a.get("device_class").is_none(), "{e}: {a}");
                    assert!(a.get("unit_of_measurement").is_none(), "{e}: {a}");
                }
            }
            let name = a["friendly_name"].as_str().unwrap_or_default();
            assert!(
                name.contains(&format!("{sensor} ({NODE})")),
                "{e}: grouped under the sensor's device: {a}"
            );
        }
    }
}

/// The value a row gives `field`.
fn field(row: &Row, field: &str) -> f64 {
    match field {
        "temperature_c" => row.temperature_c,
        "humidity_pct" => row.humidity_pct,
        _ => row.priority as f64,
    }
}

/// Waits until every entity has shown the value of its sensor's newest
/// logged reading at two different seqs: the states follow the agent.
fn assert_states_follow(hass: &Hass, db: &std::path::Path) {
    let mut matched: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let rows = readings(db);
        let states = hass.states();
        for sensor in SENSORS {
            let Some(newest) = rows.iter().rev().find(|r| r.sensor == sensor) else {
                continue;
            };
            for (channel, name) in CHANNELS {
                let e = entity(sensor, channel);
                let shown = states
                    .get(&e)
                    .and_then(|s| s["state"].as_str())
                    .and_then(|v| v.parse::<f64>().ok());
                if shown == Some(field(newest, name)) {
                    let seqs = matched.entry(e).or_default();
                    if !seqs.contains(&newest.seq) {
                        seqs.push(newest.seq);
                    }
                }
            }
        }
        if all_entities()
            .iter()
            .all(|e| matched.get(e).is_some_and(|s| s.len() >= 2))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Home Assistant {}: after 60 s the entities matched the newest reading at seqs \
             {matched:?}; want two seqs each; states: {:#?}",
            hass.venv.ha,
            all_entities()
                .iter()
                .map(|e| hass.states().get(e).cloned())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The log lines at WARNING or above (with their continuation lines)
/// after byte `from`.
fn problems(log: &str, from: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_problem = false;
    for line in log.get(from..).unwrap_or_default().lines() {
        let starts_entry = line.len() > 24 && line.as_bytes()[4] == b'-' && line.contains(" (");
        if starts_entry {
            in_problem = [" WARNING (", " ERROR (", " CRITICAL ("]
                .iter()
                .any(|l| line.contains(l));
            if in_problem {
                out.push(line.to_owned());
            }
        } else if in_problem && let Some(last) = out.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    out
}

/// Home Assistant restarts while the agent is dead, so nothing announces
/// the sensors again: only the broker's retained configs can set the
/// entities up (as MQTT entities, unavailable through the retained
/// `offline`), not Home Assistant's registry (which would mark them
/// `restored`). Then the agent comes back. Returns the new agent.
fn restart_with_the_agent_dead(hass: &mut Hass, mut agent: Agent, files: &AgentFiles) -> Agent {
    let entities = all_entities();
    agent.assert_running();
    agent.crash();
    hass.wait_states(
        Duration::from_secs(30),
        "every entity unavailable after the second kill -9",
        &entities,
        |s| {
            entities
                .iter()
                .all(|e| s.get(e).is_some_and(|v| v["state"] == "unavailable"))
        },
    );
    hass.restart();
    hass.wait_states(
        Duration::from_mins(1),
        "the entities set up from the retained configs, unavailable, with the agent dead",
        &entities,
        |s| {
            entities.iter().all(|e| {
                s.get(e).is_some_and(|v| {
                    v["state"] == "unavailable" && v["attributes"].get("restored").is_none()
                })
            })
        },
    );
    let agent = Agent::start(files, &[]);
    hass.wait_states(
        Duration::from_mins(1),
        "the entities back after the agent's second restart",
        &entities,
        all_numeric,
    );
    assert_attributes(&hass.states());
    agent
}

/// The whole scenario against one Home Assistant release; `rejects` is
/// what that release logs about the 0.1 payload, `cleared` what it logs
/// (once) when the agent clears it.
fn end_to_end(release: (&'static str, &'static str), rejects: &str, cleared: &str) {
    let started = Instant::now();
    let venv = Venv::require(release.0, release.1);
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    broker.publish(LEGACY_TOPIC, LEGACY_PAYLOAD, true);
    let mut hass = Hass::start(venv, dir.path(), free_port());
    hass.onboard();
    hass.add_mqtt(broker.port);
    let ready = started.elapsed();

    // Real Home Assistant turns the 0.1 payload down: the bug this fixes.
    common::wait_for(
        Duration::from_secs(30),
        "Home Assistant to reject the 0.1 payload",
        || hass.log_text().contains(rejects),
    );
    let from = hass.log_text().len();

    let files = agent_config(
        dir.path(),
        NODE,
        "2s",
        &[Sensor::Heater("lab"), Sensor::Random("attic", 7)],
        &format!("url = \"{}\"\nha_discovery = true", broker.url()),
    );
    let mut agent = Agent::start(&files, &[]);
    let entities = all_entities();
    let appeared = hass.wait_states(
        Duration::from_mins(1),
        "our entities with numeric states",
        &entities,
        all_numeric,
    );
    assert_attributes(&hass.states());
    assert_states_follow(&hass, &files.db);
    assert_eq!(
        broker.retained(LEGACY_TOPIC),
        None,
        "the 0.1 config is cleared"
    );

    // kill -9: the broker sends the Last Will, `offline`.
    agent.assert_running();
    agent.crash();
    let unavailable = hass.wait_states(
        Duration::from_secs(30),
        "every entity unavailable after kill -9",
        &entities,
        |s| {
            entities
                .iter()
                .all(|e| s.get(e).is_some_and(|v| v["state"] == "unavailable"))
        },
    );
    let agent = Agent::start(&files, &[]);
    let back = hass.wait_states(
        Duration::from_mins(1),
        "the entities back after the agent's restart",
        &entities,
        all_numeric,
    );

    // Home Assistant restarts: the retained configs and states bring the
    // entities back, live (not merely restored from its registry).
    let restart = Instant::now();
    hass.restart();
    hass.wait_states(
        Duration::from_mins(1),
        "the entities after Home Assistant's restart",
        &entities,
        all_numeric,
    );
    let after_restart = restart.elapsed();
    assert_attributes(&hass.states());
    assert_states_follow(&hass, &files.db);

    let mut agent = restart_with_the_agent_dead(&mut hass, agent, &files);
    agent.assert_running();
    agent.stop();

    // Nothing else from the MQTT integration, or about edgeprio, went
    // wrong; the clear is noted at most once. (Others, such as the camera
    // platform's missing libturbojpeg, are not about us.)
    let log = hass.log_text();
    let ours: Vec<String> = problems(&log, from)
        .into_iter()
        .filter(|p| {
            let header = p.lines().next().unwrap_or_default();
            // Our ids and topics (not the venv's path, /var/cache/edgeprio/).
            header.contains("[homeassistant.components.mqtt")
                || p.contains("edgeprio_")
                || p.contains(&format!("edgeprio/{NODE}"))
        })
        .collect();
    let (notes, others): (Vec<&String>, Vec<&String>) =
        ours.iter().partition(|p| p.contains(cleared));
    assert!(
        others.is_empty(),
        "Home Assistant {} warned about our MQTT discovery: {others:#?}",
        release.0
    );
    assert!(notes.len() <= 1, "the clear is noted once: {notes:#?}");
    eprintln!(
        "Home Assistant {} on Python {}: up and configured in {ready:?}, entities after \
         {appeared:?}, unavailable {unavailable:?} after kill -9, back {back:?} after the \
         agent's restart, {after_restart:?} after Home Assistant's restart; {:?} in all; \
         the clear noted {} time(s)",
        release.0,
        release.1,
        started.elapsed(),
        notes.len()
    );
}

/// Home Assistant 2025.4: the 0.1 payload fails its device discovery
/// schema; per-component discovery is accepted.
#[test]
fn home_assistant_2025_4_shows_the_sensors() {
    end_to_end(
        NEW,
        "Invalid MQTT device discovery payload for edgeprio_hapi_lab, extra keys not allowed \
         @ data['expire_after']",
        "No device components to cleanup for edgeprio_hapi_lab",
    );
}

/// Home Assistant 2024.1: it does not know device discovery; per-component
/// discovery is accepted.
#[test]
fn home_assistant_2024_1_shows_the_sensors() {
    end_to_end(
        OLD,
        "Integration device is not supported",
        "Integration device is not supported",
    );
}

/// Runs the release's own sensor discovery schema on our payloads; returns,
/// per payload, the keys the schema dropped (it removes unknown keys
/// silently, so a typo would pass unnoticed otherwise).
fn validate_offline(release: (&'static str, &'static str)) -> Vec<Vec<String>> {
    let venv = Venv::require(release.0, release.1);
    let topics = edgeprio::domain::Topics::new("edgeprio", NODE);
    let payloads: Vec<Value> = edgeprio::domain::ha_discovery(
        &topics,
        NODE,
        "lab",
        "simulated DHT22",
        6,
        env!("CARGO_PKG_VERSION"),
    )
    .into_iter()
    .map(|(_, p)| p)
    .collect();
    // Imported the way Home Assistant's bootstrap does (2024.1 has a
    // circular import otherwise), with the frame helper 2025.4's templates
    // report through.
    let script = r#"
import asyncio, json, sys
import homeassistant.bootstrap
from homeassistant.core import HomeAssistant

async def main():
    hass = HomeAssistant("/nonexistent")
    from homeassistant.helpers import frame
    if hasattr(frame, "async_setup"):
        frame.async_setup(hass)
    from homeassistant.components.mqtt.sensor import DISCOVERY_SCHEMA
    out = []
    for payload in json.load(sys.stdin):
        valid = DISCOVERY_SCHEMA(dict(payload))
        out.append(sorted(set(payload) - set(valid)))
    print(json.dumps(out))

asyncio.run(main())
"#;
    let out = venv.run_python(script, &Value::from(payloads).to_string());
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// 2025.4's schema accepts every payload and keeps every key but
/// `default_entity_id`, which it predates.
#[test]
fn home_assistant_2025_4_schema_accepts_the_payloads() {
    let dropped = validate_offline(NEW);
    assert_eq!(dropped, vec![vec!["default_entity_id".to_owned()]; 3]);
}

/// So does 2024.1's.
#[test]
fn home_assistant_2024_1_schema_accepts_the_payloads() {
    let dropped = validate_offline(OLD);
    assert_eq!(dropped, vec![vec!["default_entity_id".to_owned()]; 3]);
}
