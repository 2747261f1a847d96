//! `edgeprio tune` against the real agent: a log written by `run` (on
//! simulated sensors, restarted in the middle so the restore from the log
//! is replayed too) is replayed and must give, row by
//! row, the weights, priority and route the agent logged, with either
//! baseline; CSV input with bad rows, the output formats, the plot, and the
//! errors that name the flag, row or column.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use common::{assert_no_panic, edgeprio, text};

/// The demo's four simulated sensors (one the heater replay) read every
/// 50 ms by `run`, with `extra` under `[priority]`, logging to `db`. The
/// gap rule's default, 10 x interval, is 500 ms.
fn config(dir: &Path, db: &Path, extra: &str) -> std::path::PathBuf {
    let demo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.toml"))
            .unwrap();
    let body = demo
        .replace(
            "db = \"edgeprio-demo.db\"",
            &format!(
                "db = {:?}\n\n[priority]\n{extra}\n",
                db.display().to_string()
            ),
        )
        .replace("interval = \"15s\"", "interval = \"50ms\"");
    assert!(
        body.contains("50ms") && body.contains("[priority]"),
        "assets/demo.toml no longer sets interval and db as this test expects"
    );
    let path = dir.join("edgeprio.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// Runs the agent on `config` until its log holds `rows` readings.
fn run_until(dir: &Path, config: &Path, db: &Path, rows: usize, name: &str) {
    let runtime = dir.join(format!("{name}-runtime"));
    std::fs::create_dir_all(&runtime).unwrap();
    let mut agent = common::RunAgent::start(dir, config, &runtime, name);
    agent.wait_line(&["agent running"], Duration::from_secs(30));
    common::wait_for(Duration::from_mins(1), "the readings", || {
        db.exists() && common::readings(db).len() >= rows
    });
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
}

type Scores = BTreeMap<(String, i64), (i64, i64, i64, String)>;

/// (sensor, seq) to (`weight_temperature`, `weight_humidity`, priority,
/// route) of every row the agent logged.
fn logged(db: &Path) -> Scores {
    common::readings(db)
        .into_iter()
        .map(|r| {
            (
                (r.sensor, r.seq),
                (r.weight_temperature, r.weight_humidity, r.priority, r.route),
            )
        })
        .collect()
}

/// The same from `tune --readings`.
fn replayed(path: &Path) -> Scores {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().clone();
    let columns: Vec<usize> = [
        "sensor",
        "line",
        "weight_temperature",
        "weight_humidity",
        "priority",
        "route",
    ]
    .iter()
    .map(|name| header.iter().position(|h| h == *name).unwrap())
    .collect();
    reader
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            let field = |k: usize| rec[columns[k]].to_string();
            let number = |k: usize| rec[columns[k]].parse::<i64>().unwrap();
            (
                (field(0), number(1)),
                (number(2), number(3), number(4), field(5)),
            )
        })
        .collect()
}

fn replays_the_agents_log_row_by_row(baseline: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let cfg = config(dir.path(), &db, &format!("baseline = {baseline:?}"));
    // Two runs: the second restores prev (and the reported baseline) from
    // the log, as a restarted agent does; the pause between them is longer
    // than the gap rule's 500 ms, so its first readings are scored as
    // after a power cut, by both.
    run_until(dir.path(), &cfg, &db, 200, "first");
    std::thread::sleep(Duration::from_millis(700));
    run_until(dir.path(), &cfg, &db, 400, "second");
    let agent = logged(&db);
    assert!(
        agent.len() > 300,
        "the demo logged {} readings",
        agent.len()
    );
    let realtime = agent.values().filter(|v| v.3 == "realtime").count();
    assert!(realtime > 0, "the heater replay makes events");

    let rows = dir.path().join("replayed.csv");
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["tune", "--readings"])
        .arg(&rows)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_no_panic(&text(&out.stderr));
    let ours = replayed(&rows);
    assert_eq!(ours.len(), agent.len());
    let differ: Vec<_> = agent
        .iter()
        .filter(|(k, v)| ours.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone(), ours.get(k).cloned()))
        .take(10)
        .collect();
    assert!(
        differ.is_empty(),
        "rows the replay scored differently: {differ:#?}"
    );
    // The table's first setting counts what the agent routed real-time.
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("1*"))
        .unwrap_or_else(|| panic!("no current setting in:\n{stdout}"));
    assert!(line.contains(&format!("baseline={baseline}")), "{line}");
    let count: usize = line
        .split_whitespace()
        .rev()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no real-time count in {line:?}"));
    assert_eq!(count, realtime, "{line}");
}

#[test]
fn the_previous_baseline_replays_the_agents_log_row_by_row() {
    replays_the_agents_log_row_by_row("previous");
}

#[test]
fn the_reported_baseline_replays_the_agents_log_row_by_row() {
    replays_the_agents_log_row_by_row("reported");
}

