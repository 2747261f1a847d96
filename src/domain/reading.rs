//! The values that flow through the pipeline.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One of the two quantities a DHT22 measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Air temperature in degrees Celsius.
    Temperature,
    /// Relative humidity in percent.
    Humidity,
}

impl Channel {
    /// Both channels, in the order they are reported.
    pub const ALL: [Channel; 2] = [Channel::Temperature, Channel::Humidity];

    /// Unit suffix used in messages.
    pub fn unit(self) -> &'static str {
        match self {
            Channel::Temperature => "°C",
            Channel::Humidity => "%RH",
        }
    }

    /// Lower-case name, as used in config keys and payloads.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Temperature => "temperature",
            Channel::Humidity => "humidity",
        }
    }
}

/// A value per channel: the algorithm's parameters and results come in pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerChannel<T> {
    /// The temperature channel's value.
    pub temperature: T,
    /// The humidity channel's value.
    pub humidity: T,
}

impl<T: Copy> PerChannel<T> {
    /// The value for `channel`.
    pub fn get(&self, channel: Channel) -> T {
        match channel {
            Channel::Temperature => self.temperature,
            Channel::Humidity => self.humidity,
        }
    }

    /// Applies `f` to both channels.
    pub fn map<U>(self, mut f: impl FnMut(Channel, T) -> U) -> PerChannel<U> {
        PerChannel {
            temperature: f(Channel::Temperature, self.temperature),
            humidity: f(Channel::Humidity, self.humidity),
        }
    }
}

/// What a sensor reported: one temperature and one humidity value.
pub type Sample = PerChannel<f64>;

impl Sample {
    /// A sample from a temperature (°C) and a relative humidity (%).
    pub fn new(temperature_c: f64, humidity_pct: f64) -> Self {
        Self {
            temperature: temperature_c,
            humidity: humidity_pct,
        }
    }
}

/// Which path a reading takes to the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// A significant change: published at once for real-time processing.
    Realtime,
    /// Business as usual: collected and published in batches.
    Batch,
}

impl Route {
    /// The name stored in the `route` column and used in topics.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Realtime => "realtime",
            Route::Batch => "batch",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Route> {
        match s {
            "realtime" => Some(Route::Realtime),
            "batch" => Some(Route::Batch),
            _ => None,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accepted, scored and routed reading: one row of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Node name: which Pi took it.
    pub node: String,
    /// Sensor id from the config.
    pub sensor: String,
    /// Per (node, sensor) sequence number, increasing by one; consumers
    /// deduplicate on (node, sensor, seq).
    pub seq: u64,
    /// Unix time in milliseconds, UTC.
    pub ts_ms: i64,
    /// The validated values.
    pub sample: Sample,
    /// The weight each channel earned.
    pub weights: PerChannel<u32>,
    /// The combined weight.
    pub priority: u32,
    /// Where the priority sends it.
    pub route: Route,
    /// Whether the kernel said the wall clock was synchronized when it was
    /// taken (`ts_ms` may be far off when not); `None` when unknown, and
    /// for readings logged before the agent asked.
    pub clock_synced: Option<bool>,
}

/// Why a read produced no reading; the `kind` column of `sensor_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The sensor did not answer, or a pulse never came.
    Timeout,
    /// The frame's checksum did not match, or the frame was all zeros
    /// (which every checksum accepts).
    Checksum,
    /// A value outside the part's range (its calibration offset added), a
    /// frame in range in neither negative encoding, or not a number.
    Range,
    /// A frame a re-read did not confirm: an implausible jump, or an event
    /// that would have taken the real-time route (`[priority] confirm`).
    Spike,
    /// The operating system refused the access (GPIO, sysfs, a trace file).
    Io,
}

impl ErrorKind {
    /// All kinds, in the order the schema lists them.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Timeout,
        ErrorKind::Checksum,
        ErrorKind::Range,
        ErrorKind::Spike,
        ErrorKind::Io,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Checksum => "checksum",
            ErrorKind::Range => "range",
            ErrorKind::Spike => "spike",
            ErrorKind::Io => "io",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed or rejected read: one row of `sensor_errors`.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorError {
    /// Unix time in milliseconds, UTC.
    pub ts_ms: i64,
    /// Sensor id from the config.
    pub sensor: String,
    /// The class of failure.
    pub kind: ErrorKind,
    /// A human-readable explanation, including the values involved.
    pub detail: String,
}
