//! Black-box tests of the `edgeprio` commands against DESIGN.md: the demo,
//! the paper's heater priorities, `query` in every format and filter,
//! `--follow`, restarts, `read-once`, `run` with signals, `--help` and
//! `--version`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use common::{
    CSV_HEADER, ChildGuard, DEMO_SENSORS, Row, agent_status, assert_no_panic, demo, edgeprio,
    fixture, now_ms, readings, recv_until, send_signal, sensor_errors, seqs_by_sensor, std_cmd,
    text, wait_for,
};
use serde_json::Value;

/// The heater replay (`assets/heater.csv`): (`temperature_c`, `humidity_pct`) per
/// sample, in order.
fn heater_samples() -> Vec<(f64, f64)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/heater.csv");
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (t, h) = (col("temperature_c"), col("humidity_pct"));
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[t].parse().unwrap(), r[h].parse().unwrap())
        })
        .collect()
}

/// `HH:MM:SS.mmm` of a Unix ms timestamp, UTC (the demo's clock column).
fn clock(ts_ms: i64) -> String {
    let ms = ts_ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Invariants every logged row must satisfy with the default priority
/// parameters (`combine = max`, `realtime_at = 1`) and the DHT22 range.
fn assert_row_invariants(r: &Row) {
    assert_eq!(
        r.priority,
        r.weight_temperature.max(r.weight_humidity),
        "priority = max(weights): {r:?}"
    );
    let want_route = if r.priority >= 1 { "realtime" } else { "batch" };
    assert_eq!(r.route, want_route, "route follows realtime_at = 1: {r:?}");
    assert!((-40.0..=80.0).contains(&r.temperature_c), "{r:?}");
    assert!((0.0..=100.0).contains(&r.humidity_pct), "{r:?}");
    assert!((0..=10).contains(&r.weight_temperature), "{r:?}");
    assert!((0..=10).contains(&r.weight_humidity), "{r:?}");
}

/// A reading line of the demo's stdout, parsed:
/// `HH:MM:SS.mmm  <sensor> seq <n> <t> °C <h> %RH   weights a/b priority p  -> route`.
#[derive(Debug, PartialEq)]
struct DemoLine {
    clock: String,
    sensor: String,
    seq: i64,
    temperature: f64,
    humidity: f64,
    weights: (i64, i64),
    priority: i64,
    route: String,
}

fn parse_demo_line(line: &str) -> DemoLine {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 14, "unexpected demo line {line:?}");
    assert_eq!(
        (f[2], f[5], f[7], f[8], f[10], f[12]),
        ("seq", "°C", "%RH", "weights", "priority", "->"),
        "unexpected demo line {line:?}"
    );
    let (wt, wh) = f[9].split_once('/').expect("weights a/b");
    DemoLine {
        clock: f[0].to_string(),
        sensor: f[1].to_string(),
        seq: f[3].parse().unwrap(),
        temperature: f[4].parse().unwrap(),
        humidity: f[6].parse().unwrap(),
        weights: (wt.parse().unwrap(), wh.parse().unwrap()),
        priority: f[11].parse().unwrap(),
        route: f[13].to_string(),
    }
}

/// Runs `query --db <db> <args>` and returns stdout, asserting success.
fn query(dir: &Path, db: &Path, args: &[&str]) -> String {
    let out = edgeprio(dir)
        .arg("query")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "query {args:?} failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    assert_no_panic(&text(&out.stderr));
    text(&out.stdout)
}

/// `query --format json` rows as parsed objects.
fn query_json(dir: &Path, db: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    query(dir, db, &all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The ids of JSON rows.
fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|v| v["id"].as_i64().unwrap()).collect()
}

