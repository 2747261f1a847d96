//! The command line (DESIGN.md, "commands"): the clap definitions, their
//! value parsers and the dispatch to each subcommand's runner in
//! [`crate::commands`]. Every option has an environment variable; doc
//! comments are the `--help` text.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::config::{self, ConfigError};

/// Exit status for an invalid configuration (sysexits' `EX_CONFIG`), so a
/// service manager can tell "fix the file" from "try again".
pub const EXIT_CONFIG: u8 = 78;

/// edgeprio: DHT22 sensors on a Raspberry Pi, scored by the paper's
/// change-based weight priority, routed to a real-time or a batch path, and
/// logged to `SQLite`.
#[derive(Debug, Parser)]
#[command(name = "edgeprio", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: /etc/edgeprio/edgeprio.toml; `demo`
    /// uses its built-in config]
    #[arg(long, global = true, env = "EDGEPRIO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter for messages on stderr: error, warn, info, debug, trace, or
    /// tracing directives such as `edgeprio=debug` [default: info; warn for
    /// `demo`, whose readings go to stdout]
    #[arg(long, global = true, env = "EDGEPRIO_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: read the sensors every interval, score, route, log
    Run(RunArgs),
    /// The whole pipeline on simulated sensors, no hardware needed
    Demo(DemoArgs),
    /// Print readings from the local log
    Query(QueryArgs),
    /// Read each configured sensor once and print the result (wiring check)
    ReadOnce,
    /// Validate the configuration file; exit 0, or 78 naming the bad key
    CheckConfig(CheckConfigArgs),
    /// Diagnose the board, GPIO access, each sensor (with pulse timing) and
    /// the log; one line per problem with its fix
    Doctor(DoctorArgs),
    /// Live terminal dashboard of a running agent, read from its log (works
    /// over SSH; q quits, ? shows the keys)
    Dashboard(DashboardArgs),
    /// The paper's gateway: score raw readings from nodes that do not score
    /// themselves (`<prefix>/+/raw`), log them and publish them on each
    /// node's real-time and batch topics
    Gateway(GatewayArgs),
    /// The paper's processing servers: consume the real-time or the batch
    /// route into `SQLite` or `PostgreSQL`, each reading stored once
    Collect(CollectArgs),
    /// The paper's load experiment: simulated nodes through the gateway into
    /// the collectors, the centralized baseline against the priority routing
    /// and a plain relay
    Bench(BenchArgs),
    /// Replay a recording (the agent's log or a CSV) through validation
    /// and scoring, offline, for the current priority parameters and a grid
    /// of alternatives: what each would have sent real-time
    Tune(TuneArgs),
    /// The plain relay `bench` runs as the ceiling of the broker path
    #[command(hide = true)]
    BenchRelay(BenchRelayArgs),
}

/// Options of `check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The command the file is for: `run` needs a `[[sensor]]`, `gateway`
    /// and `collect` need a broker (`[mqtt]` or `[broker]`) and no sensor
    #[arg(
        long = "for",
        env = "EDGEPRIO_CHECK_FOR",
        value_name = "COMMAND",
        default_value = "run"
    )]
    pub for_command: CheckFor,
}

/// What `check-config --for` checks a file for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFor {
    /// The agent (`run`, `read-once`, `doctor`)
    Run,
    /// `edgeprio gateway`
    Gateway,
    /// `edgeprio collect`
    Collect,
}

/// Options of `gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// `SQLite` log to write (the gateway's outbox), instead of the config's
    /// `db`
    #[arg(long, env = "EDGEPRIO_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// MQTT client id of the raw subscription, under which the broker keeps
    /// its persistent session [default: the config's `client_id` + "-raw"]
    #[arg(long, env = "EDGEPRIO_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,

    /// Most raw messages committed in one transaction; at or below the
    /// broker's in-flight limit for the gateway (Mosquitto's
    /// `max_inflight_messages`, 20 by default)
    #[arg(long, env = "EDGEPRIO_MAX_BATCH", value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_batch: u16,
}

