//! The TOML configuration (DESIGN.md, "Configuration"): parsing, defaults and
//! validation. Every error names the file, the key and the bad value, and
//! says what is allowed, because the person reading it is usually on a Pi
//! over SSH with the file open in another window.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{
    Baseline, Channel, Combine, PerChannel, Plausibility, PriorityParams, SensorRange, Topics,
    check_node, check_sensor,
};
use crate::sensor::frame::{Model, Negative};

/// Where the config file lives unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/edgeprio/edgeprio.toml";
/// Where the log lives unless `db` says otherwise (systemd's `StateDirectory`).
pub const DEFAULT_DB: &str = "/var/lib/edgeprio/edgeprio.db";
/// The largest calibration offset per channel, either way.
pub const OFFSET_LIMIT: PerChannel<f64> = PerChannel {
    temperature: 10.0,
    humidity: 20.0,
};
/// The built-in demo configuration, used by `edgeprio demo` without `--config`.
pub const DEMO_TOML: &str = include_str!("../assets/demo.toml");

/// A day, the unit of the longest ranges below.
const DAY: Duration = Duration::from_hours(24);

/// The allowed range of a duration key, inclusive. Every duration is
/// checked against one when the file is read (README, "Configuration
/// reference"), so that nothing computed from it (`3 x interval`, a
/// deadline, a cut-off in ms) can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The shortest allowed value.
    pub min: Duration,
    /// The longest allowed value.
    pub max: Duration,
}

/// `interval`: 1 ms (simulated sensors; the parts have floors of their own)
/// to a day.
pub const INTERVAL_RANGE: DurationRange = DurationRange {
    min: Duration::from_millis(1),
    max: DAY,
};
/// `[priority] burst` when its `interval` is not given.
pub const BURST_INTERVAL: Duration = Duration::from_secs(3);
/// `[priority] burst` when its `hold` is not given.
pub const BURST_HOLD: Duration = Duration::from_mins(2);
/// `interval` when the config does not set it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// `[priority] stale_after` (unless `"0s"`): at least 2 x interval, at
/// most a year.
pub const STALE_AFTER_MAX: Duration = Duration::from_hours(24 * 365);
/// `[mqtt] batch_interval`.
pub const BATCH_INTERVAL_RANGE: DurationRange = DurationRange {
    min: Duration::from_millis(1),
    max: DAY,
};
/// `[mqtt] realtime_max_age`.
pub const REALTIME_MAX_AGE_RANGE: DurationRange = DurationRange {
    min: Duration::from_millis(1),
    max: Duration::from_hours(24 * 7),
};
/// `[store] retention`: at least an hour (old rows are deleted once an
/// hour), at most ten years.
pub const RETENTION_RANGE: DurationRange = DurationRange {
    min: Duration::from_hours(1),
    max: Duration::from_hours(24 * 3650),
};
/// The largest `[priority] threshold` and `step`: a change of 10,000 %.
pub const FACTOR_MAX: f64 = 100.0;

/// The longest string MQTT can carry (a 2-byte length, in UTF-8 bytes):
/// the limit of a topic name, a client id and a user name.
pub const MQTT_STRING_MAX: usize = 65_535;
/// The most topic levels edgeprio publishes under: Mosquitto 2.0 silently
/// drops a message whose topic has more than 201 levels (tested in
/// `tests/hostile_config.rs`).
pub const TOPIC_LEVELS_MAX: usize = 200;
/// The client id length MQTT 3.1.1 guarantees every broker accepts
/// (`[0-9a-zA-Z]`, 1 to 23 bytes); Mosquitto accepts up to
/// [`MQTT_STRING_MAX`].
pub const CLIENT_ID_PORTABLE: usize = 23;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, for messages and for resolving relative paths;
    /// `None` for the built-in demo config.
    pub source: Option<PathBuf>,
    /// Node name: the first topic level and the `node` column.
    pub node: String,
    /// Time between two read cycles.
    pub interval: Duration,
    /// The `SQLite` log.
    pub db: PathBuf,
    /// Weight-priority parameters.
    pub priority: PriorityParams,
    /// Largest change believed without a re-read.
    pub plausibility: Plausibility,
    /// `[priority] confirm`: a reading that would go real-time is re-read
    /// and only goes real-time if the re-read agrees, so one corrupted
    /// frame never becomes an event.
    pub confirm: bool,
    /// `[priority] stale_after`: a `prev` older than this counts as none
    /// (the gap rule); `None` (`"0s"`) turns the rule off.
    pub stale_after: Option<Duration>,
    /// `[priority] burst`: read a sensor faster while its readings keep
    /// going real-time; `None` (the default) keeps every sensor at
    /// `interval`.
    pub burst: Option<Burst>,
    /// The sensors, in config order.
    pub sensors: Vec<SensorConfig>,
    /// Where readings are published; `None` keeps them in the outbox.
    pub mqtt: Option<MqttConfig>,
    /// The embedded broker, when this node is its own gateway.
    pub broker: Option<BrokerConfig>,
    /// The Prometheus endpoint; `None` serves none.
    pub metrics: Option<MetricsConfig>,
    /// How long the log keeps what it has published, and the disk space
    /// it leaves free.
    pub store: StoreConfig,
    /// `[gateway]`: what `edgeprio gateway` consumes; defaults when absent.
    pub gateway: GatewayConfig,
}

/// A secret that never shows up in logs, `Debug` output or the config echo.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where the broker's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password.
    None,
    /// Written in the config file itself (discouraged: warned about when
    /// the file is readable by others).
    Inline(Secret),
    /// Read from this file when connecting.
    File(PathBuf),
}

/// Environment variable that supplies the broker password; it wins over the
/// config file.
pub const PASSWORD_ENV: &str = "EDGEPRIO_MQTT_PASSWORD";

/// `[mqtt]`: the broker to publish to.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// The URL as written, for messages (`mqtt://host:1883`).
    pub url: String,
    /// Whether the URL is `mqtts://` (TLS).
    pub tls: bool,
    /// Broker host name or address.
    pub host: String,
    /// Broker port (default 1883, 8883 for `mqtts://`).
    pub port: u16,
    /// MQTT client id (default `edgeprio-<node>`).
    pub client_id: String,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// CA certificate (PEM) to verify the broker with, instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for brokers that want one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// First topic level (default `edgeprio`).
    pub topic_prefix: String,
    /// Longest a batch reading waits before it is sent.
    pub batch_interval: Duration,
    /// Most readings in one batch message.
    pub batch_max: usize,
    /// A real-time reading older than this when it finally goes out is sent
    /// on the batch topic, marked late (default 2 x interval).
    pub realtime_max_age: Duration,
    /// Announce the sensors to Home Assistant (MQTT discovery).
    pub ha_discovery: bool,
    /// Most readings a second sent again on consumers' requests (the
    /// `resend` topic).
    pub resend_rate: u32,
}

/// `[mqtt] resend_rate` when the config does not say.
pub const DEFAULT_RESEND_RATE: u32 = 200;

/// `[broker]`: the embedded MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Address the broker listens on.
    pub listen: std::net::SocketAddr,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address `GET /metrics` is served on.
    pub listen: std::net::SocketAddr,
}

/// Where the metrics endpoint listens unless `[metrics] listen` says
/// otherwise: this machine only, since the endpoint has no authentication.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9184";

/// `[store]`: retention and the disk-space guard of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Published readings and sensor errors older than this are deleted,
    /// once an hour; unpublished readings are kept however old.
    pub retention: Duration,
    /// Free disk space (plus free pages inside the log) below which the
    /// agent logs an error every hour and deletes the oldest published
    /// readings early; 0 turns the guard off.
    pub min_free: u64,
    /// Time between two retention passes, on the monotonic clock.
    pub prune_every: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_hours(24 * 30),
            min_free: 64 << 20,
            prune_every: Duration::from_hours(1),
        }
    }
}

/// The range of `[store] prune_every`.
pub const PRUNE_EVERY_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_hours(24);

/// `[gateway]`: the raw readings `edgeprio gateway` scores.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// The topic filters it subscribes to; the node of a reading is the
    /// topic level before the last (`<prefix>/<node>/raw`). `None`: the
    /// default, `<topic_prefix>/+/raw`, known once `[mqtt]` is.
    pub subscribe: Option<Vec<String>>,
    /// The range a raw reading must be in: the nodes' sensor model
    /// (`"dht22"`, the default, or `"dht11"`).
    pub range: SensorRange,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            subscribe: None,
            range: SensorRange::DHT22,
        }
    }
}

impl GatewayConfig {
    /// The filters to subscribe to under `topic_prefix`.
    pub fn filters(&self, topic_prefix: &str) -> Vec<String> {
        self.subscribe
            .clone()
            .unwrap_or_else(|| vec![format!("{topic_prefix}/+/raw")])
    }
}

/// One `[[sensor]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// Unique id: the `sensor` column and a topic level.
    pub id: String,
    /// Which backend reads it.
    pub kind: SensorKind,
    /// Calibration added to every raw sample before validation and scoring
    /// (`offset = { temperature = -0.4, humidity = 2.0 }`); zero by default.
    pub offset: PerChannel<f64>,
}

/// The backend of a sensor, with its backend-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// A DHT22 on a GPIO pin, bit-banged from user space.
    Dht22 {
        /// BCM GPIO number.
        pin: u8,
        /// How its negative temperatures are encoded (clones differ).
        negative: Negative,
    },
    /// A DHT11 on a GPIO pin, bit-banged from user space.
    Dht11 {
        /// BCM GPIO number.
        pin: u8,
    },
    /// A DHT22 read through the kernel's IIO driver.
    Iio {
        /// The sysfs directory of the device, if given.
        device: Option<PathBuf>,
        /// The IIO device name to look for, if `device` is not given.
        name: Option<String>,
        /// How its negative temperatures are encoded: the driver decodes
        /// only sign-magnitude, so a clone's word is rebuilt and decoded
        /// here.
        negative: Negative,
    },
    /// A simulated sensor.
    Sim(SimConfig),
}

impl SensorKind {
    /// The `kind` value as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            SensorKind::Dht22 { .. } => "dht22",
            SensorKind::Dht11 { .. } => "dht11",
            SensorKind::Iio { .. } => "iio",
            SensorKind::Sim(_) => "sim",
        }
    }

    /// The part on the other end, as a person names it (Home Assistant's
    /// device model).
    pub fn model(&self) -> &'static str {
        match self {
            SensorKind::Dht22 { .. } => "DHT22",
            SensorKind::Dht11 { .. } => "DHT11",
            SensorKind::Iio { .. } => "DHT11/DHT22 (kernel IIO driver)",
            SensorKind::Sim(_) => "simulated DHT22",
        }
    }

    /// Whether this is real hardware, bound by a read spacing.
    pub fn is_hardware(&self) -> bool {
        !matches!(self, SensorKind::Sim(_))
    }

    /// The least time between two reads the part allows: 2 s for a DHT22
    /// (also behind the kernel driver, which may have either part), 1 s for
    /// a DHT11, none for a simulation.
    pub fn min_interval(&self) -> Duration {
        match self {
            SensorKind::Dht22 { .. } | SensorKind::Iio { .. } => Model::Dht22.min_spacing(),
            SensorKind::Dht11 { .. } => Model::Dht11.min_spacing(),
            SensorKind::Sim(_) => Duration::ZERO,
        }
    }

    /// What opening a bit-banged DHT22 or DHT11 needs; `None` for the
    /// other kinds.
    pub fn dht(&self) -> Option<DhtSettings> {
        match *self {
            SensorKind::Dht22 { pin, negative } => Some(DhtSettings {
                pin,
                model: Model::Dht22,
                negative,
            }),
            SensorKind::Dht11 { pin } => Some(DhtSettings {
                pin,
                model: Model::Dht11,
                negative: Negative::Auto,
            }),
            SensorKind::Iio { .. } | SensorKind::Sim(_) => None,
        }
    }
}

/// A bit-banged DHT22's or DHT11's settings, whichever kind it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtSettings {
    /// BCM GPIO number.
    pub pin: u8,
    /// The part: frame format, start pulse, spacing, range.
    pub model: Model,
    /// How negative temperatures are decoded (`auto` for a DHT11, whose
    /// sign bit leaves nothing to choose).
    pub negative: Negative,
}