fn row_ids(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

/// Asserts a `query --format json` object has exactly the contract's fields
/// and the same values as the logged row.
/// `published_ms` as printed equals the row's; with `follow`, a row printed
/// before the broker's PUBACK shows null and the log's value appears later
/// (once set it never changes).
fn assert_published(v: &Value, r: &Row, follow: bool) {
    let printed = v["published_ms"].as_i64();
    if follow && printed.is_none() {
        assert!(v["published_ms"].is_null(), "{v}");
    } else {
        assert_eq!(printed, r.published_ms, "{v}");
    }
    if r.published_ms.is_none() {
        assert!(v["published_ms"].is_null(), "{v}");
    }
}

fn assert_json_matches(v: &Value, r: &Row, follow: bool) {
    let obj = v.as_object().expect("a JSON object per line");
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "id",
        "node",
        "sensor",
        "log",
        "seq",
        "ts_ms",
        "ts",
        "temperature_c",
        "humidity_pct",
        "weight",
        "priority",
        "route",
        "published_ms",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want, "field set of {v}");
    let weight = obj["weight"].as_object().expect("weight is an object");
    let wkeys: BTreeSet<&str> = weight.keys().map(String::as_str).collect();
    assert_eq!(wkeys, BTreeSet::from(["temperature", "humidity"]), "{v}");

    assert_eq!(v["id"].as_i64(), Some(r.id), "{v}");
    assert_eq!(v["node"].as_str(), Some(r.node.as_str()), "{v}");
    assert_eq!(v["sensor"].as_str(), Some(r.sensor.as_str()), "{v}");
    assert_eq!(v["seq"].as_i64(), Some(r.seq), "{v}");
    assert_eq!(v["ts_ms"].as_i64(), Some(r.ts_ms), "{v}");
    assert_eq!(v["temperature_c"].as_f64(), Some(r.temperature_c), "{v}");
    assert_eq!(v["humidity_pct"].as_f64(), Some(r.humidity_pct), "{v}");
    assert_eq!(
        weight["temperature"].as_i64(),
        Some(r.weight_temperature),
        "{v}"
    );
    assert_eq!(weight["humidity"].as_i64(), Some(r.weight_humidity), "{v}");
    assert_eq!(v["priority"].as_i64(), Some(r.priority), "{v}");
    assert_eq!(v["route"].as_str(), Some(r.route.as_str()), "{v}");
    assert_published(v, r, follow);
    // `ts` is the same instant as ts_ms, RFC 3339 in UTC with milliseconds.
    let ts = v["ts"].as_str().expect("ts is a string");
    assert_eq!(ts.len(), 24, "ts {ts:?} is YYYY-MM-DDTHH:MM:SS.mmmZ");
    assert!(ts.ends_with('Z'), "ts {ts:?} is UTC");
    let t = humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("ts {ts:?}: {e}"));
    let ms = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(i64::try_from(ms).unwrap(), r.ts_ms, "ts {ts:?} vs ts_ms");
}

/// `demo --count 5` logs exactly seqs 0..=4 for each of the four sensors,
/// prints one line per reading (matching the log) and one per failed read
/// (matching `sensor_errors`), and marks the agent stopped.
#[test]
fn demo_logs_count_readings_per_sensor_with_gapless_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let start = now_ms();
    let out = demo(dir.path(), &db, 5);
    let end = now_ms();

    let rows = readings(&db);
    assert_eq!(rows.len(), 20, "{rows:#?}");
    let seqs = seqs_by_sensor(&rows);
    assert_eq!(
        seqs.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(DEMO_SENSORS)
    );
    for s in DEMO_SENSORS {
        assert_eq!(seqs[s], vec![0, 1, 2, 3, 4], "{s}");
    }
    for r in &rows {
        assert_eq!(r.node, "demo");
        assert!(
            (start..=end).contains(&r.ts_ms),
            "ts_ms {} outside the run",
            r.ts_ms
        );
        assert_row_invariants(r);
    }
    // A sensor's first reading has no history: priority 0.
    for r in rows.iter().filter(|r| r.seq == 0) {
        assert_eq!((r.priority, r.route.as_str()), (0, "batch"), "{r:?}");
    }

    // stdout: one line per reading, in log order, with the logged values.
    let stdout = text(&out.stdout);
    let lines: Vec<DemoLine> = stdout
        .lines()
        .filter(|l| l.contains(" seq "))
        .map(parse_demo_line)
        .collect();
    assert_eq!(lines.len(), rows.len(), "{stdout}");
    let by_key: BTreeMap<(&str, i64), &Row> = rows
        .iter()
        .map(|r| ((r.sensor.as_str(), r.seq), r))
        .collect();
    for l in &lines {
        let r = by_key[&(l.sensor.as_str(), l.seq)];
        assert_eq!(l.clock, clock(r.ts_ms), "{l:?} vs {r:?}");
        assert!(
            (l.temperature - r.temperature_c).abs() < 0.051,
            "{l:?} {r:?}"
        );
        assert!((l.humidity - r.humidity_pct).abs() < 0.051, "{l:?} {r:?}");
        assert_eq!(l.weights, (r.weight_temperature, r.weight_humidity));
        assert_eq!(l.priority, r.priority);
        assert_eq!(l.route, r.route);
    }
    // One line per failed read, each logged in sensor_errors.
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("read failed ("))
        .collect();
    let errors = sensor_errors(&db);
    assert_eq!(failed.len(), errors.len(), "{stdout}");
    for (line, e) in failed.iter().zip(&errors) {
        assert!(
            ["timeout", "checksum", "range", "spike", "io"].contains(&e.kind.as_str()),
            "{e:?}"
        );
        assert!(DEMO_SENSORS.contains(&e.sensor.as_str()), "{e:?}");
        assert!(
            line.contains(&format!("read failed ({}): ", e.kind)),
            "{line}"
        );
        assert!(line.contains(&e.detail), "{line} vs {e:?}");
        assert!(line.contains(&e.sensor), "{line}");
    }
    // Every stdout line is a reading or a failed read.
    assert_eq!(
        stdout.lines().count(),
        lines.len() + failed.len(),
        "{stdout}"
    );

    // The agent recorded its clean stop.
    let status = agent_status(&db);
    assert_eq!(status.len(), 1, "{status:?}");
    let s = &status[0];
    assert_eq!((s.node.as_str(), s.state.as_str()), ("demo", "stopped"));
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert!(s.started_ms <= s.heartbeat_ms);
    let unpublished = rows.iter().filter(|r| r.published_ms.is_none()).count();
    assert_eq!(s.outbox_depth, i64::try_from(unpublished).unwrap());
}

