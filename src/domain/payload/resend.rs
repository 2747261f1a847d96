//! Repairs, end to end (DESIGN.md, "MQTT contract"): a consumer that finds
//! seqs missing asks the node for them on `<prefix>/<node>/resend`
//! ([`ResendRequest`]); the node sends the readings again from its log on
//! its batch topic, marked `"resent": true`, and answers what it cannot
//! send on `<prefix>/<node>/resend/reply` ([`ResendReply`]).
//!
//! Both are small JSON objects, parsed as strictly as readings are
//! (unknown, repeated and mistyped fields refused), and capped in size
//! before parsing: a resend topic is open to whoever may publish on it.

use serde::Serialize;

use super::json::{Fields, Json};
use super::parse::sensor;
use super::{LogId, PayloadError};
use crate::store::MAX_SEQ;

/// The most seqs one request asks for (`to - from + 1`): a consumer asks for
/// a longer gap in several requests, and a node never reads more than this
/// from its log for one request.
pub const RESEND_SPAN: u64 = 1_000;

/// The largest request or reply parsed, checked before parsing. A request
/// is about 80 bytes; a reply lists at most [`RESEND_SPAN`] ranges.
pub const MAX_RESEND_PAYLOAD: usize = 64 * 1024;

/// `{"sensor","log","from","to"}`: send the readings `from..=to` of
/// `sensor` in log `log` again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResendRequest {
    /// The sensor; the node is the topic's.
    pub sensor: String,
    /// The log the seqs are of.
    pub log: LogId,
    /// The first seq missing.
    pub from: u64,
    /// The last seq missing (`from <= to < from + RESEND_SPAN`).
    pub to: u64,
}

/// A node's answer to a request, for the seqs it will not send:
/// `{"sensor","log","from","to","resent","gone","pending"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResendReply {
    /// The sensor; the node is the topic's.
    pub sensor: String,
    /// The log of the request.
    pub log: LogId,
    /// The range the reply is about (what was served of a request).
    pub from: u64,
    /// Its last seq.
    pub to: u64,
    /// How many readings of the range were sent again.
    pub resent: u64,
    /// Ranges `[first, last]` the log does not have (deleted by
    /// retention, never logged, or of a log the node no longer writes):
    /// they will never come, and a consumer stops asking.
    pub gone: Vec<[u64; 2]>,
    /// Ranges the broker has not acknowledged yet: they are in the node's
    /// outbox and will come as any reading does.
    pub pending: Vec<[u64; 2]>,
}

/// Every field of a request.
const REQUEST_FIELDS: [&str; 4] = ["sensor", "log", "from", "to"];

/// Every field of a reply.
const REPLY_FIELDS: [&str; 7] = ["sensor", "log", "from", "to", "resent", "gone", "pending"];

/// Parses a message received on a resend topic. A payload larger than
/// [`MAX_RESEND_PAYLOAD`] is refused unread.
pub fn parse_resend(payload: &[u8]) -> Result<ResendRequest, PayloadError> {
    let pairs = object(payload, "a resend request")?;
    let f = Fields::new(
        &pairs,
        &REQUEST_FIELDS,
        "",
        "sensor, log, from, to",
        "a resend request has sensor, log, from and to",
    )?;
    let (sensor, log, from, to) = range(&f)?;
    Ok(ResendRequest {
        sensor,
        log,
        from,
        to,
    })
}

/// Parses a message received on a resend reply topic. A payload larger
/// than [`MAX_RESEND_PAYLOAD`] is refused unread.
pub fn parse_resend_reply(payload: &[u8]) -> Result<ResendReply, PayloadError> {
    let pairs = object(payload, "a resend reply")?;
    let f = Fields::new(
        &pairs,
        &REPLY_FIELDS,
        "",
        "sensor, log, from, to, resent, gone, pending",
        "a resend reply has sensor, log, from, to, resent, gone and pending",
    )?;
    let (sensor, log, from, to) = range(&f)?;
    let resent = f.int("resent", 0, i128::from(RESEND_SPAN))?;
    let ranges = |name: &str| ranges(&f, name, from, to);
    Ok(ResendReply {
        sensor,
        log,
        from,
        to,
        resent: u64::try_from(resent).expect("checked against 0..=RESEND_SPAN"),
        gone: ranges("gone")?,
        pending: ranges("pending")?,
    })
}

