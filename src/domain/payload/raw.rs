//! The gateway's input: what a node publishes on `<prefix>/<node>/raw`
//! (DESIGN.md, "MQTT contract"). Either a reading without a priority,
//! `{"sensor","temperature_c","humidity_pct"}` plus optional `"ts_ms"` and
//! `"seq"`, which the gateway validates and scores; or a reading the node
//! has already scored (the paper's "does it have a priority yet?"), which
//! must then be a complete wire reading of that very node, routed as it is.

use super::json::{Fields, Json};
use super::parse::{received, sample, sensor, seq, ts_ms};
use super::{PayloadError, Received};
use crate::domain::Sample;

/// The largest raw payload the gateway parses, checked before parsing: a
/// raw reading is about 100 bytes, a scored one about 300, so 64 KiB is
/// room for any real one while a 1 MB blob costs no parsing at all.
pub const MAX_RAW_PAYLOAD: usize = 64 * 1024;

/// A reading without a priority, as a node that does not score sent it.
/// Its values are finite numbers; whether they are in the sensor's range is
/// the validator's to say (`crate::domain::check_range`), as for the
/// agent's own reads.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReading {
    /// Sensor id, of the shape the agent's config accepts.
    pub sensor: String,
    /// Temperature in °C.
    pub temperature_c: f64,
    /// Relative humidity in %.
    pub humidity_pct: f64,
    /// When it was taken (Unix ms), if the node knows: a node without a
    /// clock leaves it out and the gateway uses the time it arrived.
    pub ts_ms: Option<i64>,
    /// The node's own sequence number, if it keeps one: the gateway
    /// assigns one otherwise.
    pub seq: Option<u64>,
}

impl RawReading {
    /// Its values as a [`Sample`], for the validator
    /// ([`crate::domain::SensorRange::check`]) and the scorer.
    pub fn sample(&self) -> Sample {
        Sample::new(self.temperature_c, self.humidity_pct)
    }
}

/// What one raw message holds.
#[derive(Debug, Clone, PartialEq)]
pub enum RawMessage {
    /// No priority yet: the gateway scores it.
    Unscored(RawReading),
    /// Already scored by the node: the gateway routes it as it is.
    Scored(Received),
}

/// Every field a raw reading may have.
const RAW_FIELDS: [&str; 5] = ["sensor", "temperature_c", "humidity_pct", "ts_ms", "seq"];

/// [`RAW_FIELDS`] in words, and the way out for a sender that scores.
const RAW_KNOWN: &str = "sensor, temperature_c, humidity_pct, and optionally ts_ms, seq (a \
                         reading with priority, route or weight is a scored reading, with every \
                         field of the wire contract)";

/// What a raw reading needs, in words.
const RAW_NEEDS: &str =
    "a raw reading has sensor, temperature_c and humidity_pct (ts_ms and seq are optional)";

/// What a scored reading needs, in words.
const SCORED_NEEDS: &str = "a payload with priority, route or weight is a scored reading, and \
                            a reading has node, sensor, log, seq, ts_ms, ts, temperature_c, \
                            humidity_pct, weight, priority and route";

/// The fields that make a payload a scored reading.
const SCORED_MARKERS: [&str; 3] = ["priority", "route", "weight"];

