//! MQTT figures against a real local Mosquitto (issue: "Performance"):
//!
//! - outbox drain rate after an outage of 100,000 readings (goal: >= 20,000
//!   readings/s);
//! - commit-to-PUBACK latency on the real-time path with an otherwise idle
//!   connection, as at the 15 s cadence (goal: p99 <= 20 ms);
//! - peak RSS of the agent while connected (goal: <= 12 MiB).
//!
//! `cargo bench --bench mqtt` runs the full sizes; under `cargo test` it
//! runs a small smoke version so the code keeps working. Needs `mosquitto`
//! (scripts/test installs it).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeprio::agent::{Publisher, now_ms};
use edgeprio::config::{Config, MqttConfig};
use edgeprio::domain::{PerChannel, Reading, Route, Sample};
use edgeprio::publish::MqttPublisher;
use edgeprio::store::{Access, AgentStatus, Store};

#[path = "support/mosquitto.rs"]
mod mosquitto;
use mosquitto::mosquitto;

fn config(dir: &Path, port: u16, batch_max: usize) -> Config {
    let text = format!(
        "node = \"bench\"\ninterval = \"15s\"\ndb = {:?}\n\
         [[sensor]]\nid = \"s0\"\nkind = \"sim\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nbatch_max = {batch_max}\n",
        dir.join("e.db").display().to_string()
    );
    Config::parse(&text, None).expect("valid config")
}

fn status(started: i64) -> AgentStatus {
    AgentStatus {
        node: "bench".into(),
        running: true,
        pid: std::process::id(),
        version: "bench".into(),
        started_ms: started,
        heartbeat_ms: started,
        interval_ms: 15_000,
        burst: Vec::new(),
    }
}

fn reading(seq: u64, ts_ms: i64, route: Route) -> Reading {
    Reading {
        node: "bench".into(),
        sensor: "s0".into(),
        seq,
        ts_ms,
        sample: Sample::new(21.0 + (seq % 40) as f64 / 10.0, 50.0),
        weights: PerChannel {
            temperature: 0,
            humidity: 0,
        },
        priority: u32::from(route == Route::Realtime),
        route,
        clock_synced: None,
    }
}

fn outbox_depth(db: &Path) -> u64 {
    Store::open(db, Access::ReadOnly)
        .and_then(|s| s.outbox_depth("bench"))
        .expect("read the outbox")
}

/// Drain: `n` readings logged during an "outage", then the publisher starts.
fn drain(rt: &tokio::runtime::Runtime, n: u64, batch_max: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let cfg = config(dir.path(), port, batch_max);
    let mut store = Store::open(&cfg.db, Access::Writer).expect("open");
    // Old enough that every row is due for the batch topic (real-time ones late).
    let t0 = now_ms() - 3_600_000;
    store
        .commit_cycle(&[], &[], &status(t0))
        .expect("status row");
    let rows: Vec<Reading> = (0..n)
        .map(|i| {
            reading(
                i,
                t0 + i64::try_from(i).unwrap_or(0),
                if i % 10 == 0 {
                    Route::Realtime
                } else {
                    Route::Batch
                },
            )
        })
        .collect();
    for chunk in rows.chunks(10_000) {
        store.insert_readings(chunk).expect("insert");
    }
    let mqtt: MqttConfig = cfg.mqtt.clone().expect("mqtt");
    let start = Instant::now();
    let took = rt.block_on(async {
        let mut p = MqttPublisher::new(&cfg, &mqtt);
        p.ready();
        p.committed(&[]);
        while outbox_depth(&cfg.db) > 0 {
            assert!(start.elapsed() < Duration::from_mins(5), "drain stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = start.elapsed();
        p.close().await;
        took
    });
    println!(
        "mqtt/drain: {n} readings in {:.2} s = {:.0} readings/s (batch_max {batch_max})",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

/// Latency: one real-time reading at a time on an idle connection.
fn latency(rt: &tokio::runtime::Runtime, samples: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let cfg = config(dir.path(), port, 20);
    let mut store = Store::open(&cfg.db, Access::Writer).expect("open");
    store
        .commit_cycle(&[], &[], &status(now_ms()))
        .expect("status row");
    let mqtt = cfg.mqtt.clone().expect("mqtt");
    let mut lat: Vec<i64> = rt.block_on(async {
        let mut p = MqttPublisher::new(&cfg, &mqtt);
        p.ready();
        tokio::time::sleep(Duration::from_millis(500)).await; // connected
        let mut lat = Vec::new();
        for seq in 0..samples {
            let r = reading(seq, now_ms(), Route::Realtime);
            store
                .commit_cycle(std::slice::from_ref(&r), &[], &status(0))
                .expect("commit");
            let committed = now_ms();
            p.committed(std::slice::from_ref(&r));
            let deadline = Instant::now() + Duration::from_secs(5);
            let published = loop {
                let rows = Store::open(&cfg.db, Access::ReadOnly)
                    .and_then(|s| {
                        s.readings(&edgeprio::store::ReadingFilter {
                            limit: Some(1),
                            ..Default::default()
                        })
                    })
                    .expect("read");
                if let Some(ms) = rows.last().and_then(|r| r.published_ms) {
                    break ms;
                }
                assert!(Instant::now() < deadline, "no PUBACK for seq {seq}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            lat.push(published - committed);
            // An idle connection between readings, as at the 15 s cadence.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p.close().await;
        lat
    });
    lat.sort_unstable();
    // Nearest-rank percentile over integer per-mille, no float casts.
    let pct = |per_mille: usize| lat[(lat.len() - 1) * per_mille / 1000];
    println!(
        "mqtt/latency: commit -> PUBACK over {samples} real-time readings: p50 {} ms, p99 {} ms, max {} ms",
        pct(500),
        pct(990),
        lat.last().copied().unwrap_or(0)
    );
}

/// Peak RSS of the real agent, connected, with 4 simulated sensors.
fn rss(seconds: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let conf = dir.path().join("agent.toml");
    let mut text = format!(
        "node = \"rss\"\ninterval = \"2s\"\ndb = \"e.db\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n"
    );
    for i in 0..4 {
        let _ = writeln!(
            text,
            "[[sensor]]\nid = \"s{i}\"\nkind = \"sim\"\nseed = {i}\nfailure_rate = 0.05"
        );
    }
    std::fs::write(&conf, text).expect("write config");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_edgeprio"))
        .arg("--config")
        .arg(&conf)
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    std::thread::sleep(Duration::from_secs(seconds));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", agent.id())).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ? kB")
        .to_string();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status();
    let _ = agent.wait();
    let db = dir.path().join("e.db");
    let b = Store::open(&db, Access::ReadOnly)
        .and_then(|s| s.broker("rss"))
        .expect("status")
        .expect("row");
    println!(
        "mqtt/rss: agent with 4 sensors connected for {seconds} s: peak {} ({} acknowledged, outbox {})",
        hwm.trim_start_matches("VmHWM:").trim(),
        b.published_realtime + b.published_batch,
        b.outbox_depth
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if full {
        drain(&rt, 100_000, 20);
        drain(&rt, 100_000, 500);
        latency(&rt, 200);
        rss(60);
    } else {
        drain(&rt, 2_000, 20);
        latency(&rt, 5);
        rss(3);
    }
}
