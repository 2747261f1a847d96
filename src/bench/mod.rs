//! `edgeprio bench`: the paper's load experiment (its Figure 9),
//! reproduced on the real programs.
//!
//! M simulated nodes ([`load`]) publish raw readings over MQTT; per mode,
//! the real `edgeprio gateway` (or the plain [`relay`]) and the real
//! `edgeprio collect` processes take them to the database, and the bench
//! measures what arrives:
//!
//! - `relay`: subscribe and republish, no scoring and no database, counted
//!   by the bench itself: the ceiling of the broker path;
//! - `centralized`: the paper's baseline, every reading on the real-time
//!   route (`[priority] realtime_at = 0`), committed one by one;
//! - `priority`: the paper's routing, the events real-time, the rest
//!   batched.
//!
//! Every (node, sensor, seq) published is looked for at the end, in the
//! collectors' databases (or the relay's subscriber): a reading lost or
//! stored twice is reported, never assumed away.
//!
//! # Layout
//!
//! - this module: the plan, the modes and the run of one mode;
//! - [`load`]: the readings and the closed-loop publishers;
//! - [`children`]: the processes, their metrics and what they cost;
//! - [`procfs`]: CPU time and resident sets from `/proc`;
//! - [`relay`]: the relay process; [`report`]: the table, CSV and JSON;
//!   [`plot`]: the figure.

pub mod children;
pub mod load;
pub mod plot;
pub mod procfs;
pub mod relay;
pub mod report;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};

use crate::config::{Config, MqttConfig};
use children::{Child, Usage};
use load::{Credit, Load, Publishers};
pub use report::{Latency, ModeReport, Report};

/// The modes, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Subscribe and republish: the ceiling of the broker path
    Relay,
    /// The paper's baseline: every reading real-time, committed one by one
    Centralized,
    /// The paper's routing: events real-time, the rest batched
    Priority,
}

impl Mode {
    /// Its name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Relay => "relay",
            Mode::Centralized => "centralized",
            Mode::Priority => "priority",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How long each mode's load lasts.
    pub duration: Duration,
    /// Simulated nodes.
    pub nodes: usize,
    /// Sensors per node.
    pub sensors: usize,
    /// Readings per second in all; `None`: as fast as the pipeline takes.
    pub rate: Option<f64>,
    /// An MQTT broker to use instead of starting Mosquitto.
    pub broker: Option<String>,
    /// A `PostgreSQL` URL for the collectors instead of `SQLite` files.
    pub sink: Option<String>,
    /// The modes to run, in order.
    pub modes: Vec<Mode>,
    /// Most readings in flight end to end.
    pub window: usize,
    /// The gateway's and the batch collector's `--max-batch`.
    pub max_batch: u16,
    /// The share of readings that are events (steps).
    pub events: f64,
    /// Where to keep each mode's databases and logs; a temporary directory
    /// otherwise.
    pub keep: Option<PathBuf>,
    /// The edgeprio binary the processes run.
    pub exe: PathBuf,
}

/// What the bench says while it runs.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The mode running.
    pub mode: Mode,
    /// Seconds since its load began.
    pub elapsed_s: f64,
    /// Whether the load is over and the pipeline drains.
    pub draining: bool,
    /// Readings published so far.
    pub published: u64,
    /// Readings stored (or relayed) so far.
    pub stored: u64,
    /// Stored in the last second.
    pub last_second: u64,
}

/// Runs every mode of `plan`, telling `progress` once a second.
pub async fn run(plan: &Plan, progress: &(dyn Fn(&Progress) + Sync)) -> Result<Report, String> {
    if let Some(url) = &plan.sink {
        check_sink(url)?;
    }
    let scratch = match &plan.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Scratch::Kept(dir.clone())
        }
        None => Scratch::Temp(tempdir()?),
    };
    let root = scratch.path().to_path_buf();
    let (mut broker, url, broker_name) = match &plan.broker {
        Some(url) => (None, url.clone(), format!("{url} (given)")),
        None if children::have_mosquitto() => {
            let inflight = u32::from(plan.max_batch) * 2;
            let (child, port) = children::mosquitto(&root, inflight)?;
            let version = mosquitto_version();
            (
                Some(child),
                format!("mqtt://127.0.0.1:{port}"),
                format!(
                    "{version} on loopback, started by the bench (max_inflight_messages \
                     {inflight}, max_queued_messages 0)"
                ),
            )
        }
        None => {
            let addr = crate::broker::free_loopback_addr()?;
            crate::broker::start(addr)?;
            (
                None,
                format!("mqtt://{addr}"),
                "the embedded broker (rumqttd), in the bench's process: mosquitto is not \
                 installed (apt install mosquitto for the README's figures)"
                    .to_owned(),
            )
        }
    };
    let mut modes = Vec::new();
    for &mode in &plan.modes {
        let dir = root.join(mode.as_str());
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let outcome = Run {
            plan,
            mode,
            dir: &dir,
            url: &url,
        }
        .go(broker.as_mut(), progress)
        .await;
        if let Some(b) = broker.as_mut() {
            b.check()?;
        }
        modes.push(outcome?);
    }
    if let Some(mut b) = broker {
        let _ = b.stop();
    }
    Ok(Report::new(plan, broker_name, modes))
}

