//! Memory of the real agent around a large outbox drain (issue 12, item 9):
//! the resident set of an idle agent, then of one that drains `rows`
//! unpublished readings to a real Mosquitto, sampled from
//! `/proc/<pid>/status`, and what it is back to once the outbox is empty.
//! Shared by `benches/drain_rss.rs` (1,000,000 readings, the figures in the
//! README) and `tests/drain_memory.rs` (a smaller drain, with a bound).

#![allow(dead_code, reason = "each includer uses part of it")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeprio::domain::{PerChannel, Reading, Route, Sample};
use edgeprio::store::{Access, Store};

#[path = "mosquitto.rs"]
pub mod mosquitto;
use mosquitto::{Killed, mosquitto};

/// One MiB, for the figures.
pub const MIB: f64 = 1024.0 * 1024.0;

// What a process costs, read from /proc: the bench command's reader.
#[allow(unused_imports, reason = "each includer uses part of it")]
pub use edgeprio::bench::procfs::{cpu, rss};

/// The agent's config: one simulated sensor at 1 s, `[mqtt]` with large
/// batches (the drain's fast path).
fn config(dir: &Path, db: &Path, port: u16) -> PathBuf {
    let path = dir.join(format!(
        "{}.toml",
        db.file_stem().and_then(|s| s.to_str()).unwrap_or("agent")
    ));
    std::fs::write(
        &path,
        format!(
            "node = \"m\"\ninterval = \"1s\"\ndb = {:?}\n\
             [[sensor]]\nid = \"a\"\nkind = \"sim\"\nprofile = \"random\"\nfailure_rate = 0.0\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nbatch_max = 500\nbatch_interval = \"1s\"\n",
            db.display().to_string()
        ),
    )
    .expect("write the agent config");
    path
}

/// Writes `rows` unpublished readings of sensor `a` straight into a new
/// log, as an outage of that length would have left them.
fn backlog(db: &Path, rows: u64) {
    let mut store = Store::open(db, Access::Writer).expect("create the log");
    let start = edgeprio::agent::now_ms() - i64::try_from(rows).unwrap_or(i64::MAX) * 15;
    let mut seq = 0;
    while seq < rows {
        let chunk: Vec<Reading> = (seq..rows.min(seq + 20_000))
            .map(|s| Reading {
                node: "m".into(),
                sensor: "a".into(),
                seq: s,
                ts_ms: start + i64::try_from(s).unwrap_or(0) * 15,
                #[expect(clippy::cast_precision_loss, reason = "a small test value")]
                sample: Sample::new(20.0 + (s % 50) as f64 / 10.0, 50.0),
                weights: PerChannel {
                    temperature: 0,
                    humidity: 0,
                },
                priority: 0,
                route: Route::Batch,
                clock_synced: Some(true),
            })
            .collect();
        store.insert_readings(&chunk).expect("insert the backlog");
        seq += 20_000;
    }
}

fn outbox(db: &Path) -> Option<u64> {
    Store::open(db, Access::ReadOnly)
        .and_then(|s| s.outbox_depth("m"))
        .ok()
}

/// What [`measure`] found, in bytes and seconds.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// `VmRSS` of an agent with an empty outbox, connected, after `settle`.
    pub idle: u64,
    /// Its `RssAnon`.
    pub idle_anon: u64,
    /// `VmHWM` of the draining agent.
    pub drain_peak: u64,
    /// `VmRSS` of the draining agent `settle` after its outbox was empty.
    pub after: u64,
    /// Its `RssAnon`.
    pub after_anon: u64,
    /// How long the drain took.
    pub drain_s: f64,
}

fn start(bin: &Path, config: &Path, dir: &Path) -> Killed {
    Killed(
        Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("EDGEPRIO_CONFIG")
            .env("EDGEPRIO_LOG", "warn")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent"),
    )
}

/// Runs the agent `bin` idle, then on a backlog of `rows` readings, each
/// against its own Mosquitto, and measures both.
pub fn measure(bin: &Path, rows: u64, settle: Duration) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());

    let idle_db = dir.path().join("idle.db");
    let idle = start(bin, &config(dir.path(), &idle_db, port), dir.path());
    wait(
        Duration::from_mins(1),
        "the idle agent's first readings",
        || {
            Store::open(&idle_db, Access::ReadOnly)
                .and_then(|s| s.broker("m"))
                .ok()
                .flatten()
                .is_some_and(|b| b.published_batch + b.published_realtime > 0 || b.outbox_depth > 0)
        },
    );
    std::thread::sleep(settle);
    let (idle_rss, _, idle_anon) = rss(idle.0.id());
    drop(idle);

    let db = dir.path().join("drain.db");
    backlog(&db, rows);
    let began = Instant::now();
    let agent = start(bin, &config(dir.path(), &db, port), dir.path());
    // Polled rarely: a reader scanning the outbox competes for the disk.
    wait(Duration::from_hours(1), "the outbox drained", || {
        std::thread::sleep(Duration::from_millis(200));
        outbox(&db).is_some_and(|d| d <= 1)
    });
    let drain_s = began.elapsed().as_secs_f64();
    std::thread::sleep(settle);
    let (after, drain_peak, after_anon) = rss(agent.0.id());
    Figures {
        idle: idle_rss,
        idle_anon,
        drain_peak,
        after,
        after_anon,
        drain_s,
    }
}

fn wait(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
