//! The command line (DESIGN.md, "commands"): clap definitions and the
//! runners behind each subcommand. Every option has an environment variable;
//! doc comments are the `--help` text.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::agent::{self, CycleReport, RunOptions};
use crate::config::{self, Config, ConfigError, SensorKind, SimProfile};
use crate::domain::{Route, WireReading, rfc3339_ms};
use crate::publish::AnyPublisher;
use crate::sensor::{self, Resume};
use crate::store::{Access, ReadingFilter, Store, StoredReading};

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
    CheckConfig,
    /// Diagnose the board, GPIO access, each sensor (with pulse timing) and
    /// the log; one line per problem with its fix
    Doctor(DoctorArgs),
    /// Live terminal dashboard of a running agent, read from its log (works
    /// over SSH; q quits, ? shows the keys)
    Dashboard(DashboardArgs),
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

/// The shortest cycle `demo --speed` may make of the interval.
const SHORTEST_DEMO_PERIOD: Duration = Duration::from_micros(1);

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

/// `d` of the demo's own time in wall time at `speed` (within
/// [`SPEED_RANGE`]), or `None` when it would be shorter than 1 µs.
fn at_speed(d: Duration, speed: f64) -> Option<Duration> {
    // `d` is at most a year and `speed` at least 0.001: the quotient fits.
    Duration::try_from_secs_f64(d.as_secs_f64() / speed)
        .ok()
        .filter(|p| *p >= SHORTEST_DEMO_PERIOD)
}

/// Parses the command line, runs the command, and maps errors to an exit
/// status. Errors are one paragraph on stderr, never a backtrace.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // rumqttd reports every client that hangs up as an error; the embedded
    // broker's own health shows in the agent's broker state instead.
    let default_log = match cli.command {
        Command::Demo(_) => "warn,rumqttd=off",
        _ => "info,rumqttd=off",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_log));
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

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: ignoring --log {filter:?} ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| HeldLog)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder
            .event_format(JournalFormat(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_target(false)
                    .with_ansi(false),
            ))
            .init();
    } else {
        builder.init();
    }
}

/// Log lines written while a full-screen dashboard owns the terminal: the
/// demo's agent runs under it, and a line on stderr would be drawn over the
/// dashboard. They are printed when it gives the terminal back; past
/// [`HELD_LOG_MAX`] bytes the oldest go.
static HELD_LOG: std::sync::Mutex<Option<std::collections::VecDeque<u8>>> =
    std::sync::Mutex::new(None);

/// Most bytes of log [`HELD_LOG`] keeps.
const HELD_LOG_MAX: usize = 64 << 10;

/// The log's writer: stderr, or [`HELD_LOG`] while a dashboard is shown.
struct HeldLog;

