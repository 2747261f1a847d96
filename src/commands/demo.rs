//! `edgeprio demo`: the whole pipeline on simulated sensors, with an
//! embedded broker unless told otherwise, shown on the dashboard or as one
//! line per reading on stdout.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::runtime;
use super::signals::{shutdown_signal, stop_flag};
use crate::agent::{self, CycleReport, RunOptions};
use crate::cli::DemoArgs;
use crate::config::{self, Config};
use crate::domain::{Route, rfc3339_ms};
use crate::logging::holding_the_log;
use crate::publish::AnyPublisher;
use crate::store::{Access, Store};

/// The shortest cycle `demo --speed` may make of the interval.
const SHORTEST_DEMO_PERIOD: Duration = Duration::from_micros(1);

/// `d` of the demo's own time in wall time at `speed` (within
/// [`SPEED_RANGE`](crate::cli::SPEED_RANGE)), or `None` when it would be
/// shorter than 1 µs.
fn at_speed(d: Duration, speed: f64) -> Option<Duration> {
    // `d` is at most a year and `speed` at least 0.001: the quotient fits.
    Duration::try_from_secs_f64(d.as_secs_f64() / speed)
        .ok()
        .filter(|p| *p >= SHORTEST_DEMO_PERIOD)
}

/// Runs the demo with the configuration at `config_path` (simulated sensors
/// only), or the built-in one when there is none, until `--count` readings
/// per sensor, the dashboard is quit, or SIGTERM, SIGINT or SIGHUP.
pub fn run(config_path: Option<&Path>, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut config = match config_path {
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