/// `mosquitto -h`'s first line names its version.
fn mosquitto_version() -> String {
    std::process::Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "mosquitto".into())
}

/// The bench's directory.
enum Scratch {
    /// `--keep DIR`.
    Kept(PathBuf),
    /// Removed at the end.
    Temp(TempDir),
}

impl Scratch {
    fn path(&self) -> &Path {
        match self {
            Scratch::Kept(p) => p,
            Scratch::Temp(t) => &t.0,
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir, String> {
    let base = std::env::temp_dir();
    let dir = base.join(format!(
        "edgeprio-bench-{}-{}",
        std::process::id(),
        crate::agent::now_ms()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(TempDir(dir))
}

/// One mode.
struct Run<'a> {
    plan: &'a Plan,
    mode: Mode,
    dir: &'a Path,
    url: &'a str,
}

/// Where a mode's readings end.
enum End {
    /// The collectors, counted by their metrics, and where they store.
    Collectors(Vec<SocketAddr>, Sink),
    /// The bench's subscriber of the relayed topics (ended on drop).
    Subscriber(
        Arc<Tally>,
        #[expect(dead_code, reason = "held: dropping it ends the subscriber")]
        crate::publish::connection::AbortOnDrop,
    ),
}

impl End {
    /// Readings stored (or relayed, distinct) so far.
    async fn stored(&self) -> Result<u64, String> {
        match self {
            End::Collectors(addrs, _) => {
                let mut total = 0.0;
                for a in addrs {
                    let text = children::scrape(*a).await?;
                    total += children::sample(
                        &text,
                        "edgeprio_collect_readings_total",
                        Some("result=\"inserted\""),
                    )
                    .unwrap_or(0.0);
                }
                #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(total as u64)
            }
            End::Subscriber(t, _) => Ok(t.distinct.load(Ordering::Acquire)),
        }
    }
}

impl Run<'_> {
    /// The topic prefix and client ids of this mode: its own, so a broker
    /// shared with other programs (or an earlier mode) mixes nothing in.
    fn prefix(&self) -> String {
        format!(
            "edgeprio-bench-{}-{}",
            std::process::id(),
            self.mode.as_str()
        )
    }

    /// A config file for one process of this mode.
    fn config(
        &self,
        name: &str,
        extra: &str,
        metrics: Option<SocketAddr>,
    ) -> Result<PathBuf, String> {
        let path = self.dir.join(format!("{name}.toml"));
        let mut text = format!(
            "node = \"bench-{name}\"\ndb = {:?}\n\n[mqtt]\nurl = \"{}\"\nclient_id = \"{}-{name}\"\n\
             topic_prefix = \"{}\"\nbatch_interval = \"1s\"\n{extra}",
            self.dir.join(format!("{name}.db")).display().to_string(),
            self.url,
            self.prefix(),
            self.prefix(),
        );
        if let Some(m) = metrics {
            let _ = write!(text, "\n[metrics]\nlisten = \"{m}\"\n");
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    async fn go(
        self,
        broker: Option<&mut Child>,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<ModeReport, String> {
        let mut procs: Vec<Child> = Vec::new();
        let end = if self.mode == Mode::Relay {
            self.relay(&mut procs).await?
        } else {
            self.servers(&mut procs).await?
        };
        for p in &mut procs {
            p.subscribed(Duration::from_secs(30)).await?;
        }
        let mut broker = broker;
        if let Some(b) = broker.as_deref_mut() {
            b.mark();
        }
        for p in &mut procs {
            p.mark();
        }
        let me = std::process::id();
        let my_cpu = procfs::cpu(me);
        let credit = Credit::new(self.plan.window);
        let load = Arc::new(Load {
            nodes: self.plan.nodes,
            sensors: self.plan.sensors,
            events: self.plan.events,
            rate: self.plan.rate,
            prefix: self.prefix(),
            client_prefix: format!("{}-node", self.prefix()),
        });
        let publishers = Publishers::start(&load, &self.mqtt()?, &credit);
        let began = Instant::now();
        let mut samples = Vec::new();
        let mut last = 0u64;
        let mut next_second = began + Duration::from_secs(1);
        // The load: credits back every 100 ms, a sample every second.
        while began.elapsed() < self.plan.duration {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for p in &mut procs {
                p.check()?;
            }
            let stored = end.stored().await?;
            credit.stored(stored);
            if Instant::now() >= next_second {
                next_second += Duration::from_secs(1);
                samples.push(stored - last);
                last = stored;
                progress(&Progress {
                    mode: self.mode,
                    elapsed_s: began.elapsed().as_secs_f64(),
                    draining: false,
                    published: publishers.total(),
                    stored,
                    last_second: samples.last().copied().unwrap_or(0),
                });
            }
        }
        let load_s = began.elapsed().as_secs_f64();
        let stored_in_load = end.stored().await?;
        let sent = publishers.stop().await?;
        let published: u64 = sent.iter().sum();
        self.drain(&end, &mut procs, published, began, progress)
            .await?;
        let total_s = began.elapsed().as_secs_f64();
        let mut usage: Vec<Usage> = procs.iter().map(Child::usage).collect();
        if let Some(b) = broker.as_deref() {
            usage.push(b.usage());
        }
        let (_, my_peak, _) = procfs::rss(me);
        usage.push(Usage {
            name: "bench (nodes)".into(),
            cpu_s: procfs::cpu(me).saturating_sub(my_cpu).as_secs_f64(),
            peak_rss_mib: my_peak as f64 / (1024.0 * 1024.0),
        });
        for p in &mut procs {
            p.stop()?;
        }
        let audit = match &end {
            End::Subscriber(t, _) => t.audit(&sent),
            End::Collectors(_, sink) => {
                let audit = sink.audit(&sent, self.plan.sensors).await?;
                sink.finish(self.plan.keep.is_some()).await;
                audit
            }
        };
        Ok(ModeReport::new(
            self.mode,
            report::Counts {
                published,
                stored_in_load,
                load_s,
                total_s,
            },
            samples,
            audit,
            usage,
        ))
    }

    /// Waits until what is in flight is stored (a partial batch goes
    /// after the gateway's batch interval, 1 s), a minute at most (or the
    /// load's duration).
    async fn drain(
        &self,
        end: &End,
        procs: &mut [Child],
        published: u64,
        began: Instant,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_mins(1).max(self.plan.duration);
        let mut stored = end.stored().await?;
        while stored < published && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for p in procs.iter_mut() {
                p.check()?;
            }
            stored = end.stored().await?;
            progress(&Progress {
                mode: self.mode,
                elapsed_s: began.elapsed().as_secs_f64(),
                draining: true,
                published,
                stored,
                last_second: 0,
            });
        }
        Ok(())
    }

    /// Starts the collectors and the gateway.
    async fn servers(&self, procs: &mut Vec<Child>) -> Result<End, String> {
        let exe = self.plan.exe.as_path();
        let batch = self.plan.max_batch.to_string();
        let sink = Sink::prepare(self.plan.sink.as_deref(), self.mode, self.dir).await?;
        let mut addrs = Vec::new();
        for route in ["realtime", "batch"] {
            let m = crate::broker::free_loopback_addr()?;
            let conf = self.config(&format!("collect-{route}"), "", Some(m))?;
            let conf = conf.display().to_string();
            let db = sink.url(route);
            procs.push(Child::spawn(
                &format!("collect {route}"),
                exe,
                &[
                    "--config",
                    &conf,
                    "collect",
                    "--route",
                    route,
                    "--db",
                    &db,
                    "--max-batch",
                    &batch,
                ],
                self.dir,
                Some(m),
            )?);
            addrs.push(m);
        }
        let everything_realtime = if self.mode == Mode::Centralized {
            "\n[priority]\nrealtime_at = 0\n"
        } else {
            ""
        };
        let m = crate::broker::free_loopback_addr()?;
        let conf = self.config("gateway", everything_realtime, Some(m))?;
        let conf = conf.display().to_string();
        procs.push(Child::spawn(
            "gateway",
            exe,
            &["--config", &conf, "gateway", "--max-batch", &batch],
            self.dir,
            Some(m),
        )?);
        Ok(End::Collectors(addrs, sink))
    }

    /// Starts the relay and the bench's own subscriber of what it relays.
    async fn relay(&self, procs: &mut Vec<Child>) -> Result<End, String> {
        let exe = self.plan.exe.as_path();
        let batch = self.plan.max_batch.to_string();
        let conf = self.config("relay", "", None)?;
        let conf = conf.display().to_string();
        let tally = Tally::new(self.plan.nodes * self.plan.sensors);
        let mqtt = self.mqtt()?;
        let counter = subscribe(
            &mqtt,
            &format!("{}-count", self.prefix()),
            tally.clone(),
            self.plan.sensors,
        )
        .await?;
        procs.push(Child::spawn(
            "relay",
            exe,
            &["--config", &conf, "bench-relay", "--max-batch", &batch],
            self.dir,
            None,
        )?);
        Ok(End::Subscriber(tally, counter))
    }

    /// The bench's own `[mqtt]`, for its publishers and subscriber.
    fn mqtt(&self) -> Result<MqttConfig, String> {
        let text = format!(
            "node = \"bench\"\n[mqtt]\nurl = \"{}\"\ntopic_prefix = \"{}\"\n",
            self.url,
            self.prefix()
        );
        let config =
            Config::parse(&text, None).map_err(|e| format!("--broker {}: {e}", self.url))?;
        config
            .mqtt
            .ok_or_else(|| format!("--broker {}: not an MQTT URL", self.url))
    }
}

/// What the relay's readings came to, at the bench's subscriber.
#[derive(Debug)]
struct Tally {
    /// Per stream, how often each seq came (index seq - 1).
    seen: Mutex<Vec<Vec<u8>>>,
    /// Distinct readings so far.
    distinct: AtomicU64,
    /// Messages that were not a bench reading.
    foreign: AtomicU64,
}

impl Tally {
    fn new(streams: usize) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(vec![Vec::new(); streams]),
            distinct: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
        })
    }

    /// Counts one relayed message.
    fn saw(&self, topic: &str, payload: &[u8], sensors: usize) {
        let Some(stream) = key_of(topic, payload, sensors) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (index, seq) = stream;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = seen.get_mut(index) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let at = usize::try_from(seq.saturating_sub(1)).unwrap_or(usize::MAX);
        if at >= s.len() {
            s.resize(at + 1, 0);
        }
        if s[at] == 0 {
            self.distinct.fetch_add(1, Ordering::Release);
        }
        s[at] = s[at].saturating_add(1);
    }

    fn audit(&self, sent: &[u64]) -> report::Audit {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let mut audit = report::Audit::default();
        for (s, &n) in sent.iter().enumerate() {
            let got = seen.get(s).map_or(&[][..], Vec::as_slice);
            for seq in 0..usize::try_from(n).unwrap_or(usize::MAX) {
                match got.get(seq).copied().unwrap_or(0) {
                    0 => audit.lost += 1,
                    1 => {}
                    k => audit.duplicates += u64::from(k - 1),
                }
            }
            audit.unexpected += got
                .iter()
                .skip(usize::try_from(n).unwrap_or(usize::MAX))
                .filter(|&&k| k > 0)
                .count() as u64;
        }
        audit.unexpected += self.foreign.load(Ordering::Relaxed);
        audit
    }
}

/// The stream index and seq of a bench reading: `<prefix>/nodeNNN/...`
/// and `{"sensor":"sK","seq":N,...}`.
fn key_of(topic: &str, payload: &[u8], sensors: usize) -> Option<(usize, u64)> {
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        sensor: &'a str,
        seq: u64,
    }
    let node: usize = topic
        .split('/')
        .nth(1)?
        .strip_prefix("node")?
        .parse()
        .ok()?;
    let k: Key<'_> = serde_json::from_slice(payload).ok()?;
    let sensor: usize = k.sensor.strip_prefix('s')?.parse().ok()?;
    (sensor < sensors).then_some((node * sensors + sensor, k.seq))
}

/// Subscribes the bench's counter to the relayed topics and returns once
/// the broker confirmed it.
async fn subscribe(
    mqtt: &MqttConfig,
    id: &str,
    tally: Arc<Tally>,
    sensors: usize,
) -> Result<crate::publish::connection::AbortOnDrop, String> {
    let mut options = crate::publish::connection::client_options(mqtt, id, None)?;
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let filter = crate::domain::Topics::every_node(&mqtt.topic_prefix, relay::RELAYED);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .map_err(|e| format!("the bench's subscriber: {e}"))?;
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _client = client;
        let mut ready_tx = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    tally.saw(&p.topic, &p.payload, sensors);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("the bench's subscriber: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| "the broker did not confirm the bench's subscription within 10 s".to_owned())?
        .map_err(|_| "the bench's subscriber ended".to_owned())?;
    Ok(crate::publish::connection::AbortOnDrop(task))
}

/// Where a mode's collectors store.
enum Sink {
    /// One `SQLite` file in the mode's directory (`collected.db`), the
    /// collectors of both routes writing it: what their gap repair needs.
    Sqlite(PathBuf),
    /// A schema of its own in the given database.
    Postgres {
        /// The URL as given.
        url: String,
        /// `edgeprio_bench_<mode>`.
        schema: String,
    },
}

impl Sink {
    async fn prepare(sink: Option<&str>, mode: Mode, dir: &Path) -> Result<Sink, String> {
        let Some(url) = sink else {
            return Ok(Sink::Sqlite(dir.to_path_buf()));
        };
        check_sink(url)?;
        let schema = format!("edgeprio_bench_{}", mode.as_str());
        let client = pg(url).await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
            ))
            .await
            .map_err(|e| format!("--sink: cannot create the schema {schema}: {e}"))?;
        Ok(Sink::Postgres {
            url: url.to_owned(),
            schema,
        })
    }

