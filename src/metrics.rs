//! The Prometheus endpoint (`[metrics] listen = "127.0.0.1:9184"`): what the
//! agent is doing, for a Prometheus (or anything that reads its text
//! formats) to scrape from `GET /metrics`.
//!
//! The agent only bumps atomic counters ([`Metrics::record_cycle`],
//! [`Metrics::set_broker`]); the exposition is built when a scrape arrives,
//! on the endpoint's own task, so a slow or hostile client never holds up a
//! read cycle. Every connection is accepted at once; at most 64 are held
//! (the oldest idle one is closed for a new one), and one that sends no
//! request within 3 s is closed: idle clients cannot keep a scrape
//! waiting. `prometheus-client` writes the text formats; HTTP is hyper's
//! (already compiled in for the embedded broker's console).
//!
//! # Series
//!
//! Every series carries `node`. Labels only come from the configured
//! sensors and fixed enums, so the number of series is fixed at start-up.
//!
//! | series | type | labels |
//! | --- | --- | --- |
//! | `edgeprio_readings_total` | counter | `sensor`, `route` |
//! | `edgeprio_read_failures_total` | counter | `sensor`, `kind` |
//! | `edgeprio_last_reading_age_seconds` | gauge, computed at scrape time on the monotonic clock | `sensor` |
//! | `edgeprio_sensor_burst` | gauge, 1 while the sensor is read at the `[priority] burst` interval; only with `burst` configured | `sensor` |
//! | `edgeprio_outbox_depth` | gauge | |
//! | `edgeprio_broker_connected` | gauge, 0 or 1; absent without a broker | |
//! | `edgeprio_resend_requests_total` | counter; absent without a broker | `outcome` |
//! | `edgeprio_resent_readings_total`, `edgeprio_resend_gone_total` | counter; absent without a broker | |
//! | `edgeprio_resend_queued` | gauge; absent without a broker | |
//! | `edgeprio_clock_jumps_total` | counter: the wall clock was set by more than 2 s | `direction` (`forward`, `backward`) |
//! | `edgeprio_clock_synchronized` | gauge, 1 or 0 as the kernel said last cycle; absent when unknown | |
//! | `edgeprio_build_info` | info | `version`, `arch`, `os` |
//!
//! A sensor that has produced no reading since start has no age series,
//! and the outbox depth appears after the first commit.
//!
//! `gateway` and `collect` add their [`ServerSeries`]: `consumer_messages`
//! (`result`), `consumer_redelivered`, `consumer_commit_failures`,
//! `consumer_connected`, and `gateway_readings` (`route`),
//! `gateway_duplicates`, `gateway_rejected` (`kind`, the fixed
//! [`crate::gateway::reject_kinds`]), `gateway_streams`, or
//! `collect_readings` (`route`, `result`).
//!
//! # Troubleshooting
//!
//! - "address in use": another program (often a second agent) listens on
//!   that port; `ss -ltnp 'sport = :9184'` names it.
//! - Prometheus on another machine gets "connection refused": the example
//!   listens on 127.0.0.1, this machine only; use `0.0.0.0:9184` to serve
//!   the network (the endpoint has no authentication).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

use crate::agent::CycleReport;
use crate::clock::{Clock, ClockSync, Now, SystemClock};
use crate::config::Config;
use crate::domain::{ErrorKind, Route};
use crate::store::BrokerState;

/// The routes, in the order their series are listed.
const ROUTES: [Route; 2] = [Route::Realtime, Route::Batch];

/// Longest a scrape connection may stay open, request and answer included:
/// a scrape takes milliseconds, and a client that trickles bytes must not
/// hold a connection slot for ever.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the request head may take to arrive: a scraper sends it as
/// soon as it connects, so a connection still silent after this is idle
/// and is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest request head read (hyper's minimum buffer): a scrape request is a
/// few hundred bytes; anything larger is answered 431 and dropped.
const MAX_REQUEST: usize = 8 * 1024;

/// Connections held at once. Every connection is accepted at once (a
/// scrape never waits behind idle ones in the listen backlog); past this
/// many, the oldest one that has not sent its request yet is closed to make
/// room, so memory stays bounded whoever connects and however many.
const MAX_CONNECTIONS: usize = 64;

/// Pause after a failed `accept` (out of file descriptors, say), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `Content-Type` of the `OpenMetrics` text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `edgeprio_broker_connected` has no series: no broker is configured.
const BROKER_DISABLED: u8 = 0;
/// The broker is configured but not connected.
const BROKER_DOWN: u8 = 1;
/// The broker is connected.
const BROKER_UP: u8 = 2;

/// The agent's counters, shared by the agent (which records) and the
/// endpoint (which reads). Cheap to clone; recording is a few relaxed
/// atomic operations and never blocks.
#[derive(Clone)]
pub struct Metrics {
    /// The counters, shared by every clone.
    state: Arc<State>,
    /// The clocks reading ages are measured on; a hand-set one in tests.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    /// The `node` label of every series.
    node: String,
    /// One entry per configured sensor, in config order: the only sensor
    /// labels there will ever be.
    sensors: Vec<SensorCounters>,
    /// Readings waiting for the broker; `u64::MAX` until a commit reports it.
    outbox_depth: AtomicU64,
    /// One of the `BROKER_*` values.
    broker: AtomicU8,
    /// Wall-clock jumps seen by the read cycle, indexed like
    /// [`JUMP_DIRECTIONS`]: a Pi's clock set by NTP after boot, or set back.
    clock_jumps: [AtomicU64; JUMP_DIRECTIONS.len()],
    /// What the kernel said about the clock last cycle (a [`ClockSync`]
    /// as [`sync_code`] numbers it).
    clock_sync: AtomicU8,
    /// The series of a server command (`gateway`, `collect`), set once
    /// when it starts; the agent has none.
    server: std::sync::OnceLock<ServerSeries>,
    /// Whether `[priority] burst` is configured: the burst series exists.
    burst: bool,
    /// What the publisher served of consumers' resend requests; the
    /// series exist when a broker is configured.
    resend: Arc<crate::publish::resend::ResendCounts>,
}

/// A [`ClockSync`] as an atomic holds it.
fn sync_code(sync: ClockSync) -> u8 {
    match sync {
        ClockSync::Unknown => 0,
        ClockSync::Unsynced => 1,
        ClockSync::Synced => 2,
    }
}