/// Settings of a simulated sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// What the simulation plays.
    pub profile: SimProfile,
    /// Seed of the random walk and of injected failures.
    pub seed: u64,
    /// Share of reads that fail (random profile only), 0..=1.
    pub failure_rate: f64,
}

/// The simulated sensor's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub enum SimProfile {
    /// The paper's heater experiment, replayed from the built-in CSV.
    Heater,
    /// A seeded random walk with noise, events and read failures.
    Random,
    /// A user's recording, replayed from a CSV file.
    Trace(PathBuf),
}

/// `[priority] burst`: a sensor whose reading went real-time is read every
/// `interval` instead of the config's, until none of its readings has gone
/// real-time for `hold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// The spacing of a sensor's reads while it is in burst.
    pub interval: Duration,
    /// How long a sensor stays in burst after its last real-time reading.
    pub hold: Duration,
}

/// A configuration problem, phrased for the person who has to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `built-in demo config`.
    pub file: String,
    /// The dotted key path, e.g. `sensor[1].pin`, when one is to blame.
    pub key: Option<String>,
    /// 1-based line of the bad value, when known.
    pub line: Option<usize>,
    /// What is wrong, with the value and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A duration written like `"15s"`, `"500ms"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor {
            expecting: r#"a duration string such as "15s", "500ms" or "2m""#,
            parse: |v| {
                let d = humantime::parse_duration(v).map_err(|e| {
                    format!(r#"invalid duration "{v}" ({e}): write it like "15s", "500ms" or "2m""#)
                })?;
                // Quoted as written: "18446744073709551615s", not as
                // 584542046090 years and change. Each key's own range
                // (`in_range`) is checked after this.
                if d > RETENTION_RANGE.max {
                    return Err(format!(
                        r#"duration "{v}" is too long: no setting allows more than "{}""#,
                        written(RETENTION_RANGE.max)
                    ));
                }
                Ok(Dur(d))
            },
        })
    }
}

/// Deserializes a value written as a string, with `parse`; anything but a
/// string is an error that says what was `expecting`.
struct TextVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> serde::de::Visitor<'_> for TextVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Option<String>,
    interval: Option<Dur>,
    db: Option<PathBuf>,
    #[serde(default)]
    priority: RawPriority,
    #[serde(default, rename = "sensor")]
    sensors: Vec<RawSensor>,
    mqtt: Option<RawMqtt>,
    broker: Option<RawBroker>,
    metrics: Option<RawMetrics>,
    store: Option<RawStore>,
    gateway: Option<RawGateway>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    subscribe: Option<OneOrMany>,
    range: Option<String>,
}

/// A string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    topic_prefix: Option<String>,
    batch_interval: Option<Dur>,
    batch_max: Option<i64>,
    realtime_max_age: Option<Dur>,
    ha_discovery: Option<bool>,
    resend_rate: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    enabled: Option<bool>,
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    retention: Option<Dur>,
    min_free: Option<Size>,
    prune_every: Option<Dur>,
}

/// A size in bytes written like `"64MiB"`, `"1GB"` or `"0"`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor {
            expecting: r#"a size string such as "64MiB", "500MB" or "1GiB""#,
            parse: |v| {
                parse_size(v).map(Size).ok_or_else(|| {
                    format!(
                        r#"invalid size "{v}": write a number and a unit, like "64MiB", "500MB" or "1GiB" (B, kB, KiB, MB, MiB, GB, GiB, TB, TiB)"#
                    )
                })
            },
        })
    }
}

/// Parses `"64MiB"`, `"1.5 GB"` or `"0"`: a number, then one of B, kB, KiB,
/// MB, MiB, GB, GiB, TB, TiB (k, m, g and t in any case).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" => 1024.0,
        "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tb" => 1e12,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = (number * unit).round();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "finite, non-negative and below 2^64, checked just above"
    )]
    (bytes.is_finite() && bytes < 1.8e19).then_some(bytes as u64)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPriority {
    threshold: Option<f64>,
    step: Option<f64>,
    max_weight: Option<u32>,
    realtime_at: Option<u32>,
    combine: Option<Combine>,
    baseline: Option<Baseline>,
    deadband: Option<RawPerChannel>,
    floor: Option<RawPerChannel>,
    plausibility: Option<RawPerChannel>,
    confirm: Option<bool>,
    stale_after: Option<Dur>,
    burst: Option<RawBurst>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurst {
    interval: Option<Dur>,
    hold: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerChannel {
    temperature: Option<f64>,
    humidity: Option<f64>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Dht22,
    Dht11,
    Iio,
    Sim,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum RawProfile {
    Heater,
    Random,
    Trace,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    id: String,
    kind: RawKind,
    pin: Option<i64>,
    negative: Option<Negative>,
    device: Option<PathBuf>,
    name: Option<String>,
    profile: Option<RawProfile>,
    trace: Option<PathBuf>,
    seed: Option<u64>,
    failure_rate: Option<f64>,
    offset: Option<RawPerChannel>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            key: None,
            line: None,
            message: format!(
                "cannot read it ({e}); create it from assets/edgeprio.example.toml, \
                 or pass another file with --config FILE"
            ),
        })?;
        Self::parse(&text, Some(path))
    }

    /// The built-in demo configuration.
    pub fn demo() -> Config {
        Self::parse(DEMO_TOML, None).expect("the built-in demo config is valid (tested)")
    }

    /// Parses and validates `text`; `source` is the file it came from, used
    /// in messages and to resolve relative paths.
    pub fn parse(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        let file = source_name(source);
        let raw = parse_raw(text, &file)?;
        let base = source
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let v = Validator { file: &file };
        v.build(raw, &base, source)
    }

    /// Reads and validates the file at `path`, then checks the files it
    /// names ([`Config::check_files`]): what every command that runs the
    /// agent or its sensors uses.
    pub fn load_checked(path: &Path) -> Result<Config, ConfigError> {
        let config = Self::load(path)?;
        config.check_files()?;
        Ok(config)
    }

    /// Checks the files and directories the configuration names on this
    /// machine, so that `check-config` catches what `run` would die on:
    /// `password_file`, `ca_file`, `client_cert`, `client_key` and traces
    /// must be regular files this user can read (a FIFO would block the
    /// start), an iio `device` a directory, and `db`, if it exists, a
    /// regular file. `query` and `dashboard`, which only need `db`, skip
    /// this: a user may read the log without being able to read the
    /// password file.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let file = source_name(self.source.as_deref());
        let v = Validator { file: &file };
        v.db_path(&self.db)?;
        for (i, s) in self.sensors.iter().enumerate() {
            match &s.kind {
                SensorKind::Sim(SimConfig {
                    profile: SimProfile::Trace(trace),
                    ..
                }) => v.readable_file(&format!("sensor[{i}].trace"), trace)?,
                SensorKind::Iio {
                    device: Some(dir), ..
                } => v.directory(&format!("sensor[{i}].device"), dir)?,
                _ => {}
            }
        }
        if let Some(m) = &self.mqtt {
            if let PasswordSource::File(f) = &m.password {
                v.readable_file("mqtt.password_file", f)?;
            }
            if let Some(ca) = &m.ca_file {
                v.readable_file("mqtt.ca_file", ca)?;
            }
            if let Some((cert, key)) = &m.client_cert {
                v.readable_file("mqtt.client_cert", cert)?;
                v.readable_file("mqtt.client_key", key)?;
            }
            v.password(m)?;
        }
        Ok(())
    }

    /// Fails unless at least one `[[sensor]]` is configured: what the
    /// commands that read sensors (`run`, `demo`, `read-once`, `doctor`'s
    /// sensor step, `check-config`) ask of a config that parses without
    /// one.
    pub fn require_sensors(&self) -> Result<(), ConfigError> {
        if !self.sensors.is_empty() {
            return Ok(());
        }
        let file = source_name(self.source.as_deref());
        Err(Validator { file: &file }.err(
            "sensor",
            "no [[sensor]] is configured; add at least one, e.g.\n  \
             [[sensor]]\n  id = \"lab\"\n  kind = \"dht22\"\n  pin = 4",
        ))
    }

    /// The broker, which `gateway` and `collect` cannot do without (`[mqtt]`,
    /// or `[broker]` for an embedded one).
    pub fn require_broker(&self) -> Result<&MqttConfig, ConfigError> {
        if let Some(m) = &self.mqtt {
            return Ok(m);
        }
        let file = source_name(self.source.as_deref());
        Err(Validator { file: &file }.err(
            "mqtt",
            "no broker is configured; the gateway and the collectors consume and publish over \
             MQTT: add\n  [mqtt]\n  url = \"mqtt://broker:1883\"\n(or [broker] enabled = true \
             for an embedded one)",
        ))
    }

    /// Whether any sensor is real hardware (and so bound by the 2 s rule).
    pub fn has_hardware(&self) -> bool {
        self.sensors.iter().any(|s| s.kind.is_hardware())
    }
}

/// How messages name the file a config came from (`source`, `None` for
/// the built-in demo config).
fn source_name(source: Option<&Path>) -> String {
    source.map_or_else(
        || "built-in demo config".to_string(),
        |p| p.display().to_string(),
    )
}

fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let line = line_of(e.span());
        let source = line.and_then(|n| text.lines().nth(n - 1)).map(str::trim);
        let key = line.and_then(|n| key_on_line(text, n));
        let what = e.message().trim_end();
        ConfigError {
            file: file.to_string(),
            line,
            message: match (source, &key) {
                (Some(src), _) if is_known_table(src) => {
                    format!("not valid TOML: {what} in `{src}`")
                }
                (Some(src), Some(k)) if !holds_secret(k) && !src.contains('@') => {
                    format!("not valid TOML: {what} in `{src}`")
                }
                (Some(_), Some(k)) => format!(
                    "not valid TOML: {what} in `{} = ...` (the value is not shown: it may be \
                     a secret)",
                    k.rsplit('.').next().unwrap_or(k)
                ),
                // A line that is not `known_key = ...` may be anything,
                // even a password file or a TLS key given as --config.
                (Some(_), None) => format!(
                    "not valid TOML: {what} (the line is not shown: it is not a setting of \
                     this file, and may be a secret; is this the config file?)"
                ),
                (None, _) => format!("not valid TOML: {what}"),
            },
            key,
        }
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let message = if holds_secret(&key) && !inner.message().starts_with("unknown field") {
            // serde quotes the value (`invalid type: integer `1234``).
            let expected = inner
                .message()
                .rsplit_once(", expected ")
                .map_or(String::new(), |(_, exp)| format!("; expected {exp}"));
            format!("the value is not valid here (not shown: it may be a secret){expected}")
        } else {
            inner.message().to_string()
        };
        ConfigError {
            file: file.to_string(),
            key: Some(key),
            line: line_of(inner.span()),
            message,
        }
    })
}

/// Every key name a config file may hold (the fields of the `Raw*`
/// structs; a test keeps the two in step): a syntax error quotes its line
/// only when the line sets one of these.
const KNOWN_KEYS: &[&str] = &[
    "node",
    "interval",
    "db",
    "priority",
    "sensor",
    "mqtt",
    "broker",
    "metrics",
    "store",
    "gateway",
    "subscribe",
    "range",
    "url",
    "client_id",
    "username",
    "password",
    "password_file",
    "ca_file",
    "client_cert",
    "client_key",
    "topic_prefix",
    "batch_interval",
    "batch_max",
    "realtime_max_age",
    "ha_discovery",
    "resend_rate",
    "enabled",
    "listen",
    "retention",
    "prune_every",
    "min_free",
    "threshold",
    "step",
    "max_weight",
    "realtime_at",
    "combine",
    "baseline",
    "deadband",
    "floor",
    "plausibility",
    "confirm",
    "stale_after",
    "burst",
    "hold",
    "temperature",
    "humidity",
    "id",
    "kind",
    "pin",
    "negative",
    "device",
    "name",
    "profile",
    "trace",
    "seed",
    "failure_rate",
    "offset",
];

/// Whether `line` opens one of this file's tables (`[mqtt]`, `[[sensor]]`,
/// or a broken `[mqtt`).
fn is_known_table(line: &str) -> bool {
    line.starts_with('[')
        && KNOWN_KEYS.contains(&line.trim_matches(|c| c == '[' || c == ']').trim())
}

