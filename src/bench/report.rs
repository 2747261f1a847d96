//! What a bench run found: per mode, and the ratios between them; on the
//! terminal as tables, and as CSV and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::children::Usage;
use super::{Mode, Plan};

/// The paper's figures (its Figure 9, Apache `JMeter` against its servers),
/// in transactions per second.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Paper {
    /// The priority algorithm's peak.
    pub priority_peak: f64,
    /// Its average.
    pub priority_avg: f64,
    /// The centralized baseline's peak.
    pub centralized_peak: f64,
    /// Its average.
    pub centralized_avg: f64,
}

/// As the paper reports them.
pub const PAPER: Paper = Paper {
    priority_peak: 2700.0,
    priority_avg: 2050.0,
    centralized_peak: 2300.0,
    centralized_avg: 1800.0,
};

/// The counts a mode's run ends with.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Readings the nodes published (and the broker acknowledged).
    pub published: u64,
    /// Readings stored by the end of the load.
    pub stored_in_load: u64,
    /// How long the load ran, in seconds.
    pub load_s: f64,
    /// Until the last reading was stored (or the drain gave up).
    pub total_s: f64,
}

/// Every published reading looked for at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// Published and found nowhere.
    pub lost: u64,
    /// Found in both collectors' databases (or twice in one).
    pub twice: u64,
    /// Delivered again by the broker and deduplicated (relay mode: counted
    /// at the subscriber; the collectors count theirs in their metrics).
    pub duplicates: u64,
    /// Found and never published: another program's, or a bug.
    pub unexpected: u64,
    /// Readings the collectors' database did not get the first time (the
    /// broker dropped them): those repaired and those lost. `None` where
    /// nothing repairs (relay mode, audited at a subscriber).
    pub dropped: Option<u64>,
    /// Of those, stored after the collectors asked for them again (stored
    /// with `"resent": true`).
    pub repaired: Option<u64>,
    /// Stored on the real-time route.
    pub realtime: u64,
    /// From a real-time reading's `ts_ms` to the collector's
    /// `received_ms`.
    pub latency: Option<Latency>,
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Readings measured.
    pub n: u64,
    /// Median.
    pub p50_ms: i64,
    /// 99th percentile.
    pub p99_ms: i64,
    /// The slowest.
    pub max_ms: i64,
}

impl Latency {
    /// The distribution of `ms` (sorted in place); `None` when empty.
    pub fn of(ms: &mut [i64]) -> Option<Latency> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_unstable();
        let at = |q: f64| {
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Some(Latency {
            n: ms.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: ms[ms.len() - 1],
        })
    }
}

/// One mode's results.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// The mode.
    pub mode: Mode,
    /// Readings published.
    pub published: u64,
    /// Readings found at the end (published minus lost).
    pub stored: u64,
    /// Readings stored per second over the load (the sustained rate).
    pub avg_per_s: f64,
    /// The best one-second sample.
    pub peak_per_s: u64,
    /// Readings stored in each second of the load.
    pub per_second: Vec<u64>,
    /// The share stored on the real-time route.
    pub realtime_share: f64,
    /// How long the load ran, and until the last reading was stored.
    pub load_s: f64,
    /// Until the last reading was stored.
    pub total_s: f64,
    /// What the audit found.
    pub audit: Audit,
    /// What each process cost.
    pub usage: Vec<Usage>,
}

impl ModeReport {
    /// The report of one mode.
    pub fn new(
        mode: Mode,
        counts: Counts,
        per_second: Vec<u64>,
        audit: Audit,
        usage: Vec<Usage>,
    ) -> Self {
        let stored = counts.published.saturating_sub(audit.lost);
        Self {
            mode,
            published: counts.published,
            stored,
            avg_per_s: counts.stored_in_load as f64 / counts.load_s.max(f64::MIN_POSITIVE),
            peak_per_s: per_second.iter().copied().max().unwrap_or(0),
            per_second,
            realtime_share: if stored == 0 {
                0.0
            } else {
                audit.realtime as f64 / stored as f64
            },
            load_s: counts.load_s,
            total_s: counts.total_s,
            audit,
            usage,
        }
    }

    /// CPU microseconds per stored reading of the processes named so.
    fn cpu_per_reading_us(&self, u: &Usage) -> f64 {
        u.cpu_s * 1e6 / (self.stored.max(1) as f64)
    }
}