/// `demo` without `--db` writes ./edgeprio-demo.db in the working directory.
#[test]
fn demo_default_db_is_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    edgeprio(dir.path())
        .args(["demo", "--speed", "1000", "--count", "1"])
        .assert()
        .success();
    let db = dir.path().join("edgeprio-demo.db");
    assert!(db.is_file());
    assert_eq!(readings(&db).len(), 4);
}

/// The heater replay over 60 readings (two loops of the 26 samples): the
/// lab sensor logs exactly the CSV's values, and only the paper's record 9
/// (seq % 26 == 8, 25 °C/56 % -> 28 °C/48 %) has a priority: weights 2/2,
/// priority 2, realtime. Every other lab reading is priority 0, batch.
#[test]
fn heater_replay_is_realtime_exactly_at_the_papers_record_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let out = demo(dir.path(), &db, 60);
    let heater = heater_samples();
    assert_eq!(heater.len(), 26);
    assert_eq!(heater[8], (28.0, 48.0));

    let rows = readings(&db);
    let lab: Vec<&Row> = rows.iter().filter(|r| r.sensor == "lab").collect();
    assert_eq!(
        lab.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    for r in &lab {
        let (t, h) = heater[usize::try_from(r.seq).unwrap() % 26];
        assert_eq!((r.temperature_c, r.humidity_pct), (t, h), "{r:?}");
        let got = (
            r.weight_temperature,
            r.weight_humidity,
            r.priority,
            r.route.as_str(),
        );
        if r.seq % 26 == 8 {
            assert_eq!(got, (2, 2, 2, "realtime"), "the paper's record 9: {r:?}");
        } else {
            assert_eq!(got, (0, 0, 0, "batch"), "{r:?}");
        }
    }
    for r in &rows {
        assert_row_invariants(r);
    }
    // The demo's own output agrees.
    let realtime_lab: Vec<DemoLine> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains(" seq "))
        .map(parse_demo_line)
        .filter(|l| l.sensor == "lab" && l.route == "realtime")
        .collect();
    assert_eq!(
        realtime_lab.iter().map(|l| l.seq).collect::<Vec<_>>(),
        vec![8, 34]
    );
    for l in &realtime_lab {
        assert_eq!((l.weights, l.priority), ((2, 2), 2), "{l:?}");
        assert_eq!((l.temperature, l.humidity), (28.0, 48.0), "{l:?}");
    }
}

/// `query --format json`: one object per line, oldest first, with exactly
/// the contract's fields and the logged values.
#[test]
fn query_json_has_the_contract_fields_and_the_logged_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 5);
    let rows = readings(&db);
    let json = query_json(dir.path(), &db, &[]);
    assert_eq!(json.len(), rows.len());
    for (v, r) in json.iter().zip(&rows) {
        assert_json_matches(v, r, false);
    }
}

