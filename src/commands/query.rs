//! `edgeprio query`: readings from the log as a table, CSV or JSON lines,
//! once or following the log as the agent writes it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::agent;
use crate::cli::{Format, QueryArgs, RouteArg};
use crate::config::Config;
use crate::domain::{Route, WireReading, rfc3339_ms};
use crate::store::{Access, ReadingFilter, Store, StoredReading};

/// Prints the readings of `--db`, or of the log the configuration at
/// `config_path` names, that match the options; with `--follow`, keeps
/// printing new ones until killed.
pub fn run(config_path: &Path, args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let db = match args.db.clone() {
        Some(db) => db,
        None => Config::load(config_path)?.db,
    };
    query(&db, args)?;
    Ok(ExitCode::SUCCESS)
}

/// How often `query --follow` looks for new rows.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

fn query(db: &Path, args: &QueryArgs) -> anyhow::Result<()> {
    let store = Store::open(db, Access::ReadOnly)?;
    let now = agent::now_ms();
    let mut filter = ReadingFilter {
        sensor: args.sensor.clone(),
        since_ms: args.since.map(|w| w.to_ms(now)),
        until_ms: args.until.map(|w| w.to_ms(now)),
        route: args.route.map(|r| match r {
            RouteArg::Realtime => Route::Realtime,
            RouteArg::Batch => Route::Batch,
        }),
        node: None,
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