/// The [`ClockSync`] of [`sync_code`]'s number.
fn sync_of_code(code: u8) -> ClockSync {
    match code {
        1 => ClockSync::Unsynced,
        2 => ClockSync::Synced,
        _ => ClockSync::Unknown,
    }
}

/// The `direction` labels of `edgeprio_clock_jumps_total`.
const JUMP_DIRECTIONS: [&str; 2] = ["forward", "backward"];

#[derive(Debug)]
struct SensorCounters {
    /// The sensor's id from the config: its `sensor` label.
    id: String,
    /// Readings per route, indexed like [`ROUTES`].
    readings: [AtomicU64; ROUTES.len()],
    /// Failed reads per kind, indexed like [`ErrorKind::ALL`].
    failures: [AtomicU64; ErrorKind::ALL.len()],
    /// When the newest reading was taken, on the monotonic clock, in ms
    /// plus one; 0 until the first. Its age is measured on the monotonic
    /// clock, so setting the wall clock neither ages nor rejuvenates it
    /// (a dead sensor's age keeps growing after the clock is set back).
    last_taken: AtomicU64,
    /// Whether it is in burst after the last cycle.
    burst: std::sync::atomic::AtomicBool,
}

impl Metrics {
    /// Counters for `config`'s node and sensors, all at zero. The broker
    /// series starts at 0 when `[mqtt]` (or `[broker]`) is configured and is
    /// absent otherwise.
    pub fn new(config: &Config) -> Self {
        Self::with_clock(config, Arc::new(SystemClock::new()))
    }

    /// [`Metrics::new`] with reading ages measured against `clock`.
    pub fn with_clock(config: &Config, clock: Arc<dyn Clock>) -> Self {
        let sensors = config
            .sensors
            .iter()
            .map(|s| SensorCounters {
                id: s.id.clone(),
                readings: Default::default(),
                failures: Default::default(),
                last_taken: AtomicU64::new(0),
                burst: std::sync::atomic::AtomicBool::new(false),
            })
            .collect();
        let broker = if config.mqtt.is_some() {
            BROKER_DOWN
        } else {
            BROKER_DISABLED
        };
        Self {
            state: Arc::new(State {
                node: config.node.clone(),
                sensors,
                outbox_depth: AtomicU64::new(u64::MAX),
                broker: AtomicU8::new(broker),
                clock_jumps: Default::default(),
                clock_sync: AtomicU8::new(sync_code(ClockSync::Unknown)),
                server: std::sync::OnceLock::new(),
                burst: config.burst.is_some(),
                resend: Arc::default(),
            }),
            clock,
        }
    }

    /// Counts a cycle's readings and failed reads, and takes its outbox
    /// depth. Readings count when they are taken, whether or not their
    /// commit has succeeded yet (a failed commit keeps them for the next).
    pub fn record_cycle(&self, report: &CycleReport) {
        for r in &report.readings {
            self.reading(&r.sensor, r.route, r.ts_ms);
        }
        for e in &report.errors {
            self.read_failure(&e.sensor, e.kind);
        }
        if let Some(depth) = report.outbox_depth {
            self.set_outbox_depth(depth);
        }
        if let Some(jump) = report.clock_jump {
            let i = usize::from(!jump.forward());
            self.state.clock_jumps[i].fetch_add(1, Relaxed);
        }
        self.state
            .clock_sync
            .store(sync_code(report.clock_sync), Relaxed);
        for sensor in &self.state.sensors {
            sensor
                .burst
                .store(report.burst.contains(&sensor.id), Relaxed);
        }
    }

    /// Counts one reading of `sensor`, taken at `ts_ms` (Unix ms), sent on
    /// `route`. Unknown sensors are ignored: labels come from the config.
    /// The reading is recorded moments after it was taken: its wall-clock
    /// age now (0 if negative) dates it on the monotonic clock.
    pub fn reading(&self, sensor: &str, route: Route, ts_ms: i64) {
        if let Some(s) = self.sensor(sensor) {
            let i = match route {
                Route::Realtime => 0,
                Route::Batch => 1,
            };
            s.readings[i].fetch_add(1, Relaxed);
            let now = self.clock.now();
            let age = u64::try_from(now.wall_ms.saturating_sub(ts_ms)).unwrap_or(0);
            let taken = millis(now.mono).saturating_sub(age);
            s.last_taken.fetch_max(taken.saturating_add(1), Relaxed);
        }
    }

    /// Counts one failed or rejected read of `sensor`.
    pub fn read_failure(&self, sensor: &str, kind: ErrorKind) {
        if let Some(s) = self.sensor(sensor) {
            let i = ErrorKind::ALL
                .iter()
                .position(|k| *k == kind)
                .expect("ErrorKind::ALL lists every kind");
            s.failures[i].fetch_add(1, Relaxed);
        }
    }

    /// Sets the number of readings waiting for the broker.
    pub fn set_outbox_depth(&self, depth: u64) {
        // u64::MAX means "not known yet"; no outbox gets that deep.
        self.state
            .outbox_depth
            .store(depth.min(u64::MAX - 1), Relaxed);
    }

    /// Sets the broker connection state; `Disabled` removes the series.
    pub fn set_broker(&self, state: BrokerState) {
        let v = match state {
            BrokerState::Disabled => BROKER_DISABLED,
            BrokerState::Connecting | BrokerState::Disconnected => BROKER_DOWN,
            BrokerState::Connected => BROKER_UP,
        };
        self.state.broker.store(v, Relaxed);
    }

    /// The exposition in `format`, with reading ages as of `now` (on its
    /// monotonic clock, which must be this `Metrics`' clock).
    pub fn encode(&self, now: Now, format: Format) -> String {
        let node = (Cow::Borrowed("node"), Cow::Owned(self.state.node.clone()));
        let mut registry = Registry::with_prefix_and_labels("edgeprio", std::iter::once(node));
        registry.register_collector(Box::new(Scrape {
            state: self.state.clone(),
            now_ms: millis(now.mono),
        }));
        let mut out = String::with_capacity(4096);
        match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
        }
        .expect("writing to a String cannot fail");
        out
    }

    /// The resend counters the publisher bumps.
    pub fn resend_counts(&self) -> Arc<crate::publish::resend::ResendCounts> {
        self.state.resend.clone()
    }

    /// Adds the series of a server command; the first call wins.
    pub fn serve_as(&self, series: ServerSeries) {
        let _ = self.state.server.set(series);
    }

    fn sensor(&self, id: &str) -> Option<&SensorCounters> {
        self.state.sensors.iter().find(|s| s.id == id)
    }
}

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `OpenMetrics` 1.0 text, what Prometheus asks for.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everything else (curl, older
    /// scrapers).
    Prometheus,
}

