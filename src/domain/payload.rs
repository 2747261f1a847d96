//! The shape of a reading on the wire (DESIGN.md, "MQTT contract"); `query
//! --format json` prints the same shape so scripts handle both alike. Also
//! the node's topics and the Home Assistant discovery configs.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::reading::{Reading, Route};

/// The identity of one log file: a random 64-bit number drawn when the log
/// is created (or when a copy of a log is opened as a log of its own), on
/// the wire as 16 lower-case hex digits. Seqs restart with every log, so a
/// seq means something only together with the log that handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(u64);

impl LogId {
    /// The id from its number.
    pub fn new(n: u64) -> Self {
        Self(n)
    }

    /// Parses the 16-hex-digit form (the only form: `SQLite` writes it as
    /// `lower(hex(randomblob(8)))`).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Self)
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for LogId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        LogId::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "log {s:?} is not a log identity: 16 lower-case hex digits are allowed"
            ))
        })
    }
}

/// What a consumer deduplicates readings on (README, "MQTT"): a reading is
/// the same reading only if node, sensor, log and seq all match. The
/// gateway and the collectors use this type, never their own tuple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub struct ReadingKey {
    /// Node name.
    pub node: String,
    /// Sensor id.
    pub sensor: String,
    /// The log that handed out `seq`.
    pub log: LogId,
    /// Sequence number within (node, sensor, log).
    pub seq: u64,
}

impl ReadingKey {
    /// The key of a reading about to be sent.
    pub fn of(w: &WireReading<'_>) -> Self {
        Self {
            node: w.node.to_owned(),
            sensor: w.sensor.to_owned(),
            log: w.log,
            seq: w.seq,
        }
    }

    /// The keys of a received payload: one reading (real-time, state) or a
    /// JSON array of them (batch). Other fields are ignored; a reading
    /// without `log` (an edgeprio before logs had identities) is an error
    /// that says so.
    pub fn parse_payload(payload: &[u8]) -> Result<Vec<ReadingKey>, serde_json::Error> {
        match serde_json::from_slice::<serde_json::Value>(payload)? {
            v @ serde_json::Value::Array(_) => serde_json::from_value(v),
            v => serde_json::from_value(v).map(|k| vec![k]),
        }
    }
}

/// A reading as a consumer receives it: what the wire says, owned. The
/// parser that makes one from a payload lives beside [`WireReading`], the
/// shape it parses.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The reading, as the node logged it (`clock_synced` is `Some(false)`
    /// only when the wire said so, `None` otherwise).
    pub reading: Reading,
    /// The log that handed out its seq: part of the deduplication key.
    pub log: LogId,
    /// A real-time reading that went out on the batch topic because it was
    /// no longer fresh.
    pub late: bool,
    /// Sent again on request (a repair), not when it was taken.
    pub resent: bool,
}

impl Received {
    /// Its deduplication key.
    pub fn key(&self) -> ReadingKey {
        ReadingKey {
            node: self.reading.node.clone(),
            sensor: self.reading.sensor.clone(),
            log: self.log,
            seq: self.reading.seq,
        }
    }
}

/// Channel weights as they appear in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WireWeights {
    /// Weight of the temperature change.
    pub temperature: u32,
    /// Weight of the humidity change.
    pub humidity: u32,
}