/// `query --format csv`: the contract's header, then one record per row with
/// the logged values; `published_ms` is empty while in the outbox, and
/// `clock_synced` is 1, 0 or empty (unknown).
#[test]
#[allow(clippy::float_cmp)] // the printed value must be the stored one, exactly
fn query_csv_has_the_contract_header_and_the_logged_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 5);
    let rows = readings(&db);
    let out = query(dir.path(), &db, &["--format", "csv"]);
    assert_eq!(out.lines().next(), Some(CSV_HEADER), "{out}");

    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header.join(","), CSV_HEADER);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), rows.len());
    for (rec, r) in records.iter().zip(&rows) {
        assert_eq!(rec.len(), 14, "{rec:?}");
        let get = |name: &str| &rec[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(get("id").parse::<i64>().unwrap(), r.id);
        assert_eq!(get("node"), r.node);
        assert_eq!(get("sensor"), r.sensor);
        assert_eq!(get("seq").parse::<i64>().unwrap(), r.seq);
        assert_eq!(get("ts_ms").parse::<i64>().unwrap(), r.ts_ms);
        let t = humantime::parse_rfc3339(get("ts")).unwrap();
        assert_eq!(
            i64::try_from(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap(),
            r.ts_ms
        );
        assert_eq!(
            get("temperature_c").parse::<f64>().unwrap(),
            r.temperature_c
        );
        assert_eq!(get("humidity_pct").parse::<f64>().unwrap(), r.humidity_pct);
        assert_eq!(
            get("weight_temperature").parse::<i64>().unwrap(),
            r.weight_temperature
        );
        assert_eq!(
            get("weight_humidity").parse::<i64>().unwrap(),
            r.weight_humidity
        );
        assert_eq!(get("priority").parse::<i64>().unwrap(), r.priority);
        assert_eq!(get("route"), r.route);
        match r.published_ms {
            None => assert_eq!(get("published_ms"), ""),
            Some(p) => assert_eq!(get("published_ms").parse::<i64>().unwrap(), p),
        }
        // The agents of the tests see a synchronized clock (tests/common).
        assert_eq!(get("clock_synced"), "1", "{rec:?}");
    }
}

/// `query` (table, the default): a header and one line per row, oldest
/// first, with time, sensor, seq, values, weights, priority and route.
#[test]
fn query_table_lists_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 3);
    let rows = readings(&db);
    let out = query(dir.path(), &db, &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), rows.len() + 1, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TIME",
            "SENSOR",
            "SEQ",
            "TEMP_C",
            "HUM_PCT",
            "W_T",
            "W_H",
            "PRIO",
            "ROUTE",
            "PUBLISHED"
        ]
    );
    for (line, r) in lines[1..].iter().zip(&rows) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 10, "{line}");
        assert!(humantime::parse_rfc3339(f[0]).is_ok(), "{line}");
        assert!(
            f[0].ends_with(&format!("{}Z", clock(r.ts_ms))),
            "{line} vs {r:?}"
        );
        assert_eq!(f[1], r.sensor);
        assert_eq!(f[2].parse::<i64>().unwrap(), r.seq);
        assert!((f[3].parse::<f64>().unwrap() - r.temperature_c).abs() < 0.051);
        assert!((f[4].parse::<f64>().unwrap() - r.humidity_pct).abs() < 0.051);
        assert_eq!(f[5].parse::<i64>().unwrap(), r.weight_temperature);
        assert_eq!(f[6].parse::<i64>().unwrap(), r.weight_humidity);
        assert_eq!(f[7].parse::<i64>().unwrap(), r.priority);
        assert_eq!(f[8], r.route);
        if r.published_ms.is_none() {
            assert_eq!(f[9], "outbox", "{line}");
        }
    }
}

