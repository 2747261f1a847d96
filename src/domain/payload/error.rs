//! Why a received message is refused: one enum for the topic, the raw
//! payload and the wire reading alike, so a gateway or collector counts
//! every refusal under one metric with one set of labels
//! ([`PayloadError::kind`]) and logs one sentence an operator can act on.

use super::names::NameError;

/// Why a received topic or payload is refused. Each message names the
/// field, quotes the value (cut short) and says what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// The payload is larger than its kind of message may be; it was not
    /// parsed at all.
    #[error("the payload is {size} bytes, more than the {max} bytes a raw reading may have")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit ([`super::MAX_RAW_PAYLOAD`]).
        max: usize,
    },
    /// Not JSON, or not UTF-8.
    #[error("the payload is not valid JSON: {detail}")]
    Json {
        /// `serde_json`'s message, with line and column.
        detail: String,
    },
    /// A number too large for a float (`1e999`): the only way JSON can
    /// write an infinity.
    #[error("the payload holds a number no float can hold ({detail}); values must be finite")]
    NumberTooLarge {
        /// `serde_json`'s message, with line and column.
        detail: String,
    },
    /// The payload is not a JSON object (or, where a batch is allowed, an
    /// array of them).
    #[error("{what} must be {expected}, not {found}")]
    NotAnObject {
        /// What was expected to be an object: `the payload`, `a raw
        /// reading`.
        what: &'static str,
        /// What is allowed there.
        expected: &'static str,
        /// What was there: `an array`, `the number 3`.
        found: String,
    },
    /// A field has the wrong JSON type.
    #[error("field {field} must be {expected}, not {found}")]
    Type {
        /// The field: `temperature_c`, `weight.humidity`.
        field: String,
        /// What it must be: `a number`, `an integer`.
        expected: &'static str,
        /// What it is: `the string "20"`.
        found: String,
    },
    /// A field the shape does not have: a typo, or a newer sender.
    #[error("unknown field {field}; the fields are {allowed}")]
    UnknownField {
        /// The field, quoted and cut short.
        field: String,
        /// Every field the shape has.
        allowed: &'static str,
    },
    /// A field written twice: which one counts is anyone's guess.
    #[error("field {field} is written twice")]
    DuplicateField {
        /// The field.
        field: String,
    },
    /// A required field is absent.
    #[error("field {field} is missing; {needs}")]
    MissingField {
        /// The field.
        field: String,
        /// What the shape needs, in words.
        needs: &'static str,
    },
    /// A number outside what its field can hold.
    #[error("field {field} = {value} is out of range: it must be {allowed}")]
    Range {
        /// The field.
        field: String,
        /// The value as written (as read, for numbers).
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A node name that the agent's config would refuse (also: an empty or
    /// multi-level node in a topic).
    #[error("node {node} {why}")]
    Node {
        /// The name, quoted and cut short.
        node: String,
        /// Why it is not one.
        why: NameError,
    },
    /// A sensor id that the agent's config would refuse.
    #[error("sensor {sensor} {why}")]
    Sensor {
        /// The id, quoted and cut short.
        sensor: String,
        /// Why it is not one.
        why: NameError,
    },
    /// A `log` that is not a log identity.
    #[error("log {value} is not a log identity: 16 lower-case hex digits are allowed")]
    Log {
        /// The value, quoted and cut short.
        value: String,
    },
    /// `ts` is not the RFC 3339 form of `ts_ms` that edgeprio writes.
    /// `ts` only repeats `ts_ms` for people and tools that read dates, so
    /// one that says something else is refused rather than guessed at.
    #[error("ts {ts} does not match ts_ms = {ts_ms}: it must be {expected:?}")]
    Ts {
        /// The `ts` received, quoted and cut short.
        ts: String,
        /// The `ts_ms` received, the reading's time.
        ts_ms: i64,
        /// The `ts` that goes with it.
        expected: String,
    },
    /// A scored reading on one node's raw topic that says it is another
    /// node's.
    #[error(
        "the reading says node {payload} but came on the raw topic of node {topic:?}; a node \
         publishes only its own readings"
    )]
    OtherNode {
        /// The node of the topic.
        topic: String,
        /// The node in the payload, quoted and cut short.
        payload: String,
    },
    /// A topic that is not `<prefix>/<node>/<suffix>`, or one with a
    /// wildcard.
    #[error("topic {topic} is not {expected}")]
    Topic {
        /// The topic, quoted and cut short.
        topic: String,
        /// The shape it should have: `"edgeprio/<node>/raw"`.
        expected: String,
    },
    /// One reading of a batch is refused, which refuses the batch: its
    /// message is acknowledged or not as a whole.
    #[error("reading {index} of the batch (counting from 0): {source}")]
    InBatch {
        /// Its position in the array.
        index: usize,
        /// What is wrong with it.
        source: Box<PayloadError>,
    },
}

impl PayloadError {
    /// Every [`kind`](Self::kind), for a metric to register its labels
    /// before the first refusal.
    pub const KINDS: [&'static str; 13] = [
        "too_large",
        "json",
        "range",
        "type",
        "unknown_field",
        "duplicate_field",
        "missing_field",
        "node",
        "sensor",
        "log",
        "ts",
        "other_node",
        "topic",
    ];

    /// A short stable name for what is wrong, for metric labels and
    /// scripts: one of [`KINDS`](Self::KINDS). A batch reports the kind of
    /// its first bad reading.
    pub fn kind(&self) -> &'static str {
        match self {
            PayloadError::TooLarge { .. } => "too_large",
            PayloadError::Json { .. } => "json",
            PayloadError::NumberTooLarge { .. } | PayloadError::Range { .. } => "range",
            PayloadError::NotAnObject { .. } | PayloadError::Type { .. } => "type",
            PayloadError::UnknownField { .. } => "unknown_field",
            PayloadError::DuplicateField { .. } => "duplicate_field",
            PayloadError::MissingField { .. } => "missing_field",
            PayloadError::Node { .. } => "node",
            PayloadError::Sensor { .. } => "sensor",
            PayloadError::Log { .. } => "log",
            PayloadError::Ts { .. } => "ts",
            PayloadError::OtherNode { .. } => "other_node",
            PayloadError::Topic { .. } => "topic",
            PayloadError::InBatch { source, .. } => source.kind(),
        }
    }
}