/// One reading as JSON: `{"node","sensor","log","seq","ts_ms","ts",
/// "temperature_c","humidity_pct","weight":{..},"priority","route"}`, and
/// `"late"` and `"clock_synced"` when they say something.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WireReading<'a> {
    /// Node name.
    pub node: &'a str,
    /// Sensor id.
    pub sensor: &'a str,
    /// The identity of the log the reading is in: seqs restart with every
    /// log, so it is part of the deduplication key ([`ReadingKey`]).
    pub log: LogId,
    /// Sequence number per (node, sensor, log).
    pub seq: u64,
    /// Unix time in milliseconds.
    pub ts_ms: i64,
    /// The same instant in RFC 3339, UTC, millisecond precision.
    pub ts: String,
    /// Temperature in °C.
    pub temperature_c: f64,
    /// Relative humidity in %.
    pub humidity_pct: f64,
    /// Channel weights.
    pub weight: WireWeights,
    /// Combined weight.
    pub priority: u32,
    /// The route taken.
    pub route: Route,
    /// A real-time reading that could not go out while it was fresh and was
    /// sent on the batch topic instead; absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    /// `false` for a reading taken while the kernel said the wall clock
    /// was not synchronized (its `ts_ms` may be far off); absent otherwise
    /// (synchronized or unknown), so consumers that never heard of it see
    /// no change.
    #[serde(skip_serializing_if = "is_true")]
    pub clock_synced: bool,
}

/// For `skip_serializing_if`.
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde passes a reference"
)]
fn is_true(b: &bool) -> bool {
    *b
}

impl<'a> WireReading<'a> {
    /// `r`, a reading of the log `log`, as it goes on the wire.
    pub fn new(r: &'a Reading, log: LogId) -> Self {
        Self {
            node: &r.node,
            sensor: &r.sensor,
            log,
            seq: r.seq,
            ts_ms: r.ts_ms,
            ts: rfc3339_ms(r.ts_ms),
            temperature_c: r.sample.temperature,
            humidity_pct: r.sample.humidity,
            weight: WireWeights {
                temperature: r.weights.temperature,
                humidity: r.weights.humidity,
            },
            priority: r.priority,
            route: r.route,
            late: false,
            clock_synced: r.clock_synced != Some(false),
        }
    }
}

/// The MQTT topics of one node (DESIGN.md, "MQTT contract").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics under `<prefix>/<node>/`.
    pub fn new(prefix: &str, node: &str) -> Self {
        Self {
            base: format!("{prefix}/{node}"),
        }
    }

    /// One reading per message, sent at once.
    pub fn realtime(&self) -> String {
        format!("{}/realtime", self.base)
    }

    /// JSON arrays of readings.
    pub fn batch(&self) -> String {
        format!("{}/batch", self.base)
    }

    /// The topic a route publishes on.
    pub fn route(&self, route: Route) -> String {
        match route {
            Route::Realtime => self.realtime(),
            Route::Batch => self.batch(),
        }
    }

    /// Latest reading of a sensor, retained.
    pub fn state(&self, sensor: &str) -> String {
        format!("{}/{sensor}/state", self.base)
    }

    /// `online` / `offline` (the Last Will), retained.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// Readings without priority, for a gateway that scores them.
    pub fn raw(&self) -> String {
        format!("{}/raw", self.base)
    }
}

/// Home Assistant's MQTT discovery prefix (its default, which users rarely
/// change).
const HA_PREFIX: &str = "homeassistant";

/// The id Home Assistant knows one sensor's device by: `edgeprio_<node>_
/// <sensor>`, with every character a discovery topic does not allow
/// (anything but `[a-zA-Z0-9_-]`) replaced by `_`.
fn ha_device_id(node: &str, sensor: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("edgeprio_{}_{}", clean(node), clean(sensor))
}

