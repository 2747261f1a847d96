//! Wire readings in: what a collector reads off the real-time and batch
//! topics, and what a gateway reads when a node sends a reading it has
//! already scored. The inverse of serialising [`super::WireReading`], with every
//! field checked (see the module above for the decisions).

use super::json::{Fields, Json, quote};
use super::names::{check_node, check_sensor};
use super::{LogId, MAX_TS_MS, PayloadError, Received, rfc3339_ms};
use crate::domain::{PerChannel, Reading, Route, Sample};
use crate::store::MAX_SEQ;

/// Every field a wire reading may have.
const READING_FIELDS: [&str; 14] = [
    "node",
    "sensor",
    "log",
    "seq",
    "ts_ms",
    "ts",
    "temperature_c",
    "humidity_pct",
    "weight",
    "priority",
    "route",
    "late",
    "resent",
    "clock_synced",
];

/// [`READING_FIELDS`] in words.
const READING_KNOWN: &str = "node, sensor, log, seq, ts_ms, ts, temperature_c, humidity_pct, \
                             weight, priority, route, and optionally late, resent, clock_synced";

/// What a wire reading needs, in words.
const READING_NEEDS: &str = "a reading has node, sensor, log, seq, ts_ms, ts, \
                                        temperature_c, humidity_pct, weight, priority and route";

/// Parses what a consumer receives on a node's real-time topic (one
/// reading, a JSON object), its batch topic (a JSON array of them) or a
/// sensor's state topic (one). An empty array is an empty batch. One bad
/// reading refuses the whole payload ([`PayloadError::InBatch`] says
/// which).
///
/// There is no size cap here, unlike [`super::parse_raw`]: a batch is as
/// large as its node's `batch_max` makes it, and the consumer's MQTT
/// client refuses packets beyond its own maximum before this sees them.
pub fn parse_readings(payload: &[u8]) -> Result<Vec<Received>, PayloadError> {
    match Json::parse(payload)? {
        Json::Object(pairs) => Ok(vec![received(&pairs, READING_NEEDS)?]),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                match item {
                    Json::Object(pairs) => received(pairs, READING_NEEDS),
                    other => Err(PayloadError::NotAnObject {
                        what: "a reading",
                        expected: "a JSON object",
                        found: other.describe(),
                    }),
                }
                .map_err(|e| PayloadError::InBatch {
                    index,
                    source: Box::new(e),
                })
            })
            .collect(),
        other => Err(PayloadError::NotAnObject {
            what: "the payload",
            expected: "a reading (a JSON object) or a batch (a JSON array of them)",
            found: other.describe(),
        }),
    }
}