/// Why `f` cannot be a gateway's subscription: it must be a valid MQTT
/// topic filter (`+` and `#` only as whole levels, `#` last) of at least
/// two levels whose last level is a plain name and the one before it the
/// node (a name or `+`).
fn gateway_filter(f: &str) -> Result<(), &'static str> {
    if f.is_empty() || f.len() > 65_535 {
        return Err("is not a topic filter (empty or longer than 65,535 bytes)");
    }
    if f.chars().any(char::is_control) {
        return Err("holds a control character");
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        let wild = l.contains(['+', '#']);
        if wild && *l != "+" && *l != "#" {
            return Err("uses '+' or '#' inside a level: a wildcard must be a whole level");
        }
        if *l == "#" && i + 1 != levels.len() {
            return Err("has '#' before its last level");
        }
    }
    let [.., node, last] = levels.as_slice() else {
        return Err("has one level: the node is the level before the last, so give two or more");
    };
    if last.is_empty() || *last == "+" || *last == "#" {
        return Err(
            "ends in a wildcard or an empty level: its last level must be a name such as \"raw\"",
        );
    }
    if node.is_empty() || *node == "#" {
        return Err("has no node level before its last (a name or '+')");
    }
    Ok(())
}

/// Whether the key (dotted path) holds, or may hold, a secret: its value is
/// never quoted in a message.
fn holds_secret(key: &str) -> bool {
    let name = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    ["pass", "secret", "token", "key", "cred"]
        .iter()
        .any(|s| name.contains(s))
}