/// `s` as the object part of an entity id: lower-case `[a-z0-9_]`, no
/// leading, trailing or doubled `_`, the form Home Assistant's entity ids
/// take.
fn ha_slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// Home Assistant MQTT discovery for one sensor: `(config topic, payload)`
/// for each of its three entities, each published retained.
///
/// The shape is *per-component* discovery,
/// `homeassistant/sensor/<unique_id>/config`, one entity per config, all
/// three with the same `device` block so they group under one device: every
/// Home Assistant release of the last years understands it, while
/// device-based discovery (`homeassistant/device/...`) is unknown to
/// 2024.1 and older (README, "Home Assistant"). Each config carries all of
/// its entity's options: the sensor's state topic with a value template,
/// availability from the node's status topic (the Last Will),
/// `expire_after` of three intervals so a dead sensor goes "unavailable"
/// instead of showing a stale value, and `QoS` 1.
///
/// The entity id is set twice: `default_entity_id` for Home Assistant
/// 2025.10 and newer, which deprecated `object_id` in its favour, and
/// `object_id` for older ones, whose discovery schema drops the unknown
/// `default_entity_id` silently (`extra=vol.REMOVE_EXTRA`). With both, every
/// version names the entity `sensor.edgeprio_<node>_<sensor>_<channel>`.
pub fn ha_discovery(
    topics: &Topics,
    node: &str,
    sensor: &str,
    model: &str,
    expire_after_s: u64,
    version: &str,
) -> Vec<(String, serde_json::Value)> {
    use serde_json::json;
    let id = ha_device_id(node, sensor);
    let device = json!({
        "identifiers": [id],
        "name": format!("{sensor} ({node})"),
        "manufacturer": "edgeprio",
        "model": model,
        "sw_version": version,
    });
    let origin = json!({ "name": "edgeprio", "sw_version": version });
    let entities = [
        (
            "temperature",
            json!({
                "name": "Temperature",
                "device_class": "temperature",
                "unit_of_measurement": "°C",
                "state_class": "measurement",
                "value_template": "{{ value_json.temperature_c }}",
                "suggested_display_precision": 1,
            }),
        ),
        (
            "humidity",
            json!({
                "name": "Humidity",
                "device_class": "humidity",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                "value_template": "{{ value_json.humidity_pct }}",
                "suggested_display_precision": 1,
            }),
        ),
        (
            "priority",
            json!({
                "name": "Priority",
                "entity_category": "diagnostic",
                "state_class": "measurement",
                "icon": "mdi:priority-high",
                "value_template": "{{ value_json.priority }}",
            }),
        ),
    ];
    entities
        .into_iter()
        .map(|(channel, options)| {
            let unique_id = format!("{id}_{channel}");
            let object_id = ha_slug(&unique_id);
            let mut payload = json!({
                "unique_id": unique_id,
                "object_id": object_id,
                "default_entity_id": format!("sensor.{object_id}"),
                "device": device,
                "origin": origin,
                "state_topic": topics.state(sensor),
                "availability_topic": topics.status(),
                "payload_available": "online",
                "payload_not_available": "offline",
                "expire_after": expire_after_s,
                "qos": 1,
            });
            if let (Some(payload), serde_json::Value::Object(options)) =
                (payload.as_object_mut(), options)
            {
                payload.extend(options);
            }
            (format!("{HA_PREFIX}/sensor/{unique_id}/config"), payload)
        })
        .collect()
}

/// Where edgeprio 0.1 published its device-based discovery for a sensor,
/// which Home Assistant rejects (2025.4: `extra keys not allowed @
/// data['expire_after']`) or does not know (2024.1). The publisher clears a
/// config it finds retained there, so an upgraded installation leaves no
/// broken device behind.
pub fn ha_legacy_discovery_topic(node: &str, sensor: &str) -> String {
    format!("{HA_PREFIX}/device/{}/config", ha_device_id(node, sensor))
}