/// A slow ramp (2.4 °C over 80 minutes, 1-minute rows).
fn ramp_csv(dir: &Path) -> std::path::PathBuf {
    let mut csv = String::from("time,temp,rh\n");
    for i in 0..=80 {
        let t = 20.0 + 0.03 * f64::from(i);
        writeln!(
            csv,
            "2026-11-01T{:02}:{:02}:00Z,{t:.2},50.0",
            8 + i / 60,
            i % 60
        )
        .unwrap();
    }
    let path = dir.join("ramp.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// A config with no sensors and a 1-minute interval: the default priority
/// parameters, whatever /etc/edgeprio holds on this machine.
fn bare_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("bare.toml");
    std::fs::write(&path, "interval = \"1m\"\n").unwrap();
    path
}

#[test]
fn a_ramp_is_caught_only_with_the_reported_baseline_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let csv = ramp_csv(dir.path());
    let base = |format: &str| {
        let mut cmd = edgeprio(dir.path());
        cmd.arg("--config")
            .arg(bare_config(dir.path()))
            .args(["tune", "--csv"])
            .arg(&csv)
            .args([
                "--temperature-column",
                "temp",
                "--humidity-column",
                "rh",
                "--time-column",
                "time",
                "--baseline",
                "previous,reported",
                "--format",
                format,
            ]);
        cmd
    };
    let out = base("json").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["readings"], 81);
    assert_eq!(doc["span_ms"], 80 * 60_000);
    let settings = doc["settings"].as_array().unwrap();
    assert_eq!(
        settings.len(),
        2,
        "the current (previous) and reported: {doc:#}"
    );
    assert_eq!(settings[0]["baseline"], "previous");
    assert_eq!(settings[0]["realtime"], 0);
    assert_eq!(settings[1]["baseline"], "reported");
    assert_eq!(settings[1]["realtime"], 2);
    assert_eq!(settings[1]["events_per_day"], 36.0);

    let out = base("csv").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[1][5], "reported");
    assert_eq!(&rows[1][8], "2");

    let png = dir.path().join("ramp.png");
    let out = base("table")
        .args(["--mark", "2", "--plot"])
        .arg(&png)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("the biggest events of setting 2 (2 of 2)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("20.0 °C 50.0 %"),
        "the first event's baseline: {stdout}"
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (1400, 800));
}

#[test]
fn bad_csv_rows_are_named_and_the_good_ones_still_counted() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "ts_ms,temperature_c,humidity_pct\n0,20,50\n60000,warm,50\n120000,20.1,50\n\
         30000,20.2,50\n180000,95,50\n240000,20.3,\n300000,20.4,51\n",
    )
    .unwrap();
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(bare_config(dir.path()))
        .args(["tune", "--csv"])
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_no_panic(&text(&out.stderr));
    assert!(stdout.contains("4 readings in 1 stream"), "{stdout}");
    for expected in [
        "line 3, column temperature_c: \"warm\" is not a number",
        "line 5, column ts_ms: the time goes backwards",
        "line 7, column humidity_pct: \"\" is not a number",
        "rejected by validation under setting 1 (1 of 1)",
        "line/seq 6: range",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    std::fs::write(&csv, "ts_ms,t,humidity_pct\n0,20,50\n").unwrap();
    let bare = bare_config(dir.path());
    let run = |args: &[&str]| {
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&bare)
            .arg("tune")
            .args(args)
            .output()
            .unwrap();
        assert_no_panic(&text(&out.stderr));
        (out.status.code(), text(&out.stderr))
    };
    let csv_arg = csv.to_str().unwrap();
    // (arguments after `--csv FILE`, exit status, words the error has)
    let cases: [(&[&str], i32, &[&str]); 6] = [
        (
            &[],
            1,
            &["no column \"temperature_c\"", "--temperature-column"],
        ),
        (
            &["--temperature-column", "t", "--threshold", "0.05,0"],
            2,
            &["--threshold", "\"0\""],
        ),
        (&["--deadband", "0.5:x"], 2, &["--deadband", "humidity"]),
        (
            &["--temperature-column", "t", "--realtime-at", "1,21"],
            1,
            &["--realtime-at 21", "2 x max_weight"],
        ),
        (&["--baseline", "last"], 2, &["previous", "reported"]),
        (
            &["--temperature-column", "t", "--mark", "3"],
            1,
            &["--mark 3", "1 settings"],
        ),
    ];
    for (args, status, words) in cases {
        let mut all = vec!["--csv", csv_arg];
        all.extend_from_slice(args);
        let (code, err) = run(&all);
        assert_eq!(code, Some(status), "{args:?}: {err}");
        assert!(words.iter().all(|w| err.contains(w)), "{args:?}: {err}");
    }

    // A log with no rows in the range.
    let db = dir.path().join("log.db");
    common::demo(dir.path(), &db, 3);
    let (code, err) = run(&[
        "--db",
        db.to_str().unwrap(),
        "--until",
        "2000-01-01T00:00:00Z",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no readings to replay in the chosen range"),
        "{err}"
    );
    let (code, err) = run(&["--db", db.to_str().unwrap(), "--sensor", "nosuch"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--sensor"), "{err}");
}

/// The README's worked examples (its `console` blocks of `$ edgeprio tune`)
/// are what `tune` prints: each command is run, its `--plot` into a
/// temporary file, and its output compared line by line.
#[test]
fn the_readmes_worked_examples_are_what_tune_prints() {
    let readme = include_str!("../README.md");
    let mut examples = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (&mut block, line) {
            (None, "```console") => block = Some(Vec::new()),
            (Some(_), "```") => examples.extend(block.take()),
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    let examples: Vec<Vec<&str>> = examples
        .into_iter()
        .filter(|b| b.first().is_some_and(|l| l.starts_with("$ edgeprio tune ")))
        .collect();
    assert_eq!(examples.len(), 2, "the heater and the quiet room");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_config(dir.path());
    for example in examples {
        let mut args: Vec<String> = example[0]["$ edgeprio ".len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if let Some(i) = args.iter().position(|a| a == "--plot") {
            args[i + 1] = dir.path().join("plot.png").display().to_string();
        }
        let out = edgeprio(root)
            .arg("--config")
            .arg(&bare)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            example[0],
            text(&out.stderr)
        );
        let printed = text(&out.stdout);
        let printed: Vec<&str> = printed.lines().collect();
        let shown = &example[1..];
        assert_eq!(
            &printed[..shown.len().min(printed.len())],
            shown,
            "README and `{}` differ",
            example[0]
        );
    }
}