/// `--sensor`, `--route` and `--limit`, alone and combined, return exactly
/// the matching rows, oldest first; `--limit N` is the newest N.
#[test]
fn query_filters_sensor_route_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 30);
    let rows = readings(&db);
    let select = |f: &dyn Fn(&Row) -> bool| -> Vec<i64> {
        rows.iter().filter(|r| f(r)).map(|r| r.id).collect()
    };
    let newest = |mut v: Vec<i64>, n: usize| v.split_off(v.len().saturating_sub(n));

    // --sensor
    let lab = query_json(dir.path(), &db, &["--sensor", "lab"]);
    assert_eq!(ids(&lab), select(&|r| r.sensor == "lab"));
    assert_eq!(lab.len(), 30);
    assert!(lab.iter().all(|v| v["sensor"] == "lab"));
    assert!(query_json(dir.path(), &db, &["--sensor", "no-such-sensor"]).is_empty());

    // --route realtime: only real-time rows, and all of them (lab seq 8 among them).
    let rt = query_json(dir.path(), &db, &["--route", "realtime"]);
    assert!(!rt.is_empty());
    assert!(rt.iter().all(|v| v["route"] == "realtime"), "{rt:?}");
    assert_eq!(ids(&rt), select(&|r| r.route == "realtime"));
    assert!(
        rt.iter().any(|v| v["sensor"] == "lab" && v["seq"] == 8),
        "the heater event is real-time"
    );
    let batch = query_json(dir.path(), &db, &["--route", "batch"]);
    assert!(batch.iter().all(|v| v["route"] == "batch"));
    assert_eq!(ids(&batch), select(&|r| r.route == "batch"));
    assert_eq!(rt.len() + batch.len(), rows.len());

    // --limit: the newest N, printed oldest first.
    let last3 = query_json(dir.path(), &db, &["--limit", "3"]);
    assert_eq!(ids(&last3), newest(row_ids(&rows), 3));
    assert!(query_json(dir.path(), &db, &["--limit", "0"]).is_empty());
    assert_eq!(
        query_json(dir.path(), &db, &["--limit", "100000"]).len(),
        rows.len()
    );

    // Combined.
    let cellar4 = query_json(dir.path(), &db, &["--sensor", "cellar", "--limit", "4"]);
    assert_eq!(ids(&cellar4), newest(select(&|r| r.sensor == "cellar"), 4));
    let seqs: Vec<i64> = cellar4.iter().map(|v| v["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![26, 27, 28, 29]);
    let lab_rt = query_json(dir.path(), &db, &["--sensor", "lab", "--route", "realtime"]);
    assert_eq!(lab_rt.len(), 1, "{lab_rt:?}");
    assert_eq!(
        (lab_rt[0]["seq"].as_i64(), lab_rt[0]["priority"].as_i64()),
        (Some(8), Some(2))
    );

    // The same filters in csv: header plus the same rows.
    let csv = query(dir.path(), &db, &["--format", "csv", "--route", "realtime"]);
    assert_eq!(csv.lines().count(), rt.len() + 1);
}

/// `--since` / `--until` with RFC 3339 times and durations: a time in the
/// future returns nothing, a bracket returns exactly the rows inside it
/// (since inclusive, until exclusive).
#[test]
fn query_time_filters() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 6);
    let rows = readings(&db);

    let future = "2999-01-01T00:00:00Z";
    assert!(query_json(dir.path(), &db, &["--since", future]).is_empty());
    assert_eq!(
        query(dir.path(), &db, &["--since", future, "--format", "csv"]),
        format!("{CSV_HEADER}\n")
    );
    assert_eq!(
        query(dir.path(), &db, &["--since", future]).lines().count(),
        1
    );
    assert!(query_json(dir.path(), &db, &["--until", "2000-01-01T00:00:00Z"]).is_empty());
    assert_eq!(
        query_json(dir.path(), &db, &["--since", "1h"]).len(),
        rows.len()
    );
    assert_eq!(
        query_json(dir.path(), &db, &["--until", future]).len(),
        rows.len()
    );

    // Bracket cycles 2..4 by their timestamps (one timestamp per cycle).
    let cycle_ts: Vec<i64> = rows
        .iter()
        .map(|r| r.ts_ms)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(cycle_ts.len() >= 5, "{cycle_ts:?}");
    let rfc = |ms: i64| {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap());
        humantime::format_rfc3339_millis(t).to_string()
    };
    let (lo, hi) = (cycle_ts[2], cycle_ts[4]);
    let got = query_json(dir.path(), &db, &["--since", &rfc(lo), "--until", &rfc(hi)]);
    let want: Vec<i64> = rows
        .iter()
        .filter(|r| r.ts_ms >= lo && r.ts_ms < hi)
        .map(|r| r.id)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(ids(&got), want);
}