/// Options of `collect`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The route to consume
    #[arg(long, env = "EDGEPRIO_ROUTE", value_name = "ROUTE")]
    pub route: RouteArg,

    /// Where readings go: a `SQLite` file, or `postgres://user@host/db`
    /// (the password in PGPASSWORD or ~/.pgpass, not in the URL)
    #[arg(long, env = "EDGEPRIO_DB", value_name = "FILE|URL")]
    pub db: String,

    /// Join the shared subscription NAME ($share/NAME/...): the broker
    /// splits the route between the collectors of one group
    #[arg(long, env = "EDGEPRIO_GROUP", value_name = "NAME")]
    pub group: Option<String>,

    /// MQTT client id, under which the broker keeps the persistent session;
    /// every collector needs its own [default: the config's `client_id` +
    /// "-collect-<route>" (+ "-<group>")]
    #[arg(long, env = "EDGEPRIO_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,

    /// Most messages committed in one transaction (the real-time route
    /// commits each message on its own); at or below the broker's
    /// in-flight limit (Mosquitto's `max_inflight_messages`, 20 by default)
    #[arg(long, env = "EDGEPRIO_MAX_BATCH", value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_batch: u16,

    /// Run --exec for each stored reading of at least this priority
    #[arg(
        long,
        env = "EDGEPRIO_ON_PRIORITY",
        value_name = "N",
        requires = "exec"
    )]
    pub on_priority: Option<u32>,

    /// Command (run by sh -c) given each such reading as JSON on stdin; it
    /// never holds up the stream
    #[arg(
        long,
        env = "EDGEPRIO_EXEC",
        value_name = "CMD",
        requires = "on_priority"
    )]
    pub exec: Option<String>,

    /// Longest one --exec run may take before it is killed
    #[arg(long, env = "EDGEPRIO_EXEC_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_exec_timeout)]
    pub exec_timeout: Duration,

    /// How long a reading may be missing from the database (a hole in its
    /// stream's seqs) before it is asked for again on its node's resend
    /// topic [default: 3 x the config's `batch_interval`]
    #[arg(long, env = "EDGEPRIO_REPAIR_AFTER", value_name = "DURATION", value_parser = parse_repair_after)]
    pub repair_after: Option<Duration>,
}

/// Options of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How long each mode's load lasts
    #[arg(long, env = "EDGEPRIO_BENCH_DURATION", value_name = "DURATION", default_value = "20s", value_parser = parse_bench_duration)]
    pub duration: Duration,

    /// Simulated nodes, one MQTT connection each
    #[arg(long, env = "EDGEPRIO_BENCH_NODES", value_name = "M", default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub nodes: u16,

    /// Sensors per node
    #[arg(long, env = "EDGEPRIO_BENCH_SENSORS", value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub sensors: u16,

    /// Readings per second in all [default: as fast as the pipeline takes
    /// them, at most --window in flight]
    #[arg(long, env = "EDGEPRIO_BENCH_RATE", value_name = "R", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Use this MQTT broker (mqtt://host:port, anonymous) instead of
    /// starting Mosquitto on a free loopback port
    #[arg(long, env = "EDGEPRIO_BENCH_BROKER", value_name = "URL")]
    pub broker: Option<String>,

    /// Run the collectors into `PostgreSQL` (`postgres://user@host/db`; a
    /// schema `edgeprio_bench_<mode>` per mode, dropped and made anew)
    /// instead of `SQLite` files
    #[arg(long, env = "EDGEPRIO_BENCH_SINK", value_name = "URL")]
    pub sink: Option<String>,

    /// The modes to run, in this order
    #[arg(
        long,
        env = "EDGEPRIO_BENCH_MODES",
        value_name = "MODE,...",
        value_delimiter = ',',
        default_value = "relay,centralized,priority"
    )]
    pub modes: Vec<crate::bench::Mode>,

    /// Most readings in flight end to end (published, not yet stored): the
    /// closed loop that makes "as fast as the pipeline takes them"
    #[arg(long, env = "EDGEPRIO_BENCH_WINDOW", value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(8..))]
    pub window: u32,

    /// The gateway's and the batch collector's --max-batch (the bench's
    /// Mosquitto sends twice as many unacknowledged messages)
    #[arg(long, env = "EDGEPRIO_MAX_BATCH", value_name = "N", default_value_t = 4000, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_batch: u16,

    /// The share of readings that are events (a 3 °C step)
    #[arg(long, env = "EDGEPRIO_BENCH_EVENTS", value_name = "SHARE", default_value_t = 0.03, value_parser = parse_share)]
    pub events: f64,

    /// Write one row per mode here
    #[arg(long, env = "EDGEPRIO_BENCH_CSV", value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Write the whole report here, per-second samples included
    #[arg(long, env = "EDGEPRIO_BENCH_JSON", value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw readings per second over time, beside the paper's figures
    /// (PNG; SVG if the name ends in .svg)
    #[arg(long, env = "EDGEPRIO_BENCH_PLOT", value_name = "FILE.png")]
    pub plot: Option<PathBuf>,

    /// Keep each mode's databases, configs and logs under DIR
    #[arg(long, env = "EDGEPRIO_BENCH_KEEP", value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

