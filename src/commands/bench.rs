//! `edgeprio bench`: runs [`crate::bench`] with a progress line on stderr,
//! prints the tables and writes the files asked for; and the hidden
//! `bench-relay` it starts.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;

use crate::bench::{self, Plan, Progress};
use crate::cli::{BenchArgs, BenchRelayArgs};
use crate::config::Config;

/// Runs every mode, then reports; exit 1 if a reading was lost or stored
/// twice.
pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan {
        duration: args.duration,
        nodes: usize::from(args.nodes),
        sensors: usize::from(args.sensors),
        rate: args.rate,
        broker: args.broker.clone(),
        sink: args.sink.clone(),
        modes: dedup(&args.modes),
        window: usize::try_from(args.window).unwrap_or(usize::MAX),
        max_batch: args.max_batch,
        events: args.events,
        keep: args.keep.clone(),
        exe: std::env::current_exe().context("cannot find the edgeprio binary to run")?,
    };
    let terminal = std::io::stderr().is_terminal();
    let last_line = Mutex::new(Instant::now());
    let progress = move |p: &Progress| {
        let line = format!(
            "{:<12} {:>5.1} s {} published {:>9}  stored {:>9}  {:>7}/s",
            p.mode.as_str(),
            p.elapsed_s,
            if p.draining { "draining" } else { "load    " },
            p.published,
            p.stored,
            p.last_second
        );
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            // A log, not a terminal: a line every 5 s.
            let mut last = last_line
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed().as_secs() >= 5 {
                *last = Instant::now();
                let _ = writeln!(err, "{line}");
            }
        }
    };
    let report = super::runtime()?
        .block_on(bench::run(&plan, &progress))
        .map_err(anyhow::Error::msg)?;
    if terminal {
        eprintln!();
    }
    print!("{}", report.table());
    if let Some(path) = &args.csv {
        write(path, &report.csv().map_err(anyhow::Error::msg)?)?;
    }
    if let Some(path) = &args.json {
        write(path, &report.json().map_err(anyhow::Error::msg)?)?;
    }
    if let Some(path) = &args.plot {
        bench::plot::draw(&report, path).map_err(anyhow::Error::msg)?;
    }
    Ok(if report.lossless() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The modes in the order given, each once.
fn dedup(modes: &[bench::Mode]) -> Vec<bench::Mode> {
    let mut out = Vec::new();
    for m in modes {
        if !out.contains(m) {
            out.push(*m);
        }
    }
    out
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// `edgeprio bench-relay`: the relay of the config's `[mqtt]` until SIGTERM.
pub fn relay(config_path: &Path, args: &BenchRelayArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let mqtt = config.require_broker()?.clone();
    super::runtime()?
        .block_on(async {
            let shutdown = super::signals::shutdown_signal().map_err(|e| e.to_string())?;
            let ready = || {
                println!("subscribed");
                let _ = std::io::stdout().flush();
            };
            bench::relay::relay(&mqtt, &mqtt.client_id, args.max_batch, ready, shutdown).await
        })
        .map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}