/// `query --follow --format json` first prints the newest 10 rows, then
/// every row a concurrently running demo appends, each exactly once and in
/// order, until it is killed.
#[test]
fn query_follow_prints_new_rows_as_they_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 5);
    let before = readings(&db);
    assert_eq!(before.len(), 20);

    let mut cmd = std_cmd(dir.path());
    cmd.args(["query", "--follow", "--format", "json", "--db"])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(common::stderr_file(&dir.path().join("follow.err")));
    let mut child = ChildGuard::spawn(cmd);
    let lines = child.stdout_lines();

    // The initial page: the newest 10, oldest first.
    let first = recv_until(&lines, Duration::from_secs(30), |l| l.len() == 10);
    let first: Vec<Value> = first
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids(&first), row_ids(&before[10..]));

    // Append 3 readings per sensor while it follows.
    demo(dir.path(), &db, 3);
    let after = readings(&db);
    let new: Vec<&Row> = after
        .iter()
        .filter(|r| r.id > before.last().unwrap().id)
        .collect();
    assert_eq!(new.len(), 12);
    let got = recv_until(&lines, Duration::from_secs(30), |l| l.len() >= new.len());
    let got: Vec<Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (v, r) in got.iter().zip(&new) {
        assert_json_matches(v, r, true);
    }
    let keys: BTreeSet<(String, i64)> = got
        .iter()
        .map(|v| {
            (
                v["sensor"].as_str().unwrap().to_string(),
                v["seq"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: BTreeSet<(String, i64)> = DEMO_SENSORS
        .iter()
        .flat_map(|s| (5..8).map(move |q| ((*s).to_string(), q)))
        .collect();
    assert_eq!(keys, want);

    // Nothing is printed twice: over three more polls (500 ms each), no line.
    match lines.recv_timeout(Duration::from_millis(1600)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("unexpected output after the new rows: {other:?}"),
    }
    assert!(
        child.child.try_wait().unwrap().is_none(),
        "--follow exited by itself: {}",
        std::fs::read_to_string(dir.path().join("follow.err")).unwrap_or_default()
    );
    child.child.kill().unwrap();
    assert!(child.wait_timeout(Duration::from_secs(10)).is_some());
}

/// A second demo on the same log continues every sensor's seq: two runs of
/// `--count 5` give seqs 0..=9 per sensor, no gap, no duplicate; the heater
/// history is restored too, so lab seq 8 (in the second run) is priority 2.
#[test]
fn restart_continues_seq_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 5);
    let first = readings(&db);
    let out = demo(dir.path(), &db, 5);
    let rows = readings(&db);
    assert_eq!(rows.len(), 40);
    // The readings are unchanged; only the outbox may have drained since
    // (published_ms goes from null to a time, and never changes once set).
    let data = |rows: &[common::Row]| -> Vec<common::Row> {
        rows.iter()
            .map(|r| common::Row {
                published_ms: None,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(
        data(&rows[..20]),
        data(&first),
        "the first run's rows are unchanged"
    );
    for (now, before) in rows[..20].iter().zip(&first) {
        if before.published_ms.is_some() {
            assert_eq!(now.published_ms, before.published_ms, "{now:?}");
        }
    }
    let seqs = seqs_by_sensor(&rows);
    for s in DEMO_SENSORS {
        assert_eq!(seqs[s], (0..10).collect::<Vec<_>>(), "{s}");
    }
    let last_first = first.iter().map(|r| r.ts_ms).max().unwrap();
    assert!(rows[20..].iter().all(|r| r.ts_ms >= last_first));
    let lab8 = rows
        .iter()
        .find(|r| r.sensor == "lab" && r.seq == 8)
        .unwrap();
    assert_eq!(
        (
            lab8.weight_temperature,
            lab8.weight_humidity,
            lab8.priority,
            lab8.route.as_str()
        ),
        (2, 2, 2, "realtime")
    );
    for r in rows.iter().filter(|r| r.sensor == "lab" && r.seq != 8) {
        assert_eq!(r.priority, 0, "{r:?}");
    }
    // The second run printed seqs 5..=9 only.
    let printed: BTreeSet<i64> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains(" seq "))
        .map(|l| parse_demo_line(l).seq)
        .collect();
    assert_eq!(printed, (5..10).collect());
    let status = agent_status(&db);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].state, "stopped");
}

/// `read-once` on a sim config reads each sensor once, prints one line per
/// sensor with its values and backend, exits 0 and writes no log.
#[test]
fn read_once_on_a_sim_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture("good/sim.toml");
    let configured_db = fixture("good/edgeprio-test.db");
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("read-once")
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let line = |id: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no line for {id}: {stdout}"))
    };
    // The heater replay starts at its first sample, the trace at its first row.
    let lab = line("lab");
    assert!(lab.contains("22.0 °C") && lab.contains("61.0 %RH"), "{lab}");
    assert!(lab.contains("heater"), "{lab}");
    let rec = line("rec");
    assert!(rec.contains("19.5 °C") && rec.contains("44.0 %RH"), "{rec}");
    assert!(rec.contains("trace.csv"), "{rec}");
    let walk = line("walk");
    let f: Vec<&str> = walk.split_whitespace().collect();
    let (t, h): (f64, f64) = (f[1].parse().unwrap(), f[3].parse().unwrap());
    assert!(
        (-40.0..=80.0).contains(&t) && (0.0..=100.0).contains(&h),
        "{walk}"
    );
    assert!(walk.contains("seed 11"), "{walk}");
    assert_no_panic(&text(&out.stderr));
    assert!(!configured_db.exists(), "read-once must not create the log");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `--config` can come from `EDGEPRIO_CONFIG`.
#[test]
fn config_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture("good/sim.toml");
    edgeprio(dir.path())
        .env("EDGEPRIO_CONFIG", &config)
        .arg("check-config")
        .assert()
        .success()
        .stdout(predicates::str::contains(format!(
            "{} is valid",
            config.display()
        )));
}

/// `check-config` shows the settings that change what gets logged: event
/// confirmation, the gap rule and a sensor's calibration offset.
#[test]
fn check_config_shows_confirmation_gap_rule_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let check = |config: &str| {
        std::fs::write(&path, config).unwrap();
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let shown = check(
        "interval = \"15s\"\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\n\
         offset = { temperature = -0.4, humidity = 2.5 }\n",
    );
    assert!(
        shown.contains("events    confirmed by a re-read before the real-time route; a prev older than 2m 30s counts as none"),
        "{shown}"
    );
    assert!(
        shown.contains("lab (sim, random walk (seed 0, 0 failures), offset -0.4 °C / +2.5 %RH)"),
        "{shown}"
    );
    let shown = check(
        "[priority]\nconfirm = false\nstale_after = \"0s\"\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\n",
    );
    assert!(
        shown.contains(
            "events    not confirmed (confirm = false); no gap rule (stale_after = \"0s\")"
        ),
        "{shown}"
    );
    assert!(!shown.contains("offset"), "{shown}");
}