/// The dotted key written on 1-based line `n`, e.g. `mqtt.url` for `url = ...`
/// under `[mqtt]`: a syntax error still names the key it broke. Only keys
/// this file knows count: anything else on the line may be a secret.
fn key_on_line(text: &str, n: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let key = lines.get(n - 1)?.split_once('=')?.0.trim();
    if !KNOWN_KEYS.contains(&key) {
        return None;
    }
    let table = lines[..n - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: Some(key.into()),
            line: None,
            message: message.into(),
        }
    }

    /// `path` of `key`, checked with `ok` on what it is: a NUL byte, a path
    /// that does not exist (unless `may_be_missing`) or fails `ok` is an
    /// error naming the key and the path.
    fn path_is(
        &self,
        key: &str,
        path: &Path,
        may_be_missing: bool,
        ok: impl FnOnce(&std::fs::Metadata) -> Result<(), String>,
    ) -> Result<(), ConfigError> {
        use std::os::unix::ffi::OsStrExt as _;
        let name = key.rsplit('.').next().unwrap_or(key);
        let bad = |why: String| {
            self.err(
                key,
                format!("{name} = {:?} {why}", path.display().to_string()),
            )
        };
        if path.as_os_str().as_bytes().contains(&0) {
            return Err(bad("contains a NUL byte, which no file name can".into()));
        }
        match std::fs::metadata(path) {
            Ok(meta) => ok(&meta).map_err(bad),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_be_missing => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(bad(
                "does not exist; check the path (relative paths start at the \
                    config file's directory)"
                    .into(),
            )),
            Err(e) => Err(bad(format!("cannot be examined ({e})"))),
        }
    }

    /// A regular file this user can read. Opened without blocking, so that
    /// even a FIFO that replaced the file after the check cannot hang us.
    fn readable_file(&self, key: &str, path: &Path) -> Result<(), ConfigError> {
        self.path_is(key, path, false, |meta| {
            if !meta.is_file() {
                return Err(format!(
                    "is not a regular file ({}); give the path of the file itself",
                    file_kind(meta.file_type())
                ));
            }
            open_nonblocking(path)
                .map(drop)
                .map_err(|e| format!("cannot be read by this user ({e})"))
        })
    }

    /// The password as the agent will send it (from the environment, the
    /// file or the config): it needs a user name, and MQTT's string limit.
    /// Never quoted.
    fn password(&self, m: &MqttConfig) -> Result<(), ConfigError> {
        let (key, from) = if std::env::var_os(PASSWORD_ENV).is_some() {
            (
                PASSWORD_ENV,
                format!("the environment variable {PASSWORD_ENV}"),
            )
        } else if let PasswordSource::File(f) = &m.password {
            (
                "mqtt.password_file",
                format!("password_file {}", f.display()),
            )
        } else {
            ("mqtt.password", "password".to_string())
        };
        let secret = match m.password() {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.err(key, e)),
        };
        if m.username.is_none() {
            return Err(self.err(
                "mqtt.username",
                format!(
                    "{from} gives a password but `username` is not set: MQTT sends a password \
                     only with a user name; add username = \"...\" to [mqtt]"
                ),
            ));
        }
        if secret.expose().is_empty() {
            return Err(self.err(
                key,
                format!("{from} gives an empty password; put the password in it, or remove it"),
            ));
        }
        if secret.expose().len() > MQTT_STRING_MAX {
            return Err(self.err(
                key,
                format!(
                    "the password of {from} (not shown) is longer than the {MQTT_STRING_MAX} \
                     bytes MQTT can send"
                ),
            ));
        }
        Ok(())
    }

    /// A directory (an iio device's sysfs directory).
    fn directory(&self, key: &str, path: &Path) -> Result<(), ConfigError> {
        self.path_is(key, path, false, |meta| {
            if meta.is_dir() {
                Ok(())
            } else {
                Err(format!(
                    "is not a directory ({}); give the device's sysfs directory, e.g. \
                     /sys/bus/iio/devices/iio:device0",
                    file_kind(meta.file_type())
                ))
            }
        })
    }

    /// `db`: the log may not exist yet (the agent creates it), but what is
    /// there must be a regular file.
    fn db_path(&self, path: &Path) -> Result<(), ConfigError> {
        self.path_is("db", path, true, |meta| {
            if meta.is_dir() {
                Err("is a directory; give the path of the SQLite file, e.g. \
                     /var/lib/edgeprio/edgeprio.db (or pass --db FILE)"
                    .into())
            } else if !meta.is_file() {
                Err(format!(
                    "is not a regular file ({}); the log is an SQLite file: give its path \
                     (or pass --db FILE)",
                    file_kind(meta.file_type())
                ))
            } else {
                Ok(())
            }
        })
    }

    /// `d` if it is within `range`, else an error naming `key`, the value,
    /// the range and the default.
    fn in_range(
        &self,
        key: &str,
        d: Duration,
        range: DurationRange,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        if (range.min..=range.max).contains(&d) {
            return Ok(d);
        }
        let name = key.rsplit('.').next().unwrap_or(key);
        Err(self.err(
            key,
            format!(
                "{name} = {:?} is {}: allowed is {:?} to {:?} (default {default})",
                written(d),
                if d < range.min {
                    "too short"
                } else {
                    "too long"
                },
                written(range.min),
                written(range.max),
            ),
        ))
    }

    /// `[gateway]`: each filter a valid MQTT topic filter whose last level
    /// is not a wildcard (the node is the level before it).
    fn gateway(&self, raw: Option<RawGateway>) -> Result<GatewayConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(GatewayConfig::default());
        };
        let range = match raw.range.as_deref() {
            None | Some("dht22") => SensorRange::DHT22,
            Some("dht11") => SensorRange::DHT11,
            Some(other) => {
                return Err(self.err(
                    "gateway.range",
                    format!(
                        "range = {} is not a sensor model the gateway knows; use \"dht22\" \
                         (-40..80 °C, 0..100 %RH) or \"dht11\" (0..50 °C, 20..90 %RH)",
                        quoted_short(other)
                    ),
                ));
            }
        };
        let subscribe = match raw.subscribe {
            None => None,
            Some(OneOrMany::One(f)) => Some(vec![f]),
            Some(OneOrMany::Many(fs)) => Some(fs),
        };
        if let Some(filters) = &subscribe {
            if filters.is_empty() {
                return Err(self.err(
                    "gateway.subscribe",
                    "subscribe = [] subscribes to nothing; leave it out for \
                     \"<topic_prefix>/+/raw\", or give one or more topic filters",
                ));
            }
            for f in filters {
                if let Err(why) = gateway_filter(f) {
                    return Err(self.err(
                        "gateway.subscribe",
                        format!(
                            "subscribe = {} {why}; e.g. \"edgeprio/+/raw\" (the node is the \
                             level before the last)",
                            quoted_short(f)
                        ),
                    ));
                }
            }
        }
        Ok(GatewayConfig { subscribe, range })
    }

    fn build(
        &self,
        raw: RawConfig,
        base: &Path,
        source: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let node = match raw.node {
            Some(node) => {
                check_node(&node)
                    .map_err(|why| self.err("node", format!("node = {node:?} {why}")))?;
                node
            }
            None => default_node(),
        };
        let priority = self.priority(&raw.priority)?;
        let plausibility = Plausibility(self.per_channel(
            "priority.plausibility",
            raw.priority.plausibility.as_ref(),
            Plausibility::default().0,
            |v| v > 0.0,
            "must be a number greater than 0",
        )?);
        let sensors = self.sensors(raw.sensors, base)?;
        let interval = self.interval(raw.interval.map(|d| d.0), &sensors)?;
        let stale_after = self.stale_after(raw.priority.stale_after.map(|d| d.0), interval)?;
        let burst = self.burst(raw.priority.burst.as_ref(), interval, &sensors)?;
        let db = match raw.db {
            Some(db) if db.as_os_str().is_empty() => {
                return Err(self.err("db", "db = \"\": give the path of the SQLite file"));
            }
            Some(db) => base.join(db),
            None => PathBuf::from(DEFAULT_DB),
        };
        let broker = match raw.broker {
            Some(b) if b.enabled.unwrap_or(true) => Some(self.broker(&b)?),
            _ => None,
        };
        let mqtt = match raw.mqtt {
            Some(m) => Some(self.mqtt(m, &node, &sensors, interval, base)?),
            // A node that is its own gateway publishes to its own broker.
            None => broker
                .as_ref()
                .map(|b| MqttConfig::local(b.listen, &node, interval)),
        };
        let metrics = self.metrics(raw.metrics.as_ref(), broker.as_ref())?;
        Ok(Config {
            source: source.map(Path::to_path_buf),
            node,
            interval,
            db,
            priority,
            plausibility,
            confirm: raw.priority.confirm.unwrap_or(true),
            stale_after,
            burst,
            sensors,
            mqtt,
            broker,
            metrics,
            store: self.store(raw.store.as_ref())?,
            gateway: self.gateway(raw.gateway)?,
        })
    }

    /// The `[[sensor]]` tables: unique ids, one DHT22 per pin. None at all
    /// is allowed here (a gateway or collector config needs none); the
    /// commands that read sensors ask for one ([`Config::require_sensors`]).
    fn sensors(&self, raw: Vec<RawSensor>, base: &Path) -> Result<Vec<SensorConfig>, ConfigError> {
        let mut sensors = Vec::with_capacity(raw.len());
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut pins: HashMap<u8, usize> = HashMap::new();
        for (i, s) in raw.into_iter().enumerate() {
            let sensor = self.sensor(i, s, base)?;
            if let Some(first) = ids.insert(sensor.id.clone(), i) {
                return Err(self.err(
                    format!("sensor[{i}].id"),
                    format!(
                        "id = {:?} is already used by sensor[{first}]; sensor ids must be unique",
                        sensor.id
                    ),
                ));
            }
            if let Some(pin) = sensor.kind.dht().map(|d| d.pin)
                && let Some(first) = pins.insert(pin, i)
            {
                return Err(self.err(
                    format!("sensor[{i}].pin"),
                    format!(
                        "pin = {pin} is already used by sensor[{first}]; \
                         each DHT22 or DHT11 needs its own GPIO pin"
                    ),
                ));
            }
            sensors.push(sensor);
        }
        Ok(sensors)
    }

    /// `interval`: 15 s by default, and never shorter than the slowest
    /// configured part allows (`SensorKind::min_interval`).
    fn interval(
        &self,
        raw: Option<Duration>,
        sensors: &[SensorConfig],
    ) -> Result<Duration, ConfigError> {
        let interval = self.in_range(
            "interval",
            raw.unwrap_or(DEFAULT_INTERVAL),
            INTERVAL_RANGE,
            "\"15s\"",
        )?;
        if let Some(slow) = sensors
            .iter()
            .filter(|s| interval < s.kind.min_interval())
            .max_by_key(|s| s.kind.min_interval())
        {
            let part = match slow.kind {
                SensorKind::Dht11 { .. } => "a DHT11",
                SensorKind::Iio { .. } => "a DHT22 or DHT11 on the kernel driver",
                _ => "a DHT22",
            };
            let least = humantime::format_duration(slow.kind.min_interval());
            return Err(self.err(
                "interval",
                format!(
                    "interval = {:?} is shorter than {least}, but sensor {:?} is {part} \
                     (kind = \"{}\"), which needs at least {least} between reads",
                    humantime::format_duration(interval).to_string(),
                    slow.id,
                    slow.kind.name()
                ),
            ));
        }
        Ok(interval)
    }

    /// `[priority] burst = { interval, hold }` (3 s and 2 min by default):
    /// the burst interval at least the slowest sensor's spacing, shorter
    /// than `interval` and dividing it (a sensor out of burst is read on the
    /// same grid), `hold` from the burst interval to a day.
    fn burst(
        &self,
        raw: Option<&RawBurst>,
        interval: Duration,
        sensors: &[SensorConfig],
    ) -> Result<Option<Burst>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let every = raw.interval.map_or(BURST_INTERVAL, |d| d.0);
        let hold = raw.hold.map_or(BURST_HOLD, |d| d.0);
        let least = sensors
            .iter()
            .map(|s| s.kind.min_interval())
            .max()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(1));
        let bad = |why: String| {
            Err(self.err(
                "priority.burst.interval",
                format!("interval = {:?} {why}", written(every)),
            ))
        };
        if every < least {
            return bad(format!(
                "is shorter than {:?}, the least spacing of the slowest configured sensor",
                written(least)
            ));
        }
        if every >= interval {
            return bad(format!(
                "is not shorter than the normal interval = {:?}: a burst reads faster",
                written(interval)
            ));
        }
        if !interval.as_nanos().is_multiple_of(every.as_nanos()) {
            return bad(format!(
                "does not divide interval = {:?}: give one that does (e.g. {:?} for 15s), so \
                 that sensors out of burst stay on their cadence",
                written(interval),
                "3s"
            ));
        }
        if hold < every || hold > DAY {
            return Err(self.err(
                "priority.burst.hold",
                format!(
                    "hold = {:?} is out of range: from the burst interval ({:?}) to \"1d\"",
                    written(hold),
                    written(every)
                ),
            ));
        }
        Ok(Some(Burst {
            interval: every,
            hold,
        }))
    }

    /// `[priority] stale_after`: 10 x `interval` by default, `"0s"` for
    /// off, never shorter than 2 x `interval`: consecutive readings are
    /// routinely a little more than `interval` apart (a cycle's retries, the
    /// sensor's rest before a re-read), and a rule that fires between them
    /// would turn every event into a "first reading".
    fn stale_after(
        &self,
        raw: Option<Duration>,
        interval: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        let floor = interval.saturating_mul(2);
        match raw {
            None => Ok(Some(interval.saturating_mul(10))),
            Some(d) if d.is_zero() => Ok(None),
            Some(d) if d > STALE_AFTER_MAX => Err(self.err(
                "priority.stale_after",
                format!(
                    "stale_after = {:?} is too long: allowed is {:?} (2 x interval) to {:?}, \
                     or \"0s\" to turn the rule off",
                    written(d),
                    written(floor),
                    written(STALE_AFTER_MAX)
                ),
            )),
            Some(d) if d >= floor => Ok(Some(d)),
            Some(d) => Err(self.err(
                "priority.stale_after",
                format!(
                    "stale_after = {:?} is shorter than twice interval = {:?}: readings are often a \
                     little more than one interval apart, and each would count as a sensor's first; \
                     use at least {:?} (default 10 x interval), or \"0s\" to turn the rule off",
                    humantime::format_duration(d).to_string(),
                    humantime::format_duration(interval).to_string(),
                    humantime::format_duration(floor).to_string()
                ),
            )),
        }
    }

    /// `[[sensor]] offset`: finite, at most 10 °C and 20 %RH either way.
    /// More is not a calibration but a broken sensor or a unit mix-up.
    fn offset(
        &self,
        i: usize,
        raw: Option<&RawPerChannel>,
    ) -> Result<PerChannel<f64>, ConfigError> {
        let pick = |c: Channel, v: Option<f64>| match v {
            None => Ok(0.0),
            Some(v) if v.is_finite() && v.abs() <= OFFSET_LIMIT.get(c) => Ok(v),
            Some(v) => Err(self.err(
                format!("sensor[{i}].offset.{}", c.name()),
                format!(
                    "{} = {v:?}: a calibration offset must be a number from -{limit} to {limit} {}",
                    c.name(),
                    c.unit(),
                    limit = OFFSET_LIMIT.get(c)
                ),
            )),
        };
        Ok(PerChannel {
            temperature: pick(Channel::Temperature, raw.and_then(|r| r.temperature))?,
            humidity: pick(Channel::Humidity, raw.and_then(|r| r.humidity))?,
        })
    }

    fn store(&self, raw: Option<&RawStore>) -> Result<StoreConfig, ConfigError> {
        let d = StoreConfig::default();
        let retention = match raw.and_then(|r| r.retention) {
            None => d.retention,
            Some(Dur(r)) if r < RETENTION_RANGE.min => {
                return Err(self.err(
                    "store.retention",
                    format!(
                        "retention = {:?} is too short: it must be at least \"1h\" (old rows \
                         are deleted once an hour); write it like \"30d\" (the default) or \"12h\"",
                        written(r)
                    ),
                ));
            }
            Some(Dur(r)) => self.in_range("store.retention", r, RETENTION_RANGE, "\"30d\"")?,
        };
        let prune_every = match raw.and_then(|r| r.prune_every) {
            None => d.prune_every,
            Some(Dur(p)) if PRUNE_EVERY_RANGE.contains(&p) => p,
            Some(Dur(p)) => {
                return Err(self.err(
                    "store.prune_every",
                    format!(
                        "prune_every = {:?} is out of range: it must be from \"1s\" to \"24h\" \
                         (the default is \"1h\")",
                        humantime::format_duration(p).to_string()
                    ),
                ));
            }
        };
        Ok(StoreConfig {
            retention,
            min_free: raw.and_then(|r| r.min_free).map_or(d.min_free, |s| s.0),
            prune_every,
        })
    }

    fn broker(&self, raw: &RawBroker) -> Result<BrokerConfig, ConfigError> {
        let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:1883");
        let listen = listen.parse().map_err(|_| {
            self.err(
                "broker.listen",
                format!(
                    "listen = {listen:?} is not an address:port; write e.g. \"127.0.0.1:1883\" \
                     (this machine only) or \"0.0.0.0:1883\" (the whole network)"
                ),
            )
        })?;
        Ok(BrokerConfig { listen })
    }

    /// `[metrics]`, when the section is there.
    fn metrics(
        &self,
        raw: Option<&RawMetrics>,
        broker: Option<&BrokerConfig>,
    ) -> Result<Option<MetricsConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let written = raw.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
        let bad = |why: &str| {
            self.err(
                "metrics.listen",
                format!(
                    "listen = {written:?} {why}; write e.g. \"127.0.0.1:9184\" (this machine \
                     only) or \"0.0.0.0:9184\" (the whole network)"
                ),
            )
        };
        let listen: std::net::SocketAddr =
            written.parse().map_err(|_| bad("is not an address:port"))?;
        if listen.port() == 0 {
            return Err(bad("has port 0, a random port no scraper could find"));
        }
        if let Some(b) = broker
            && b.listen.port() == listen.port()
            && (b.listen.ip() == listen.ip()
                || b.listen.ip().is_unspecified()
                || listen.ip().is_unspecified())
        {
            return Err(bad(&format!(
                "is taken by the embedded broker (broker.listen = \"{}\")",
                b.listen
            )));
        }
        Ok(Some(MetricsConfig { listen }))
    }

    /// Splits `mqtt://host:port` / `mqtts://[v6]:port` into its parts.
    /// Credentials in the URL are refused (they would travel into logs,
    /// the status table and the dashboard), and no message quotes them.
    fn broker_url(&self, url: &str) -> Result<(bool, String, u16), ConfigError> {
        let shown = redact_url(url);
        let bad = |why: &str| {
            self.err(
                "mqtt.url",
                format!(
                    "url = {shown:?} {why}; write it like \"mqtt://192.168.1.10:1883\", \
                     \"mqtts://broker.lan\" or \"mqtt://[fd00::5]:1883\""
                ),
            )
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad("must start with mqtt:// or mqtts:// (TLS)"));
        };
        if rest.contains('@') {
            return Err(self.err(
                "mqtt.url",
                format!(
                    "url = {shown:?} holds credentials, which would show up in logs and in the \
                     status: remove them from the URL and set `username` and `password_file` \
                     in [mqtt] instead"
                ),
            ));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // `[v6::addr]:port`, `host:port`, or a bare host.
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, tail) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '[' (an IPv6 address is written [fd00::5])"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad(&format!(
                    "has {host:?} in brackets, which is not an IPv6 address"
                )));
            }
            let port = match tail {
                "" => None,
                _ => Some(
                    tail.strip_prefix(':')
                        .ok_or_else(|| bad("has something other than :PORT after the ']'"))?,
                ),
            };
            (host, port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let hostname_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if host.is_empty() {
                return Err(bad("has no host"));
            }
            if !host.chars().all(hostname_char) {
                return Err(bad(&format!(
                    "has host {host:?}, which is not a host name or an address (no spaces, \
                     paths or '?'; an IPv6 address goes in brackets)"
                )));
            }
            (host, port)
        };
        let port = match port {
            None if tls => 8883,
            None => 1883,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(&format!("has port {p:?}, not a number from 1 to 65535")))?,
        };
        Ok((tls, host.to_string(), port))
    }

    /// `[mqtt] topic_prefix`: topic levels a broker accepts for every topic
    /// this node publishes (DESIGN.md, "MQTT contract"), checked against
    /// the longest of them.
    fn topic_prefix(
        &self,
        prefix: String,
        node: &str,
        sensors: &[SensorConfig],
    ) -> Result<String, ConfigError> {
        let bad = |why: String| {
            self.err(
                "mqtt.topic_prefix",
                format!(
                    "topic_prefix = {} {why}; use one or more non-empty topic levels without \
                     '+' or '#', e.g. \"edgeprio\" or \"site/edgeprio\"",
                    quoted_short(&prefix)
                ),
            )
        };
        if prefix.split('/').any(str::is_empty) {
            return Err(bad("has an empty topic level".into()));
        }
        if prefix.contains(['+', '#']) {
            return Err(bad(
                "holds a wildcard ('+' or '#'), which no topic name may".into(),
            ));
        }
        if prefix.starts_with('$') {
            return Err(bad(
                "starts with '$': brokers keep such topics ($SYS/...) for themselves and \
                 refuse or drop what a client publishes there"
                    .into(),
            ));
        }
        if prefix.chars().any(char::is_control) {
            return Err(bad(
                "holds a control character: MQTT forbids U+0000 and brokers such as \
                 Mosquitto refuse the others"
                    .into(),
            ));
        }
        let topics = Topics::new(&prefix, node);
        let longest = [
            topics.realtime(),
            topics.batch(),
            topics.status(),
            topics.raw(),
        ]
        .into_iter()
        .chain(sensors.iter().map(|s| topics.state(&s.id)))
        .max_by_key(String::len)
        .unwrap_or_default();
        if longest.len() > MQTT_STRING_MAX {
            return Err(bad(format!(
                "makes the longest topic this node publishes (<prefix>{}) {} bytes long, more \
                 than the {MQTT_STRING_MAX} bytes MQTT allows; shorten it by {} bytes",
                &longest[prefix.len()..],
                longest.len(),
                longest.len() - MQTT_STRING_MAX
            )));
        }
        let levels = prefix.split('/').count() + 3;
        if levels > TOPIC_LEVELS_MAX {
            return Err(bad(format!(
                "has {} levels, which makes topics <prefix>/<node>/<sensor>/state of {levels} \
                 levels; brokers drop deeper topics (Mosquitto: more than 201), so use at most \
                 {} levels",
                levels - 3,
                TOPIC_LEVELS_MAX - 3
            )));
        }
        Ok(prefix)
    }

    /// `[mqtt] client_id`: what a broker takes.
    fn client_id(&self, id: String) -> Result<String, ConfigError> {
        if id.is_empty() || id.len() > MQTT_STRING_MAX || id.chars().any(char::is_control) {
            return Err(self.err(
                "mqtt.client_id",
                format!(
                    "client_id = {}: use 1 to {MQTT_STRING_MAX} bytes of text without control \
                     characters (the MQTT limit, which Mosquitto accepts); up to \
                     {CLIENT_ID_PORTABLE} letters and digits work with every broker",
                    quoted_short(&id),
                ),
            ));
        }
        Ok(id)
    }

    /// `[mqtt] username`, `password` and `password_file`: what MQTT can
    /// send, and a password only with a user name.
    fn credentials(
        &self,
        username: Option<&str>,
        password: Option<String>,
        password_file: Option<PathBuf>,
        base: &Path,
    ) -> Result<PasswordSource, ConfigError> {
        if let Some(user) = username
            && (user.is_empty() || user.len() > MQTT_STRING_MAX)
        {
            return Err(self.err(
                "mqtt.username",
                format!(
                    "username = {}: use 1 to {MQTT_STRING_MAX} bytes, or leave it out",
                    quoted_short(user),
                ),
            ));
        }
        if password.as_ref().is_some_and(|p| p.len() > MQTT_STRING_MAX) {
            return Err(self.err(
                "mqtt.password",
                format!(
                    "the password (not shown) is longer than the {MQTT_STRING_MAX} bytes MQTT \
                     can send"
                ),
            ));
        }
        let source = match (password, password_file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "mqtt.password_file",
                    "give either `password_file` or `password`, not both (prefer password_file)",
                ));
            }
            (Some(p), None) => PasswordSource::Inline(Secret::new(p)),
            (None, Some(f)) => PasswordSource::File(base.join(f)),
            (None, None) => PasswordSource::None,
        };
        if source != PasswordSource::None && username.is_none() {
            let key = if matches!(source, PasswordSource::File(_)) {
                "password_file"
            } else {
                "password"
            };
            return Err(self.err(
                "mqtt.username",
                format!(
                    "`{key}` is set but `username` is not: MQTT sends a password only with a \
                     user name; add username = \"...\" to [mqtt]"
                ),
            ));
        }
        Ok(source)
    }

    fn mqtt(
        &self,
        m: RawMqtt,
        node: &str,
        sensors: &[SensorConfig],
        interval: Duration,
        base: &Path,
    ) -> Result<MqttConfig, ConfigError> {
        let url = m.url.ok_or_else(|| {
            self.err(
                "mqtt.url",
                "[mqtt] needs `url`, e.g. url = \"mqtt://192.168.1.10:1883\" \
                 (or mqtts:// for TLS)",
            )
        })?;
        let (tls, host, port) = self.broker_url(&url)?;
        let password =
            self.credentials(m.username.as_deref(), m.password, m.password_file, base)?;
        if m.ca_file.is_some() && !tls {
            return Err(self.err(
                "mqtt.ca_file",
                format!("ca_file is for TLS, but url = {url:?} is plain mqtt://; use mqtts://"),
            ));
        }
        let client_cert = match (m.client_cert, m.client_key) {
            (Some(c), Some(k)) if tls => Some((base.join(c), base.join(k))),
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "mqtt.client_cert",
                    format!("client certificates are for TLS, but url = {url:?} is plain mqtt://"),
                ));
            }
            (Some(_), None) => {
                return Err(self.err("mqtt.client_key", "client_cert needs client_key too"));
            }
            (None, Some(_)) => {
                return Err(self.err("mqtt.client_cert", "client_key needs client_cert too"));
            }
            (None, None) => None,
        };
        let topic_prefix = self.topic_prefix(
            m.topic_prefix.unwrap_or_else(|| "edgeprio".into()),
            node,
            sensors,
        )?;
        let client_id =
            self.client_id(m.client_id.unwrap_or_else(|| format!("edgeprio-{node}")))?;
        let batch_max = match m.batch_max {
            None => 20,
            Some(n @ 1..=10_000) => usize::try_from(n).unwrap_or(20),
            Some(n) => {
                return Err(self.err(
                    "mqtt.batch_max",
                    format!("batch_max = {n}: must be between 1 and 10000 (default 20)"),
                ));
            }
        };
        let resend_rate = match m.resend_rate {
            None => DEFAULT_RESEND_RATE,
            Some(n @ 1..=100_000) => u32::try_from(n).unwrap_or(DEFAULT_RESEND_RATE),
            Some(n) => {
                return Err(self.err(
                    "mqtt.resend_rate",
                    format!(
                        "resend_rate = {n}: must be between 1 and 100000 readings a second \
                         (default {DEFAULT_RESEND_RATE})"
                    ),
                ));
            }
        };
        Ok(MqttConfig {
            url,
            tls,
            host,
            port,
            client_id,
            username: m.username,
            password,
            ca_file: m.ca_file.map(|f| base.join(f)),
            client_cert,
            topic_prefix,
            batch_interval: self.in_range(
                "mqtt.batch_interval",
                m.batch_interval.map_or(Duration::from_mins(1), |d| d.0),
                BATCH_INTERVAL_RANGE,
                "\"1m\"",
            )?,
            batch_max,
            realtime_max_age: self.in_range(
                "mqtt.realtime_max_age",
                m.realtime_max_age
                    .map_or_else(|| default_realtime_max_age(interval), |d| d.0),
                REALTIME_MAX_AGE_RANGE,
                "2 x interval",
            )?,
            ha_discovery: m.ha_discovery.unwrap_or(false),
            resend_rate,
        })
    }

    fn priority(&self, raw: &RawPriority) -> Result<PriorityParams, ConfigError> {
        let d = PriorityParams::default();
        let positive = |key: &str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(v) if v > 0.0 && v <= FACTOR_MAX => Ok(v),
            Some(v) => Err(self.err(
                format!("priority.{key}"),
                format!(
                    "{key} = {v:?}: must be a number greater than 0 and at most {FACTOR_MAX} \
                     (default {default})"
                ),
            )),
        };
        let max_weight = match raw.max_weight {
            None => d.max_weight,
            Some(w @ 1..=1000) => w,
            Some(w) => {
                return Err(self.err(
                    "priority.max_weight",
                    format!("max_weight = {w}: must be between 1 and 1000 (default 10)"),
                ));
            }
        };
        let realtime_at = raw.realtime_at.unwrap_or(d.realtime_at);
        let ceiling = max_weight * 2;
        if realtime_at > ceiling {
            return Err(self.err(
                "priority.realtime_at",
                format!(
                    "realtime_at = {realtime_at}: no reading could ever reach it; \
                     allowed is 0 (everything real-time) to {ceiling} (2 x max_weight)"
                ),
            ));
        }
        Ok(PriorityParams {
            threshold: positive("threshold", raw.threshold, d.threshold)?,
            step: positive("step", raw.step, d.step)?,
            max_weight,
            realtime_at,
            combine: raw.combine.unwrap_or(d.combine),
            baseline: raw.baseline.unwrap_or(d.baseline),
            deadband: self.per_channel(
                "priority.deadband",
                raw.deadband.as_ref(),
                d.deadband,
                |v| v >= 0.0,
                "must be a number of at least 0",
            )?,
            floor: self.per_channel(
                "priority.floor",
                raw.floor.as_ref(),
                d.floor,
                |v| v > 0.0,
                "must be a number greater than 0",
            )?,
        })
    }

    fn per_channel(
        &self,
        key: &str,
        raw: Option<&RawPerChannel>,
        default: PerChannel<f64>,
        ok: impl Fn(f64) -> bool,
        allowed: &str,
    ) -> Result<PerChannel<f64>, ConfigError> {
        let pick = |name: &str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(v) if v.is_finite() && ok(v) => Ok(v),
            Some(v) => Err(self.err(
                format!("{key}.{name}"),
                format!("{name} = {v:?}: {allowed} (default {default})"),
            )),
        };
        Ok(PerChannel {
            temperature: pick(
                "temperature",
                raw.and_then(|r| r.temperature),
                default.temperature,
            )?,
            humidity: pick("humidity", raw.and_then(|r| r.humidity), default.humidity)?,
        })
    }

    fn sensor(&self, i: usize, s: RawSensor, base: &Path) -> Result<SensorConfig, ConfigError> {
        let key = |k: &str| format!("sensor[{i}].{k}");
        check_sensor(&s.id).map_err(|why| self.err(key("id"), format!("id = {:?} {why}", s.id)))?;
        let kind_name = match s.kind {
            RawKind::Dht22 => "dht22",
            RawKind::Dht11 => "dht11",
            RawKind::Iio => "iio",
            RawKind::Sim => "sim",
        };
        // A key that belongs to another kind is almost always a mistake
        // (copy-paste, or the kind line was changed): say so instead of
        // silently ignoring it.
        let only_for = |present: bool, k: &str, owners: &[&str]| {
            if present && !owners.contains(&kind_name) {
                let owners = owners
                    .iter()
                    .map(|o| format!("kind = \"{o}\""))
                    .collect::<Vec<_>>()
                    .join(" or ");
                Err(self.err(
                    key(k),
                    format!(
                        "`{k}` is only for {owners} sensors, this one is kind = \"{kind_name}\""
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let only = |present: bool, k: &str, owner: &str| only_for(present, k, &[owner]);
        only_for(s.pin.is_some(), "pin", &["dht22", "dht11"])?;
        // A DHT11 marks a negative temperature with a sign bit of its own
        // (frame.rs): there is no encoding to choose. Behind the kernel
        // driver a DHT22 clone's encoding still matters (sensor/iio.rs).
        only_for(s.negative.is_some(), "negative", &["dht22", "iio"])?;
        only(s.device.is_some(), "device", "iio")?;
        only(s.name.is_some(), "name", "iio")?;
        only(s.profile.is_some(), "profile", "sim")?;
        only(s.trace.is_some(), "trace", "sim")?;
        only(s.seed.is_some(), "seed", "sim")?;
        only(s.failure_rate.is_some(), "failure_rate", "sim")?;
        let kind = match s.kind {
            RawKind::Dht22 | RawKind::Dht11 => {
                let pin = s.pin.ok_or_else(|| {
                    self.err(
                        key("pin"),
                        format!(
                            "a {kind_name} sensor needs `pin`, its BCM GPIO number (e.g. pin = 4)"
                        ),
                    )
                })?;
                let pin = u8::try_from(pin).ok().filter(|p| *p <= 27).ok_or_else(|| {
                    self.err(
                        key("pin"),
                        format!(
                            "pin = {pin} is not a GPIO of the Raspberry Pi header; \
                             use a BCM number from 0 to 27 (BCM 4 is physical pin 7)"
                        ),
                    )
                })?;
                if s.kind == RawKind::Dht11 {
                    SensorKind::Dht11 { pin }
                } else {
                    SensorKind::Dht22 {
                        pin,
                        negative: s.negative.unwrap_or_default(),
                    }
                }
            }
            RawKind::Iio => {
                if s.device.is_some() && s.name.is_some() {
                    return Err(self.err(
                        key("name"),
                        "give either `device` (a sysfs directory) or `name` (an IIO device name), not both",
                    ));
                }
                SensorKind::Iio {
                    device: s.device.map(|d| base.join(d)),
                    name: s.name,
                    negative: s.negative.unwrap_or_default(),
                }
            }
            RawKind::Sim => SensorKind::Sim(self.sim(i, &s, base)?),
        };
        let offset = self.offset(i, s.offset.as_ref())?;
        Ok(SensorConfig {
            id: s.id,
            kind,
            offset,
        })
    }
    fn sim(&self, i: usize, s: &RawSensor, base: &Path) -> Result<SimConfig, ConfigError> {
        let key = |k: &str| format!("sensor[{i}].{k}");
        let profile = match (s.profile, s.trace.clone()) {
            (Some(RawProfile::Trace) | None, Some(trace)) => SimProfile::Trace(base.join(trace)),
            (Some(RawProfile::Trace), None) => {
                return Err(self.err(
                    key("trace"),
                    "profile = \"trace\" needs `trace`, the path of a CSV file \
                     with temperature_c and humidity_pct columns",
                ));
            }
            (Some(p), Some(_)) => {
                let name = if p == RawProfile::Heater {
                    "heater"
                } else {
                    "random"
                };
                return Err(self.err(
                    key("trace"),
                    format!("`trace` only applies to profile = \"trace\", this sensor has profile = \"{name}\""),
                ));
            }
            (Some(RawProfile::Heater), None) => SimProfile::Heater,
            (Some(RawProfile::Random) | None, None) => SimProfile::Random,
        };
        let failure_rate = match s.failure_rate {
            None => 0.0,
            Some(r) if (0.0..=1.0).contains(&r) => r,
            Some(r) => {
                return Err(self.err(
                    key("failure_rate"),
                    format!(
                        "failure_rate = {r}: must be between 0 and 1 (0.05 = 5 % of reads fail)"
                    ),
                ));
            }
        };
        if failure_rate > 0.0 && profile != SimProfile::Random {
            return Err(self.err(
                key("failure_rate"),
                "failure_rate only applies to profile = \"random\"",
            ));
        }
        Ok(SimConfig {
            profile,
            seed: s.seed.unwrap_or(i as u64),
            failure_rate,
        })
    }
}

/// An `[mqtt]` section with only `url` set, for `demo --broker URL`.
pub fn mqtt_from_url(
    url: &str,
    node: &str,
    sensors: &[SensorConfig],
    interval: Duration,
) -> Result<MqttConfig, ConfigError> {
    let v = Validator { file: "--broker" };
    let raw = RawMqtt {
        url: Some(url.to_string()),
        client_id: None,
        username: None,
        password: None,
        password_file: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        topic_prefix: None,
        batch_interval: None,
        batch_max: None,
        realtime_max_age: None,
        ha_discovery: None,
        resend_rate: None,
    };
    v.mqtt(raw, node, sensors, interval, Path::new(""))
}

impl MqttConfig {
    /// Publishing to the embedded broker at `listen`, with every default.
    pub fn local(listen: std::net::SocketAddr, node: &str, interval: Duration) -> Self {
        let host = if listen.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            listen.ip().to_string()
        };
        Self {
            url: format!("mqtt://{host}:{}", listen.port()),
            tls: false,
            host,
            port: listen.port(),
            client_id: format!("edgeprio-{node}"),
            username: None,
            password: PasswordSource::None,
            ca_file: None,
            client_cert: None,
            topic_prefix: "edgeprio".into(),
            batch_interval: Duration::from_mins(1),
            batch_max: 20,
            realtime_max_age: default_realtime_max_age(interval),
            ha_discovery: false,
            resend_rate: DEFAULT_RESEND_RATE,
        }
    }

    /// The broker password, from the environment, the file or the config.
    pub fn password(&self) -> Result<Option<Secret>, String> {
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            return Ok(Some(Secret::new(p)));
        }
        match &self.password {
            PasswordSource::None => Ok(None),
            PasswordSource::Inline(s) => Ok(Some(s.clone())),
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .map(|p| Some(Secret::new(p.trim_end_matches(['\r', '\n']))))
                .map_err(|e| {
                    format!(
                        "cannot read the MQTT password file {} ({e}); it must be readable by \
                         the agent's user",
                        path.display()
                    )
                }),
        }
    }
}

/// Files that hold a secret and can be read by every user: each is worth a
/// warning at start-up.
pub fn world_readable_secrets(config: &Config) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let readable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
    let mut out = Vec::new();
    if let Some(m) = &config.mqtt {
        match &m.password {
            PasswordSource::Inline(_) => {
                if let Some(src) = config.source.as_deref().filter(|p| readable(p)) {
                    out.push(src.to_path_buf());
                }
            }
            PasswordSource::File(f) if readable(f) => out.push(f.clone()),
            _ => {}
        }
        if let Some((_, key)) = &m.client_cert
            && readable(key)
        {
            out.push(key.clone());
        }
    }
    out
}

/// `url` for messages: anything before an `@` (user-info: a user name and
/// perhaps a password) becomes `***`. A password may hold '/' or '#', so
/// everything up to the last `@` goes.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    match rest.rfind('@') {
        Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// A user's string for a message: whole if short, else its start and its
/// length, so a 100,000-character value does not flood the terminal.
pub fn quoted_short(s: &str) -> String {
    const SHOWN: usize = 40;
    if s.chars().count() <= SHOWN + 20 {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("{head:?}... ({} bytes)", s.len())
    }
}

/// What a file system object is, for "is not a regular file (...)".
pub fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

/// Opens `path` for reading with `O_NONBLOCK`: a FIFO (or a device) opens
/// at once instead of waiting for a writer, so the caller can refuse it
/// after a look at the open file. A regular file reads as usual.
pub fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
        .open(path)
}