/// Ratios between modes of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    /// Priority's sustained rate over centralized's.
    pub priority_over_centralized: Option<f64>,
    /// Priority's sustained rate (through the gateway) over the relay's.
    pub gateway_over_relay: Option<f64>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine it ran on.
    pub machine: String,
    /// The broker.
    pub broker: String,
    /// Where the collectors stored.
    pub sink: String,
    /// Simulated nodes.
    pub nodes: usize,
    /// Sensors per node.
    pub sensors: usize,
    /// Seconds of load per mode.
    pub duration_s: f64,
    /// The asked rate, if any.
    pub rate: Option<f64>,
    /// The share of readings that are steps.
    pub events: f64,
    /// Per mode.
    pub modes: Vec<ModeReport>,
    /// Between modes.
    pub ratios: Ratios,
    /// The paper's figures, for comparison.
    pub paper: Paper,
}

impl Report {
    /// The report of `modes`, run as `plan` says.
    pub fn new(plan: &Plan, broker: String, modes: Vec<ModeReport>) -> Self {
        let avg = |m: Mode| modes.iter().find(|r| r.mode == m).map(|r| r.avg_per_s);
        let ratio =
            |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b.max(f64::MIN_POSITIVE));
        let ratios = Ratios {
            priority_over_centralized: ratio(avg(Mode::Priority), avg(Mode::Centralized)),
            gateway_over_relay: ratio(avg(Mode::Priority), avg(Mode::Relay)),
        };
        Self {
            machine: super::procfs::machine(),
            broker,
            sink: plan.sink.as_deref().map_or_else(
                || "SQLite, one file both collectors write".to_owned(),
                |u| format!("PostgreSQL {}", u.split('@').next_back().unwrap_or(u)),
            ),
            nodes: plan.nodes,
            sensors: plan.sensors,
            duration_s: plan.duration.as_secs_f64(),
            rate: plan.rate,
            events: plan.events,
            modes,
            ratios,
            paper: PAPER,
        }
    }

    /// Whether every reading of every mode was found exactly once.
    pub fn lossless(&self) -> bool {
        self.modes
            .iter()
            .all(|m| m.audit.lost == 0 && m.audit.twice == 0 && m.audit.unexpected == 0)
    }

    /// The tables for the terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} nodes x {} sensors, {} s per mode, {}; broker: {}; collectors: {}; on {}",
            self.nodes,
            self.sensors,
            self.duration_s,
            self.rate.map_or_else(
                || "as fast as the pipeline takes".to_owned(),
                |r| format!("{r} readings/s")
            ),
            self.broker,
            self.sink,
            self.machine
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>10} {:>9} {:>9} {:>21} {:>8} {:>8} {:>6} {:>6}",
            "mode",
            "published",
            "avg/s",
            "peak/s",
            "realtime",
            "latency p50/p99/max",
            "dropped",
            "repaired",
            "lost",
            "twice"
        );
        for m in &self.modes {
            let latency = m.audit.latency.map_or_else(
                || "-".to_owned(),
                |l| format!("{}/{}/{} ms", l.p50_ms, l.p99_ms, l.max_ms),
            );
            let realtime = if m.mode == Mode::Relay {
                "-".to_owned()
            } else {
                format!("{:.1} %", m.realtime_share * 100.0)
            };
            let or_dash = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let _ = writeln!(
                out,
                "{:<12} {:>10} {:>10.0} {:>9} {:>9} {:>21} {:>8} {:>8} {:>6} {:>6}",
                m.mode.as_str(),
                m.published,
                m.avg_per_s,
                m.peak_per_s,
                realtime,
                latency,
                or_dash(m.audit.dropped),
                or_dash(m.audit.repaired),
                m.audit.lost,
                m.audit.twice
            );
        }
        self.processes(&mut out);
        self.comparison(&mut out);
        out
    }

    /// What each process cost, per mode.
    fn processes(&self, out: &mut String) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<12} {:<18} {:>8} {:>14} {:>10}",
            "mode", "process", "CPU s", "µs per reading", "peak MiB"
        );
        for m in &self.modes {
            for u in &m.usage {
                let _ = writeln!(
                    out,
                    "{:<12} {:<18} {:>8.1} {:>14.1} {:>10.1}",
                    m.mode.as_str(),
                    u.name,
                    u.cpu_s,
                    m.cpu_per_reading_us(u),
                    u.peak_rss_mib
                );
            }
        }
    }

    /// The ratios, and the paper's figures beside ours.
    fn comparison(&self, out: &mut String) {
        let _ = writeln!(out);
        if let Some(r) = self.ratios.priority_over_centralized {
            let _ = writeln!(
                out,
                "priority / centralized: {r:.2} (the paper: {:.2} average, {:.2} peak)",
                PAPER.priority_avg / PAPER.centralized_avg,
                PAPER.priority_peak / PAPER.centralized_peak
            );
        }
        if let Some(r) = self.ratios.gateway_over_relay {
            let _ = writeln!(out, "gateway (priority) / relay: {r:.2}");
        }
        if let Some(p) = self.modes.iter().find(|m| m.mode == Mode::Priority) {
            let _ = writeln!(
                out,
                "priority: {:.0} readings/s average, {} peak; the paper: {:.0} average, {:.0} peak ({:.1}x, {:.1}x)",
                p.avg_per_s,
                p.peak_per_s,
                PAPER.priority_avg,
                PAPER.priority_peak,
                p.avg_per_s / PAPER.priority_avg,
                p.peak_per_s as f64 / PAPER.priority_peak
            );
        }
        if !self.lossless() {
            let _ = writeln!(
                out,
                "READINGS WERE LOST OR STORED TWICE: see the table above"
            );
        }
    }

    /// One CSV row per mode.
    pub fn csv(&self) -> Result<String, String> {
        #[derive(Serialize)]
        struct Row<'a> {
            mode: &'a str,
            published: u64,
            stored: u64,
            avg_per_s: f64,
            peak_per_s: u64,
            realtime_share: f64,
            latency_p50_ms: Option<i64>,
            latency_p99_ms: Option<i64>,
            latency_max_ms: Option<i64>,
            dropped: Option<u64>,
            repaired: Option<u64>,
            lost: u64,
            twice: u64,
            unexpected: u64,
            server_cpu_s: f64,
            server_peak_rss_mib: f64,
            collectors_cpu_s: f64,
            collectors_peak_rss_mib: f64,
            broker_cpu_s: Option<f64>,
            nodes_cpu_s: f64,
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        for m in &self.modes {
            let pick = |f: fn(&str) -> bool| m.usage.iter().filter(move |u| f(&u.name));
            let server = pick(|n| n == "gateway" || n == "relay").next();
            let collectors: Vec<&Usage> = pick(|n| n.starts_with("collect")).collect();
            let l = m.audit.latency;
            w.serialize(Row {
                mode: m.mode.as_str(),
                published: m.published,
                stored: m.stored,
                avg_per_s: (m.avg_per_s * 10.0).round() / 10.0,
                peak_per_s: m.peak_per_s,
                realtime_share: m.realtime_share,
                latency_p50_ms: l.map(|l| l.p50_ms),
                latency_p99_ms: l.map(|l| l.p99_ms),
                latency_max_ms: l.map(|l| l.max_ms),
                dropped: m.audit.dropped,
                repaired: m.audit.repaired,
                lost: m.audit.lost,
                twice: m.audit.twice,
                unexpected: m.audit.unexpected,
                server_cpu_s: server.map_or(0.0, |u| u.cpu_s),
                server_peak_rss_mib: server.map_or(0.0, |u| u.peak_rss_mib),
                collectors_cpu_s: collectors.iter().fold(0.0, |a, u| a + u.cpu_s),
                collectors_peak_rss_mib: collectors
                    .iter()
                    .map(|u| u.peak_rss_mib)
                    .fold(0.0, f64::max),
                broker_cpu_s: pick(|n| n == "mosquitto").next().map(|u| u.cpu_s),
                nodes_cpu_s: pick(|n| n.starts_with("bench")).fold(0.0, |a, u| a + u.cpu_s),
            })
            .map_err(|e| e.to_string())?;
        }
        let bytes = w.into_inner().map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }

    /// The whole report, per-second samples included.
    pub fn json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_the_nearest_rank() {
        let mut ms: Vec<i64> = (1..=100).rev().collect();
        let l = Latency::of(&mut ms).expect("some");
        assert_eq!((l.n, l.p50_ms, l.p99_ms, l.max_ms), (100, 50, 99, 100));
        assert_eq!(Latency::of(&mut []), None);
        let l = Latency::of(&mut [5]).expect("one");
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (5, 5, 5));
    }

    #[test]
    fn the_average_is_over_the_load_and_the_peak_its_best_second() {
        let m = ModeReport::new(
            Mode::Priority,
            Counts {
                published: 1000,
                stored_in_load: 900,
                load_s: 3.0,
                total_s: 4.0,
            },
            vec![200, 400, 300],
            Audit {
                realtime: 30,
                ..Audit::default()
            },
            vec![],
        );
        assert!((m.avg_per_s - 300.0).abs() < 1e-9);
        assert_eq!(m.peak_per_s, 400);
        assert_eq!(m.stored, 1000);
        assert!((m.realtime_share - 0.03).abs() < 1e-9);
    }
}