/// Options of the hidden `bench-relay`.
#[derive(Debug, Args)]
pub struct BenchRelayArgs {
    /// Most messages taken in one batch
    #[arg(long, env = "EDGEPRIO_MAX_BATCH", value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_batch: u16,
}

/// `bench --duration`: 1 s to 1 h.
fn parse_bench_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_secs(1) || d > Duration::from_hours(1) {
        return Err(format!("{s:?} is outside 1s..1h"));
    }
    Ok(d)
}

/// `bench --rate`: a positive number of readings per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of readings per second"
        )),
    }
}

/// `bench --events`: a share from 0 to 0.5.
fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=0.5).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?} is not a share between 0 and 0.5 (0.03 is 3 %)"
        )),
    }
}

/// Options of `dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// `SQLite` log to watch, instead of the config's `db`
    #[arg(long, env = "EDGEPRIO_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Node to show when the log holds several [default: the one with the
    /// newest heartbeat]
    #[arg(long, env = "EDGEPRIO_NODE", value_name = "NODE")]
    pub node: Option<String>,

    /// How often to re-read the log (10ms to 1h)
    #[arg(long, env = "EDGEPRIO_REFRESH", value_name = "DURATION", default_value = "1s", value_parser = parse_refresh)]
    pub refresh: Duration,
}

/// Options of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Test reads per sensor (2 s apart for a DHT22, 1 s for a DHT11; at
    /// most what fits in 60 s)
    #[arg(long, env = "EDGEPRIO_READS", value_name = "N", default_value_t = 20)]
    pub reads: u32,
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// `SQLite` log to write, instead of the config's `db`
    #[arg(long, env = "EDGEPRIO_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// `SQLite` log to write
    #[arg(
        long,
        env = "EDGEPRIO_DB",
        value_name = "FILE",
        default_value = "edgeprio-demo.db"
    )]
    pub db: PathBuf,

    /// Run time X times faster: a 15 s interval becomes 15/X s (X from
    /// 0.001 to 1000000)
    #[arg(long, env = "EDGEPRIO_SPEED", value_name = "X", default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,

    /// Stop after N readings per sensor
    #[arg(long, env = "EDGEPRIO_COUNT", value_name = "N")]
    pub count: Option<u64>,

    /// Print one line per reading instead of the dashboard (the default
    /// when stdout is not a terminal)
    #[arg(long, env = "EDGEPRIO_NO_DASHBOARD")]
    pub no_dashboard: bool,

    /// Publish to this broker (mqtt://host:port or mqtts://...) instead of
    /// an embedded one on a free loopback port
    #[arg(long, env = "EDGEPRIO_BROKER", value_name = "URL")]
    pub broker: Option<String>,
}

/// Output formats of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people
    Table,
    /// CSV with a header row, column names as in the database
    Csv,
    /// One JSON object per line, in the MQTT payload's shape
    Json,
}

/// A `--route` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RouteArg {
    /// Readings that took the real-time path
    Realtime,
    /// Readings that took the batch path
    Batch,
}