impl Format {
    /// The format a request's `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let q = parts
                    .find_map(|p| p.strip_prefix("q="))
                    .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
                media.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Milliseconds of a monotonic time.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One scrape's view of the counters, with the time the ages are taken at.
#[derive(Debug)]
struct Scrape {
    /// The counters to read.
    state: Arc<State>,
    /// Monotonic ms the reading ages are measured at.
    now_ms: u64,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.state;
        {
            let mut family = encoder.encode_descriptor(
                "readings",
                "Readings taken, by the path their priority chose.",
                None,
                MetricType::Counter,
            )?;
            for sensor in &s.sensors {
                for (route, n) in ROUTES.iter().zip(&sensor.readings) {
                    let labels = [("sensor", sensor.id.as_str()), ("route", route.as_str())];
                    ConstCounter::new(n.load(Relaxed)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "read_failures",
                "Reads that produced no reading, by cause.",
                None,
                MetricType::Counter,
            )?;
            for sensor in &s.sensors {
                for (kind, n) in ErrorKind::ALL.iter().zip(&sensor.failures) {
                    let labels = [("sensor", sensor.id.as_str()), ("kind", kind.as_str())];
                    ConstCounter::new(n.load(Relaxed)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "last_reading_age",
                "Time since the sensor's newest reading was taken.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for sensor in &s.sensors {
                let taken = sensor.last_taken.load(Relaxed);
                if taken != 0 {
                    let age = self.now_ms.saturating_sub(taken - 1) as f64 / 1000.0;
                    let labels = [("sensor", sensor.id.as_str())];
                    ConstGauge::new(age).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        encode_burst(s, &mut encoder)?;
        if s.broker.load(Relaxed) != BROKER_DISABLED {
            encode_resend(&s.resend, &mut encoder)?;
        }
        let depth = s.outbox_depth.load(Relaxed);
        if depth != u64::MAX {
            let gauge = encoder.encode_descriptor(
                "outbox_depth",
                "Readings in the log not yet acknowledged by the broker.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::try_from(depth).unwrap_or(i64::MAX)).encode(gauge)?;
        }
        let broker = s.broker.load(Relaxed);
        if broker != BROKER_DISABLED {
            let gauge = encoder.encode_descriptor(
                "broker_connected",
                "Whether the MQTT broker is connected (1) or not (0).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(broker == BROKER_UP)).encode(gauge)?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "clock_jumps",
                "Times the system clock was set by more than 2 s, by direction.",
                None,
                MetricType::Counter,
            )?;
            for (direction, n) in JUMP_DIRECTIONS.iter().zip(&s.clock_jumps) {
                ConstCounter::new(n.load(Relaxed))
                    .encode(family.encode_family(&[("direction", *direction)])?)?;
            }
        }
        if let Some(synced) = sync_of_code(s.clock_sync.load(Relaxed)).as_bool() {
            let gauge = encoder.encode_descriptor(
                "clock_synchronized",
                "Whether the kernel said the system clock was synchronized (1) or not (0) \
                 last cycle.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(synced)).encode(gauge)?;
        }
        if let Some(server) = s.server.get() {
            server.encode(&mut encoder)?;
        }
        encode_build(encoder)
    }
}

/// `edgeprio_build_info`.
/// `edgeprio_sensor_burst`, when `[priority] burst` is configured.
fn encode_burst(s: &State, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
    if !s.burst {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        "sensor_burst",
        "Whether the sensor is read at the [priority] burst interval (1) or not (0).",
        None,
        MetricType::Gauge,
    )?;
    for sensor in &s.sensors {
        let labels = [("sensor", sensor.id.as_str())];
        ConstGauge::new(i64::from(sensor.burst.load(Relaxed)))
            .encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_resend(
    r: &crate::publish::resend::ResendCounts,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), fmt::Error> {
    use crate::publish::resend::Outcome;
    {
        let mut family = encoder.encode_descriptor(
            "resend_requests",
            "Consumers' resend requests, by what became of them (queued, coalesced with \
             what was queued, dropped for a full queue, invalid, for an unknown node or \
             sensor, for another log).",
            None,
            MetricType::Counter,
        )?;
        for outcome in Outcome::ALL {
            ConstCounter::new(r.requests(outcome))
                .encode(family.encode_family(&[("outcome", outcome.as_str())])?)?;
        }
    }
    ConstCounter::new(r.resent.load(Relaxed)).encode(encoder.encode_descriptor(
        "resent_readings",
        "Readings sent again from the log on consumers' requests.",
        None,
        MetricType::Counter,
    )?)?;
    ConstCounter::new(r.gone.load(Relaxed)).encode(encoder.encode_descriptor(
        "resend_gone",
        "Seqs asked for that the log no longer has, answered as gone.",
        None,
        MetricType::Counter,
    )?)?;
    ConstGauge::new(i64::try_from(r.queued.load(Relaxed)).unwrap_or(i64::MAX)).encode(
        encoder.encode_descriptor(
            "resend_queued",
            "Seqs waiting to be sent again.",
            None,
            MetricType::Gauge,
        )?,
    )?;
    Ok(())
}

fn encode_build(mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
    let info = Info::new([
        ("version", env!("CARGO_PKG_VERSION")),
        ("arch", std::env::consts::ARCH),
        ("os", std::env::consts::OS),
    ]);
    info.encode(encoder.encode_descriptor(
        "build",
        "The running edgeprio.",
        None,
        MetricType::Info,
    )?)
}

/// The series of `gateway` and `collect`: their consumer's, and their
/// own. Everything is read from atomics (and the consumer's status
/// channel) at scrape time.
#[derive(Debug)]
pub struct ServerSeries {
    /// The committing consumer's counters.
    consumer: crate::consume::Stats,
    /// Its connection, as last reported.
    connection: tokio::sync::watch::Receiver<crate::consume::ConnectionStatus>,
    /// What the command itself counts.
    role: ServerRole,
}

/// Which server a [`ServerSeries`] is of.
#[derive(Debug)]
pub enum ServerRole {
    /// `edgeprio gateway`.
    Gateway(Arc<crate::gateway::GatewayCounters>),
    /// `edgeprio collect --route R`, with its repairer's counts.
    Collect(
        Route,
        Arc<crate::collect::CollectCounts>,
        Arc<crate::collect::repair::RepairCounts>,
    ),
}

impl ServerSeries {
    /// The series of a server whose consumer is `consumer`.
    pub fn new(consumer: &crate::consume::Consumer, role: ServerRole) -> Self {
        Self {
            consumer: consumer.stats(),
            connection: consumer.status(),
            role,
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let c = self.consumer.snapshot();
        {
            let mut family = encoder.encode_descriptor(
                "consumer_messages",
                "Messages the consumer handed over, by what became of them (rejected ones \
                 are acknowledged and never stored).",
                None,
                MetricType::Counter,
            )?;
            for (result, n) in [("committed", c.committed), ("rejected", c.rejected)] {
                ConstCounter::new(n).encode(family.encode_family(&[("result", result)])?)?;
            }
        }
        ConstCounter::new(c.redelivered).encode(encoder.encode_descriptor(
            "consumer_redelivered",
            "Messages the broker flagged as delivered again (dup).",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(c.handler_failures).encode(encoder.encode_descriptor(
            "consumer_commit_failures",
            "Batches that could not be committed (each retry counts); nothing of them was \
             acknowledged.",
            None,
            MetricType::Counter,
        )?)?;
        let up = self.connection.borrow().state == BrokerState::Connected;
        ConstGauge::new(i64::from(up)).encode(encoder.encode_descriptor(
            "consumer_connected",
            "Whether the consumer is connected and subscribed (1) or not (0).",
            None,
            MetricType::Gauge,
        )?)?;
        match &self.role {
            ServerRole::Gateway(g) => encode_gateway(g, encoder),
            ServerRole::Collect(route, counts, repair) => {
                {
                    let mut family = encoder.encode_descriptor(
                        "collect_readings",
                        "Readings committed by the collector: new ones, and those the database \
                     already had.",
                        None,
                        MetricType::Counter,
                    )?;
                    let load = |a: &AtomicU64| a.load(Relaxed);
                    for (result, n) in [
                        ("inserted", load(&counts.inserted)),
                        ("duplicate", load(&counts.duplicates)),
                    ] {
                        let labels = [("route", route.as_str()), ("result", result)];
                        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                    }
                }
                encode_repair(repair, encoder)
            }
        }
    }
}

/// A collector's gap repair: per node of the database (label
/// `source_node`), as of its last scan.
fn encode_repair(
    r: &crate::collect::repair::RepairCounts,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), fmt::Error> {
    let nodes = r.nodes();
    let gauge = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
    for (name, help, of) in [
        (
            "collect_missing",
            "Readings missing from the database past the grace period, asked for again.",
            (|g: &crate::collect::gaps::NodeGaps| g.missing) as fn(&_) -> u64,
        ),
        (
            "collect_unrecoverable",
            "Readings missing from the database that their node no longer has.",
            |g| g.unrecoverable,
        ),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (node, g) in &nodes {
            gauge(of(g)).encode(family.encode_family(&[("source_node", node.as_str())])?)?;
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "collect_repaired",
            "Readings that reached the database after they were asked for again.",
            None,
            MetricType::Counter,
        )?;
        for (node, g) in &nodes {
            ConstCounter::new(g.repaired)
                .encode(family.encode_family(&[("source_node", node.as_str())])?)?;
        }
    }
    ConstCounter::new(r.requests.load(Relaxed)).encode(encoder.encode_descriptor(
        "collect_resend_requests",
        "Resend requests this collector sent.",
        None,
        MetricType::Counter,
    )?)?;
    ConstGauge::new(i64::from(r.asking.load(Relaxed))).encode(encoder.encode_descriptor(
        "collect_repair_active",
        "Whether missing readings are asked for (1): the database receives both routes and a \
         batch collector runs; or not (0).",
        None,
        MetricType::Gauge,
    )?)?;
    Ok(())
}

/// The gateway's own series.
fn encode_gateway(
    g: &crate::gateway::GatewayCounters,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), fmt::Error> {
    let load = |a: &AtomicU64| a.load(Relaxed);
    {
        let mut family = encoder.encode_descriptor(
            "gateway_readings",
            "Raw readings the gateway scored and logged, by route.",
            None,
            MetricType::Counter,
        )?;
        for (route, n) in [("realtime", load(&g.realtime)), ("batch", load(&g.batch))] {
            ConstCounter::new(n).encode(family.encode_family(&[("route", route)])?)?;
        }
    }
    ConstCounter::new(load(&g.duplicates)).encode(encoder.encode_descriptor(
        "gateway_duplicates",
        "Raw readings delivered again that the log already had.",
        None,
        MetricType::Counter,
    )?)?;
    {
        let mut family = encoder.encode_descriptor(
            "gateway_rejected",
            "Raw messages refused, by what was wrong.",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in crate::gateway::reject_kinds().zip(&g.rejected) {
            ConstCounter::new(load(n)).encode(family.encode_family(&[("kind", kind)])?)?;
        }
    }
    ConstGauge::new(i64::try_from(load(&g.streams)).unwrap_or(i64::MAX)).encode(
        encoder.encode_descriptor(
            "gateway_streams",
            "The (node, sensor) streams the gateway keeps state for.",
            None,
            MetricType::Gauge,
        )?,
    )?;
    Ok(())
}

/// Why the endpoint could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// Another program already listens on the address.
    #[error(
        "cannot serve metrics on metrics.listen = \"{listen}\": the address is already in use; \
         stop the program using it (`ss -ltnp 'sport = :{}'` names it) or pick another port",
        listen.port()
    )]
    AddrInUse {
        /// The configured address.
        listen: SocketAddr,
    },
    /// The port is privileged.
    #[error(
        "cannot serve metrics on metrics.listen = \"{listen}\": permission denied; ports below \
         1024 need root or CAP_NET_BIND_SERVICE, use a port such as 9184"
    )]
    PermissionDenied {
        /// The configured address.
        listen: SocketAddr,
    },
    /// The address belongs to no interface of this machine.
    #[error(
        "cannot serve metrics on metrics.listen = \"{listen}\": {} is not an address of this \
         machine; use 127.0.0.1 (this machine only) or 0.0.0.0 (the whole network)",
        listen.ip()
    )]
    AddrNotAvailable {
        /// The configured address.
        listen: SocketAddr,
    },
    /// Any other failure to listen.
    #[error("cannot serve metrics on metrics.listen = \"{listen}\": {reason}")]
    Listen {
        /// The configured address.
        listen: SocketAddr,
        /// What the operating system said.
        reason: String,
    },
}

/// Listens on `listen`, with the errors phrased for whoever wrote it in the
/// config.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(listen).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => MetricsError::AddrInUse { listen },
        std::io::ErrorKind::PermissionDenied => MetricsError::PermissionDenied { listen },
        std::io::ErrorKind::AddrNotAvailable => MetricsError::AddrNotAvailable { listen },
        _ => MetricsError::Listen {
            listen,
            reason: e.to_string(),
        },
    })
}

/// A running endpoint; dropping it stops the endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// What was bound, for the log line and for tests that bind port 0.
    local_addr: SocketAddr,
    /// The serving task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Binds `listen` and serves `metrics` from a task on the current
    /// runtime until the endpoint is dropped.
    pub async fn start(listen: SocketAddr, metrics: Metrics) -> Result<Endpoint, MetricsError> {
        let listener = bind(listen).await?;
        let local_addr = listener.local_addr().map_err(|e| MetricsError::Listen {
            listen,
            reason: e.to_string(),
        })?;
        tracing::info!(%local_addr, "metrics endpoint listening on /metrics");
        let task = tokio::spawn(serve(listener, metrics, std::future::pending()));
        Ok(Endpoint { local_addr, task })
    }

    /// The address actually bound (the port, when `listen` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and returns once the listening socket is closed, so
    /// the address can be bound again at once (a reload). Dropping the
    /// endpoint only asks the task to stop; the socket closes a moment
    /// later, on a runtime thread.
    pub async fn stop(mut self) {
        self.task.abort();
        // The task's only outcome now is cancelled (or, had it panicked,
        // the panic): either way its future, and the socket, are gone.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection being served.
struct Held {
    /// Its task, to close it early.
    task: AbortHandle,
    /// Set once its request head has arrived: until then it is idle.
    asked: Arc<AtomicBool>,
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves; scrapes
/// in flight then are dropped.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    // Dropping the set when the loop ends aborts the scrapes in flight.
    let mut connections = JoinSet::new();
    // Oldest first.
    let mut held: VecDeque<Held> = VecDeque::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    held.retain(|h| !h.task.is_finished());
                    if held.len() >= MAX_CONNECTIONS {
                        // An idle one, or else the oldest: a scrape is
                        // answered in milliseconds, so it is a slow reader.
                        let i = held
                            .iter()
                            .position(|h| !h.asked.load(Relaxed))
                            .unwrap_or(0);
                        if let Some(h) = held.remove(i) {
                            h.task.abort();
                        }
                    }
                    let asked = Arc::new(AtomicBool::new(false));
                    let scrape = connection(stream, metrics.clone(), asked.clone());
                    let task = connections.spawn(serve_one(scrape, asked.clone()));
                    held.push_back(Held { task, asked });
                }
                Err(e) => {
                    tracing::warn!("metrics endpoint: cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

/// Runs `scrape` within the time limits: closed if its request head has
/// not arrived after [`HEADER_TIMEOUT`] (`asked` says whether it has),
/// and after [`CONNECTION_TIMEOUT`] in any case.
async fn serve_one(scrape: impl Future<Output = ()>, asked: Arc<AtomicBool>) {
    tokio::pin!(scrape);
    tokio::select! {
        () = &mut scrape => return,
        () = tokio::time::sleep(HEADER_TIMEOUT) => {}
    }
    if asked.load(Relaxed) {
        // Running out of time only ends a stuck client's connection.
        let _ =
            tokio::time::timeout(CONNECTION_TIMEOUT.saturating_sub(HEADER_TIMEOUT), scrape).await;
    }
}

/// Answers the one request of a connection; sets `asked` when it arrives.
async fn connection(stream: TcpStream, metrics: Metrics, asked: Arc<AtomicBool>) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        asked.store(true, Relaxed);
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let response = respond(req.method(), req.uri().path(), accept, &metrics);
        async move { Ok::<_, Infallible>(response) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        // One request per connection: a scraper reconnects every interval
        // anyway, and no idle connection holds a slot.
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!("metrics endpoint: a scrape failed: {e}");
    }
}

/// The answer to `method path`: the exposition, 404 or 405.
fn respond(
    method: &Method,
    path: &str,
    accept: Option<&str>,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if path != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let format = Format::negotiate(accept);
    let body = metrics.encode(metrics.clock.now(), format);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use std::sync::atomic::AtomicI64;

    use super::*;
    use crate::domain::{PerChannel, Reading, Sample, SensorError};

    /// 2023-11-14T22:13:20Z: the first cycle of the tests.
    const T0: i64 = 1_700_000_000_000;

    /// Time that only moves when a test says so: the wall clock, and a
    /// monotonic clock that started an hour before T0 unless the wall clock
    /// was set (`set_wall`).
    struct FixedClock(AtomicI64, AtomicI64);

    impl FixedClock {
        fn at(wall_ms: i64) -> Arc<Self> {
            Arc::new(FixedClock(AtomicI64::new(wall_ms), AtomicI64::new(0)))
        }
        /// Time passes until the wall clock says `wall_ms`.
        fn pass_to(&self, wall_ms: i64) {
            self.0.store(wall_ms, Relaxed);
        }
        /// The wall clock is set by `by_ms`; no time passes.
        fn set_wall(&self, by_ms: i64) {
            self.0.fetch_add(by_ms, Relaxed);
            self.1.fetch_add(by_ms, Relaxed);
        }
    }

    impl Clock for FixedClock {
        fn monotonic(&self) -> Duration {
            let wall = self.0.load(Relaxed) - self.1.load(Relaxed);
            Duration::from_millis(u64::try_from(wall - T0 + 3_600_000).unwrap())
        }
        fn wall_ms(&self) -> i64 {
            self.0.load(Relaxed)
        }
        fn sleep(&self, _: Duration) {}
    }

    /// Node `pi` with sensors `lab` and `hall`, and `extra` TOML tables.
    fn config(extra: &str) -> Config {
        Config::parse(
            &format!(
                "node = \"pi\"\n{extra}\n\
                 [[sensor]]\nid = \"lab\"\nkind = \"sim\"\n\
                 [[sensor]]\nid = \"hall\"\nkind = \"sim\"\n"
            ),
            None,
        )
        .unwrap()
    }

    fn reading(sensor: &str, route: Route, ts_ms: i64) -> Reading {
        Reading {
            node: "pi".into(),
            sensor: sensor.into(),
            seq: 0,
            ts_ms,
            sample: Sample::new(21.5, 40.0),
            weights: PerChannel {
                temperature: 0,
                humidity: 0,
            },
            priority: 0,
            route,
            clock_synced: None,
        }
    }

    fn failure(sensor: &str, kind: ErrorKind, ts_ms: i64) -> SensorError {
        SensorError {
            ts_ms,
            sensor: sensor.into(),
            kind,
            detail: String::new(),
        }
    }

    /// Three cycles, 15 s apart from `T0`: `lab` reads real-time every
    /// time, `hall` once on the batch path and then fails its checksum.
    fn three_cycles(m: &Metrics, clock: &FixedClock) {
        let cycles = [
            (
                vec![
                    reading("lab", Route::Realtime, T0),
                    reading("hall", Route::Batch, T0),
                ],
                vec![],
                2,
            ),
            (
                vec![reading("lab", Route::Realtime, T0 + 15_000)],
                vec![failure("hall", ErrorKind::Checksum, T0 + 15_000)],
                3,
            ),
            (
                vec![reading("lab", Route::Realtime, T0 + 30_000)],
                vec![failure("hall", ErrorKind::Checksum, T0 + 30_000)],
                5,
            ),
        ];
        for (i, (readings, errors, depth)) in cycles.into_iter().enumerate() {
            clock.pass_to(T0 + 15_000 * i64::try_from(i).unwrap());
            m.record_cycle(&CycleReport {
                readings,
                errors,
                outbox_depth: Some(depth),
                // NTP set the clock forward during the second cycle.
                clock_jump: (i == 1).then_some(crate::clock::Jump { by_ms: 60_000 }),
                ..CycleReport::default()
            });
        }
    }

    fn build_info() -> String {
        format!(
            "edgeprio_build_info{{node=\"pi\",version=\"{}\",arch=\"{}\",os=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            std::env::consts::OS
        )
    }

    /// What a scrape at `T0 + 32.5 s` after [`three_cycles`] shows, with
    /// the broker connected.
    fn expected_openmetrics() -> String {
        let series = r#"# HELP edgeprio_readings Readings taken, by the path their priority chose.
# TYPE edgeprio_readings counter
edgeprio_readings_total{node="pi",sensor="lab",route="realtime"} 3
edgeprio_readings_total{node="pi",sensor="lab",route="batch"} 0
edgeprio_readings_total{node="pi",sensor="hall",route="realtime"} 0
edgeprio_readings_total{node="pi",sensor="hall",route="batch"} 1
# HELP edgeprio_read_failures Reads that produced no reading, by cause.
# TYPE edgeprio_read_failures counter
edgeprio_read_failures_total{node="pi",sensor="lab",kind="timeout"} 0
edgeprio_read_failures_total{node="pi",sensor="lab",kind="checksum"} 0
edgeprio_read_failures_total{node="pi",sensor="lab",kind="range"} 0
edgeprio_read_failures_total{node="pi",sensor="lab",kind="spike"} 0
edgeprio_read_failures_total{node="pi",sensor="lab",kind="io"} 0
edgeprio_read_failures_total{node="pi",sensor="hall",kind="timeout"} 0
edgeprio_read_failures_total{node="pi",sensor="hall",kind="checksum"} 2
edgeprio_read_failures_total{node="pi",sensor="hall",kind="range"} 0
edgeprio_read_failures_total{node="pi",sensor="hall",kind="spike"} 0
edgeprio_read_failures_total{node="pi",sensor="hall",kind="io"} 0
# HELP edgeprio_last_reading_age_seconds Time since the sensor's newest reading was taken.
# TYPE edgeprio_last_reading_age_seconds gauge
# UNIT edgeprio_last_reading_age_seconds seconds
edgeprio_last_reading_age_seconds{node="pi",sensor="lab"} 2.5
edgeprio_last_reading_age_seconds{node="pi",sensor="hall"} 32.5
# HELP edgeprio_resend_requests Consumers' resend requests, by what became of them (queued, coalesced with what was queued, dropped for a full queue, invalid, for an unknown node or sensor, for another log).
# TYPE edgeprio_resend_requests counter
edgeprio_resend_requests_total{node="pi",outcome="queued"} 0
edgeprio_resend_requests_total{node="pi",outcome="coalesced"} 0
edgeprio_resend_requests_total{node="pi",outcome="dropped"} 0
edgeprio_resend_requests_total{node="pi",outcome="invalid"} 0
edgeprio_resend_requests_total{node="pi",outcome="unknown"} 0
edgeprio_resend_requests_total{node="pi",outcome="other_log"} 0
# HELP edgeprio_resent_readings Readings sent again from the log on consumers' requests.
# TYPE edgeprio_resent_readings counter
edgeprio_resent_readings_total{node="pi"} 0
# HELP edgeprio_resend_gone Seqs asked for that the log no longer has, answered as gone.
# TYPE edgeprio_resend_gone counter
edgeprio_resend_gone_total{node="pi"} 0
# HELP edgeprio_resend_queued Seqs waiting to be sent again.
# TYPE edgeprio_resend_queued gauge
edgeprio_resend_queued{node="pi"} 0
# HELP edgeprio_outbox_depth Readings in the log not yet acknowledged by the broker.
# TYPE edgeprio_outbox_depth gauge
edgeprio_outbox_depth{node="pi"} 5
# HELP edgeprio_broker_connected Whether the MQTT broker is connected (1) or not (0).
# TYPE edgeprio_broker_connected gauge
edgeprio_broker_connected{node="pi"} 1
# HELP edgeprio_clock_jumps Times the system clock was set by more than 2 s, by direction.
# TYPE edgeprio_clock_jumps counter
edgeprio_clock_jumps_total{node="pi",direction="forward"} 1
edgeprio_clock_jumps_total{node="pi",direction="backward"} 0
# HELP edgeprio_build The running edgeprio.
# TYPE edgeprio_build info
"#;
        format!("{series}{}# EOF\n", build_info())
    }

    fn recorded() -> Metrics {
        let clock = FixedClock::at(T0);
        let m = Metrics::with_clock(&config("[mqtt]\nurl = \"mqtt://127.0.0.1\""), clock.clone());
        three_cycles(&m, &clock);
        m.set_broker(BrokerState::Connected);
        m
    }

    /// `wall_ms` on a [`FixedClock`] whose wall clock was never set.
    fn now(wall_ms: i64) -> Now {
        FixedClock::at(wall_ms).now()
    }

    #[test]
    fn openmetrics_exposition_lists_every_series() {
        let text = recorded().encode(now(T0 + 32_500), Format::OpenMetrics);
        assert_eq!(text, expected_openmetrics());
    }

    #[test]
    fn prometheus_text_exposition_has_the_same_samples() {
        let text = recorded().encode(now(T0 + 32_500), Format::Prometheus);
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&text), samples(&expected_openmetrics()));
        assert!(
            text.contains("# TYPE edgeprio_readings_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE edgeprio_build_info gauge\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn reading_age_is_taken_at_scrape_time() {
        let m = recorded();
        let age = |now_ms| {
            m.encode(now(now_ms), Format::OpenMetrics)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("edgeprio_last_reading_age_seconds{node=\"pi\",sensor=\"lab\"} ")
                })
                .expect("lab has an age")
                .to_string()
        };
        assert_eq!(age(T0 + 30_000), "0.0");
        assert_eq!(age(T0 + 32_500), "2.5");
        assert_eq!(age(T0 + 90_000), "60.0");
    }

    #[test]
    fn reading_age_is_measured_on_the_monotonic_clock() {
        let clock = FixedClock::at(T0);
        let m = Metrics::with_clock(&config(""), clock.clone());
        m.reading("lab", Route::Batch, T0);
        let age = || {
            m.encode(clock.now(), Format::Prometheus)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("edgeprio_last_reading_age_seconds{node=\"pi\",sensor=\"lab\"} ")
                })
                .expect("lab has an age")
                .to_string()
        };
        clock.pass_to(T0 + 5_000);
        assert_eq!(age(), "5.0");
        // The clock is set back a year, and lab says nothing more: its age
        // keeps growing from 5 s, neither negative nor stuck.
        clock.set_wall(-365 * 86_400_000);
        assert_eq!(age(), "5.0");
        clock.pass_to(clock.wall_ms() + 60_000);
        assert_eq!(age(), "65.0");
        // Set forward six years: still 65 s, not six years.
        clock.set_wall(6 * 365 * 86_400_000);
        assert_eq!(age(), "65.0");
    }

    #[test]
    fn sensors_without_readings_and_unknown_depth_have_no_series() {
        let m = Metrics::new(&config(""));
        let text = m.encode(now(T0), Format::OpenMetrics);
        assert!(
            !text.contains("edgeprio_last_reading_age_seconds{"),
            "{text}"
        );
        assert!(!text.contains("edgeprio_outbox_depth{"), "{text}");
        // No broker configured: no broker series to alert on.
        assert!(!text.contains("edgeprio_broker_connected{"), "{text}");
        assert!(
            text.contains(
                "edgeprio_readings_total{node=\"pi\",sensor=\"hall\",route=\"batch\"} 0\n"
            )
        );
    }

    #[test]
    fn unknown_sensors_add_no_series() {
        let m = recorded();
        let before = m.encode(now(T0 + 32_500), Format::OpenMetrics);
        m.reading("ghost", Route::Realtime, T0);
        m.read_failure("ghost", ErrorKind::Io);
        assert_eq!(m.encode(now(T0 + 32_500), Format::OpenMetrics), before);
    }

    #[test]
    fn clock_jumps_are_counted_by_direction() {
        let m = Metrics::new(&config(""));
        let jump = |by_ms| CycleReport {
            clock_jump: Some(crate::clock::Jump { by_ms }),
            ..CycleReport::default()
        };
        m.record_cycle(&jump(-3 * 365 * 86_400_000));
        m.record_cycle(&jump(-5_000));
        m.record_cycle(&CycleReport::default());
        let text = m.encode(now(T0), Format::Prometheus);
        assert!(
            text.contains("edgeprio_clock_jumps_total{node=\"pi\",direction=\"backward\"} 2\n")
                && text
                    .contains("edgeprio_clock_jumps_total{node=\"pi\",direction=\"forward\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn the_clock_gauge_says_what_the_kernel_said_last_cycle() {
        let m = Metrics::new(&config(""));
        let gauge = |m: &Metrics| {
            m.encode(now(T0), Format::OpenMetrics)
                .lines()
                .find_map(|l| l.strip_prefix("edgeprio_clock_synchronized{node=\"pi\"} "))
                .map(str::to_string)
        };
        assert_eq!(gauge(&m), None, "unknown before the first cycle");
        let cycle = |clock_sync| CycleReport {
            clock_sync,
            ..CycleReport::default()
        };
        m.record_cycle(&cycle(ClockSync::Unsynced));
        assert_eq!(gauge(&m).as_deref(), Some("0"));
        m.record_cycle(&cycle(ClockSync::Synced));
        assert_eq!(gauge(&m).as_deref(), Some("1"));
        m.record_cycle(&cycle(ClockSync::Unknown));
        assert_eq!(gauge(&m), None, "absent when unknown");
    }

    #[test]
    fn broker_series_follows_the_publisher() {
        let m = Metrics::new(&config("[mqtt]\nurl = \"mqtt://127.0.0.1\""));
        let connected = |m: &Metrics| {
            m.encode(now(T0), Format::OpenMetrics)
                .lines()
                .find_map(|l| l.strip_prefix("edgeprio_broker_connected{node=\"pi\"} "))
                .map(str::to_string)
        };
        assert_eq!(connected(&m).as_deref(), Some("0"));
        m.set_broker(BrokerState::Connected);
        assert_eq!(connected(&m).as_deref(), Some("1"));
        m.set_broker(BrokerState::Disconnected);
        assert_eq!(connected(&m).as_deref(), Some("0"));
        m.set_broker(BrokerState::Disabled);
        assert_eq!(connected(&m), None);
    }

    #[test]
    fn format_follows_the_accept_header() {
        // What Prometheus 2.x and 3.x send.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Prometheus
        );
    }

    /// An HTTP answer, as a scraper sees it.
    #[derive(Debug)]
    struct Answer {
        status: u16,
        head: String,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }
    }

    /// Sends `request` to `addr` over a real TCP connection and reads the
    /// answer until the server closes.
    async fn http(addr: SocketAddr, request: String) -> std::io::Result<Answer> {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)?;
            let raw = String::from_utf8(raw).expect("the answer is text");
            let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no status line in {raw:?}"));
            Ok(Answer {
                status,
                head: head.to_string(),
                body: body.to_string(),
            })
        })
        .await
        .unwrap()
    }