/// Parses one message received on the raw topic of `node` (the topic's
/// node, from [`super::Topics::node_of`]). A payload larger than
/// [`MAX_RAW_PAYLOAD`] is refused unread.
pub fn parse_raw(node: &str, payload: &[u8]) -> Result<RawMessage, PayloadError> {
    if payload.len() > MAX_RAW_PAYLOAD {
        return Err(PayloadError::TooLarge {
            size: payload.len(),
            max: MAX_RAW_PAYLOAD,
        });
    }
    let pairs = match Json::parse(payload)? {
        Json::Object(pairs) => pairs,
        other => {
            return Err(PayloadError::NotAnObject {
                what: "a raw reading",
                expected: "one JSON object",
                found: other.describe(),
            });
        }
    };
    if pairs
        .iter()
        .any(|(key, _)| SCORED_MARKERS.contains(&key.as_str()))
    {
        let r = received(&pairs, SCORED_NEEDS)?;
        if r.reading.node != node {
            return Err(PayloadError::OtherNode {
                topic: node.to_owned(),
                payload: super::json::quote(&r.reading.node),
            });
        }
        return Ok(RawMessage::Scored(r));
    }
    let f = Fields::new(&pairs, &RAW_FIELDS, "", RAW_KNOWN, RAW_NEEDS)?;
    let sensor = sensor(&f)?;
    let s = sample(&f)?;
    Ok(RawMessage::Unscored(RawReading {
        sensor,
        temperature_c: s.temperature,
        humidity_pct: s.humidity,
        ts_ms: f.has("ts_ms").then(|| ts_ms(&f)).transpose()?,
        seq: f.has("seq").then(|| seq(&f)).transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LogId, PerChannel, Reading, Route};

    fn unscored(payload: &str) -> RawReading {
        match parse_raw("esp-1", payload.as_bytes()) {
            Ok(RawMessage::Unscored(r)) => r,
            other => panic!("{payload}: {other:?}"),
        }
    }

    fn kind(payload: &[u8]) -> &'static str {
        match parse_raw("esp-1", payload) {
            Ok(m) => panic!("accepted: {m:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn a_raw_reading_needs_three_fields_and_may_have_two_more() {
        assert_eq!(
            unscored(r#"{"sensor":"attic","temperature_c":21.5,"humidity_pct":40}"#),
            RawReading {
                sensor: "attic".into(),
                temperature_c: 21.5,
                humidity_pct: 40.0,
                ts_ms: None,
                seq: None,
            }
        );
        assert_eq!(
            unscored(
                r#"{"seq":0,"ts_ms":1764028800000,"humidity_pct":40.5,"temperature_c":-3,"sensor":"a-1"}"#
            ),
            RawReading {
                sensor: "a-1".into(),
                temperature_c: -3.0,
                humidity_pct: 40.5,
                ts_ms: Some(1_764_028_800_000),
                seq: Some(0),
            }
        );
        // Physical range is the validator's: 500 °C is a finite number,
        // which the DHT22's range then refuses.
        let hot = unscored(r#"{"sensor":"a","temperature_c":500,"humidity_pct":-1}"#);
        assert_eq!(hot.sample(), Sample::new(500.0, -1.0));
        assert!(crate::domain::check_range(hot.sample()).is_err());
    }

    #[test]
    fn a_scored_reading_is_a_complete_reading_of_the_topics_node() {
        let r = Reading {
            node: "esp-1".into(),
            sensor: "attic".into(),
            seq: 4,
            ts_ms: 1_000,
            sample: Sample::new(20.0, 50.0),
            weights: PerChannel {
                temperature: 1,
                humidity: 0,
            },
            priority: 1,
            route: Route::Realtime,
            clock_synced: None,
        };
        let w = crate::domain::WireReading::new(&r, LogId::new(7));
        let payload = serde_json::to_vec(&w).unwrap();
        match parse_raw("esp-1", &payload) {
            Ok(RawMessage::Scored(got)) => assert_eq!(got.reading, r),
            other => panic!("{other:?}"),
        }
        let e = parse_raw("esp-2", &payload).unwrap_err();
        assert_eq!(e.kind(), "other_node");
        assert_eq!(
            e.to_string(),
            "the reading says node \"esp-1\" but came on the raw topic of node \"esp-2\"; a node \
             publishes only its own readings"
        );
        let partial = br#"{"sensor":"attic","temperature_c":20,"humidity_pct":50,"priority":3}"#;
        let e = parse_raw("esp-1", partial).unwrap_err();
        assert_eq!(e.kind(), "missing_field");
        assert!(
            e.to_string()
                .starts_with("field node is missing; a payload with priority, route or weight"),
            "{e}"
        );
    }

    #[test]
    fn the_size_cap_comes_before_parsing() {
        let big = vec![b'x'; MAX_RAW_PAYLOAD + 1];
        let e = parse_raw("esp-1", &big).unwrap_err();
        assert_eq!(e.kind(), "too_large");
        assert_eq!(
            e.to_string(),
            "the payload is 65537 bytes, more than the 65536 bytes a raw reading may have"
        );
        let mut padded = br#"{"sensor":"a","temperature_c":1,"humidity_pct":2}"#.to_vec();
        padded.resize(MAX_RAW_PAYLOAD, b' ');
        assert!(
            parse_raw("esp-1", &padded).is_ok(),
            "the cap itself is allowed"
        );
    }

    #[test]
    fn raw_fields_are_checked() {
        assert_eq!(
            kind(br#"[{"sensor":"a","temperature_c":1,"humidity_pct":2}]"#),
            "type"
        );
        assert_eq!(
            kind(br#"{"sensor":"a","temperature_c":1}"#),
            "missing_field"
        );
        assert_eq!(
            kind(br#"{"sensor":"a","temperature_c":1,"humidity_pct":2,"node":"esp-1"}"#),
            "unknown_field"
        );
        assert_eq!(
            kind(br#"{"sensor":"a b","temperature_c":1,"humidity_pct":2}"#),
            "sensor"
        );
        assert_eq!(
            kind(br#"{"sensor":"a","temperature_c":"1","humidity_pct":2}"#),
            "type"
        );
        assert_eq!(
            kind(br#"{"sensor":"a","temperature_c":1,"humidity_pct":2,"seq":-1}"#),
            "range"
        );
        assert_eq!(
            kind(br#"{"sensor":"a","temperature_c":1,"humidity_pct":2,"seq":null}"#),
            "type"
        );
        assert_eq!(
            kind(br#"{"sensor":"a","temperature_c":1,"humidity_pct":2,"ts_ms":-5}"#),
            "range"
        );
        assert_eq!(
            kind(br#"{"sensor":"a","temperature_c":1e999,"humidity_pct":2}"#),
            "range"
        );
    }

    #[test]
    fn unknown_fields_point_the_way_to_a_scored_reading() {
        let e = parse_raw(
            "esp-1",
            br#"{"sensor":"a","temperature_c":1,"humidity_pct":2,"prio":1}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("unknown field \"prio\"; the fields are {RAW_KNOWN}")
        );
    }
}