/// Options of `query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// `SQLite` log to read, instead of the config's `db`
    #[arg(long, env = "EDGEPRIO_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Only this sensor id
    #[arg(long, env = "EDGEPRIO_SENSOR", value_name = "ID")]
    pub sensor: Option<String>,

    /// Only readings at or after this time: a duration ago (`2h`, `15min`)
    /// or an RFC 3339 time (`2026-11-25T08:00:00Z`)
    #[arg(long, env = "EDGEPRIO_SINCE", value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<When>,

    /// Only readings before this time (same forms as --since)
    #[arg(long, env = "EDGEPRIO_UNTIL", value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<When>,

    /// Only this route
    #[arg(long, env = "EDGEPRIO_ROUTE", value_name = "ROUTE")]
    pub route: Option<RouteArg>,

    /// Output format
    #[arg(long, env = "EDGEPRIO_FORMAT", default_value = "table")]
    pub format: Format,

    /// Only the newest N matching readings (printed oldest first)
    #[arg(long, env = "EDGEPRIO_LIMIT", value_name = "N")]
    pub limit: Option<u64>,

    /// Keep printing new readings as the agent logs them (Ctrl-C to stop);
    /// starts with the last 10 unless --limit says otherwise
    #[arg(long, env = "EDGEPRIO_FOLLOW")]
    pub follow: bool,
}

/// Options of `tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The agent's `SQLite` log to replay [default: the config's `db`,
    /// unless --csv is given]
    #[arg(long, env = "EDGEPRIO_DB", value_name = "FILE", conflicts_with = "csv")]
    pub db: Option<PathBuf>,

    /// A CSV file to replay instead: a header naming the columns, one
    /// reading per row (`edgeprio query --format csv` writes one)
    #[arg(long, env = "EDGEPRIO_TUNE_CSV", value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Only this node's readings (a log or CSV that holds many)
    #[arg(long, env = "EDGEPRIO_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// Only this sensor's readings
    #[arg(long, env = "EDGEPRIO_SENSOR", value_name = "ID")]
    pub sensor: Option<String>,

    /// Count readings at or after this time: a duration ago (`30d`) or an
    /// RFC 3339 time; earlier ones are still replayed as history
    #[arg(long, env = "EDGEPRIO_SINCE", value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<When>,

    /// Only readings before this time (same forms as --since)
    #[arg(long, env = "EDGEPRIO_UNTIL", value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<When>,

    /// The CSV column of the temperature (°C)
    #[arg(
        long,
        env = "EDGEPRIO_TUNE_TEMPERATURE_COLUMN",
        value_name = "NAME",
        default_value = "temperature_c"
    )]
    pub temperature_column: String,

    /// The CSV column of the relative humidity (%)
    #[arg(
        long,
        env = "EDGEPRIO_TUNE_HUMIDITY_COLUMN",
        value_name = "NAME",
        default_value = "humidity_pct"
    )]
    pub humidity_column: String,

    /// The CSV column of each reading's time: Unix milliseconds if its
    /// name ends in `_ms`, seconds if in `_s`, else numbers from 10^11 up
    /// are milliseconds, smaller ones seconds, and text an RFC 3339 time
    /// [default: `ts_ms` if the file has it, else rows --interval apart]
    #[arg(long, env = "EDGEPRIO_TUNE_TIME_COLUMN", value_name = "NAME")]
    pub time_column: Option<String>,

    /// The spacing of CSV rows without a time column [default: the
    /// config's `interval`]
    #[arg(long, env = "EDGEPRIO_TUNE_INTERVAL", value_name = "DURATION", value_parser = parse_tune_interval)]
    pub interval: Option<Duration>,

    /// Alternative thresholds to try, comma-separated (e.g. 0.03,0.05,0.1)
    #[arg(long, env = "EDGEPRIO_TUNE_THRESHOLD", value_name = "LIST", value_delimiter = ',', value_parser = parse_factor)]
    pub threshold: Vec<f64>,

    /// Alternative steps to try, comma-separated
    #[arg(long, env = "EDGEPRIO_TUNE_STEP", value_name = "LIST", value_delimiter = ',', value_parser = parse_factor)]
    pub step: Vec<f64>,

    /// Alternative dead bands to try, comma-separated, each
    /// `TEMPERATURE:HUMIDITY` (e.g. 0.3:1.5) or a temperature alone
    #[arg(long, env = "EDGEPRIO_TUNE_DEADBAND", value_name = "LIST", value_delimiter = ',', value_parser = parse_deadband)]
    pub deadband: Vec<(f64, Option<f64>)>,

    /// Baselines to try, comma-separated: previous, reported
    #[arg(
        long,
        env = "EDGEPRIO_TUNE_BASELINE",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub baseline: Vec<BaselineArg>,

    /// Alternative `realtime_at` values to try, comma-separated
    #[arg(
        long,
        env = "EDGEPRIO_TUNE_REALTIME_AT",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub realtime_at: Vec<u32>,

    /// The setting whose events are listed and plotted and whose readings
    /// --readings writes: its number in the table (1, the current
    /// parameters, by default)
    #[arg(
        long,
        env = "EDGEPRIO_TUNE_MARK",
        value_name = "N",
        default_value_t = 1
    )]
    pub mark: usize,

    /// How many of the biggest events (and of the rejected rows) to list
    #[arg(
        long,
        env = "EDGEPRIO_TUNE_TOP",
        value_name = "N",
        default_value_t = 10
    )]
    pub top: usize,

    /// Output format
    #[arg(long, env = "EDGEPRIO_FORMAT", default_value = "table")]
    pub format: TuneFormat,

    /// Draw the series with the events of the --mark setting into FILE
    /// (PNG, or SVG for *.svg)
    #[arg(long, env = "EDGEPRIO_TUNE_PLOT", value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Write every replayed reading with its weights, priority and route
    /// under the --mark setting to FILE (CSV)
    #[arg(long, env = "EDGEPRIO_TUNE_READINGS", value_name = "FILE")]
    pub readings: Option<PathBuf>,
}