/// Formats Unix milliseconds as RFC 3339 in UTC, e.g.
/// `2026-11-25T00:00:00.000Z`. Times before 1970 clamp to the epoch.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ts_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PerChannel, Sample};

    #[test]
    fn wire_reading_has_the_contract_fields() {
        let r = Reading {
            node: "pi".into(),
            sensor: "lab".into(),
            seq: 8,
            ts_ms: 1_764_028_800_000,
            sample: Sample::new(28.0, 48.0),
            weights: PerChannel {
                temperature: 2,
                humidity: 2,
            },
            priority: 2,
            route: Route::Realtime,
            clock_synced: None,
        };
        let log = LogId::parse("00c0ffee12345678").unwrap();
        let json = serde_json::to_value(WireReading::new(&r, log)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "node": "pi", "sensor": "lab", "log": "00c0ffee12345678", "seq": 8,
                "ts_ms": 1_764_028_800_000i64, "ts": "2025-11-25T00:00:00.000Z",
                "temperature_c": 28.0, "humidity_pct": 48.0,
                "weight": {"temperature": 2, "humidity": 2},
                "priority": 2, "route": "realtime"
            })
        );
        let late = WireReading {
            late: true,
            ..WireReading::new(&r, log)
        };
        assert_eq!(serde_json::to_value(late).unwrap()["late"], true);
    }

    #[test]
    fn clock_synced_is_on_the_wire_only_when_it_was_not() {
        let mut r = Reading {
            node: "pi".into(),
            sensor: "lab".into(),
            seq: 8,
            ts_ms: 1_000,
            sample: Sample::new(28.0, 48.0),
            weights: PerChannel {
                temperature: 0,
                humidity: 0,
            },
            priority: 0,
            route: Route::Batch,
            clock_synced: Some(false),
        };
        let log = LogId::new(1);
        let json = serde_json::to_value(WireReading::new(&r, log)).unwrap();
        assert_eq!(json["clock_synced"], false, "{json}");
        for synced in [Some(true), None] {
            r.clock_synced = synced;
            let json = serde_json::to_value(WireReading::new(&r, log)).unwrap();
            assert!(json.get("clock_synced").is_none(), "{synced:?}: {json}");
        }
    }

    #[test]
    fn log_ids_are_sixteen_lower_case_hex_digits() {
        let id = LogId::parse("0123456789abcdef").unwrap();
        assert_eq!(id.to_string(), "0123456789abcdef");
        assert_eq!(LogId::new(1).to_string(), "0000000000000001");
        for bad in [
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdef0",
            "+123456789abcdef",
            "",
        ] {
            assert_eq!(LogId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_deduplication_key_reads_back_from_every_payload_shape() {
        let r = Reading {
            node: "pi".into(),
            sensor: "lab".into(),
            seq: 3,
            ts_ms: 1_000,
            sample: Sample::new(20.0, 50.0),
            weights: PerChannel {
                temperature: 0,
                humidity: 0,
            },
            priority: 0,
            route: Route::Batch,
            clock_synced: None,
        };
        let (a, b) = (LogId::new(0xa), LogId::new(0xb));
        let one = serde_json::to_vec(&WireReading::new(&r, a)).unwrap();
        let key = ReadingKey::parse_payload(&one).unwrap();
        assert_eq!(key, vec![ReadingKey::of(&WireReading::new(&r, a))]);
        let many = serde_json::to_vec(&[WireReading::new(&r, a), WireReading::new(&r, b)]).unwrap();
        let keys = ReadingKey::parse_payload(&many).unwrap();
        // The same (node, sensor, seq) from two logs: two readings.
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);
        let old = br#"{"node":"pi","sensor":"lab","seq":3}"#;
        let e = ReadingKey::parse_payload(old).unwrap_err().to_string();
        assert!(e.contains("log"), "{e}");
        let bad = br#"{"node":"pi","sensor":"lab","seq":3,"log":"XYZ"}"#;
        let e = ReadingKey::parse_payload(bad).unwrap_err().to_string();
        assert!(e.contains("16 lower-case hex digits"), "{e}");
    }

    #[test]
    fn ha_discovery_is_one_retained_config_per_entity() {
        let t = Topics::new("edgeprio", "pi.lan");
        let configs = ha_discovery(&t, "pi.lan", "lab", "DHT22", 45, "0.1.0");
        let topics: Vec<&str> = configs.iter().map(|(topic, _)| topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/edgeprio_pi_lan_lab_temperature/config",
                "homeassistant/sensor/edgeprio_pi_lan_lab_humidity/config",
                "homeassistant/sensor/edgeprio_pi_lan_lab_priority/config",
            ]
        );
        for (topic, p) in &configs {
            let unique_id = p["unique_id"].as_str().unwrap();
            assert_eq!(*topic, format!("homeassistant/sensor/{unique_id}/config"));
            assert_eq!(p["object_id"], unique_id, "already a valid slug");
            assert_eq!(p["default_entity_id"], format!("sensor.{unique_id}"));
            assert_eq!(p["state_topic"], "edgeprio/pi.lan/lab/state");
            assert_eq!(p["availability_topic"], "edgeprio/pi.lan/status");
            assert_eq!(p["payload_available"], "online");
            assert_eq!(p["payload_not_available"], "offline");
            assert_eq!(p["expire_after"], 45, "per entity, not per device");
            assert_eq!(p["qos"], 1);
            assert_eq!(
                p["device"],
                serde_json::json!({
                    "identifiers": ["edgeprio_pi_lan_lab"], "name": "lab (pi.lan)",
                    "manufacturer": "edgeprio", "model": "DHT22", "sw_version": "0.1.0"
                }),
                "the same device block groups the three entities"
            );
            assert_eq!(
                p["origin"],
                serde_json::json!({"name": "edgeprio", "sw_version": "0.1.0"})
            );
            assert!(p.get("cmps").is_none() && p.get("p").is_none(), "{p}");
        }
        let [temp, hum, prio] = [&configs[0].1, &configs[1].1, &configs[2].1];
        assert_eq!(temp["device_class"], "temperature");
        assert_eq!(temp["unit_of_measurement"], "°C");
        assert_eq!(temp["state_class"], "measurement");
        assert_eq!(temp["value_template"], "{{ value_json.temperature_c }}");
        assert_eq!(hum["device_class"], "humidity");
        assert_eq!(hum["unit_of_measurement"], "%");
        assert_eq!(hum["state_class"], "measurement");
        assert_eq!(hum["value_template"], "{{ value_json.humidity_pct }}");
        assert_eq!(prio["entity_category"], "diagnostic");
        assert_eq!(prio["value_template"], "{{ value_json.priority }}");
        assert!(prio.get("device_class").is_none() && prio.get("unit_of_measurement").is_none());
    }

    #[test]
    fn ha_entity_ids_are_valid_slugs() {
        let t = Topics::new("edgeprio", "Pi-4.lan");
        let configs = ha_discovery(&t, "Pi-4.lan", "__Attic 2", "DHT22", 3, "0.1.0");
        assert_eq!(
            configs[0].0, "homeassistant/sensor/edgeprio_Pi-4_lan___Attic_2_temperature/config",
            "topics keep [a-zA-Z0-9_-]"
        );
        assert_eq!(
            configs[0].1["object_id"],
            "edgeprio_pi_4_lan_attic_2_temperature"
        );
        assert_eq!(
            configs[0].1["default_entity_id"],
            "sensor.edgeprio_pi_4_lan_attic_2_temperature"
        );
        assert_eq!(ha_slug("_a__B-c_"), "a_b_c");
    }

    #[test]
    fn the_legacy_device_topic_is_the_one_0_1_used() {
        assert_eq!(
            ha_legacy_discovery_topic("pi.lan", "lab"),
            "homeassistant/device/edgeprio_pi_lan_lab/config"
        );
    }

    #[test]
    fn topics_follow_the_contract() {
        let t = Topics::new("edgeprio", "pi");
        assert_eq!(t.realtime(), "edgeprio/pi/realtime");
        assert_eq!(t.batch(), "edgeprio/pi/batch");
        assert_eq!(t.state("lab"), "edgeprio/pi/lab/state");
        assert_eq!(t.status(), "edgeprio/pi/status");
        assert_eq!(t.raw(), "edgeprio/pi/raw");
    }
}