/// Starts `run` on the good sim config (interval 50 ms), waits until each
/// sensor has logged 3 readings, sends `signal`, and checks the clean stop:
/// exit 0, state stopped, every row committed with gapless seqs.
fn run_stops_cleanly_on(signal: &str) {
    stops_cleanly_on(&["run"], signal);
}

/// [`run_stops_cleanly_on`] for any command running the agent (`run`, or
/// `demo` without its dashboard).
fn stops_cleanly_on(command: &[&str], signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.db");
    let err_path = dir.path().join("run.err");
    let mut cmd = std_cmd(dir.path());
    cmd.arg("--config")
        .arg(fixture("good/sim.toml"))
        .args(command)
        .arg("--db")
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(common::stderr_file(&err_path));
    let mut child = ChildGuard::spawn(cmd);
    let pid = child.id();

    let per_sensor = |db: &Path| -> Option<i64> {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?;
        conn.busy_timeout(Duration::from_secs(5)).ok()?;
        conn.query_row(
            "SELECT min(n) FROM (SELECT count(*) AS n FROM readings GROUP BY sensor)
             WHERE (SELECT count(DISTINCT sensor) FROM readings) = 3",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .ok()
        .flatten()
    };
    wait_for(Duration::from_secs(30), "3 readings per sensor", || {
        if let Some(status) = child.child.try_wait().unwrap() {
            panic!(
                "{command:?} exited early ({status}): {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        db.exists() && per_sensor(&db).is_some_and(|n| n >= 3)
    });
    let running = agent_status(&db);
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].state, "running");
    assert_eq!(running[0].pid, i64::from(pid));
    assert_eq!(running[0].interval_ms, 50);
    let seen = readings(&db);

    send_signal(pid, signal);
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{command:?} did not stop within 20 s of SIG{signal}"));
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{signal}: exit {status}: {stderr}"
    );
    assert_no_panic(&stderr);

    let rows = readings(&db);
    assert!(rows.len() >= seen.len());
    // Kept as they were, except that a reading may have been published
    // since (`demo` has a broker).
    let unpublished = |r: &Row| Row {
        published_ms: None,
        ..r.clone()
    };
    for (now, before) in rows.iter().zip(&seen) {
        assert_eq!(
            unpublished(now),
            unpublished(before),
            "rows seen before the signal are kept"
        );
        assert!(
            before.published_ms.is_none() || now.published_ms == before.published_ms,
            "a publication time never changes: {before:?} -> {now:?}"
        );
    }
    let seqs = seqs_by_sensor(&rows);
    assert_eq!(
        seqs.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["lab", "walk", "rec"])
    );
    for (sensor, s) in &seqs {
        assert!(s.len() >= 3, "{sensor}: {s:?}");
        let want: Vec<i64> = (0..i64::try_from(s.len()).unwrap()).collect();
        assert_eq!(s, &want, "{sensor}");
    }
    for r in &rows {
        assert_eq!(r.node, "test-node");
        assert_row_invariants(r);
    }
    let stopped = agent_status(&db);
    assert_eq!(stopped.len(), 1);
    let s = &stopped[0];
    assert_eq!(s.state, "stopped", "{s:?}");
    assert_eq!(s.pid, i64::from(pid));
    assert_eq!(s.node, "test-node");
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(s.started_ms, running[0].started_ms);
    assert!(s.heartbeat_ms >= rows.iter().map(|r| r.ts_ms).max().unwrap());
    let unpublished = rows.iter().filter(|r| r.published_ms.is_none()).count();
    assert_eq!(s.outbox_depth, i64::try_from(unpublished).unwrap());
    assert!(
        !fixture("good/edgeprio-test.db").exists(),
        "--db must override the config's db"
    );
}

/// `run` + SIGTERM: the cycle in flight finishes, the agent is marked
/// stopped, exit 0, rows committed.
#[test]
fn run_stops_cleanly_on_sigterm() {
    run_stops_cleanly_on("TERM");
}

/// `run` + SIGINT (Ctrl-C): same clean stop as SIGTERM.
#[test]
fn run_stops_cleanly_on_sigint() {
    run_stops_cleanly_on("INT");
}

/// `demo` in the foreground (no dashboard) + SIGHUP, its terminal gone:
/// the same clean stop.
#[test]
fn demo_without_dashboard_stops_cleanly_on_sighup() {
    stops_cleanly_on(&["demo", "--no-dashboard"], "HUP");
}