/// `realtime_max_age` unless the config says otherwise: two intervals.
fn default_realtime_max_age(interval: Duration) -> Duration {
    interval.saturating_mul(2)
}

/// A duration as a config file would write it: whole days as `"30d"`,
/// anything else as humantime prints it (`"1h 30m"`, `"500ms"`).
fn written(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs >= DAY.as_secs() && secs.is_multiple_of(DAY.as_secs()) {
        format!("{}d", secs / DAY.as_secs())
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// The machine's hostname, or `edgeprio` when it is unusable as a node name.
fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| check_node(h).is_ok())
        .unwrap_or_else(|| "edgeprio".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Some(Path::new("/etc/edgeprio/test.toml")))
    }

    const MINIMAL: &str = "[[sensor]]\nid = \"lab\"\nkind = \"dht22\"\npin = 4\n";

    #[test]
    fn dht11_and_negative_parse_and_the_slowest_part_sets_the_floor() {
        let c = parse("interval = \"1s\"\n[[sensor]]\nid = \"a\"\nkind = \"dht11\"\npin = 17\n")
            .unwrap();
        assert_eq!(c.sensors[0].kind, SensorKind::Dht11 { pin: 17 });
        assert_eq!(c.sensors[0].kind.min_interval(), Duration::from_secs(1));
        let c = parse(&format!("{MINIMAL}negative = \"twos-complement\"\n")).unwrap();
        assert_eq!(
            c.sensors[0].kind.dht(),
            Some(DhtSettings {
                pin: 4,
                model: Model::Dht22,
                negative: Negative::TwosComplement
            })
        );
        // A DHT11 alone allows 1 s; next to a DHT22 the 2 s floor wins.
        let both = "interval = \"1s\"\n[[sensor]]\nid = \"a\"\nkind = \"dht11\"\npin = 17\n\
                    [[sensor]]\nid = \"b\"\nkind = \"dht22\"\npin = 4\n";
        let e = parse(both).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("interval"));
        assert!(e.message.contains("sensor \"b\" is a DHT22"), "{e}");
        let e = parse("interval = \"999ms\"\n[[sensor]]\nid = \"a\"\nkind = \"dht11\"\npin = 17\n")
            .unwrap_err();
        assert!(
            e.message.contains("\"999ms\" is shorter than 1s") && e.message.contains("DHT11"),
            "{e}"
        );
        // Simulated sensors have no floor.
        let sim = parse("interval = \"10ms\"\n[[sensor]]\nid = \"s\"\nkind = \"sim\"\n").unwrap();
        assert_eq!(sim.sensors[0].kind.min_interval(), Duration::ZERO);
    }

    #[test]
    fn the_gateway_section_defaults_to_the_raw_topics_and_checks_its_filters() {
        let c = parse("[mqtt]\nurl = \"mqtt://127.0.0.1\"\ntopic_prefix = \"site\"\n").unwrap();
        assert_eq!(c.gateway, GatewayConfig::default());
        assert_eq!(c.gateway.filters("site"), ["site/+/raw"]);
        let c = parse("[gateway]\nsubscribe = [\"a/+/raw\", \"b/esp1/raw\"]\nrange = \"dht11\"\n")
            .unwrap();
        assert_eq!(c.gateway.filters("x"), ["a/+/raw", "b/esp1/raw"]);
        assert_eq!(c.gateway.range, SensorRange::DHT11);
        let one = parse("[gateway]\nsubscribe = \"a/+/raw\"\n").unwrap();
        assert_eq!(one.gateway.filters("x"), ["a/+/raw"]);
        for (bad, why) in [
            ("\"raw\"", "has one level"),
            ("\"a/+/#\"", "ends in a wildcard"),
            ("\"a/#/raw\"", "'#' before its last level"),
            ("\"a/n+/raw\"", "inside a level"),
            ("\"a//raw\"", "no node level"),
            ("[]", "subscribes to nothing"),
        ] {
            let e = parse(&format!("[gateway]\nsubscribe = {bad}\n")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("gateway.subscribe"), "{bad}: {e}");
            assert!(e.message.contains(why), "{bad}: {e}");
        }
        let e = parse("[gateway]\nrange = \"dht33\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("gateway.range"));
        assert!(
            e.message.contains("\"dht33\"") && e.message.contains("dht11"),
            "{e}"
        );
        let e = parse("[gateway]\nsubscribes = \"a/+/raw\"\n").unwrap_err();
        assert!(e.message.contains("subscribes"), "{e}");
    }

    #[test]
    fn defaults_match_the_design() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.interval, Duration::from_secs(15));
        assert_eq!(c.priority, PriorityParams::default());
        assert_eq!(c.plausibility, Plausibility::default());
        assert_eq!(c.db, PathBuf::from(DEFAULT_DB));
        assert_eq!(
            c.sensors[0].kind,
            SensorKind::Dht22 {
                pin: 4,
                negative: Negative::Auto
            }
        );
    }

    #[test]
    fn demo_config_is_valid() {
        let c = Config::demo();
        assert!(!c.has_hardware());
        assert!(c.sensors.len() >= 3);
    }

    #[test]
    fn example_config_is_valid_and_complete() {
        let text = include_str!("../assets/edgeprio.example.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.node, "pi-greenhouse");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let c = parse(
            "db = \"data/e.db\"\n[[sensor]]\nid = \"a\"\nkind = \"sim\"\ntrace = \"t.csv\"\n",
        )
        .unwrap();
        assert_eq!(c.db, PathBuf::from("/etc/edgeprio/data/e.db"));
        assert_eq!(
            c.sensors[0].kind,
            SensorKind::Sim(SimConfig {
                profile: SimProfile::Trace("/etc/edgeprio/t.csv".into()),
                seed: 0,
                failure_rate: 0.0
            })
        );
    }

    fn err(text: &str) -> ConfigError {
        parse(text).unwrap_err()
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = err("[priority]\nthreshhold = 0.1\n[[sensor]]\nid = \"a\"\nkind = \"sim\"\n");
        assert_eq!(e.key.as_deref(), Some("priority.threshhold"));
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("expected one of"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_value() {
        let e = err("interval = 15\n[[sensor]]\nid = \"a\"\nkind = \"sim\"\n");
        assert_eq!(e.key.as_deref(), Some("interval"));
        assert!(
            e.message.contains("15") && e.message.contains("\"15s\""),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_the_value() {
        let e = err("interval = \"15 sex\"\n[[sensor]]\nid = \"a\"\nkind = \"sim\"\n");
        assert!(e.to_string().contains("\"15 sex\""), "{e}");
    }

    #[test]
    fn dht22_interval_below_two_seconds_is_rejected() {
        let e = err(&format!("interval = \"1s\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("interval"));
        assert!(
            e.message.contains("\"1s\"") && e.message.contains("2s"),
            "{e}"
        );
        // Simulated sensors may go faster.
        assert!(parse("interval = \"100ms\"\n[[sensor]]\nid = \"a\"\nkind = \"sim\"\n").is_ok());
    }

    #[test]
    fn duplicate_ids_and_pins_are_rejected() {
        let e = err(&format!(
            "{MINIMAL}{}",
            MINIMAL.replace("pin = 4", "pin = 5")
        ));
        assert_eq!(e.key.as_deref(), Some("sensor[1].id"));
        let e = err(&format!("{MINIMAL}{}", MINIMAL.replace("lab", "hall")));
        assert_eq!(e.key.as_deref(), Some("sensor[1].pin"));
    }

    #[test]
    fn pin_outside_the_header_is_rejected() {
        let e = err(&MINIMAL.replace("pin = 4", "pin = 40"));
        assert_eq!(e.key.as_deref(), Some("sensor[0].pin"));
        assert!(e.message.contains("pin = 40"), "{e}");
    }

    #[test]
    fn keys_of_another_kind_are_rejected() {
        let e = err("[[sensor]]\nid = \"a\"\nkind = \"sim\"\npin = 4\n");
        assert_eq!(e.key.as_deref(), Some("sensor[0].pin"));
    }

    #[test]
    fn bad_priority_values_are_rejected() {
        let e = err(&format!("[priority]\nthreshold = -0.1\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("priority.threshold"));
        let e = err(&format!(
            "[priority]\nfloor = {{ temperature = 0 }}\n{MINIMAL}"
        ));
        assert_eq!(e.key.as_deref(), Some("priority.floor.temperature"));
        let e = err(&format!("[priority]\ncombine = \"avg\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("priority.combine"));
        assert!(
            e.message.contains("avg") && e.message.contains("max"),
            "{e}"
        );
    }

    #[test]
    fn burst_is_off_by_default_and_checked_against_the_sensors_and_interval() {
        assert_eq!(parse(MINIMAL).unwrap().burst, None);
        let c = parse(&format!(
            "[priority]\nburst = {{ interval = \"3s\", hold = \"2m\" }}\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(
            c.burst,
            Some(Burst {
                interval: Duration::from_secs(3),
                hold: Duration::from_mins(2)
            })
        );
        let c = parse(&format!("[priority]\nburst = {{}}\n{MINIMAL}")).unwrap();
        assert_eq!(
            c.burst.map(|b| (b.interval, b.hold)),
            Some((BURST_INTERVAL, BURST_HOLD))
        );
        for (burst, key, words) in [
            (
                "{ interval = \"1s\" }",
                "priority.burst.interval",
                "least spacing",
            ),
            (
                "{ interval = \"15s\" }",
                "priority.burst.interval",
                "not shorter",
            ),
            (
                "{ interval = \"4s\" }",
                "priority.burst.interval",
                "does not divide",
            ),
            ("{ hold = \"1s\" }", "priority.burst.hold", "out of range"),
            ("{ every = \"3s\" }", "priority.burst.every", "unknown"),
        ] {
            let e = err(&format!("[priority]\nburst = {burst}\n{MINIMAL}"));
            assert_eq!(e.key.as_deref(), Some(key), "{burst}: {e}");
            assert!(e.message.contains(words), "{burst}: {e}");
        }
    }

    #[test]
    fn baseline_is_previous_by_default_and_reported_on_request() {
        assert_eq!(
            parse(MINIMAL).unwrap().priority.baseline,
            Baseline::Previous
        );
        let c = parse(&format!("[priority]\nbaseline = \"reported\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.priority.baseline, Baseline::Reported);
        let e = err(&format!("[priority]\nbaseline = \"last\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("priority.baseline"));
        assert!(
            e.message.contains("last")
                && e.message.contains("previous")
                && e.message.contains("reported"),
            "{e}"
        );
    }

    #[test]
    fn confirm_stale_after_and_offset_have_defaults_and_parse() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.confirm, "events are confirmed unless turned off");
        assert_eq!(
            c.stale_after,
            Some(Duration::from_secs(150)),
            "10 x interval"
        );
        assert_eq!(
            c.sensors[0].offset,
            PerChannel {
                temperature: 0.0,
                humidity: 0.0
            }
        );
        let c = parse(&format!(
            "interval = \"1m\"\n[priority]\nconfirm = false\nstale_after = \"0s\"\n{MINIMAL}\
             offset = {{ temperature = -0.4 }}\n"
        ))
        .unwrap();
        assert!(!c.confirm);
        assert_eq!(c.stale_after, None, "\"0s\" turns the gap rule off");
        assert_eq!(
            c.sensors[0].offset,
            PerChannel {
                temperature: -0.4,
                humidity: 0.0
            },
            "either key is optional"
        );
        let c = parse(&format!(
            "[priority]\nstale_after = \"2h\"\n{MINIMAL}offset = {{ temperature = 10, humidity = -20.0 }}\n"
        ))
        .unwrap();
        assert_eq!(c.stale_after, Some(Duration::from_hours(2)));
        assert_eq!(
            c.sensors[0].offset,
            PerChannel {
                temperature: 10.0,
                humidity: -20.0
            },
            "the limits are inclusive"
        );
    }

    #[test]
    fn bad_confirm_stale_after_and_offset_name_key_and_value() {
        let e = err(&format!("[priority]\nstale_after = \"10s\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("priority.stale_after"));
        assert!(
            e.message.contains("\"10s\"")
                && e.message.contains("\"15s\"")
                && e.message.contains("\"0s\""),
            "{e}"
        );
        let e = err(&format!("[priority]\nconfirm = \"yes\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("priority.confirm"));
        for (offset, key, value) in [
            ("{ temperature = 10.5 }", "temperature", "10.5"),
            ("{ humidity = -25 }", "humidity", "-25"),
            ("{ temperature = nan }", "temperature", "NaN"),
            ("{ humidity = inf }", "humidity", "inf"),
        ] {
            let e = err(&format!("{MINIMAL}offset = {offset}\n"));
            assert_eq!(e.key.as_deref(), Some(&*format!("sensor[0].offset.{key}")));
            assert!(
                e.message.contains(&format!("{key} = {value}")) && e.message.contains("from -"),
                "{e}"
            );
        }
        let e = err(&format!("{MINIMAL}offset = {{ humidty = 2 }}\n"));
        assert_eq!(e.key.as_deref(), Some("sensor[0].offset.humidty"));
    }

    #[test]
    fn a_config_without_sensors_parses_and_the_sensor_commands_refuse_it() {
        let c = parse("node = \"pi\"\n").unwrap();
        assert!(c.sensors.is_empty());
        let e = c.require_sensors().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sensor"));
        assert_eq!(e.file, "/etc/edgeprio/test.toml");
        assert_eq!(
            e.to_string(),
            "invalid config /etc/edgeprio/test.toml: key `sensor`: no [[sensor]] is configured; \
             add at least one, e.g.\n  [[sensor]]\n  id = \"lab\"\n  kind = \"dht22\"\n  pin = 4"
        );
        assert_eq!(parse(MINIMAL).unwrap().require_sensors(), Ok(()));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = err("node = \"pi\n");
        assert_eq!(e.line, Some(1));
        assert_eq!(e.key.as_deref(), Some("node"));
        assert!(
            e.message.contains("TOML") && e.message.contains("node = \"pi"),
            "{e}"
        );
        let e = err("[[sensor]]\nid = \"a\"\nkind = sim\n");
        assert_eq!(e.key.as_deref(), Some("sensor.kind"), "{e}");
    }

    #[test]
    fn mqtt_section_parses_with_defaults() {
        let c = parse(&format!("[mqtt]\nurl = \"mqtt://10.0.0.5\"\n{MINIMAL}")).unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!((m.host.as_str(), m.port, m.tls), ("10.0.0.5", 1883, false));
        assert_eq!(m.topic_prefix, "edgeprio");
        assert_eq!(m.batch_interval, Duration::from_mins(1));
        assert_eq!(m.batch_max, 20);
        assert_eq!(m.resend_rate, DEFAULT_RESEND_RATE);
        assert_eq!(m.realtime_max_age, Duration::from_secs(30));
        assert!(m.client_id.starts_with("edgeprio-"));
        let c = parse(&format!(
            "[mqtt]\nurl = \"mqtts://[::1]\"\nca_file = \"ca.pem\"\nusername = \"u\"\npassword_file = \"pw\"\n{MINIMAL}"
        ))
        .unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!((m.host.as_str(), m.port, m.tls), ("::1", 8883, true));
        assert_eq!(m.ca_file, Some(PathBuf::from("/etc/edgeprio/ca.pem")));
        assert_eq!(m.password, PasswordSource::File("/etc/edgeprio/pw".into()));
    }

    #[test]
    fn embedded_broker_without_mqtt_publishes_locally() {
        let c = parse(&format!("[broker]\nlisten = \"0.0.0.0:1884\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.broker.unwrap().listen.port(), 1884);
        assert_eq!(c.mqtt.unwrap().url, "mqtt://127.0.0.1:1884");
        let c = parse(&format!("[broker]\nenabled = false\n{MINIMAL}")).unwrap();
        assert!(c.broker.is_none() && c.mqtt.is_none());
    }

    #[test]
    fn store_section_parses_with_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.store.retention, Duration::from_hours(720));
        assert_eq!(c.store.min_free, 64 * 1024 * 1024);
        let c = parse(&format!(
            "[store]\nretention = \"90d\"\nmin_free = \"1.5 GB\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.store.retention, Duration::from_hours(90 * 24));
        assert_eq!(c.store.min_free, 1_500_000_000);
        let c = parse(&format!("[store]\nmin_free = \"0\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.store.min_free, 0);
        assert_eq!(c.store.prune_every, Duration::from_hours(1));
        let c = parse(&format!("[store]\nprune_every = \"10s\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.store.prune_every, Duration::from_secs(10));
        for bad in ["0s", "500ms", "2d"] {
            let e = err(&format!("[store]\nprune_every = \"{bad}\"\n{MINIMAL}"));
            assert_eq!(e.key.as_deref(), Some("store.prune_every"), "{e}");
            assert!(
                e.message.contains(bad) && e.message.contains("from \"1s\" to \"24h\""),
                "{e}"
            );
        }
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("2gib"), Some(2 << 30));
    }

    #[test]
    fn bad_store_values_name_key_and_value() {
        let cases = [
            ("retention = \"0s\"", "\"0s\""),
            ("retention = \"10m\"", "\"10m\""),
            ("retention = \"a month\"", "\"a month\""),
            ("retention = 30", "30"),
            ("min_free = \"64 potatoes\"", "\"64 potatoes\""),
            ("min_free = \"-1MB\"", "\"-1MB\""),
            ("min_free = 64", "64"),
        ];
        for (body, value) in cases {
            let e = err(&format!("[store]\n{body}\n{MINIMAL}"));
            let key = body.split(' ').next().unwrap();
            assert_eq!(
                e.key.as_deref(),
                Some(format!("store.{key}").as_str()),
                "{body}: {e}"
            );
            assert!(e.message.contains(value), "{body}: {e}");
        }
        let e = err(&format!("[store]\nretention = \"10m\"\n{MINIMAL}"));
        assert!(e.message.contains("at least \"1h\""), "{e}");
        let e = err(&format!("[store]\nretain = \"30d\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("store.retain"), "{e}");
    }

    #[test]
    fn bad_mqtt_values_name_key_and_value() {
        let cases = [
            ("url = \"http://x\"", "mqtt.url", "http://x"),
            ("url = \"mqtt://x:0\"", "mqtt.url", "\"0\""),
            (
                "url = \"mqtt://x\"\nca_file = \"c\"",
                "mqtt.ca_file",
                "mqtts://",
            ),
            (
                "url = \"mqtts://x\"\nclient_cert = \"c\"",
                "mqtt.client_key",
                "client_key",
            ),
            (
                "url = \"mqtt://x\"\nresend_rate = 0",
                "mqtt.resend_rate",
                "resend_rate = 0",
            ),
            (
                "url = \"mqtt://x\"\nbatch_max = 0",
                "mqtt.batch_max",
                "batch_max = 0",
            ),
            (
                "url = \"mqtt://x\"\ntopic_prefix = \"a/#\"",
                "mqtt.topic_prefix",
                "a/#",
            ),
            (
                "url = \"mqtt://x\"\npassword = \"p\"\npassword_file = \"f\"",
                "mqtt.password_file",
                "not both",
            ),
            ("username = \"u\"", "mqtt.url", "needs `url`"),
        ];
        for (body, key, value) in cases {
            let e = err(&format!("[mqtt]\n{body}\n{MINIMAL}"));
            assert_eq!(e.key.as_deref(), Some(key), "{body}: {e}");
            assert!(e.message.contains(value), "{body}: {e}");
        }
        let e = err(&format!("[broker]\nlisten = \"localhost\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("broker.listen"));
    }

    #[test]
    fn metrics_endpoint_is_off_unless_its_section_is_there() {
        assert_eq!(parse(MINIMAL).unwrap().metrics, None);
        let c = parse(&format!("[metrics]\n{MINIMAL}")).unwrap();
        assert_eq!(
            c.metrics.unwrap().listen,
            DEFAULT_METRICS_LISTEN.parse().unwrap()
        );
        let c = parse(&format!("[metrics]\nlisten = \"0.0.0.0:9100\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.metrics.unwrap().listen, "0.0.0.0:9100".parse().unwrap());
        let c = parse(&format!("[metrics]\nlisten = \"[::1]:9184\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.metrics.unwrap().listen, "[::1]:9184".parse().unwrap());
    }

    #[test]
    fn bad_metrics_values_name_key_and_value() {
        let cases = [
            (
                "listen = \"localhost:9184\"",
                "metrics.listen",
                "\"localhost:9184\"",
            ),
            ("listen = \"9184\"", "metrics.listen", "not an address:port"),
            ("listen = \"127.0.0.1:0\"", "metrics.listen", "port 0"),
            ("listen = 9184", "metrics.listen", "9184"),
            ("port = 9184", "metrics.port", "expected"),
        ];
        for (body, key, value) in cases {
            let e = err(&format!("[metrics]\n{body}\n{MINIMAL}"));
            assert_eq!(e.key.as_deref(), Some(key), "{body}: {e}");
            assert!(e.to_string().contains(value), "{body}: {e}");
        }
        // The embedded broker's port, on the same or every address.
        for broker in ["127.0.0.1:1883", "0.0.0.0:1883"] {
            let e = err(&format!(
                "[broker]\nlisten = \"{broker}\"\n[metrics]\nlisten = \"127.0.0.1:1883\"\n{MINIMAL}"
            ));
            assert_eq!(e.key.as_deref(), Some("metrics.listen"), "{e}");
            assert!(e.message.contains("embedded broker"), "{e}");
        }
        assert!(
            parse(&format!(
                "[broker]\nlisten = \"127.0.0.1:1883\"\n[metrics]\nlisten = \"127.0.0.2:1883\"\n{MINIMAL}"
            ))
            .is_ok()
        );
    }

    #[test]
    fn world_readable_secrets_are_found() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.toml");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let body = format!(
            "[mqtt]\nurl = \"mqtt://x\"\nusername = \"u\"\npassword_file = \"pw\"\n{MINIMAL}"
        );
        std::fs::write(&path, &body).unwrap();
        let mode =
            |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        mode(&pw, 0o644);
        let c = Config::load(&path).unwrap();
        assert_eq!(world_readable_secrets(&c), vec![pw.clone()]);
        assert_eq!(
            c.mqtt
                .as_ref()
                .unwrap()
                .password()
                .unwrap()
                .unwrap()
                .expose(),
            "s3cret"
        );
        mode(&pw, 0o640);
        assert!(world_readable_secrets(&c).is_empty());
        // A password inline in a world-readable config file.
        std::fs::write(
            &path,
            body.replace("password_file = \"pw\"", "password = \"p\""),
        )
        .unwrap();
        mode(&path, 0o644);
        let c = Config::load(&path).unwrap();
        assert_eq!(world_readable_secrets(&c), vec![path.clone()]);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = parse(&format!(
            "[mqtt]\nurl = \"mqtt://x\"\nusername = \"u\"\npassword = \"hunter2\"\n{MINIMAL}"
        ))
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn known_keys_are_every_key_the_file_accepts() {
        // serde lists a table's fields in its unknown-field error.
        let listed = |text: &str| -> Vec<String> {
            let e = err(text);
            // "expected one of `a`, `b`, `c`" or "expected `a` or `b`".
            let (_, fields) = e.message.split_once("expected ").unwrap();
            fields
                .trim_start_matches("one of ")
                .split([',', ' '])
                .filter(|f| f.starts_with('`'))
                .map(|f| f.trim_matches('`').to_string())
                .collect()
        };
        let tables = [
            "zz = 1\n".to_string(),
            format!("[priority]\nzz = 1\n{MINIMAL}"),
            format!("[priority]\ndeadband = {{ zz = 1 }}\n{MINIMAL}"),
            format!("{MINIMAL}zz = 1\n"),
            format!("[mqtt]\nzz = 1\n{MINIMAL}"),
            format!("[broker]\nzz = 1\n{MINIMAL}"),
            format!("[metrics]\nzz = 1\n{MINIMAL}"),
            format!("[store]\nzz = 1\n{MINIMAL}"),
        ];
        for text in &tables {
            for field in listed(text) {
                assert!(
                    KNOWN_KEYS.contains(&field.as_str()),
                    "{field} is not in KNOWN_KEYS"
                );
            }
        }
    }

    #[test]
    fn urls_are_redacted_and_parsed_strictly() {
        assert_eq!(redact_url("mqtt://u:pw@h:1883"), "mqtt://***@h:1883");
        assert_eq!(redact_url("mqtt://u:a/b@c@h"), "mqtt://***@h");
        assert_eq!(redact_url("u:pw@h"), "***@h");
        assert_eq!(redact_url("mqtt://h:1883"), "mqtt://h:1883");
        let m = |url: &str| parse(&format!("[mqtt]\nurl = {url:?}\n{MINIMAL}"));
        for url in [
            "mqtt://[::1",
            "mqtt:// host",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:65536",
            "mqtt://[::1]x",
            "mqtt://[nope]:1883",
            "mqtt://::1",
            "mqtt://h/path",
            "mqtt://h?x=1",
        ] {
            let e = m(url).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("mqtt.url"), "{url}: {e}");
            assert!(e.message.contains(&format!("{url:?}")), "{url}: {e}");
        }
        let e = m("mqtt://me:hunter2@h").unwrap_err();
        assert!(
            !e.to_string().contains("hunter2") && e.message.contains("password_file"),
            "{e}"
        );
        let c = m("mqtt://[fd00::5]:1884/").unwrap().mqtt.unwrap();
        assert_eq!((c.host.as_str(), c.port), ("fd00::5", 1884));
        let c = m("mqtts://broker.lan").unwrap().mqtt.unwrap();
        assert_eq!((c.host.as_str(), c.port), ("broker.lan", 8883));
    }

    #[test]
    fn durations_have_ranges_and_the_limits_are_inclusive() {
        let with = |text: &str| parse(&format!("{text}\n[[sensor]]\nid = \"a\"\nkind = \"sim\"\n"));
        for (text, key) in [
            ("interval = \"25h\"", "interval"),
            ("interval = \"999us\"", "interval"),
            ("[priority]\nstale_after = \"366d\"", "priority.stale_after"),
            ("[store]\nretention = \"3651d\"", "store.retention"),
            (
                "[mqtt]\nurl = \"mqtt://h\"\nbatch_interval = \"2d\"",
                "mqtt.batch_interval",
            ),
            (
                "[mqtt]\nurl = \"mqtt://h\"\nrealtime_max_age = \"8d\"",
                "mqtt.realtime_max_age",
            ),
            ("[priority]\nstep = 100.5", "priority.step"),
        ] {
            let e = with(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let c = with(
            "interval = \"1d\"\n[priority]\nstale_after = \"365d\"\nstep = 100\n\
             [store]\nretention = \"3650d\"\n[mqtt]\nurl = \"mqtt://h\"\n\
             batch_interval = \"1d\"\nrealtime_max_age = \"7d\"",
        )
        .unwrap();
        assert_eq!(c.interval, DAY);
        assert_eq!(
            c.mqtt.unwrap().realtime_max_age,
            Duration::from_hours(24 * 7)
        );
        let e = with("interval = \"25h\"").unwrap_err();
        assert!(e.message.contains("\"1ms\" to \"1d\""), "{e}");
    }

    #[test]
    fn secrets_are_never_quoted_in_toml_errors() {
        for text in [
            "[mqtt]\nusername = \"u\"\npassword = \"hunter2\n",
            "[mqtt]\npassword = \"hunter2\"\npassword = \"hunter2\"\n",
            "[mqtt]\npassword = 4242hunter2\n",
            "[mqtt]\npasword = \"hunter2\n",
            "[mqtt]\nurl = \"mqtt://u:hunter2@h\n",
            "hunter2\n",
            "a=hunter2\n",
            "[hunter2\n",
        ] {
            let e = err(text).to_string();
            assert!(!e.contains("hunter2"), "{text:?}: {e}");
        }
        let e = err("[mqtt]\npassword = 1234\n");
        assert!(!e.message.contains("1234"), "{e}");
        assert!(e.message.contains("expected a string"), "{e}");
    }

    #[test]
    fn mqtt_limits_are_checked_against_the_longest_topic() {
        let m = |lines: &str| parse(&format!("[mqtt]\nurl = \"mqtt://h\"\n{lines}\n{MINIMAL}"));
        // `<prefix>/<node>/lab/state` is the longest topic of MINIMAL.
        let node = parse(MINIMAL).unwrap().node;
        let room = MQTT_STRING_MAX - format!("/{node}/lab/state").len();
        assert!(m(&format!("topic_prefix = \"{}\"", "p".repeat(room))).is_ok());
        let e = m(&format!("topic_prefix = \"{}\"", "p".repeat(room + 1))).unwrap_err();
        assert!(e.message.contains("shorten it by 1 bytes"), "{e}");
        assert!(m(&format!("topic_prefix = \"{}\"", vec!["l"; 197].join("/"))).is_ok());
        for prefix in ["$SYS", "$x/y", "a\\u0000b", "a\\u0007b", "a/+", "a//b"] {
            let e = m(&format!("topic_prefix = \"{prefix}\"")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("mqtt.topic_prefix"), "{prefix}: {e}");
        }
        assert!(m(&format!("client_id = \"{}\"", "c".repeat(65_535))).is_ok());
        for id in [String::new(), "c".repeat(65_536), "a\\u0000".into()] {
            let e = m(&format!("client_id = \"{id}\"")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("mqtt.client_id"), "{e}");
            assert!(e.to_string().len() < 400, "a long id is not quoted whole");
        }
        let e = m("password = \"p\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("mqtt.username"), "{e}");
    }

    #[test]
    fn check_files_names_the_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.toml");
        let load = |body: &str| {
            std::fs::write(&path, body).unwrap();
            Config::load_checked(&path)
        };
        std::fs::write(dir.path().join("pw"), "p\n").unwrap();
        let sim = "[[sensor]]\nid = \"a\"\nkind = \"sim\"\n";
        assert!(
            load(&format!("db = \"e.db\"\n{sim}")).is_ok(),
            "a missing db is created"
        );
        for (body, key, says) in [
            (
                format!("db = \"/dev/null\"\n{sim}"),
                "db",
                "a character device",
            ),
            (format!("db = \".\"\n{sim}"), "db", "is a directory"),
            (format!("db = \"a\\u0000\"\n{sim}"), "db", "NUL byte"),
            (
                format!("db = \"e.db\"\n{sim}trace = \"t.csv\"\n"),
                "sensor[0].trace",
                "does not exist",
            ),
            (
                format!(
                    "db = \"e.db\"\n{sim}[mqtt]\nurl = \"mqtt://h\"\nusername = \"u\"\npassword_file = \".\"\n"
                ),
                "mqtt.password_file",
                "a directory",
            ),
        ] {
            let e = load(&body).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{body}: {e}");
            assert!(e.message.contains(says), "{body}: {e}");
        }
        // Parsing alone does not look at the file system.
        assert!(Config::parse(&format!("db = \"/dev/null\"\n{sim}"), None).is_ok());
    }

    #[test]
    fn bad_names_are_rejected() {
        let e = err(&format!("node = \"a/b\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("node"));
        let e = err(&MINIMAL.replace("\"lab\"", "\"lab 1\""));
        assert_eq!(e.key.as_deref(), Some("sensor[0].id"));
    }
}
