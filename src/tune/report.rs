//! What `tune` prints: a table, CSV (a row per setting) or JSON.

use std::io::Write;

use super::{Event, Outcome, Problem, Recording, Rejected};
use crate::domain::{Sample, rfc3339_ms};

/// How many events, rejections and problems are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The biggest events shown per setting.
    pub events: usize,
    /// The rejected rows and input problems shown.
    pub rows: usize,
}

/// The results of every setting on one recording.
#[derive(Debug)]
pub struct Report<'r> {
    /// What was replayed.
    pub recording: &'r Recording,
    /// One per setting, the current parameters first.
    pub outcomes: Vec<Outcome>,
    /// The setting whose events and rejections are listed (0-based).
    pub shown: usize,
    /// How much is listed.
    pub limits: Limits,
}

fn values(s: Sample) -> String {
    format!("{:.1} °C {:.1} %", s.temperature, s.humidity)
}

fn share(o: &Outcome) -> String {
    format!("{:.1} %", o.realtime_share() * 100.0)
}

fn per_day(o: &Outcome, span_ms: i64) -> String {
    o.events_per_day(span_ms)
        .map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

impl Report<'_> {
    /// The table for a terminal.
    pub fn table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let rec = self.recording;
        let span = rec.span_ms();
        writeln!(
            out,
            "{}: {} readings in {} stream{}, over {}",
            rec.source,
            rec.counted(),
            rec.tracks.len(),
            if rec.tracks.len() == 1 { "" } else { "s" },
            humantime::format_duration(std::time::Duration::from_millis(
                u64::try_from(span).unwrap_or(0)
            ))
        )?;
        if !rec.logged_errors.is_empty() {
            let kinds: Vec<String> = rec
                .logged_errors
                .iter()
                .map(|(k, n)| format!("{n} {}", k.as_str()))
                .collect();
            writeln!(
                out,
                "failed reads the agent logged in the range: {}",
                kinds.join(", ")
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:>3}  {:<72} {:>9} {:>8} {:>10} {:>8}",
            "#", "SETTING", "REAL-TIME", "SHARE", "EVENTS/DAY", "REJECTED"
        )?;
        let jumps = self.outcomes.first().map_or(0, |o| o.jumps);
        for (i, o) in self.outcomes.iter().enumerate() {
            let mark = if i == 0 { "*" } else { " " };
            writeln!(
                out,
                "{:>2}{mark}  {:<72} {:>9} {:>8} {:>10} {:>8}",
                i + 1,
                o.setting.label(),
                o.realtime,
                share(o),
                per_day(o, span),
                o.rejected.len()
            )?;
        }
        writeln!(out, "(* the current parameters)")?;
        if jumps > 0 {
            writeln!(
                out,
                "{jumps} readings jump beyond the plausibility bound: the agent re-reads such a \
                 frame and keeps it only if the re-read agrees; a recording keeps them"
            )?;
        }
        let Some(o) = self.outcomes.get(self.shown) else {
            return Ok(());
        };
        writeln!(out)?;
        if o.events.is_empty() {
            writeln!(out, "setting {}: no event", self.shown + 1)?;
        } else {
            writeln!(
                out,
                "the biggest events of setting {} ({} of {}):",
                self.shown + 1,
                o.events.len().min(self.limits.events),
                o.events.len()
            )?;
            writeln!(
                out,
                "  {:<24}  {:<16} {:>8}  {:<18}  {:<18}  {:>4}",
                "TIME", "STREAM", "LINE/SEQ", "BEFORE", "AFTER", "PRIO"
            )?;
            for e in o.events.iter().take(self.limits.events) {
                writeln!(
                    out,
                    "  {:<24}  {:<16} {:>8}  {:<18}  {:<18}  {:>4}",
                    rfc3339_ms(e.ts_ms),
                    e.stream,
                    e.line,
                    values(e.before),
                    values(e.after),
                    e.priority
                )?;
            }
        }
        list(
            out,
            &format!("rejected by validation under setting {}", self.shown + 1),
            &o.rejected,
            self.limits.rows,
            |r| format!("{} line/seq {}: {}: {}", r.stream, r.line, r.kind, r.detail),
        )?;
        list(
            out,
            "input rows left out",
            &rec.problems,
            self.limits.rows,
            Problem::to_string,
        )
    }

    /// A row per setting.
    pub fn csv(&self, out: impl Write) -> std::io::Result<()> {
        let span = self.recording.span_ms();
        let mut w = csv::Writer::from_writer(out);
        w.write_record([
            "setting",
            "threshold",
            "step",
            "deadband_temperature",
            "deadband_humidity",
            "baseline",
            "realtime_at",
            "readings",
            "realtime",
            "realtime_share",
            "events_per_day",
            "rejected",
            "jumps",
        ])?;
        for (i, o) in self.outcomes.iter().enumerate() {
            let p = o.setting.params();
            w.write_record([
                (i + 1).to_string(),
                p.threshold.to_string(),
                p.step.to_string(),
                p.deadband.temperature.to_string(),
                p.deadband.humidity.to_string(),
                p.baseline.as_str().to_string(),
                p.realtime_at.to_string(),
                o.readings.to_string(),
                o.realtime.to_string(),
                format!("{:.6}", o.realtime_share()),
                o.events_per_day(span)
                    .map_or_else(String::new, |v| format!("{v:.3}")),
                o.rejected.len().to_string(),
                o.jumps.to_string(),
            ])?;
        }
        w.flush()
    }

    /// Everything, as one JSON document.
    pub fn json(&self, out: impl Write) -> std::io::Result<()> {
        let rec = self.recording;
        let span = rec.span_ms();
        let settings: Vec<serde_json::Value> = self
            .outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let p = o.setting.params();
                serde_json::json!({
                    "setting": i + 1,
                    "current": i == 0,
                    "threshold": p.threshold,
                    "step": p.step,
                    "max_weight": p.max_weight,
                    "deadband": {"temperature": p.deadband.temperature, "humidity": p.deadband.humidity},
                    "baseline": p.baseline.as_str(),
                    "realtime_at": p.realtime_at,
                    "readings": o.readings,
                    "realtime": o.realtime,
                    "realtime_share": o.realtime_share(),
                    "events_per_day": o.events_per_day(span),
                    "events": o.events.iter().take(self.limits.events).map(event).collect::<Vec<_>>(),
                    "rejected": o.rejected.iter().take(self.limits.rows).collect::<Vec<&Rejected>>(),
                    "rejected_total": o.rejected.len(),
                    "jumps": o.jumps,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "source": rec.source,
            "streams": rec.tracks.iter().map(super::Track::name).collect::<Vec<_>>(),
            "readings": rec.counted(),
            "span_ms": span,
            "logged_errors": rec.logged_errors.iter().map(|(k, n)| (k.as_str().to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "input_problems": rec.problems.iter().take(self.limits.rows).collect::<Vec<_>>(),
            "input_problems_total": rec.problems.len(),
            "settings": settings,
        });
        let mut out = out;
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)
    }
}

fn event(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "stream": e.stream,
        "line": e.line,
        "ts_ms": e.ts_ms,
        "ts": rfc3339_ms(e.ts_ms),
        "before": {"temperature_c": e.before.temperature, "humidity_pct": e.before.humidity},
        "after": {"temperature_c": e.after.temperature, "humidity_pct": e.after.humidity},
        "priority": e.priority,
    })
}

fn list<T>(
    out: &mut impl Write,
    title: &str,
    items: &[T],
    limit: usize,
    show: impl Fn(&T) -> String,
) -> std::io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{title} ({} of {}):",
        items.len().min(limit),
        items.len()
    )?;
    for item in items.iter().take(limit) {
        writeln!(out, "  {}", show(item))?;
    }
    Ok(())
}
