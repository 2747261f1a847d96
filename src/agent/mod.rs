//! The agent: a timer that drives read cycles on a blocking thread, with
//! shutdown passed in (SIGINT/SIGTERM in `run`, a test's future in tests).
//! What the log refuses (a full disk) is held by `spill` ([`Held`]):
//! carried into the next agent on a reload ([`run_carrying`]), spilled to
//! the runtime directory at the final stop ([`settle`]).

mod cycle;
mod spill;
#[cfg(test)]
mod wire_tests;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use anyhow::Context as _;
use tokio::time::MissedTickBehavior;

pub use cycle::{Checks, CycleReport, Station, Take, read_validated};
pub use spill::{Held, Stray, runtime_dir, spill_path, strays};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::domain::Reading;
use crate::service::{self, Progress, Watchdog};

/// Hands committed readings to the network. The MQTT implementation
/// drains the log's outbox; until one is configured, readings simply stay in
/// the outbox (`published_ms` NULL) and are sent once a publisher exists.
pub trait Publisher: Send {
    /// Called once the log exists and is migrated, before the first cycle:
    /// from here on the publisher may read it.
    fn ready(&mut self) {}

    /// Where the agent records when it took each reading, on the
    /// monotonic clock, if this publisher judges freshness by it.
    fn taken(&self) -> Option<crate::clock::TakenAt> {
        None
    }

    /// Called after each successful commit with the cycle's readings. Must
    /// not block: the sensor loop never waits on the network.
    fn committed(&mut self, readings: &[Reading]);

    /// Called when the agent followed its log to a new file (the one it
    /// had was deleted or replaced, see `Store::follow_path`): a
    /// connection to the old file must be opened again, and row ids read
    /// from it mean nothing in the new one.
    fn log_reopened(&mut self) {}

    /// Called once after the last commit: send what can be sent, say
    /// `offline`, disconnect. Bounded in time.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// The publisher of an agent without a broker: everything stays in the
/// outbox.
#[derive(Debug, Default)]
pub struct Unpublished;

impl Publisher for Unpublished {
    fn committed(&mut self, _readings: &[Reading]) {}

    async fn close(self) {}
}

/// How the loop runs, beyond the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunOptions {
    /// Time between cycles; the config's interval, or less for `demo --speed`.
    pub period: Duration,
    /// Stop once every sensor has this many new readings (`demo --count`).
    pub count: Option<u64>,
}

impl RunOptions {
    /// Cycles at the config's interval, forever.
    pub fn from_config(config: &Config) -> Self {
        Self {
            period: config.interval,
            count: None,
        }
    }
}

/// What a finished run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Cycles completed.
    pub cycles: u64,
    /// Readings accepted and committed.
    pub readings: u64,
    /// Failed or rejected reads.
    pub errors: u64,
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Unix time in milliseconds: the only place the agent reads the clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs the agent until `shutdown` resolves (or `--count` is reached).
/// A cycle in flight when `shutdown` fires is finished and committed first;
/// what the log still refuses then is spilled ([`Held::settle`]), and
/// readings given up make it an error.
/// `on_cycle` sees every cycle's report (the demo prints it).
pub async fn run(
    config: &Config,
    opts: RunOptions,
    publisher: impl Publisher,
    on_cycle: impl FnMut(&CycleReport) + Send,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunSummary> {
    let (summary, held) = run_carrying(config, opts, publisher, on_cycle, shutdown, None).await?;
    match held {
        Some(held) => settle(held).await.map(|()| summary),
        None => Ok(summary),
    }
}

/// The final stop of an agent whose log refused what it held: spills it,
/// and fails naming what could not be kept.
pub async fn settle(held: Held) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || settle_now(held, now_ms()))
        .await
        .context("the spill thread panicked")?
}

/// [`settle`] on this thread, at `now_ms`.
pub(crate) fn settle_now(held: Held, now_ms: i64) -> anyhow::Result<()> {
    let lost = held.settle(now_ms);
    if lost.is_empty() {
        return Ok(());
    }
    let total: u64 = lost.iter().map(crate::store::Loss::count).sum();
    let each: Vec<String> = lost.iter().map(ToString::to_string).collect();
    anyhow::bail!(
        "stopped with {total} readings neither the log nor the spill could keep: {}",
        each.join("; ")
    )
}