/// Output formats of `tune`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TuneFormat {
    /// A table per setting, the biggest events and the rejected rows
    Table,
    /// A row per setting
    Csv,
    /// One JSON document with everything
    Json,
}

/// A `--baseline` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BaselineArg {
    /// Against the reading before (the paper's rule)
    Previous,
    /// Against the last reading that went real-time (send-on-delta)
    Reported,
}

/// `tune --interval`: 1 s to 1 day.
fn parse_tune_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_secs(1) || d > Duration::from_hours(24) {
        return Err(format!("{s:?} is outside 1s..24h"));
    }
    Ok(d)
}

/// A threshold or step: as `[priority]` allows them.
fn parse_factor(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= config::FACTOR_MAX => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number greater than 0 and at most {}",
            config::FACTOR_MAX
        )),
    }
}

/// A dead band: `T:H`, or `T` alone.
fn parse_deadband(s: &str) -> Result<(f64, Option<f64>), String> {
    let one = |v: &str, what: &str| match v.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: the {what} dead band {v:?} is not a number of at least 0 \
             (give TEMPERATURE:HUMIDITY, e.g. 0.5:2)"
        )),
    };
    match s.split_once(':') {
        Some((t, h)) => Ok((one(t, "temperature")?, Some(one(h, "humidity")?))),
        None => Ok((one(s, "temperature")?, None)),
    }
}

/// A point in time given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This long before now.
    Ago(Duration),
    /// This instant.
    At(SystemTime),
}

impl When {
    /// Unix milliseconds, relative to `now_ms` for `Ago`.
    pub fn to_ms(self, now_ms: i64) -> i64 {
        match self {
            When::Ago(d) => now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            When::At(t) => t
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

fn parse_when(s: &str) -> Result<When, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(When::Ago(d));
    }
    humantime::parse_rfc3339_weak(s).map(When::At).map_err(|_| {
        format!("{s:?} is neither a duration (`2h`, `30min`) nor an RFC 3339 time (`2026-11-25T08:00:00Z`)")
    })
}

/// The range of `dashboard --refresh`.
const REFRESH_RANGE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_hours(1));

/// `--exec-timeout`: a duration from 10 ms to 1 h.
fn parse_exec_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_millis(10) || d > Duration::from_hours(1) {
        return Err(format!("{s:?} is outside 10ms..1h"));
    }
    Ok(d)
}

fn parse_repair_after(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if (Duration::from_secs(1)..=Duration::from_hours(24)).contains(&d) => Ok(d),
        Ok(_) => Err(format!("{s:?} is out of range; give 1s to 24h, e.g. 3m")),
        Err(e) => Err(format!(
            "{s:?} is not a duration ({e}); give e.g. 3m or 30s"
        )),
    }
}