    /// The `--db` of a route's collector.
    fn url(&self, route: &str) -> String {
        match self {
            Sink::Sqlite(dir) => {
                let _ = route;
                dir.join(COLLECTED).display().to_string()
            }
            Sink::Postgres { url, schema } => with_search_path(url, schema),
        }
    }

    /// Every stored (node, sensor, seq) against what was sent, and the
    /// real-time route's latency.
    async fn audit(&self, sent: &[u64], sensors: usize) -> Result<report::Audit, String> {
        let mut rows: Vec<Row> = Vec::new();
        match self {
            Sink::Sqlite(dir) => {
                let path = dir.join(COLLECTED);
                let path2 = path.clone();
                let got = tokio::task::spawn_blocking(move || read_sqlite(&path2))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                rows.extend(got);
            }
            Sink::Postgres { url, schema } => {
                let client = pg(url).await?;
                let q = format!(
                    "SELECT node, sensor, seq, ts_ms, received_ms, route = 'realtime', resent \
                     FROM {schema}.readings"
                );
                for r in client
                    .query(&q, &[])
                    .await
                    .map_err(|e| format!("cannot read {schema}.readings: {e}"))?
                {
                    rows.push((
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                    ));
                }
            }
        }
        Ok(audit_rows(&rows, sent, sensors))
    }