impl std::io::Write for HeldLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut held = HELD_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_mut() {
            Some(lines) => {
                lines.extend(buf);
                let over = lines.len().saturating_sub(HELD_LOG_MAX);
                lines.drain(..over);
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Holds the log while `show` runs (a dashboard on this terminal), then
/// prints what was logged meanwhile.
fn holding_the_log<T>(show: impl FnOnce() -> T) -> T {
    *HELD_LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(std::collections::VecDeque::new());
    let shown = show();
    let held = HELD_LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(lines) = held {
        let (a, b) = lines.as_slices();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(a).and_then(|()| err.write_all(b));
    }
    shown
}

/// Log lines for journald, which reads the agent's stderr under systemd:
/// no timestamp (journald stamps every line itself) and a syslog priority
/// prefix (`<3>` error ... `<7>` debug), so `journalctl -p warning` and the
/// journal's colours work: `<4>WARN broker unreachable ...`.
struct JournalFormat<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        write!(writer, "<{}>{level} ", syslog_priority(level))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The syslog priority of a tracing level (sd-daemon(3)).
fn syslog_priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = || {
        cli.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
    };
    match cli.command {
        Command::Run(args) => {
            let path = config_path();
            let load = || -> Result<Config, ConfigError> {
                let mut config = Config::load(&path)?;
                config.require_sensors()?;
                if let Some(db) = &args.db {
                    config.db.clone_from(db);
                }
                config.check_files()?;
                Ok(config)
            };
            let config = load()?;
            warn_world_readable_secrets(&config);
            if let Some(b) = &config.broker {
                crate::broker::start(b.listen).map_err(anyhow::Error::msg)?;
                tracing::info!(listen = %b.listen, "embedded MQTT broker running");
            }
            runtime()?.block_on(run_agent(config, load))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => demo(cli.config.as_deref(), args),
        Command::Query(args) => {
            let db = match args.db.clone() {
                Some(db) => db,
                None => Config::load(&config_path())?.db,
            };
            query(&db, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ReadOnce => {
            let config = Config::load_checked(&config_path())?;
            config.require_sensors()?;
            Ok(read_once(&config))
        }
        Command::Dashboard(args) => {
            let db = match args.db {
                Some(db) => db,
                None => Config::load(&config_path())?.db,
            };
            let stop = stop_flag()?;
            crate::dashboard::run(&db, args.node.as_deref(), args.refresh, || {
                stop.load(Ordering::Relaxed)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => {
            let path = config_path();
            println!("edgeprio doctor: {}", path.display());
            let findings = crate::doctor::run(&path, args.reads, |f| {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(f.render().as_bytes());
                let _ = out.flush();
            });
            let failed = findings
                .iter()
                .filter(|f| f.level == crate::doctor::Level::Fail)
                .count();
            if failed == 0 {
                println!("no problems found");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{failed} problem(s) found");
                Ok(ExitCode::FAILURE)
            }
        }
        Command::CheckConfig => {
            let path = config_path();
            let config = Config::load_checked(&path)?;
            config.require_sensors()?;
            println!("{} is valid", path.display());
            print!("{}", describe_config(&config));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Says loudly when a file holding the broker password or TLS key can be
/// read by every user on the machine.
fn warn_world_readable_secrets(config: &Config) {
    for path in config::world_readable_secrets(config) {
        tracing::warn!(
            file = %path.display(),
            "this file holds a secret (MQTT password or TLS key) and is readable by every user: \
             chmod 640 it (and chgrp it to the agent's group)"
        );
    }
}

/// A flag raised by SIGTERM, SIGHUP (an SSH session that drops) or SIGINT,
/// for the blocking dashboard loop. The handlers are installed before this
/// returns.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal thread")?;
    let (mut term, mut hup, mut int) = {
        let _ctx = rt.enter();
        (
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        )
    };
    let raised = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                    _ = int.recv() => {}
                }
            });
            raised.store(true, Ordering::Relaxed);
        })
        .context("cannot start the signal thread")?;
    Ok(flag)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Two workers: the agent's work is on blocking threads, and a Pi Zero 2
    // has four small cores to share with everything else.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed before this
/// returns, so a signal that arrives while a cycle is in flight is not lost.
/// Runs the agent until SIGTERM or SIGINT. SIGHUP reloads the
/// configuration through `load`: a valid file stops the agent cleanly (the
/// cycle in flight committed, the broker told `offline`) and starts it
/// again with the new one, carrying over the readings the log refused (a
/// full disk); an invalid file is logged and the agent carries on with the
/// old one.
async fn run_agent(
    mut config: Config,
    load: impl Fn() -> Result<Config, ConfigError>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut held = None;
    loop {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut stop_tx = Some(stop_tx);
        let mut stop = move || {
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(());
            }
        };
        let mut next = None;
        {
            // Per configuration: its sensors label the series.
            let metrics = crate::metrics::Metrics::new(&config);
            let endpoint = match &config.metrics {
                Some(m) => Some(crate::metrics::Endpoint::start(m.listen, metrics.clone()).await?),
                None => None,
            };
            let publisher = AnyPublisher::for_config(&config).with_metrics(&metrics);
            let agent = agent::run_carrying(
                &config,
                RunOptions::from_config(&config),
                publisher,
                |r| metrics.record_cycle(r),
                async {
                    let _ = stop_rx.await;
                },
                held.take(),
            );
            tokio::pin!(agent);
            loop {
                tokio::select! {
                    done = &mut agent => {
                        held = done?.1;
                        break;
                    }
                    // STOPPING=1 only here: during a reload systemd would
                    // take it for the service stopping.
                    // A stop wins over a reload still in progress.
                    _ = term.recv() => {
                        crate::service::stopping();
                        next = None;
                        stop();
                    }
                    _ = int.recv() => {
                        crate::service::stopping();
                        next = None;
                        stop();
                    }
                    _ = hup.recv() => match load() {
                        Ok(new) => {
                            tracing::info!("SIGHUP: configuration valid; restarting the agent with it");
                            if new.broker != config.broker {
                                tracing::warn!(
                                    "the embedded broker ([broker]) keeps its old settings until \
                                     the agent restarts"
                                );
                            }
                            crate::service::reloading();
                            next = Some(new);
                            stop();
                        }
                        Err(e) => tracing::error!(
                            "SIGHUP: {e}; keeping the configuration in use"
                        ),
                    },
                }
            }
            if let Some(endpoint) = endpoint {
                // Closed before the next configuration binds its address.
                endpoint.stop().await;
            }
        }
        match (next, held.take()) {
            (Some(new), carried) => {
                config = new;
                held = carried;
            }
            (None, Some(last)) => return agent::settle(last).await,
            (None, None) => return Ok(()),
        }
    }
}

/// Resolves on SIGTERM, SIGINT or SIGHUP (the terminal of a foreground
/// `demo` went away).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

/// One sensor of `check-config`'s summary: its backend and calibration.
fn describe_sensor(s: &config::SensorConfig) -> String {
    let what = match &s.kind {
        SensorKind::Dht22 { pin, negative } => {
            format!("dht22 on BCM {pin}, negative {}", negative.name())
        }
        SensorKind::Dht11 { pin } => format!("dht11 on BCM {pin}"),
        SensorKind::Iio {
            device: Some(d),
            negative,
            ..
        } => format!("iio at {}, negative {}", d.display(), negative.name()),
        SensorKind::Iio { name, negative, .. } => {
            format!(
                "iio named {}, negative {}",
                name.as_deref().unwrap_or("(first DHT device)"),
                negative.name()
            )
        }
        SensorKind::Sim(sim) => match &sim.profile {
            SimProfile::Heater => "sim, heater replay".to_string(),
            SimProfile::Random => format!(
                "sim, random walk (seed {}, {} failures)",
                sim.seed, sim.failure_rate
            ),
            SimProfile::Trace(p) => format!("sim, trace {}", p.display()),
        },
    };
    match sensor::offset_text(s.offset) {
        Some(offset) => format!("{what}, {offset}"),
        None => what,
    }
}

fn describe_config(c: &Config) -> String {
    let p = &c.priority;
    let mut out = format!(
        "  node      {}\n  interval  {}\n  db        {}\n  priority  threshold {}, step {}, max_weight {}, \
         realtime_at {}, combine {:?}, deadband {}/{}, floor {}/{}\n",
        c.node,
        humantime::format_duration(c.interval),
        c.db.display(),
        p.threshold,
        p.step,
        p.max_weight,
        p.realtime_at,
        p.combine,
        p.deadband.temperature,
        p.deadband.humidity,
        p.floor.temperature,
        p.floor.humidity,
    )
    .replace("combine Max", "combine max")
    .replace("combine Sum", "combine sum");
    let _ = writeln!(
        out,
        "  events    {}; {}",
        if c.confirm {
            "confirmed by a re-read before the real-time route"
        } else {
            "not confirmed (confirm = false)"
        },
        c.stale_after.map_or_else(
            || "no gap rule (stale_after = \"0s\")".to_string(),
            |d| format!(
                "a prev older than {} counts as none",
                humantime::format_duration(d)
            ),
        ),
    );
    for s in &c.sensors {
        let _ = writeln!(out, "  sensor    {} ({})", s.id, describe_sensor(s));
    }
    if let Some(m) = &c.mqtt {
        // The password itself is never printed: only where it comes from.
        let password = match &m.password {
            config::PasswordSource::None => "none".to_string(),
            config::PasswordSource::Inline(_) => "set in this file (hidden)".to_string(),
            config::PasswordSource::File(f) => format!("from {}", f.display()),
        };
        let _ = writeln!(
            out,
            "  mqtt      {} as {}, user {}, password {password}{}, topics {}/{}/..., \
             batch every {} or {} readings{}",
            m.url,
            config::quoted_short(&m.client_id),
            m.username.as_deref().unwrap_or("(none)"),
            if std::env::var_os(config::PASSWORD_ENV).is_some() {
                format!(" (overridden by {})", config::PASSWORD_ENV)
            } else {
                String::new()
            },
            // Bare unless it is too long to print whole.
            Some(config::quoted_short(&m.topic_prefix))
                .filter(|q| *q != format!("{:?}", m.topic_prefix))
                .unwrap_or_else(|| m.topic_prefix.clone()),
            c.node,
            humantime::format_duration(m.batch_interval),
            m.batch_max,
            if m.ha_discovery {
                ", Home Assistant discovery"
            } else {
                ""
            },
        );
    } else {
        let _ = writeln!(out, "  mqtt      none: readings stay in the outbox");
    }
    if let Some(b) = &c.broker {
        let _ = writeln!(out, "  broker    embedded, listening on {}", b.listen);
    }
    out
}

fn demo(config: Option<&Path>, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut config = match config {
        Some(path) => Config::load(path)?,
        None => Config::demo(),
    };
    config.require_sensors()?;
    if config.has_hardware() {
        bail!(
            "the demo runs simulated sensors only, but {} configures hardware sensors; \
             use `edgeprio run` for those, or a config with kind = \"sim\" sensors",
            config
                .source
                .as_deref()
                .unwrap_or(Path::new("the config"))
                .display()
        );
    }
    config.db = args.db;
    config.check_files()?;
    // The gap rule counts in the demo's own time, like the period: at
    // `--speed 100` a 150 s limit is 1.5 s of wall time.
    let period = demo_period(config.interval, args.speed)?;
    config.stale_after = config
        .stale_after
        .map(|d| at_speed(d, args.speed).unwrap_or(SHORTEST_DEMO_PERIOD));
    let (watch, sub) = demo_mqtt(&mut config, args.broker.as_deref())?;
    let opts = RunOptions {
        period,
        count: args.count,
    };
    let _ = writeln!(
        std::io::stderr(),
        "edgeprio demo: node {:?}, {} simulated sensors, one cycle every {} ({} at speed x{}), log {}",
        config.node,
        config.sensors.len(),
        humantime::format_duration(Duration::from_millis(
            u64::try_from(opts.period.as_millis()).unwrap_or(u64::MAX)
        )),
        humantime::format_duration(config.interval),
        args.speed,
        config.db.display()
    );
    let _ = writeln!(std::io::stderr(), "MQTT: {watch}; watch it with: {sub}");
    let mut totals = (0u64, 0u64);
    let with_dashboard = !args.no_dashboard && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let summary = if with_dashboard {
        demo_with_dashboard(&config, opts)?
    } else {
        runtime()?.block_on(async {
            let shutdown = shutdown_signal()?;
            let publisher = AnyPublisher::for_config(&config);
            agent::run(
                &config,
                opts,
                publisher,
                |report| {
                    for r in &report.readings {
                        match r.route {
                            Route::Realtime => totals.0 += 1,
                            Route::Batch => totals.1 += 1,
                        }
                    }
                    // A closed stdout (`| head`) must not stop the agent.
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(demo_lines(report).as_bytes());
                    let _ = out.flush();
                },
                shutdown,
            )
            .await
        })?
    };
    let published = Store::open(&config.db, Access::ReadOnly)
        .and_then(|s| s.broker(&config.node))
        .ok()
        .flatten()
        .map_or_else(String::new, |b| {
            format!(
                "; broker acknowledged {} realtime and {} batch readings ({} late), {} still in the outbox",
                b.published_realtime, b.published_batch, b.published_late, b.outbox_depth
            )
        });
    let _ = writeln!(
        std::io::stderr(),
        "demo stopped after {} cycles: {} readings{}, {} read errors{published}; \
         inspect the log with: edgeprio query --db {}",
        summary.cycles,
        summary.readings,
        if with_dashboard {
            String::new()
        } else {
            format!(" ({} realtime, {} batch)", totals.0, totals.1)
        },
        summary.errors,
        config.db.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The demo's cycle: `interval` at `speed`, refused when it would be shorter
/// than [`SHORTEST_DEMO_PERIOD`].
fn demo_period(interval: Duration, speed: f64) -> anyhow::Result<Duration> {
    at_speed(interval, speed).ok_or_else(|| {
        anyhow::anyhow!(
            "--speed {speed} makes interval = {:?} a cycle shorter than {}; give a smaller \
             --speed (at most {:.0} for this interval)",
            humantime::format_duration(interval).to_string(),
            humantime::format_duration(SHORTEST_DEMO_PERIOD),
            interval.as_secs_f64() / SHORTEST_DEMO_PERIOD.as_secs_f64()
        )
    })
}

/// Where the demo publishes: `--broker URL`, the config's `[mqtt]`, or an
/// embedded broker on a free loopback port. Returns what to tell the user
/// and the `mosquitto_sub` line to watch it with.
fn demo_mqtt(config: &mut Config, broker: Option<&str>) -> anyhow::Result<(String, String)> {
    let watch = match (broker, &config.mqtt) {
        (Some(url), _) => {
            config.mqtt = Some(config::mqtt_from_url(
                url,
                &config.node,
                &config.sensors,
                config.interval,
            )?);
            url.to_string()
        }
        (None, Some(m)) => m.url.clone(),
        (None, None) => {
            let addr = crate::broker::free_loopback_addr().map_err(anyhow::Error::msg)?;
            crate::broker::start(addr).map_err(anyhow::Error::msg)?;
            config.mqtt = Some(config::MqttConfig::local(
                addr,
                &config.node,
                config.interval,
            ));
            format!("embedded broker on {addr}")
        }
    };
    let mqtt = config.mqtt.as_ref().expect("set just above");
    let sub = format!(
        "mosquitto_sub -h {} -p {} -t '{}/#' -v",
        mqtt.host, mqtt.port, mqtt.topic_prefix
    );
    Ok((watch, sub))
}

/// The demo in one process: the agent on its own runtime thread, the
/// dashboard on this one; quitting the dashboard (or SIGTERM/SIGHUP) stops
/// the agent cleanly.
fn demo_with_dashboard(config: &Config, opts: RunOptions) -> anyhow::Result<agent::RunSummary> {
    let rt = runtime()?;
    let (stop_agent, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = config.clone();
    let agent = std::thread::Builder::new()
        .name("demo-agent".into())
        .spawn(move || {
            rt.block_on(async {
                let publisher = AnyPublisher::for_config(&cfg);
                let shutdown = async {
                    let _ = stopped.await;
                };
                agent::run(&cfg, opts, publisher, |_| {}, shutdown).await
            })
        })
        .context("cannot start the agent thread")?;
    // The agent creates the log; the dashboard opens it read-only.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Store::open(&config.db, Access::ReadOnly).is_err()
        && !agent.is_finished()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = stop_flag()?;
    let shown = if agent.is_finished() {
        Ok(())
    } else {
        holding_the_log(|| {
            crate::dashboard::run(
                &config.db,
                Some(&config.node),
                crate::dashboard::app::REFRESH,
                || stop.load(Ordering::Relaxed),
            )
        })
    };
    let _ = stop_agent.send(());
    let summary = agent
        .join()
        .map_err(|_| anyhow::anyhow!("the agent thread panicked"))??;
    shown?;
    Ok(summary)
}

/// The demo's output for one cycle: one line per reading or failed read.
pub fn demo_lines(report: &CycleReport) -> String {
    let mut s = String::new();
    for r in &report.readings {
        let _ = writeln!(
            s,
            "{}  {:<12} seq {:<6} {:>6.1} °C {:>6.1} %RH   weights {:>2}/{:<2} priority {:>2}  -> {}",
            clock(r.ts_ms),
            r.sensor,
            r.seq,
            r.sample.temperature,
            r.sample.humidity,
            r.weights.temperature,
            r.weights.humidity,
            r.priority,
            r.route
        );
    }
    for e in &report.errors {
        let _ = writeln!(
            s,
            "{}  {:<12} read failed ({}): {}",
            clock(e.ts_ms),
            e.sensor,
            e.kind,
            e.detail
        );
    }
    if let Some(e) = &report.commit_error {
        let _ = writeln!(
            s,
            "commit failed, {} readings held (and spilled) until the log takes them: {e}",
            report.held
        );
    }
    s
}

/// `HH:MM:SS.mmm` in UTC.
fn clock(ts_ms: i64) -> String {
    rfc3339_ms(ts_ms)[11..23].to_string()
}

fn read_once(config: &Config) -> ExitCode {
    let mut failed = 0;
    let clock: std::sync::Arc<dyn crate::clock::Clock> =
        std::sync::Arc::new(crate::clock::SystemClock::new());
    for sc in &config.sensors {
        let mut sensor = match sensor::open(sc, Resume::default(), &clock) {
            Ok(s) => s,
            Err(e) => {
                println!("{:<12} cannot open: {e}", sc.id);
                failed += 1;
                continue;
            }
        };
        match sensor::checked(sensor.range(), sensor.read()) {
            Ok(s) => println!(
                "{:<12} {:>6.1} °C {:>6.1} %RH   ({})",
                sc.id,
                s.temperature,
                s.humidity,
                sensor.describe()
            ),
            Err(e) => {
                println!("{:<12} failed: {e}   ({})", sc.id, sensor.describe());
                failed += 1;
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How often `query --follow` looks for new rows.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

fn query(db: &Path, args: &QueryArgs) -> anyhow::Result<()> {
    let store = Store::open(db, Access::ReadOnly)?;
    let now = agent::now_ms();
    let mut filter = ReadingFilter {
        node: None,
        sensor: args.sensor.clone(),
        since_ms: args.since.map(|w| w.to_ms(now)),
        until_ms: args.until.map(|w| w.to_ms(now)),
        route: args.route.map(|r| match r {
            RouteArg::Realtime => Route::Realtime,
            RouteArg::Batch => Route::Batch,
        }),
        after_id: None,
        limit: args.limit.or(if args.follow { Some(10) } else { None }),
    };
    let stdout = std::io::stdout();
    let log = match args.format {
        Format::Json => Some(store.log_id()?),
        Format::Table | Format::Csv => None,
    };
    let mut printer = Printer::new(args.format, stdout.lock(), log);
    let rows = store.readings(&filter)?;
    printer.header()?;
    printer.rows(&rows)?;
    if !args.follow {
        return Ok(());
    }
    filter.limit = None;
    let mut last = rows.last().map(|r| r.id);
    if last.is_none() {
        // Nothing matched yet: only what arrives from now on.
        last = store
            .readings(&ReadingFilter {
                limit: Some(1),
                ..Default::default()
            })?
            .last()
            .map(|r| r.id);
    }
    loop {
        std::thread::sleep(FOLLOW_POLL);
        filter.after_id = last;
        let rows = store.readings(&filter)?;
        if let Some(r) = rows.last() {
            last = Some(r.id);
        }
        printer.rows(&rows)?;
    }
}

/// Writes query results in one of the formats.
struct Printer<W: std::io::Write> {
    format: Format,
    out: W,
    /// The log's identity: JSON lines carry it, as readings on the wire do.
    log: Option<crate::domain::LogId>,
}

#[derive(serde::Serialize)]
struct JsonRow<'a> {
    id: i64,
    #[serde(flatten)]
    reading: WireReading<'a>,
    published_ms: Option<i64>,
}

impl<W: std::io::Write> Printer<W> {
    fn new(format: Format, out: W, log: Option<crate::domain::LogId>) -> Self {
        Self { format, out, log }
    }

    fn header(&mut self) -> std::io::Result<()> {
        match self.format {
            Format::Table => writeln!(
                self.out,
                "{:<24}  {:<12} {:>6} {:>7} {:>7} {:>3} {:>3} {:>4}  {:<8}  PUBLISHED",
                "TIME", "SENSOR", "SEQ", "TEMP_C", "HUM_PCT", "W_T", "W_H", "PRIO", "ROUTE"
            ),
            Format::Csv => writeln!(
                self.out,
                "id,node,sensor,seq,ts_ms,ts,temperature_c,humidity_pct,weight_temperature,\
                 weight_humidity,priority,route,published_ms,clock_synced"
            ),
            Format::Json => Ok(()),
        }
    }

    fn rows(&mut self, rows: &[StoredReading]) -> std::io::Result<()> {
        for row in rows {
            let r = &row.reading;
            match self.format {
                Format::Table => writeln!(
                    self.out,
                    "{:<24}  {:<12} {:>6} {:>7.1} {:>7.1} {:>3} {:>3} {:>4}  {:<8}  {}",
                    rfc3339_ms(r.ts_ms),
                    r.sensor,
                    r.seq,
                    r.sample.temperature,
                    r.sample.humidity,
                    r.weights.temperature,
                    r.weights.humidity,
                    r.priority,
                    r.route,
                    row.published_ms
                        .map_or_else(|| "outbox".to_string(), rfc3339_ms)
                )?,
                Format::Csv => {
                    let mut w = csv::WriterBuilder::new()
                        .has_headers(false)
                        .from_writer(&mut self.out);
                    w.write_record([
                        row.id.to_string(),
                        r.node.clone(),
                        r.sensor.clone(),
                        r.seq.to_string(),
                        r.ts_ms.to_string(),
                        rfc3339_ms(r.ts_ms),
                        r.sample.temperature.to_string(),
                        r.sample.humidity.to_string(),
                        r.weights.temperature.to_string(),
                        r.weights.humidity.to_string(),
                        r.priority.to_string(),
                        r.route.to_string(),
                        row.published_ms.map(|p| p.to_string()).unwrap_or_default(),
                        r.clock_synced
                            .map(|s| u8::from(s).to_string())
                            .unwrap_or_default(),
                    ])?;
                    w.flush()?;
                }
                Format::Json => {
                    let log = self.log.expect("query reads the log id for JSON output");
                    let line = JsonRow {
                        id: row.id,
                        reading: WireReading::new(r, log),
                        published_ms: row.published_ms,
                    };
                    serde_json::to_writer(&mut self.out, &line)?;
                    writeln!(self.out)?;
                }
            }
        }
        self.out.flush()
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
