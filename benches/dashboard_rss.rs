//! Dashboard memory (issue 5, "Performance"): the real `edgeprio dashboard`
//! in a real terminal (tmux) on a log of 1,000,000 readings all inside the
//! last 24 h, reloading every 20 ms (`--refresh 20ms`), so 3,600 reloads,
//! an hour's worth at the default 1 s, take about two minutes, while this
//! process appends four readings a second like an agent. Its resident set
//! is sampled from `/proc/<pid>/status` every 2 s.
//!
//! Goals: peak RSS <= 30 MiB, and flat: the last sample within 1 MiB of the
//! sample after the first 200 reloads. `cargo bench --bench dashboard_rss`
//! runs the full size; under `cargo test` a log of 20,000 readings and 400
//! reloads keep the code working. Needs `tmux` (scripts/test installs it).

#[path = "support/dashlog.rs"]
mod dashlog;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dashlog::{LAST_MS, SENSORS, Shape};
use edgeprio::store::{Access, Store};

const BIN: &str = env!("CARGO_BIN_EXE_edgeprio");
const REFRESH_MS: u64 = 20;
const MIB: f64 = 1024.0 * 1024.0;

/// A private tmux server, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(args)
            .output()
            .expect("tmux is missing: scripts/test installs it (apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// Resident set and its peak (bytes) of `pid`, from `/proc`.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Appends a cycle of readings a second (in log time) until `stop`.
fn writer(path: &Path, cycles_from: i64, stop: &AtomicBool) {
    let mut store = Store::open(path, Access::Writer).expect("writer");
    let mut cycle = cycles_from;
    while !stop.load(Ordering::Relaxed) {
        let ts = LAST_MS + (cycle - cycles_from + 1) * 1_000;
        let batch: Vec<_> = (0..SENSORS)
            .map(|s| dashlog::reading(cycle, s, ts))
            .collect();
        store.insert_readings(&batch).expect("append");
        store
            .commit_cycle(&[], &[], &dashlog::status(ts))
            .expect("heartbeat");
        cycle += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rows, reloads) = if full {
        (dashlog::ROWS, 3_600)
    } else {
        (20_000, 400)
    };
    // A fresh copy: the writer appends to it.
    let dir = tempfile::tempdir().expect("tempdir");
    let built = dashlog::build(Path::new(env!("CARGO_TARGET_TMPDIR")), Shape::Dense, rows);
    let path = dir.path().join("log.db");
    std::fs::copy(&built, &path).expect("copy the log");

    let tmux = Tmux {
        socket: format!("edgeprio-rss-{}", std::process::id()),
    };
    let refresh = format!("{REFRESH_MS}ms");
    let db = path.to_str().expect("utf-8 temp path");
    tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "-e",
        "TERM=xterm-256color",
        BIN,
        "dashboard",
        "--db",
        db,
        "--refresh",
        &refresh,
    ]);
    let pid: u32 = tmux
        .run(&["display", "-p", "#{pane_pid}"])
        .trim()
        .parse()
        .expect("pane pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the pane's program");
    assert_eq!(exe, Path::new(BIN), "the pane runs the dashboard itself");

    let stop = AtomicBool::new(false);
    let duration = Duration::from_millis(REFRESH_MS * reloads);
    let samples = std::thread::scope(|s| {
        s.spawn(|| writer(&path, rows / SENSORS, &stop));
        let start = Instant::now();
        let mut samples = Vec::new();
        while start.elapsed() < duration {
            std::thread::sleep(Duration::from_secs(2).min(duration / 4));
            let Some((now, peak)) = rss(pid) else {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "the dashboard exited; its screen:\n{}",
                    tmux.run(&["capture-pane", "-p"])
                );
            };
            samples.push((start.elapsed(), now, peak));
        }
        stop.store(true, Ordering::Relaxed);
        samples
    });
    let screen = tmux.run(&["capture-pane", "-p"]);
    assert!(
        screen.contains("recent readings"),
        "the dashboard is not showing the log:\n{screen}"
    );
    tmux.run(&["send-keys", "q"]);

    println!("dashboard_rss: {rows} readings, refresh {refresh}, {reloads} reloads");
    for (at, now, peak) in &samples {
        println!(
            "  {:>6.1} s  rss {:>6.2} MiB  peak {:>6.2} MiB",
            at.as_secs_f64(),
            *now as f64 / MIB,
            *peak as f64 / MIB
        );
    }
    let peak = samples.iter().map(|s| s.2).max().expect("samples");
    // After ~200 reloads (4 s at 20 ms): caches are warm by then.
    let settled = samples
        .iter()
        .find(|s| s.0 >= Duration::from_millis(REFRESH_MS * 200))
        .unwrap_or(&samples[0])
        .1;
    let last = samples.last().expect("samples").1;
    let growth = last as f64 - settled as f64;
    println!(
        "dashboard_rss: peak {:.2} MiB (goal <= 30), growth after warm-up {:+.2} MiB (goal <= 1)",
        peak as f64 / MIB,
        growth / MIB
    );
    assert!(peak as f64 <= 30.0 * MIB, "peak RSS over 30 MiB");
    assert!(growth <= MIB, "RSS grew by {:.2} MiB", growth / MIB);
}