    async fn finish(&self, keep: bool) {
        if let (Sink::Postgres { url, schema }, false) = (self, keep)
            && let Ok(client) = pg(url).await
        {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await;
        }
    }
}

/// Refuses a `--sink` that is not a `PostgreSQL` URL.
fn check_sink(url: &str) -> Result<(), String> {
    if crate::collect::AnySink::is_postgres(url) {
        Ok(())
    } else {
        Err(format!(
            "--sink {url:?}: give a postgres:// URL (without --sink the collectors write SQLite \
             files of the bench's own)"
        ))
    }
}

/// `url` with `options=-c search_path=<schema>`.
fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

async fn pg(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("--sink: cannot connect: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The collectors' `SQLite` file of a mode.
const COLLECTED: &str = "collected.db";

/// node, sensor, seq, `ts_ms`, `received_ms`, real-time, resent.
type Row = (String, String, i64, i64, i64, bool, bool);

fn read_sqlite(path: &Path) -> rusqlite::Result<Vec<Row>> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT node, sensor, seq, ts_ms, received_ms, route = 'realtime', resent FROM readings",
    )?;
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })?
    .collect()
}

/// The audit of stored rows against what each stream sent.
fn audit_rows(rows: &[Row], sent: &[u64], sensors: usize) -> report::Audit {
    let mut audit = report::Audit::default();
    let mut seen: HashMap<(usize, i64), u32> = HashMap::with_capacity(rows.len());
    let mut latencies = Vec::new();
    let mut repaired = 0;
    for (node, sensor, seq, ts_ms, received_ms, realtime, resent) in rows {
        let stream = node
            .strip_prefix("node")
            .and_then(|n| n.parse::<usize>().ok())
            .zip(
                sensor
                    .strip_prefix('s')
                    .and_then(|s| s.parse::<usize>().ok()),
            )
            .filter(|&(_, s)| s < sensors)
            .map(|(n, s)| n * sensors + s);
        let Some(stream) = stream.filter(|&s| s < sent.len()) else {
            audit.unexpected += 1;
            continue;
        };
        if *seq < 1 || u64::try_from(*seq).unwrap_or(u64::MAX) > sent[stream] {
            audit.unexpected += 1;
            continue;
        }
        *seen.entry((stream, *seq)).or_default() += 1;
        if *resent {
            repaired += 1;
        }
        if *realtime {
            audit.realtime += 1;
            latencies.push(received_ms - ts_ms);
        }
    }
    for (&(_, _), &k) in &seen {
        if k > 1 {
            audit.twice += u64::from(k - 1);
        }
    }
    let found = seen.len() as u64;
    let expected: u64 = sent.iter().sum();
    audit.lost = expected - found.min(expected);
    // A resent reading stored was not stored before it was asked for: the
    // broker dropped it (or a collector never got it) and the repair
    // brought it. What is lost was dropped too, and not repaired.
    audit.repaired = Some(repaired);
    audit.dropped = Some(repaired + audit.lost);
    audit.latency = Latency::of(&mut latencies);
    audit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, sensor: &str, seq: i64, realtime: bool, lat: i64) -> Row {
        (
            node.into(),
            sensor.into(),
            seq,
            1000,
            1000 + lat,
            realtime,
            false,
        )
    }

    #[test]
    fn the_audit_finds_what_is_lost_stored_twice_or_not_ours() {
        // Two streams of node000 (2 sensors); stream 0 sent 3, stream 1 sent 2.
        let rows = vec![
            row("node000", "s0", 1, false, 0),
            row("node000", "s0", 2, true, 7),
            row("node000", "s0", 2, false, 0), // in both databases
            row("node000", "s1", 1, true, 3),
            row("node000", "s1", 9, false, 0), // never sent
            row("other", "s0", 1, false, 0),
        ];
        let a = audit_rows(&rows, &[3, 2], 2);
        assert_eq!(a.lost, 2, "s0 seq 3 and s1 seq 2");
        assert_eq!(a.twice, 1);
        assert_eq!(a.unexpected, 2);
        assert_eq!(a.realtime, 2);
        let l = a.latency.expect("two real-time readings");
        assert_eq!((l.p50_ms, l.max_ms), (3, 7));
    }

    #[test]
    fn the_relay_tally_counts_each_reading_once_and_names_duplicates() {
        let t = Tally::new(4);
        let p = |s: u32, seq: u64| format!(r#"{{"sensor":"s{s}","seq":{seq},"ts_ms":1}}"#);
        t.saw("x/node001/relayed", p(0, 1).as_bytes(), 2);
        t.saw("x/node001/relayed", p(0, 1).as_bytes(), 2);
        t.saw("x/node001/relayed", p(1, 1).as_bytes(), 2);
        t.saw("x/node000/relayed", b"not json", 2);
        assert_eq!(t.distinct.load(Ordering::Relaxed), 2);
        let a = t.audit(&[0, 0, 2, 1]);
        assert_eq!((a.lost, a.duplicates, a.unexpected), (1, 1, 1));
    }

    #[test]
    fn a_postgres_url_gets_the_schema_as_its_search_path() {
        assert_eq!(
            with_search_path("postgres://u@h/db", "s"),
            "postgres://u@h/db?options=-c%20search_path%3Ds"
        );
        assert_eq!(
            with_search_path("postgres://u@h/db?host=/run", "s"),
            "postgres://u@h/db?host=/run&options=-c%20search_path%3Ds"
        );
    }
}