    fn get(path: &str, accept: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: pi\r\nAccept: {accept}\r\n\r\n")
    }

    /// A server on `127.0.0.1:0` for `metrics`, stopped by the sender.
    async fn start(
        metrics: Metrics,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, metrics, async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    const PROMETHEUS_ACCEPT: &str =
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_endpoint_answers_with_the_expected_series() {
        let clock = FixedClock::at(T0);
        let m = Metrics::with_clock(&config("[mqtt]\nurl = \"mqtt://127.0.0.1\""), clock.clone());
        three_cycles(&m, &clock);
        clock.pass_to(T0 + 32_500);
        m.set_broker(BrokerState::Connected);
        let (addr, _stop, _task) = start(m).await;

        let a = http(addr, get("/metrics", PROMETHEUS_ACCEPT))
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.header("content-type"), Some(OPENMETRICS_CONTENT_TYPE));
        assert_eq!(a.body, expected_openmetrics());

        // The age grows between scrapes, with nothing recorded.
        clock.pass_to(T0 + 42_500);
        let a = http(addr, get("/metrics", PROMETHEUS_ACCEPT))
            .await
            .unwrap();
        assert!(
            a.body
                .contains("edgeprio_last_reading_age_seconds{node=\"pi\",sensor=\"lab\"} 12.5\n"),
            "{}",
            a.body
        );

        // curl and friends get the Prometheus text format.
        let a = http(addr, get("/metrics", "*/*")).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(a.body.contains(
            "edgeprio_readings_total{node=\"pi\",sensor=\"lab\",route=\"realtime\"} 3\n"
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_paths_and_methods_are_refused() {
        let (addr, _stop, _task) = start(recorded()).await;
        let a = http(addr, get("/", "*/*")).await.unwrap();
        assert_eq!(a.status, 404, "{a:?}");
        let a = http(addr, get("/metrics/x", "*/*")).await.unwrap();
        assert_eq!(a.status, 404, "{a:?}");
        let post = "POST /metrics HTTP/1.1\r\nHost: pi\r\nContent-Length: 2\r\n\r\nhi";
        let a = http(addr, post.to_string()).await.unwrap();
        assert_eq!(a.status, 405, "{a:?}");
        assert_eq!(a.header("allow"), Some("GET, HEAD"));
        let a = http(addr, "HEAD /metrics HTTP/1.1\r\nHost: pi\r\n\r\n".into())
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.is_empty(), "{a:?}");
        // A query string does not change the path.
        let a = http(addr, get("/metrics?x=1", "*/*")).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_and_oversized_requests_do_not_block_scrapes() {
        let (addr, _stop, _task) = start(recorded()).await;
        // A client that never finishes its request keeps its connection
        // (until the header timeout) but nobody waits for it.
        let stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        stalled.writable().await.unwrap();
        stalled.try_write(b"GET /metrics HTTP/1.1\r\n").unwrap();
        // A request head past the limit is answered 431 and the connection
        // closed; the client may see the close before the answer.
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: pi\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(4 * MAX_REQUEST)
        );
        match http(addr, huge).await {
            Ok(a) => assert_eq!(a.status, 431, "{a:?}"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "{e}"
            ),
        }
        let a = http(addr, get("/metrics", "*/*")).await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        drop(stalled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_stops_the_endpoint() {
        let (addr, stop, task) = start(recorded()).await;
        assert_eq!(
            http(addr, get("/metrics", "*/*")).await.unwrap().status,
            200
        );
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns on shutdown")
            .unwrap();
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_endpoint_stops_it() {
        let endpoint = Endpoint::start("127.0.0.1:0".parse().unwrap(), recorded())
            .await
            .unwrap();
        let addr = endpoint.local_addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(
            http(addr, get("/metrics", "*/*")).await.unwrap().status,
            200
        );
        drop(endpoint);
        // The abort lands at the task's next poll.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the endpoint still accepts connections after being dropped");
    }

    #[tokio::test]
    async fn bind_errors_name_the_configured_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = taken.local_addr().unwrap();
        let e = bind(listen).await.unwrap_err();
        assert_eq!(e, MetricsError::AddrInUse { listen });
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("metrics.listen = \"{listen}\"")) && msg.contains("in use"),
            "{msg}"
        );
        // 192.0.2.0/24 is reserved for documentation: never this machine's.
        let listen: SocketAddr = "192.0.2.1:9184".parse().unwrap();
        let e = bind(listen).await.unwrap_err();
        assert_eq!(e, MetricsError::AddrNotAvailable { listen });
        assert!(
            e.to_string()
                .contains("192.0.2.1 is not an address of this machine"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod burst_tests {
    use super::*;

    #[test]
    fn the_burst_series_is_there_with_burst_configured_and_follows_the_cycles() {
        let text = |burst: &str| {
            let config = Config::parse(
                &format!(
                    "node = \"pi\"\n[priority]\n{burst}\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\n\
                     [[sensor]]\nid = \"hall\"\nkind = \"sim\"\n"
                ),
                None,
            )
            .unwrap();
            let m = Metrics::new(&config);
            m.record_cycle(&CycleReport {
                burst: vec!["lab".into()],
                ..CycleReport::default()
            });
            m.encode(m.clock.now(), Format::Prometheus)
        };
        let on = text("burst = { interval = \"3s\" }");
        assert!(
            on.contains("edgeprio_sensor_burst{node=\"pi\",sensor=\"lab\"} 1\n"),
            "{on}"
        );
        assert!(
            on.contains("edgeprio_sensor_burst{node=\"pi\",sensor=\"hall\"} 0\n"),
            "{on}"
        );
        assert!(
            !text("").contains("edgeprio_sensor_burst"),
            "no series without burst"
        );
    }
}
