//! `edgeprio tune`: the current priority parameters and a grid of
//! alternatives, each replayed over a recording (see [`crate::tune`]).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::agent::{self, Checks};
use crate::cli::{BaselineArg, TuneArgs, TuneFormat};
use crate::config::{self, Config};
use crate::domain::{Baseline, PerChannel, PriorityParams};
use crate::store::{Access, Store};
use crate::stream::StreamRules;
use crate::tune::input::{self, Columns, Range};
use crate::tune::report::{Limits, Report};
use crate::tune::{self, Recording, Setting};

/// Replays the recording `args` names under every setting and prints the
/// results; `config_path` (the `--config` given, if any) has the current
/// parameters. Without `--config` and without a file at the default path,
/// the current parameters are the defaults.
pub fn run(config_path: Option<&Path>, args: &TuneArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let recording = read(config.as_ref(), args)?;
    let current = current_setting(
        config.as_ref(),
        args.interval.or_else(|| cadence(&recording)),
    );
    let settings = grid(&current, args)?;
    if args.mark == 0 || args.mark > settings.len() {
        bail!(
            "--mark {}: there are {} settings, numbered from 1 (the current parameters)",
            args.mark,
            settings.len()
        );
    }
    if recording.counted() == 0 {
        bail!(
            "{}: no readings to replay{}",
            recording.source,
            if args.since.is_some() || args.until.is_some() || args.sensor.is_some() {
                " in the chosen range (check --node, --sensor, --since and --until)"
            } else {
                ""
            }
        );
    }
    let shown = args.mark - 1;
    let mut outcomes = Vec::with_capacity(settings.len());
    let mut collector = tune::plot::Collector::new(None);
    let mut readings = match &args.readings {
        Some(path) => Some(readings_writer(path)?),
        None => None,
    };
    for (i, setting) in settings.iter().enumerate() {
        let outcome = if i == shown {
            let mut failed = None;
            let o = tune::replay(&recording, setting, |s| {
                if let Some(w) = readings.as_mut()
                    && failed.is_none()
                    && let Err(e) = write_reading(w, &s)
                {
                    failed = Some(e);
                }
                collector.take(s);
            });
            if let Some(e) = failed {
                bail!("cannot write --readings: {e}");
            }
            o
        } else {
            tune::replay(&recording, setting, |_| {})
        };
        outcomes.push(outcome);
    }
    if let Some(mut w) = readings {
        w.flush().context("cannot write --readings")?;
    }
    let report = Report {
        recording: &recording,
        outcomes,
        shown,
        limits: Limits {
            events: args.top,
            rows: args.top,
        },
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.format {
        TuneFormat::Table => report.table(&mut out),
        TuneFormat::Csv => report.csv(&mut out),
        TuneFormat::Json => report.json(&mut out),
    }
    .context("cannot write the report")?;
    if let Some(path) = &args.plot {
        let title = format!(
            "{}: events of setting {} ({})",
            recording.source,
            args.mark,
            settings[shown].label()
        );
        tune::plot::draw(&title, &collector.into_series(), path).map_err(anyhow::Error::msg)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The config at `path`; without `--config`, the one at the default path
/// if there is one.
fn load_config(path: Option<&Path>) -> anyhow::Result<Option<Config>> {
    if let Some(p) = path {
        return Ok(Some(Config::load(p)?));
    }
    let default = Path::new(config::DEFAULT_PATH);
    if default.exists() {
        return Ok(Some(Config::load(default)?));
    }
    tracing::info!(
        "no config at {}: the current parameters are the defaults",
        default.display()
    );
    Ok(None)
}

/// The setting the config makes; without one, the defaults, with the gap
/// rule's default of 10 x `interval` (the recording's cadence).
fn current_setting(config: Option<&Config>, interval: Option<Duration>) -> Setting {
    match config {
        Some(c) => Setting {
            rules: StreamRules::from_config(c),
            checks: Checks {
                bound: c.plausibility,
                confirm: c.confirm,
            },
        },
        None => Setting::defaults(interval.unwrap_or(config::DEFAULT_INTERVAL)),
    }
}

/// The usual spacing of the recording's rows: the median of its first
/// streams' gaps (at most 10,000 of them), `None` for fewer than two rows.
fn cadence(recording: &Recording) -> Option<Duration> {
    let mut gaps: Vec<i64> = recording
        .tracks
        .iter()
        .flat_map(|t| t.rows.windows(2).map(|w| w[1].ts_ms - w[0].ts_ms))
        .filter(|&g| g > 0)
        .take(10_000)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let mid = gaps.len() / 2;
    let (_, median, _) = gaps.select_nth_unstable(mid);
    Some(Duration::from_millis(u64::try_from(*median).ok()?))
}

/// The current setting, then every combination of the alternatives given
/// (a parameter not given keeps its current value), each once.
fn grid(current: &Setting, args: &TuneArgs) -> anyhow::Result<Vec<Setting>> {
    let p = current.rules.priority;
    let mut params = vec![p];
    if !args.threshold.is_empty() {
        params = product(&params, &args.threshold, |q, &v| q.threshold = v);
    }
    if !args.step.is_empty() {
        params = product(&params, &args.step, |q, &v| q.step = v);
    }
    if !args.deadband.is_empty() {
        params = product(&params, &args.deadband, |q, &(t, h)| {
            q.deadband = PerChannel {
                temperature: t,
                humidity: h.unwrap_or(q.deadband.humidity),
            };
        });
    }
    if !args.baseline.is_empty() {
        params = product(&params, &args.baseline, |q, b| {
            q.baseline = match b {
                BaselineArg::Previous => Baseline::Previous,
                BaselineArg::Reported => Baseline::Reported,
            };
        });
    }
    if !args.realtime_at.is_empty() {
        for &r in &args.realtime_at {
            let ceiling = p.max_weight * 2;
            if r > ceiling {
                bail!(
                    "--realtime-at {r}: no reading could ever reach it; allowed is 0 (everything \
                     real-time) to {ceiling} (2 x max_weight)"
                );
            }
        }
        params = product(&params, &args.realtime_at, |q, &v| q.realtime_at = v);
    }
    let mut out = vec![*current];
    // `params` starts as the current parameters and each flag multiplies
    // it by a non-empty list: never empty.
    for q in params {
        if out.iter().all(|s| s.rules.priority != q) {
            let mut s = *current;
            s.rules.priority = q;
            out.push(s);
        }
    }
    Ok(out)
}

fn product<T>(
    params: &[PriorityParams],
    values: &[T],
    set: impl Fn(&mut PriorityParams, &T),
) -> Vec<PriorityParams> {
    let mut out = Vec::with_capacity(params.len() * values.len());
    for p in params {
        for v in values {
            let mut q = *p;
            set(&mut q, v);
            out.push(q);
        }
    }
    out
}

/// The recording `args` names: `--csv`, `--db`, or the config's `db`.
fn read(config: Option<&Config>, args: &TuneArgs) -> anyhow::Result<Recording> {
    let now = agent::now_ms();
    let range = Range {
        since_ms: args.since.map(|w| w.to_ms(now)),
        until_ms: args.until.map(|w| w.to_ms(now)),
    };
    let mut recording = if let Some(csv) = &args.csv {
        let columns = Columns {
            temperature: args.temperature_column.clone(),
            humidity: args.humidity_column.clone(),
            time: args.time_column.clone(),
            interval: args
                .interval
                .or(config.map(|c| c.interval))
                .unwrap_or(config::DEFAULT_INTERVAL),
        };
        let mut rec = input::from_csv(csv, &columns, range)?;
        rec.tracks.retain(|t| {
            args.node
                .as_ref()
                .is_none_or(|n| t.node.is_empty() || *n == t.node)
                && args
                    .sensor
                    .as_ref()
                    .is_none_or(|s| t.sensor.is_empty() || *s == t.sensor)
        });
        rec
    } else {
        let db = match (&args.db, config) {
            (Some(db), _) => db.clone(),
            (None, Some(c)) => c.db.clone(),
            (None, None) => bail!(
                "no recording to replay: give --db FILE (the agent's log) or --csv FILE, or \
                 --config with the log as `db`"
            ),
        };
        let store = Store::open(&db, Access::ReadOnly)?;
        input::from_log(&store, args.node.as_deref(), args.sensor.as_deref(), range)?
    };
    // Each stream is checked against what its sensor can measure.
    if let Some(c) = config {
        for t in &mut recording.tracks {
            if let Some(sc) = c.sensors.iter().find(|s| s.id == t.sensor) {
                t.range = sc.kind.dht().map(|d| d.model.range());
            }
        }
    }
    Ok(recording)
}

fn readings_writer(path: &Path) -> anyhow::Result<csv::Writer<std::fs::File>> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create --readings {}", path.display()))?;
    let mut w = csv::Writer::from_writer(file);
    w.write_record([
        "node",
        "sensor",
        "line",
        "ts_ms",
        "counted",
        "temperature_c",
        "humidity_pct",
        "weight_temperature",
        "weight_humidity",
        "priority",
        "route",
    ])?;
    Ok(w)
}

/// One row of `--readings`: a rejected row has no values, weights,
/// priority or route.
fn write_reading(w: &mut csv::Writer<std::fs::File>, s: &tune::Scored<'_>) -> csv::Result<()> {
    let head = [
        s.track.node.clone(),
        s.track.sensor.clone(),
        s.row.line.to_string(),
        s.row.ts_ms.to_string(),
        u8::from(s.counted).to_string(),
    ];
    let tail = match s.score {
        Some((sample, score)) => [
            sample.temperature.to_string(),
            sample.humidity.to_string(),
            score.weights.temperature.to_string(),
            score.weights.humidity.to_string(),
            score.priority.to_string(),
            score.route.as_str().to_string(),
        ],
        None => Default::default(),
    };
    w.write_record(head.iter().chain(tail.iter()))
}