/// The pairs of a JSON object of at most [`MAX_RESEND_PAYLOAD`] bytes.
fn object(payload: &[u8], what: &'static str) -> Result<Vec<(String, Json)>, PayloadError> {
    if payload.len() > MAX_RESEND_PAYLOAD {
        return Err(PayloadError::TooLarge {
            size: payload.len(),
            max: MAX_RESEND_PAYLOAD,
        });
    }
    match Json::parse(payload)? {
        Json::Object(pairs) => Ok(pairs),
        other => Err(PayloadError::NotAnObject {
            what,
            expected: "a JSON object",
            found: other.describe(),
        }),
    }
}

/// `sensor`, `log`, `from` and `to`, with `from <= to < from + RESEND_SPAN`.
fn range(f: &Fields<'_>) -> Result<(String, LogId, u64, u64), PayloadError> {
    let sensor = sensor(f)?;
    let log = f.str("log")?;
    let log = LogId::parse(log).ok_or_else(|| PayloadError::Log {
        value: super::json::quote(log),
    })?;
    let seq = |name: &str, min: u64| {
        f.int(name, min.into(), MAX_SEQ.into())
            .map(|n| u64::try_from(n).expect("checked against 0..=MAX_SEQ"))
    };
    let from = seq("from", 0)?;
    let to = seq("to", from)?;
    if to - from >= RESEND_SPAN {
        return Err(f.out_of_range(
            "to",
            to.to_string(),
            format!(
                "at most from + {} (one request asks for up to {RESEND_SPAN} seqs)",
                RESEND_SPAN - 1
            ),
        ));
    }
    Ok((sensor, log, from, to))
}

/// The field `name`: an array of `[first, last]` pairs within
/// `from..=to`, ascending and apart.
fn ranges(f: &Fields<'_>, name: &str, from: u64, to: u64) -> Result<Vec<[u64; 2]>, PayloadError> {
    let items = match f.required(name)? {
        Json::Array(items) => items,
        other => {
            return Err(PayloadError::Type {
                field: name.to_owned(),
                expected: "an array of [first, last] pairs",
                found: other.describe(),
            });
        }
    };
    let mut out: Vec<[u64; 2]> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = || format!("{name}[{i}]");
        let pair = match item {
            Json::Array(p) if p.len() == 2 => match (&p[0], &p[1]) {
                (Json::UInt(a), Json::UInt(b)) => [*a, *b],
                _ => {
                    return Err(PayloadError::Type {
                        field: field(),
                        expected: "a pair of seqs",
                        found: item_describe(p),
                    });
                }
            },
            other => {
                return Err(PayloadError::Type {
                    field: field(),
                    expected: "a [first, last] pair",
                    found: other.describe(),
                });
            }
        };
        let after = out.last().map_or(from, |[_, last]| last + 2);
        if pair[0] < after || pair[1] < pair[0] || pair[1] > to {
            return Err(PayloadError::Range {
                field: field(),
                value: format!("[{}, {}]", pair[0], pair[1]),
                allowed: format!(
                    "an ascending range within [{from}, {to}] after the one before it"
                ),
            });
        }
        out.push(pair);
    }
    Ok(out)
}

/// What an array that should have been a pair of seqs held.
fn item_describe(p: &[Json]) -> String {
    let parts: Vec<String> = p.iter().map(Json::describe).collect();
    format!("[{}]", parts.join(", "))
}