/// `--help` lists every subcommand with its description, and each
/// subcommand has its own `--help`.
#[test]
fn help_lists_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = edgeprio(dir.path())
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = text(&out.stdout);
    let subcommands = ["run", "demo", "query", "read-once", "check-config"];
    for sub in subcommands {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(sub)
                    && l.split_whitespace().count() > 1),
            "--help does not list `{sub}` with a description:\n{stdout}"
        );
        let sub_help = edgeprio(dir.path())
            .args([sub, "--help"])
            .assert()
            .success()
            .get_output()
            .clone();
        assert!(
            text(&sub_help.stdout).contains(&format!("Usage: edgeprio {sub}")),
            "{sub} --help:\n{}",
            text(&sub_help.stdout)
        );
    }
    for opt in ["--config", "--version", "--help"] {
        assert!(stdout.contains(opt), "--help lacks {opt}:\n{stdout}");
    }
    let query_help = text(
        &edgeprio(dir.path())
            .args(["query", "--help"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    for opt in [
        "--db", "--sensor", "--since", "--until", "--route", "--format", "--limit", "--follow",
    ] {
        assert!(
            query_help.contains(opt),
            "query --help lacks {opt}:\n{query_help}"
        );
    }
    let demo_help = text(
        &edgeprio(dir.path())
            .args(["demo", "--help"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    for opt in ["--db", "--speed", "--count", "--no-dashboard"] {
        assert!(
            demo_help.contains(opt),
            "demo --help lacks {opt}:\n{demo_help}"
        );
    }
    // No subcommand: a usage error, not a crash.
    let out = edgeprio(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage"));
}

/// `--version` and `-V` print `edgeprio <version>` and exit 0.
#[test]
fn version_prints_name_and_version() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--version", "-V"] {
        edgeprio(dir.path())
            .arg(flag)
            .assert()
            .success()
            .stdout(format!("edgeprio {}\n", env!("CARGO_PKG_VERSION")));
    }
}

/// Under systemd (`JOURNAL_STREAM` set) log lines carry no timestamp of
/// their own, since journald stamps each line, and start with their syslog
/// priority (`<6>` for info) for journald; elsewhere they start with a
/// timestamp.
#[test]
fn log_lines_are_stamped_except_under_journald() {
    let dir = tempfile::tempdir().unwrap();
    let log_lines = |journal: bool| -> Vec<String> {
        let db = dir.path().join(format!("journal-{journal}.db"));
        let mut cmd = edgeprio(dir.path());
        cmd.args([
            "--log",
            "info",
            "demo",
            "--no-dashboard",
            "--speed",
            "1000",
            "--count",
            "1",
            "--db",
        ])
        .arg(&db);
        if journal {
            cmd.env("JOURNAL_STREAM", "8:12345");
        } else {
            cmd.env_remove("JOURNAL_STREAM");
        }
        let out = cmd.output().expect("run the demo");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
            .lines()
            .filter(|l| l.contains(" INFO ") || l.contains(">INFO "))
            .map(str::to_owned)
            .collect()
    };
    let stamped = |l: &str| {
        let b = l.as_bytes();
        b.len() > 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
    };
    let plain = log_lines(false);
    assert!(!plain.is_empty(), "the demo logs at info");
    assert!(plain.iter().all(|l| stamped(l)), "{plain:#?}");
    let journal = log_lines(true);
    assert!(!journal.is_empty(), "the demo logs at info under journald");
    assert!(
        journal.iter().all(|l| l.starts_with("<6>INFO ")),
        "no timestamp under journald: {journal:#?}"
    );
    // A fatal error is an error for journald too.
    let out = edgeprio(dir.path())
        .env("JOURNAL_STREAM", "8:12345")
        .args(["--config", "missing.toml", "run"])
        .output()
        .expect("run edgeprio");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.starts_with("<3>error: "), "{err}");
}

/// `check-config --for gateway|collect` checks a server's config: no
/// [[sensor]] needed, a broker needed; the default (`run`) still needs a
/// sensor.
#[test]
fn check_config_checks_a_servers_config_for_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let check = |config: &str, args: &[&str]| {
        std::fs::write(&path, config).unwrap();
        edgeprio(dir.path())
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .args(args)
            .output()
            .unwrap()
    };
    let server = "node = \"gw\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[gateway]\nsubscribe = \"site/+/raw\"\n";
    let out = check(server, &["--for", "gateway"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("gateway   subscribes to site/+/raw, range DHT22"),
        "{}",
        text(&out.stdout)
    );
    assert!(check(server, &["--for", "collect"]).status.success());
    let out = check(server, &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("key `sensor`"),
        "{}",
        text(&out.stderr)
    );
    let out = check("node = \"gw\"\n", &["--for", "gateway"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("key `mqtt`: no broker is configured"),
        "{}",
        text(&out.stderr)
    );
}
