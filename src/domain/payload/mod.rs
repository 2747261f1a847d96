//! The wire contract (DESIGN.md, "MQTT contract"), both ways: the shape of
//! a reading as the agent and the gateway publish it ([`WireReading`]; `query
//! --format json` prints the same shape so scripts handle both alike) and
//! the parsers that read it back ([`parse_readings`]) or read what a node
//! that does not score publishes ([`parse_raw`]); the topics; the names that
//! become topic levels; the Home Assistant discovery configs.
//!
//! # Layout
//!
//! - this module: the log identity, the reading on the wire and as
//!   received, the time format;
//! - `parse`: wire readings in ([`parse_readings`]);
//! - `raw`: the gateway's input ([`parse_raw`]);
//! - `resend`: repair requests and replies ([`parse_resend`]);
//! - `error`: [`PayloadError`], every refusal with its metric label;
//! - `json`: the JSON tree the parsers walk (repeated keys kept, to refuse);
//! - `names`: node names and sensor ids, shared with the config;
//! - `topics`: [`Topics`], building topics and reading the node back;
//! - `ha`: Home Assistant discovery.
//!
//! # Decisions a consumer relies on
//!
//! - Strict: unknown fields, repeated fields, wrong types, strings for
//!   numbers, integers written as floats and out-of-range values are
//!   refused, never coerced; a batch with one bad reading is refused whole
//!   (its message is acknowledged or not as a whole).
//! - `ts_ms` is the reading's time; `ts` repeats it for people and must be
//!   exactly what [`rfc3339_ms`] writes for it, or the reading is refused:
//!   a stored reading never has two times that disagree.
//! - `route` is trusted as sent, not recomputed from `priority`: the
//!   node's `realtime_at` and `combine` are its own.
//! - Floats read back bit for bit (`serde_json`'s `float_roundtrip`): a
//!   collector stores what the node logged.

mod error;
mod ha;
mod json;
mod names;
mod parse;
mod raw;
mod resend;
mod topics;

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::reading::{Reading, Route};

pub use error::PayloadError;
pub use ha::{ha_discovery, ha_legacy_discovery_topic};
pub use names::{NODE_MAX_LEN, NameError, SENSOR_MAX_LEN, check_node, check_sensor};
pub use parse::parse_readings;
pub use raw::{MAX_RAW_PAYLOAD, RawMessage, RawReading, parse_raw};
pub use resend::{
    MAX_RESEND_PAYLOAD, RESEND_SPAN, ResendReply, ResendRequest, parse_resend, parse_resend_reply,
    runs,
};
pub use topics::Topics;

/// The identity of one log file: a random 64-bit number drawn when the log
/// is created (or when a copy of a log is opened as a log of its own), on
/// the wire as 16 lower-case hex digits. Seqs restart with every log, so a
/// seq means something only together with the log that handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(u64);

impl LogId {
    /// The id from its number.
    pub const fn new(n: u64) -> Self {
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// JSON array of them (batch), parsed and checked as
    /// [`parse_readings`] does; a reading without `log` (an edgeprio before
    /// logs had identities) is an error that says so.
    pub fn parse_payload(payload: &[u8]) -> Result<Vec<ReadingKey>, PayloadError> {
        Ok(parse_readings(payload)?.iter().map(Received::key).collect())
    }
}

/// A reading as a consumer receives it: what the wire says, owned
/// ([`parse_readings`] makes them, [`Received::wire`] sends one on).
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

    /// The reading as it goes on the wire again, its flags kept: a gateway
    /// routes a reading that arrived scored as it is. Parsing what this
    /// serialises gives `self` back, except that `clock_synced:
    /// Some(true)` comes back `None` (the wire says only "not synced").
    pub fn wire(&self) -> WireReading<'_> {
        WireReading {
            late: self.late,
            resent: self.resent,
            ..WireReading::new(&self.reading, self.log)
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
/// `"late"`, `"resent"` and `"clock_synced"` when they say something.
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
    /// Sent again because a consumer asked for it (the `resend` topic), not
    /// when it was taken; absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resent: bool,
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
            resent: false,
            clock_synced: r.clock_synced != Some(false),
        }
    }
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z):
/// the largest `ts_ms` a received reading may carry.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Formats Unix milliseconds as RFC 3339 in UTC, e.g.
/// `2026-11-25T00:00:00.000Z`. Times before 1970 clamp to the epoch, times
/// after [`MAX_TS_MS`] to it (a four-digit year cannot say more, and the
/// formatter would panic).
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let ms = u64::try_from(ts_ms.min(MAX_TS_MS)).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The paper's event (28 °C / 48 % after 25 °C / 56 %) as a reading, for
/// the payload tests.
#[cfg(test)]
fn example_reading() -> Reading {
    Reading {
        node: "pi".into(),
        sensor: "lab".into(),
        seq: 8,
        ts_ms: 1_764_028_800_000,
        sample: crate::domain::Sample::new(28.0, 48.0),
        weights: crate::domain::PerChannel {
            temperature: 2,
            humidity: 2,
        },
        priority: 2,
        route: Route::Realtime,
        clock_synced: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PerChannel, Sample};

    #[test]
    fn wire_reading_has_the_contract_fields() {
        let r = example_reading();
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
}