fn parse_refresh(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if (REFRESH_RANGE.0..=REFRESH_RANGE.1).contains(&d) => Ok(d),
        Ok(_) => Err(format!(
            "{s:?} is out of range; give 10ms to 1h, e.g. 1s or 250ms"
        )),
        Err(e) => Err(format!(
            "{s:?} is not a duration ({e}); give e.g. 1s or 250ms"
        )),
    }
}

/// The range of `demo --speed`: from a thousand times slower to a million
/// times faster than real time.
pub const SPEED_RANGE: (f64, f64) = (0.001, 1_000_000.0);

fn parse_speed(s: &str) -> Result<f64, String> {
    let (min, max) = SPEED_RANGE;
    match s.parse::<f64>() {
        Ok(x) if (min..=max).contains(&x) => Ok(x),
        _ => Err(format!(
            "{s:?} is not a speed factor from {min} to {max}: give a number greater than 0, \
             e.g. 10 or 1000"
        )),
    }
}

/// Parses the command line, runs the command, and maps errors to an exit
/// status. Errors are one paragraph on stderr, never a backtrace.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // rumqttd reports every client that hangs up as an error; the embedded
    // broker's own health shows in the agent's broker state instead.
    let default_log = match cli.command {
        // `tune` replays through the agent's validation, which notes every
        // confirmed event at info.
        Command::Demo(_) | Command::Tune(_) => "warn,rumqttd=off",
        _ => "info,rumqttd=off",
    };
    crate::logging::init(cli.log.as_deref().unwrap_or(default_log));
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // Not eprintln!: a closed or full stderr must not turn an error
            // into a panic.
            // `<3>`: the priority journald gives the line under systemd.
            let prefix = if std::env::var_os("JOURNAL_STREAM").is_some() {
                "<3>"
            } else {
                ""
            };
            let _ = writeln!(std::io::stderr(), "{prefix}error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs the command `cli` names. A command is one variant of [`Command`],
/// one `Args` struct above, one arm here and one module of
/// [`crate::commands`] with its runner.
fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = || {
        cli.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
    };
    match cli.command {
        Command::Run(args) => commands::run::run(&config_path(), &args),
        Command::Demo(args) => commands::demo::run(cli.config.as_deref(), args),
        Command::Query(args) => commands::query::run(&config_path(), &args),
        Command::ReadOnce => commands::read_once::run(&config_path()),
        Command::Dashboard(args) => commands::dashboard::run(&config_path(), args),
        Command::Doctor(args) => commands::doctor::run(&config_path(), &args),
        Command::CheckConfig(args) => commands::check_config::run(&config_path(), &args),
        Command::Gateway(args) => commands::gateway::run(&config_path(), &args),
        Command::Collect(args) => commands::collect::run(&config_path(), &args),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Tune(args) => commands::tune::run(cli.config.as_deref(), &args),
        Command::BenchRelay(args) => commands::bench::relay(&config_path(), &args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_has_an_env_var() {
        fn walk(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                assert!(
                    builtin || arg.get_env().is_some(),
                    "{} --{} has no env var",
                    cmd.get_name(),
                    arg.get_id()
                );
            }
            cmd.get_subcommands().for_each(walk);
        }
        walk(&Cli::command());
    }

    #[test]
    fn when_parses_durations_and_timestamps() {
        assert_eq!(parse_when("2h"), Ok(When::Ago(Duration::from_hours(2))));
        let at = parse_when("2026-11-25T08:00:00Z").unwrap();
        assert_eq!(at.to_ms(0), 1_795_593_600_000);
        assert!(parse_when("yesterday").is_err());
        assert_eq!(When::Ago(Duration::from_secs(1)).to_ms(5_000), 4_000);
    }

    #[test]
    fn speed_must_be_positive() {
        assert!(parse_speed("0").is_err());
        assert!(parse_speed("-2").is_err());
        assert!(parse_speed("nan").is_err());
        assert_eq!(parse_speed("1000"), Ok(1000.0));
    }
}
