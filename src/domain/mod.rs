//! The pure domain core: readings, validation, the paper's weight priority,
//! routing and the wire contract (a reading's shape both ways, topics, node
//! names).
//!
//! Nothing in here does I/O or reads the clock; `now` is always an argument,
//! so every rule is tested with plain `#[test]`s beside the code.

mod payload;
mod priority;
mod reading;
mod validate;

pub use payload::{
    LogId, MAX_RAW_PAYLOAD, MAX_RESEND_PAYLOAD, MAX_TS_MS, NODE_MAX_LEN, NameError, PayloadError,
    RESEND_SPAN, RawMessage, RawReading, ReadingKey, Received, ResendReply, ResendRequest,
    SENSOR_MAX_LEN, Topics, WireReading, WireWeights, check_node, check_sensor, ha_discovery,
    ha_legacy_discovery_topic, parse_raw, parse_readings, parse_resend, parse_resend_reply,
    rfc3339_ms, runs,
};
pub use priority::{Baseline, Combine, PriorityParams, Score, Scorer, channel_weight};
pub use reading::{Channel, ErrorKind, PerChannel, Reading, Route, Sample, SensorError};
pub use validate::{
    Doubt, Plausibility, Rejection, SensorRange, SpikeVerdict, check_range, resolve_reread,
    resolve_spike,
};