/// [`run`] for a reload: starts with what the previous agent `carried`,
/// and returns, instead of spilling it for good, what the log still
/// refused at the stop, for the next agent to carry (or [`settle`]).
pub async fn run_carrying(
    config: &Config,
    opts: RunOptions,
    mut publisher: impl Publisher,
    mut on_cycle: impl FnMut(&CycleReport) + Send,
    shutdown: impl Future<Output = ()>,
    carried: Option<Held>,
) -> anyhow::Result<(RunSummary, Option<Held>)> {
    let cfg = config.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let period = opts.period;
    let mut station =
        tokio::task::spawn_blocking(move || Station::open_carrying(&cfg, period, clock, carried))
            .await
            .context("the start-up thread panicked")??;
    if let Some(taken) = publisher.taken() {
        station.record_taken(taken);
    }
    publisher.ready();
    tracing::info!(
        node = %config.node,
        sensors = station.slots.len(),
        db = %config.db.display(),
        period = %humantime::format_duration(opts.period),
        "agent running"
    );
    service::ready(&format!(
        "running: {} sensors every {}",
        station.slots.len(),
        humantime::format_duration(opts.period)
    ));
    let progress = Arc::new(Progress::default());
    // Dropped (aborted) when `run` returns, however it returns.
    let _watchdog = Watchdog::from_env(opts.period)
        .map(|dog| AbortOnDrop(tokio::spawn(dog.run(progress.clone()))));

    // With `[priority] burst` the loop wakes every burst interval and reads
    // the sensors that are due (those in burst, and the others every
    // period); without it, every sensor every period.
    let mut ticker = tokio::time::interval(station.tick());
    // After a slow cycle (a sensor retrying), keep the spacing rather than
    // firing a burst of catch-up reads at a sensor that needs 2 s of rest.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut summary = RunSummary::default();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => {
                tracing::info!("shutdown requested");
                break;
            }
            _ = ticker.tick() => {}
        }
        let count = opts.count;
        if !station.is_due(count) {
            continue;
        }
        let (back, report) = tokio::task::spawn_blocking(move || {
            let report = station.cycle(count);
            (station, report)
        })
        .await
        .context("the sensor thread panicked")?;
        station = back;
        progress.cycle_done();
        summary.cycles += 1;
        summary.errors += report.errors.len() as u64;
        if report.log_switched {
            publisher.log_reopened();
        }
        if report.commit_error.is_none() {
            summary.readings += report.readings.len() as u64;
            publisher.committed(&report.readings);
        }
        service::status(&format!(
            "cycle {}: {} readings, {} failed reads{}",
            summary.cycles,
            report.readings.len(),
            report.errors.len(),
            if report.commit_error.is_some() {
                format!(", the log refuses writes: {} readings held", report.held)
            } else {
                String::new()
            }
        ));
        on_cycle(&report);
        if let Some(limit) = opts.count
            && station.slots.iter().all(|s| s.done(Some(limit)))
        {
            break;
        }
    }
    let stopped = tokio::task::spawn_blocking(move || station.stop())
        .await
        .context("the sensor thread panicked")?;
    publisher.close().await;
    let held = stopped.context("cannot record the clean stop in the log")?;
    Ok((summary, held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Access, ReadingFilter, Store};

    fn config(db: &std::path::Path) -> Config {
        let text = format!(
            "node = \"t\"\ninterval = \"15s\"\ndb = {:?}\n\
             [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n",
            db.display().to_string()
        );
        Config::parse(&text, None).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_loop_and_marks_the_agent_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&dir.path().join("e.db"));
        let mut cycles = 0;
        let summary = run(
            &cfg,
            RunOptions::from_config(&cfg),
            Unpublished,
            |_| cycles += 1,
            tokio::time::sleep(Duration::from_secs(40)),
        )
        .await
        .unwrap();
        // Ticks at 0 s, 15 s and 30 s, then the shutdown at 40 s.
        assert_eq!(summary.cycles, 3);
        assert_eq!(cycles, 3);
        let store = Store::open(&cfg.db, Access::ReadOnly).unwrap();
        assert_eq!(store.readings(&ReadingFilter::default()).unwrap().len(), 3);
        assert!(!store.status("t").unwrap().unwrap().running);
    }

    #[tokio::test]
    async fn restart_continues_seq_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&dir.path().join("e.db"));
        let opts = RunOptions {
            period: Duration::from_millis(1),
            count: Some(8),
        };
        run(&cfg, opts, Unpublished, |_| {}, std::future::pending())
            .await
            .unwrap();
        let opts = RunOptions {
            count: Some(2),
            ..opts
        };
        run(&cfg, opts, Unpublished, |_| {}, std::future::pending())
            .await
            .unwrap();
        let store = Store::open(&cfg.db, Access::ReadOnly).unwrap();
        let rows = store.readings(&ReadingFilter::default()).unwrap();
        let seqs: Vec<u64> = rows.iter().map(|r| r.reading.seq).collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
        // seq 8 is the paper's record 9: its priority comes from the restored history.
        assert_eq!(rows[8].reading.priority, 2);
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, r)| (r.reading.priority > 0) == (i == 8))
        );
    }
}
