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
        }
    }
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
    }
}