/// The reading one JSON object holds; `needs` is what the missing-field
/// message tells the sender.
pub(super) fn received(
    pairs: &[(String, Json)],
    needs: &'static str,
) -> Result<Received, PayloadError> {
    let f = Fields::new(pairs, &READING_FIELDS, "", READING_KNOWN, needs)?;
    let node = f.str("node")?;
    check_node(node).map_err(|why| PayloadError::Node {
        node: quote(node),
        why,
    })?;
    let sensor = sensor(&f)?;
    let log = f.str("log")?;
    let log = LogId::parse(log).ok_or_else(|| PayloadError::Log { value: quote(log) })?;
    let seq = seq(&f)?;
    let ts_ms = ts_ms(&f)?;
    let ts = f.str("ts")?;
    let expected = rfc3339_ms(ts_ms);
    if ts != expected {
        return Err(PayloadError::Ts {
            ts: quote(ts),
            ts_ms,
            expected,
        });
    }
    let sample = sample(&f)?;
    let w = f.object(
        "weight",
        &["temperature", "humidity"],
        "weight.",
        "temperature and humidity",
        "weight has temperature and humidity",
    )?;
    let weights = PerChannel {
        temperature: u32_field(&w, "temperature")?,
        humidity: u32_field(&w, "humidity")?,
    };
    let priority = u32_field(&f, "priority")?;
    let route = match f.required("route")? {
        Json::Str(s) => Route::parse(s).ok_or_else(|| {
            f.out_of_range("route", quote(s), r#""realtime" or "batch""#.to_owned())
        })?,
        other => {
            return Err(PayloadError::Type {
                field: "route".to_owned(),
                expected: "a string",
                found: other.describe(),
            });
        }
    };
    let late = f.bool("late")?.unwrap_or(false);
    let resent = f.bool("resent")?.unwrap_or(false);
    // The wire says only "not synced" (WireReading::clock_synced); a true
    // is what absence means.
    let clock_synced = f.bool("clock_synced")?.filter(|synced| !synced);
    Ok(Received {
        reading: Reading {
            node: node.to_owned(),
            sensor,
            seq,
            ts_ms,
            sample,
            weights,
            priority,
            route,
            clock_synced,
        },
        log,
        late,
        resent,
    })
}

/// `sensor`, a sensor id the agent's config would accept.
pub(super) fn sensor(f: &Fields<'_>) -> Result<String, PayloadError> {
    let sensor = f.str("sensor")?;
    check_sensor(sensor).map_err(|why| PayloadError::Sensor {
        sensor: quote(sensor),
        why,
    })?;
    Ok(sensor.to_owned())
}

/// `seq`, in what the log can hold.
pub(super) fn seq(f: &Fields<'_>) -> Result<u64, PayloadError> {
    let n = f.int("seq", 0, MAX_SEQ.into())?;
    Ok(u64::try_from(n).expect("checked against 0..=MAX_SEQ"))
}

/// `ts_ms`, an instant [`rfc3339_ms`] can write: from 1970 to the end of
/// year 9999.
pub(super) fn ts_ms(f: &Fields<'_>) -> Result<i64, PayloadError> {
    let n = f.int("ts_ms", 0, MAX_TS_MS.into())?;
    Ok(i64::try_from(n).expect("checked against 0..=MAX_TS_MS"))
}

/// `temperature_c` and `humidity_pct`: finite numbers. Their physical range
/// is the validator's (`crate::domain::check_range`), which knows the part.
pub(super) fn sample(f: &Fields<'_>) -> Result<Sample, PayloadError> {
    Ok(Sample::new(f.f64("temperature_c")?, f.f64("humidity_pct")?))
}

fn u32_field(f: &Fields<'_>, name: &str) -> Result<u32, PayloadError> {
    let n = f.int(name, 0, u32::MAX.into())?;
    Ok(u32::try_from(n).expect("checked against 0..=u32::MAX"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::WireReading;

    /// Keeps the serialiser in sight: what [`WireReading`] writes is what
    /// [`READING_FIELDS`] allows.
    fn serialised_fields(w: &WireReading<'_>) -> Vec<String> {
        match serde_json::to_value(w).expect("a reading serialises") {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("{other}"),
        }
    }

    fn reading() -> Reading {
        super::super::example_reading()
    }

    fn received_of(r: Reading) -> Received {
        Received {
            reading: r,
            log: LogId::new(0x00c0_ffee),
            late: false,
            resent: false,
        }
    }

    /// The JSON of `reading()` with `edit` applied.
    fn edited(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
        let r = reading();
        let mut v = serde_json::to_value(WireReading::new(&r, LogId::new(0x00c0_ffee))).unwrap();
        edit(v.as_object_mut().unwrap());
        serde_json::to_vec(&v).unwrap()
    }

    /// The JSON of `reading()` with `field` set to `value`.
    fn with_field(field: &str, value: serde_json::Value) -> Vec<u8> {
        edited(|m| {
            m.insert(field.to_owned(), value);
        })
    }

    /// The JSON of `reading()` without `field`.
    fn without_field(field: &str) -> Vec<u8> {
        edited(|m| {
            m.remove(field);
        })
    }

    fn kind_of(payload: &[u8]) -> &'static str {
        match parse_readings(payload) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn one_reading_and_a_batch_parse() {
        let r = reading();
        let one = serde_json::to_vec(&WireReading::new(&r, LogId::new(0x00c0_ffee))).unwrap();
        assert_eq!(parse_readings(&one).unwrap(), vec![received_of(reading())]);
        let late = Received {
            late: true,
            resent: true,
            ..received_of(reading())
        };
        let batch = serde_json::to_vec(&[late.wire(), late.wire()]).unwrap();
        assert_eq!(parse_readings(&batch).unwrap(), vec![late.clone(), late]);
        assert_eq!(parse_readings(b" [ ] ").unwrap(), vec![]);
    }

    #[test]
    fn the_parser_knows_every_field_the_serialiser_writes() {
        let r = Reading {
            clock_synced: Some(false),
            ..reading()
        };
        let all = Received {
            late: true,
            resent: true,
            ..received_of(r)
        };
        let mut fields = serialised_fields(&all.wire());
        fields.sort();
        let mut allowed: Vec<String> = READING_FIELDS.iter().map(|&s| s.to_owned()).collect();
        allowed.sort();
        assert_eq!(fields, allowed);
    }

    #[test]
    fn ts_must_be_the_form_of_ts_ms() {
        let e = parse_readings(&edited(|m| {
            m.insert("ts".into(), "2025-11-25T00:00:00Z".into());
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ts \"2025-11-25T00:00:00Z\" does not match ts_ms = 1764028800000: it must be \
             \"2025-11-25T00:00:00.000Z\""
        );
        assert_eq!(e.kind(), "ts");
        let shifted = edited(|m| {
            m.insert("ts_ms".into(), 1_764_028_800_001i64.into());
        });
        assert_eq!(kind_of(&shifted), "ts");
        for ts_ms in [serde_json::json!(-1), serde_json::json!(MAX_TS_MS + 1)] {
            assert_eq!(kind_of(&with_field("ts_ms", ts_ms)), "range");
        }
    }

    #[test]
    fn every_field_is_checked() {
        use serde_json::json;
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("node", json!("a b"), "node"),
            ("node", json!(""), "node"),
            ("node", json!(7), "type"),
            ("sensor", json!("a.b"), "sensor"),
            ("sensor", json!(null), "type"),
            ("log", json!("00C0FFEE00000000"), "log"),
            ("seq", json!(-1), "range"),
            ("seq", json!(MAX_SEQ + 1), "range"),
            ("seq", json!(1.5), "type"),
            ("seq", json!("8"), "type"),
            ("ts_ms", json!(1.764_028_8e12), "type"),
            ("ts", json!(1), "type"),
            ("temperature_c", json!("28.0"), "type"),
            ("temperature_c", json!("NaN"), "type"),
            ("humidity_pct", json!(null), "type"),
            ("humidity_pct", json!([48.0]), "type"),
            ("weight", json!(2), "type"),
            ("weight", json!({"temperature": 2}), "missing_field"),
            (
                "weight",
                json!({"temperature": 2, "humidity": 2, "x": 0}),
                "unknown_field",
            ),
            ("weight", json!({"temperature": -2, "humidity": 2}), "range"),
            (
                "weight",
                json!({"temperature": 2, "humidity": 4_294_967_296u64}),
                "range",
            ),
            ("priority", json!(-1), "range"),
            ("priority", json!(true), "type"),
            ("route", json!("fast"), "range"),
            ("route", json!(1), "type"),
            ("late", json!(1), "type"),
            ("resent", json!("true"), "type"),
            ("clock_synced", json!(0), "type"),
            ("extra", json!(1), "unknown_field"),
        ];
        for (field, value, kind) in cases {
            let payload = with_field(field, value.clone());
            let e = parse_readings(&payload).unwrap_err();
            assert_eq!(e.kind(), kind, "{field} = {value}: {e}");
        }
        for field in READING_FIELDS.iter().take(11) {
            let payload = without_field(field);
            let e = parse_readings(&payload).unwrap_err();
            assert_eq!(e.kind(), "missing_field", "{field}: {e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn wrong_shapes_and_bad_json_are_refused() {
        assert_eq!(kind_of(b"{"), "json");
        assert_eq!(kind_of(b""), "json");
        assert_eq!(kind_of(b"{} x"), "json");
        assert_eq!(kind_of(b"\xff"), "json");
        assert_eq!(kind_of(b"3"), "type");
        assert_eq!(kind_of(b"\"reading\""), "type");
        assert_eq!(kind_of(b"[[]]"), "type");
        assert_eq!(kind_of(b"{}"), "missing_field");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            kind_of(deep.as_bytes()),
            "json",
            "`serde_json`'s recursion limit"
        );
        let huge = String::from_utf8(edited(|_| ()))
            .unwrap()
            .replace("28.0", "1e999");
        assert_eq!(kind_of(huge.as_bytes()), "range");
        let twice = String::from_utf8(edited(|_| ()))
            .unwrap()
            .replacen('{', r#"{"seq":9,"#, 1);
        assert_eq!(kind_of(twice.as_bytes()), "duplicate_field");
    }

    #[test]
    fn a_bad_reading_in_a_batch_is_named_and_refuses_the_batch() {
        let good = String::from_utf8(edited(|_| ())).unwrap();
        let bad = String::from_utf8(with_field("seq", (-1).into())).unwrap();
        let e = parse_readings(format!("[{good},{bad}]").as_bytes()).unwrap_err();
        assert_eq!(e.kind(), "range");
        assert_eq!(
            e.to_string(),
            format!(
                "reading 1 of the batch (counting from 0): field seq = -1 is out of range: it \
                 must be an integer from 0 to {MAX_SEQ}"
            )
        );
        let e = parse_readings(format!("[{good},7]").as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "reading 1 of the batch (counting from 0): a reading must be a JSON object, not the \
             number 7"
        );
    }

    #[test]
    fn messages_name_the_field_the_value_and_what_is_allowed() {
        let e = parse_readings(&with_field("temperature_c", "28.0".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field temperature_c must be a number, not the string \"28.0\""
        );
        let e = parse_readings(&with_field("colour", "red".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("unknown field \"colour\"; the fields are {READING_KNOWN}")
        );
        let e = parse_readings(&edited(|m| {
            m.insert("weight".into(), serde_json::json!({"temperature": 1}));
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "field weight.humidity is missing; weight has temperature and humidity"
        );
        let e = parse_readings(&with_field(
            "weight",
            serde_json::json!({"temperature": 1, "humidity": 1, "pressure": 0}),
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown field \"weight.pressure\"; the fields are temperature and humidity"
        );
        let e =
            parse_readings(&with_field("ts_ms", serde_json::json!(1.764_028_8e12))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field ts_ms must be an integer, not the number 1764028800000.0"
        );
        let e = parse_readings(&with_field("route", "fast".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field route = \"fast\" is out of range: it must be \"realtime\" or \"batch\""
        );
    }

    /// Any reading the agent can log: names the config accepts, seqs and
    /// times the log holds, any finite values (`-0.0` included: it reads
    /// back equal), any weights.
    fn any_reading() -> impl Strategy<Value = Received> {
        let name = "[A-Za-z0-9_-]{1,32}";
        let node = prop_oneof!["[a-z0-9.-]{1,64}".boxed(), "[^\\s/+#\\p{Cc}]{1,16}".boxed()];
        let value = prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            (-400i32..800).prop_map(|t| f64::from(t) / 10.0 + 0.3),
        ];
        (
            (node, name, 0..=MAX_SEQ, 0..=MAX_TS_MS, any::<u64>()),
            (value.clone(), value, any::<[u32; 3]>(), any::<bool>()),
            (any::<Option<bool>>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |((node, sensor, seq, ts_ms, log), (t, h, [wt, wh, p], rt), (cs, late, resent))| {
                    Received {
                        reading: Reading {
                            node,
                            sensor,
                            seq,
                            ts_ms,
                            sample: Sample::new(t, h),
                            weights: PerChannel {
                                temperature: wt,
                                humidity: wh,
                            },
                            priority: p,
                            route: if rt { Route::Realtime } else { Route::Batch },
                            clock_synced: cs,
                        },
                        log: LogId::new(log),
                        late,
                        resent,
                    }
                },
            )
            .prop_filter("a node name", |r| check_node(&r.reading.node).is_ok())
    }

    proptest! {
        #[test]
        fn what_is_serialised_parses_back(r in any_reading()) {
            let bytes = serde_json::to_vec(&WireReading::new(&r.reading, r.log)).unwrap();
            let back = parse_readings(&bytes).unwrap();
            let mut want = r.reading.clone();
            // The wire cannot tell "synced" from "unknown".
            if want.clock_synced == Some(true) {
                want.clock_synced = None;
            }
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(&back[0].reading, &want);
            prop_assert_eq!(back[0].log, r.log);
            // Bit for bit, not only ==: -0.0 stays -0.0.
            prop_assert_eq!(
                back[0].reading.sample.temperature.to_bits(),
                r.reading.sample.temperature.to_bits()
            );
            prop_assert_eq!(
                back[0].reading.sample.humidity.to_bits(),
                r.reading.sample.humidity.to_bits()
            );
            let flags = serde_json::to_vec(&r.wire()).unwrap();
            let back = parse_readings(&flags).unwrap();
            prop_assert_eq!(&back[0], &Received { reading: want, ..r });
        }
    }
}