/// The ranges of consecutive values in `seqs` (ascending), as `[first,
/// last]` pairs.
pub fn runs(seqs: impl IntoIterator<Item = u64>) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some([_, last]) if s == *last + 1 => *last = s,
            _ => out.push([s, s]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "3f9c2a71d04be815";

    fn request(json: &str) -> Result<ResendRequest, PayloadError> {
        parse_resend(json.as_bytes())
    }

    #[test]
    fn a_request_reads_back_what_it_serialises() {
        let r = ResendRequest {
            sensor: "lab".into(),
            log: LogId::parse(LOG).expect("a log id"),
            from: 41,
            to: 1_040,
        };
        let json = serde_json::to_vec(&r).expect("serialises");
        assert_eq!(
            String::from_utf8_lossy(&json),
            r#"{"sensor":"lab","log":"3f9c2a71d04be815","from":41,"to":1040}"#
        );
        assert_eq!(parse_resend(&json), Ok(r));
    }

    #[test]
    fn a_reply_reads_back_what_it_serialises() {
        let r = ResendReply {
            sensor: "lab".into(),
            log: LogId::parse(LOG).expect("a log id"),
            from: 0,
            to: 99,
            resent: 50,
            gone: vec![[0, 9], [20, 29]],
            pending: vec![[90, 99]],
        };
        let json = serde_json::to_vec(&r).expect("serialises");
        assert_eq!(parse_resend_reply(&json), Ok(r));
    }

    #[test]
    fn bad_requests_are_refused_by_kind() {
        let cases = [
            ("[]", "type"),
            ("{", "json"),
            (r#"{"sensor":"lab","log":"x","from":1,"to":2}"#, "log"),
            (r#"{"sensor":"lab","from":1,"to":2}"#, "missing_field"),
            (
                r#"{"sensor":"lab","log":"3f9c2a71d04be815","from":1,"to":2,"x":1}"#,
                "unknown_field",
            ),
            (
                r#"{"sensor":"lab","log":"3f9c2a71d04be815","from":1,"from":1,"to":2}"#,
                "duplicate_field",
            ),
            (
                r#"{"sensor":"lab","log":"3f9c2a71d04be815","from":5,"to":4}"#,
                "range",
            ),
            (
                r#"{"sensor":"lab","log":"3f9c2a71d04be815","from":0,"to":1000}"#,
                "range",
            ),
            (
                r#"{"sensor":"lab","log":"3f9c2a71d04be815","from":-1,"to":3}"#,
                "range",
            ),
            (
                r#"{"sensor":"lab","log":"3f9c2a71d04be815","from":"1","to":3}"#,
                "type",
            ),
            (
                r#"{"sensor":"a/b","log":"3f9c2a71d04be815","from":1,"to":3}"#,
                "sensor",
            ),
        ];
        for (json, kind) in cases {
            let e = request(json).expect_err(json);
            assert_eq!(e.kind(), kind, "{json}: {e}");
        }
        let big = format!(r#"{{"sensor":"{}"}}"#, "a".repeat(MAX_RESEND_PAYLOAD));
        assert_eq!(request(&big).expect_err("too large").kind(), "too_large");
        // The widest request there is.
        let widest = request(r#"{"sensor":"lab","log":"3f9c2a71d04be815","from":7,"to":1006}"#)
            .expect("999 apart");
        assert_eq!(widest.to - widest.from + 1, RESEND_SPAN);
    }

    #[test]
    fn reply_ranges_must_be_ascending_apart_and_inside_the_request() {
        let reply = |gone: &str| {
            parse_resend_reply(
                format!(
                    r#"{{"sensor":"lab","log":"{LOG}","from":10,"to":20,"resent":0,"gone":{gone},"pending":[]}}"#
                )
                .as_bytes(),
            )
        };
        assert_eq!(
            reply("[[10,12],[14,20]]").expect("fine").gone,
            vec![[10, 12], [14, 20]]
        );
        for bad in [
            "[[9,12]]",
            "[[10,21]]",
            "[[12,10]]",
            "[[10,12],[13,14]]",
            "[[14,15],[10,12]]",
        ] {
            assert_eq!(reply(bad).expect_err(bad).kind(), "range", "{bad}");
        }
        for bad in ["[[10]]", "[10]", "[[10,\"12\"]]", "{}"] {
            assert_eq!(reply(bad).expect_err(bad).kind(), "type", "{bad}");
        }
    }

    #[test]
    fn runs_join_consecutive_seqs() {
        assert_eq!(runs([]), Vec::<[u64; 2]>::new());
        assert_eq!(runs([3]), vec![[3, 3]]);
        assert_eq!(runs([1, 2, 3, 5, 7, 8]), vec![[1, 3], [5, 5], [7, 8]]);
    }
}
