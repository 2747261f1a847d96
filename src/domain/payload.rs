//! The shape of a reading on the wire (DESIGN.md, "MQTT contract"); `query
//! --format json` prints the same shape so scripts handle both alike.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::reading::{Reading, Route};

/// Channel weights as they appear in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WireWeights {
    /// Weight of the temperature change.
    pub temperature: u32,
    /// Weight of the humidity change.
    pub humidity: u32,
}

/// One reading as JSON: `{"node","sensor","seq","ts_ms","ts",
/// "temperature_c","humidity_pct","weight":{..},"priority","route"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WireReading<'a> {
    /// Node name.
    pub node: &'a str,
    /// Sensor id.
    pub sensor: &'a str,
    /// Sequence number per (node, sensor).
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
}

impl<'a> From<&'a Reading> for WireReading<'a> {
    fn from(r: &'a Reading) -> Self {
        Self {
            node: &r.node,
            sensor: &r.sensor,
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

/// Home Assistant's device-based MQTT discovery for one sensor: the
/// retained config topic and its payload. Temperature and humidity with
/// their device classes, the priority as a diagnostic entity, availability
/// from the node's status topic, and `expire_after` of three intervals so a
/// dead sensor goes "unavailable" rather than showing stale values forever.
pub fn ha_discovery(
    topics: &Topics,
    node: &str,
    sensor: &str,
    expire_after_s: u64,
    version: &str,
) -> (String, serde_json::Value) {
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
    let id = format!("edgeprio_{}_{}", clean(node), clean(sensor));
    let entity = |suffix: &str, extra: serde_json::Value| {
        let mut e = serde_json::json!({
            "p": "sensor",
            "unique_id": format!("{id}_{suffix}"),
            "object_id": format!("{id}_{suffix}"),
        });
        if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
            e.extend(extra.clone());
        }
        e
    };
    let payload = serde_json::json!({
        "dev": {
            "ids": [id],
            "name": format!("{sensor} ({node})"),
            "mf": "edgeprio",
            "mdl": "DHT22",
            "sw": version,
        },
        "o": { "name": "edgeprio", "sw": version },
        "cmps": {
            format!("{id}_temperature"): entity("temperature", serde_json::json!({
                "name": "Temperature",
                "device_class": "temperature",
                "unit_of_measurement": "°C",
                "state_class": "measurement",
                "value_template": "{{ value_json.temperature_c }}",
                "suggested_display_precision": 1,
            })),
            format!("{id}_humidity"): entity("humidity", serde_json::json!({
                "name": "Humidity",
                "device_class": "humidity",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                "value_template": "{{ value_json.humidity_pct }}",
                "suggested_display_precision": 1,
            })),
            format!("{id}_priority"): entity("priority", serde_json::json!({
                "name": "Priority",
                "entity_category": "diagnostic",
                "state_class": "measurement",
                "icon": "mdi:priority-high",
                "value_template": "{{ value_json.priority }}",
            })),
        },
        "state_topic": topics.state(sensor),
        "availability_topic": topics.status(),
        "payload_available": "online",
        "payload_not_available": "offline",
        "expire_after": expire_after_s,
        "qos": 1,
    });
    (format!("homeassistant/device/{id}/config"), payload)
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
        };
        let json = serde_json::to_value(WireReading::from(&r)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "node": "pi", "sensor": "lab", "seq": 8,
                "ts_ms": 1_764_028_800_000i64, "ts": "2025-11-25T00:00:00.000Z",
                "temperature_c": 28.0, "humidity_pct": 48.0,
                "weight": {"temperature": 2, "humidity": 2},
                "priority": 2, "route": "realtime"
            })
        );
        let late = WireReading {
            late: true,
            ..WireReading::from(&r)
        };
        assert_eq!(serde_json::to_value(late).unwrap()["late"], true);
    }

    #[test]
    fn ha_discovery_has_the_fields_home_assistant_needs() {
        let t = Topics::new("edgeprio", "pi.lan");
        let (topic, p) = ha_discovery(&t, "pi.lan", "lab", 45, "0.1.0");
        assert_eq!(topic, "homeassistant/device/edgeprio_pi_lan_lab/config");
        assert_eq!(p["state_topic"], "edgeprio/pi.lan/lab/state");
        assert_eq!(p["availability_topic"], "edgeprio/pi.lan/status");
        assert_eq!(p["expire_after"], 45);
        let c = &p["cmps"];
        let temp = &c["edgeprio_pi_lan_lab_temperature"];
        assert_eq!(temp["device_class"], "temperature");
        assert_eq!(temp["unit_of_measurement"], "°C");
        assert_eq!(temp["state_class"], "measurement");
        assert_eq!(temp["p"], "sensor");
        assert_eq!(
            c["edgeprio_pi_lan_lab_humidity"]["device_class"],
            "humidity"
        );
        assert_eq!(
            c["edgeprio_pi_lan_lab_priority"]["entity_category"],
            "diagnostic"
        );
        assert!(p["dev"]["ids"][0].is_string());
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
